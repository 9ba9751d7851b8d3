"""The bench's pure helpers: nginx log lines, medians of repeated runs, target verdicts."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

import pytest

from bench.columns import AFS, AFS_FSSPEC, FSSPEC_HTTP, RCLONE_FULL, RCLONE_OFF
from bench.dataset import BIG, MIB, Item
from bench.fsspecrun import Outcome
from bench.measure import CaseError, CaseTimeout, Cell, combine
from bench.nginx import temp_modules
from bench.targets import Target, evaluate
from bench.traffic import Hit, parse_line, parse_log, total


def test_a_log_line_becomes_a_hit() -> None:
    assert parse_line("GET\t/big/big.bin\t206\t4096\tbytes=0-4095\n") == Hit("GET", "/big/big.bin", 206, 4096,
                                                                             "bytes=0-4095")
    assert parse_line("HEAD\t/small/f00001.txt\t200\t0\t-") == Hit("HEAD", "/small/f00001.txt", 200, 0, "")


def test_partial_or_foreign_lines_are_skipped() -> None:
    assert parse_log("GET\t/mib/\t200\t512\t-\nGET\t/big/big.b") == [Hit("GET", "/mib/", 200, 512)]
    assert parse_line("127.0.0.1 - - [25/Nov/2026] \"GET / HTTP/1.1\" 200 255") is None


def test_traffic_of_one_file_counts_nginx_paths_and_emulator_storage_urls() -> None:
    hits = [Hit("GET", "/big/big.bin", 206, 100), Hit("GET", "/big/", 200, 7),
            Hit("GET", f"/gumloop-artifacts/{BIG.artifact_id}/ver_1", 206, 50),
            Hit("GET", "/mib/m0001.bin", 200, MIB)]
    assert total(hits, BIG).bytes == 150
    assert total(hits).requests == 4
    assert Item("small", "f00012.txt").artifact_id == "art_small_f00012"


def test_a_cell_is_the_median_of_its_runs_and_notes_failed_ones() -> None:
    assert combine([Cell(3.0), Cell(1.0), Cell(2.0)]) == Cell(2.0)
    mixed = combine([Cell(4.0), Cell(note="error: boom"), Cell(2.0)])
    assert mixed.value == 3.0 and mixed.ok and "1 of 3 runs failed" in mixed.detail
    assert combine([Cell(None, "timeout"), Cell(note="error: x")]) == Cell(None, "timeout")


def test_a_ratio_target_picks_the_best_reference_in_the_row() -> None:
    results = {AFS: {"seq_cold": Cell(650.0)}, RCLONE_FULL: {"seq_cold": Cell(300.0)},
               RCLONE_OFF: {"seq_cold": Cell(500.0)}}
    verdict = evaluate(Target("seq_cold", AFS, "≥ 1.3×", (RCLONE_FULL, RCLONE_OFF), 1.3), results, True)
    assert (verdict.reference, round(verdict.ratio or 0, 2), verdict.result) == (RCLONE_OFF, 1.3, "PASS")
    times = {AFS: {"head_ms": Cell(30.0)}, RCLONE_FULL: {"head_ms": Cell(20.0)}, RCLONE_OFF: {"head_ms": Cell(25.0)}}
    assert evaluate(Target("head_ms", AFS, "≤", (RCLONE_FULL, RCLONE_OFF), 1.0), times, False).result == "MISS"


def test_strict_limits_missing_columns_and_reported_rows() -> None:
    equal = {AFS_FSSPEC: {"seq_warm": Cell(700.0)}, FSSPEC_HTTP: {"seq_warm": Cell(700.0)}}
    assert evaluate(Target("seq_warm", AFS_FSSPEC, ">", (FSSPEC_HTTP,), 1.0, strict=True), equal, True).result == "MISS"
    rss = Target("rss", AFS, "≤ 150 MiB", limit=150 * MIB)
    assert evaluate(rss, {AFS: {"rss": Cell(80.0 * MIB)}}, False).result == "PASS"
    assert evaluate(rss, {AFS: {"rss": Cell(note="not available")}}, False).result == "n/a"
    assert evaluate(rss, {AFS: {"rss": Cell(None, "timeout")}}, False).result == "MISS"
    info = evaluate(Target("list_ms", AFS, "reported", (FSSPEC_HTTP,)),
                    {AFS: {"list_ms": Cell(300.0)}, FSSPEC_HTTP: {"list_ms": Cell(100.0)}}, False)
    assert (info.ratio, info.result) == (3.0, "")


def test_temp_paths_only_for_the_modules_nginx_was_built_with() -> None:
    assert temp_modules("--with-http_ssl_module") == ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    assert temp_modules("--without-http_uwsgi_module --without-http_scgi_module") == ["client_body", "proxy", "fastcgi"]


def test_the_fsspec_worker_outcome_round_trips_or_becomes_an_error() -> None:
    done = Outcome({"seq_cold": 700.0}, rss=1 << 20)
    assert Outcome.parse("noise\n" + json.dumps(asdict(done)), 0).figures() == {"seq_cold": 700.0}
    with pytest.raises(CaseTimeout):
        Outcome.parse(json.dumps(asdict(Outcome(stopped="timeout"))), 0).figures()
    with pytest.raises(CaseError, match="status -9"):
        Outcome.parse("", -9).figures()


def test_the_cached_fsspec_floor_returns_each_body_and_writes_it_to_its_cache(tmp_path: Path) -> None:
    import fsspec

    from bench import barefsspec

    served = tmp_path / "served"
    served.mkdir()
    bodies = {f"f{i}.bin": os.urandom(100_000 + i) for i in range(3)}
    for name, body in bodies.items():
        (served / name).write_bytes(body)
    cache = tmp_path / "cache"
    cache.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            fs = fsspec.filesystem(barefsspec.CACHED_PROTOCOL, skip_instance_cache=True, cache_dir=str(cache))
            base = f"http://127.0.0.1:{server.server_address[1]}/"
            assert {name: fs.cat_file(base + name) for name in bodies} == bodies
        finally:
            server.shutdown()
    deadline = time.monotonic() + 10
    while (written := sorted(path.read_bytes() for path in cache.iterdir())) != sorted(bodies.values()):
        assert time.monotonic() < deadline, f"{len(written)} of {len(bodies)} bodies written"
        time.sleep(0.01)


class _ListedFiles(http.server.BaseHTTPRequestHandler):
    """An agent's artifacts listed one per page (``/api/agents/a/artifacts``), their bodies by range."""

    bodies: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path.startswith("/api/"):
            assert self.headers["x-auth-key"] == "user"
            names = sorted(self.bodies)
            at = names.index(query.rpartition("cursor=")[2]) if "cursor=" in query else 0
            base = f"http://127.0.0.1:{self.server.server_address[1]}/files/"
            page = {"artifacts": [{"filename": names[at], "url": f"{base}{names[at]}?sig=1",
                                   "metadata": {"size": len(self.bodies[names[at]])}}],
                    "next_cursor": names[at + 1] if at + 1 < len(names) else None}
            self._send(200, json.dumps(page).encode(), {"Content-Type": "application/json"})
            return
        body = self.bodies[path.removeprefix("/files/")]
        wanted = self.headers["Range"].removeprefix("bytes=")
        first, _, last = wanted.partition("-")
        self._send(206, body[int(first):int(last) + 1], {"Content-Range": f"bytes {wanted}/{len(body)}"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_listed_fsspec_floor_lists_every_page_then_keeps_each_body_in_the_disk_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    from artifactfs.blockcache import read_stats
    from bench import barefsspec
    from bench.gumloopapi import TOKEN_ENV, USER_ID_ENV

    monkeypatch.setenv(TOKEN_ENV, "key")
    monkeypatch.setenv(USER_ID_ENV, "user")
    bodies = {f"f{i}.bin": os.urandom(300_000 + i) for i in range(3)}
    monkeypatch.setattr(_ListedFiles, "bodies", bodies)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ListedFiles) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            fs = fsspec.filesystem(barefsspec.WORK_PROTOCOL, skip_instance_cache=True, cache_dir=str(tmp_path),
                                   api=f"http://127.0.0.1:{server.server_address[1]}/api")
            assert {name: fs.cat_file(f"a/{name}") for name in bodies} == bodies
        finally:
            server.shutdown()
    assert fs._cache.wait_idle()
    assert read_stats(tmp_path).bytes == sum(len(body) for body in bodies.values())


def test_the_cached_pyfuse3_floor_writes_each_read_at_its_place_and_reuses_its_buffers(tmp_path: Path) -> None:
    from bench.barefs import PAGE, Cache

    cache = Cache(tmp_path)
    first = cache.take(3 * PAGE + 5)
    assert len(first) == 4 * PAGE
    first[:3 * PAGE + 5] = b"a" * (3 * PAGE + 5)
    cache.keep(7, 4 * PAGE, first, 3 * PAGE + 5)
    deadline = time.monotonic() + 10
    while (again := cache.take(PAGE)) is not first:
        assert time.monotonic() < deadline, "the written buffer never came back"
        time.sleep(0.01)
    assert again is first
    written = (tmp_path / "7").read_bytes()
    assert written[:4 * PAGE] == bytes(4 * PAGE) and written[4 * PAGE:7 * PAGE + 5] == b"a" * (3 * PAGE + 5)
