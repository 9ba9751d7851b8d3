"""Each fault of either origin, injected into the emulator under a real mount.

The promise: transient faults are retried and the reader gets exact bytes; when retries
run out the reader gets the right errno and a log line that names the path, never
sticky; 401/403 → EACCES, 404 → ENOENT; no partial byte is ever served or cached.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from artifactfs.emulator import Emulator, PatternBlob
from tests.conftest import Mount, MountFactory, run

TASK = "task_123"
MiB = 1 << 20
AGENT = "abc123DEFghiJKL"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sigmic_file(emu: Emulator, m: Mount, size: int = 6 * MiB, seed: int = 3) -> tuple[Path, PatternBlob]:
    blob = PatternBlob(size, seed)
    emu.put_sigmic_file(TASK, "data/file.bin", blob)
    return m.path / "sigmic" / TASK / "data" / "file.bin", blob


def gumloop_file(emu: Emulator, m: Mount, size: int = 6 * MiB, seed: int = 4) -> tuple[Path, PatternBlob]:
    blob = PatternBlob(size, seed)
    emu.put_gumloop_artifact(AGENT, "faulty.bin", blob)
    return m.path / "gumloop" / AGENT / "latest" / "faulty.bin", blob


def faults_seen(emu: Emulator, kind: str) -> int:
    return sum(1 for r in emu.requests() if r.get("fault") == kind)


@pytest.mark.parametrize("kind,options", [
    ("status", {"code": 503}), ("status", {"code": 502}), ("status", {"code": 500}),
    ("throttle", {}), ("refuse", {}), ("cut", {"after": 5}),
])
def test_transient_api_faults_are_retried(mount: MountFactory, emulator: Emulator,
                                          kind: str, options: dict) -> None:
    m = mount(timeout=2)
    m.expected_log.append("")
    emulator.faults("api").set(kind, count=2, path_contains="/tasks/", **options)
    assert "downloads" in os.listdir(m.path / "sigmic" / TASK)
    assert faults_seen(emulator, kind) == 2
    assert "attempt" in m.log_text()


def test_retry_after_is_honoured(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=5)
    m.expected_log.append("")
    emulator.faults("api").set("throttle", retry_after=1.5, count=1, path_contains="/tasks/")
    started = time.monotonic()
    assert os.listdir(m.path / "sigmic" / TASK)
    assert time.monotonic() - started >= 1.4


def test_exhausted_retries_give_eio_with_a_log_line_and_are_not_sticky(
        mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=2)
    m.expected_log.append("")
    emulator.faults("api").set("status", code=500, path_contains="/tasks/")
    result = run("ls", m.path / "sigmic" / TASK, check=False)
    assert result.returncode != 0 and "Input/output error" in result.stderr
    log = m.log_text()
    assert "/sigmic/api/v1/tasks/task_123/artifacts" in log and "HTTP 500" in log
    emulator.faults("api").clear()
    assert "downloads" in os.listdir(m.path / "sigmic" / TASK)


def test_a_hanging_api_gives_eio_within_the_deadline(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=1)
    m.expected_log.append("")
    emulator.faults("api").set("hang", seconds=60, path_contains="/tasks/")
    started = time.monotonic()
    result = run("ls", m.path / "sigmic" / TASK, check=False)
    assert "Input/output error" in result.stderr
    assert time.monotonic() - started < 20
    emulator.faults("api").clear()
    assert os.listdir(m.path / "sigmic" / TASK)


def test_a_hanging_download_gives_eio_within_the_deadline(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=1)
    m.expected_log.append("")
    target, blob = sigmic_file(emulator, m)
    target.stat()
    emulator.faults("api").set("hang", seconds=60, path_contains="/download")
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        target.read_bytes()
    assert info.value.errno == 5
    assert time.monotonic() - started < 20
    emulator.faults("api").clear()
    assert sha(target.read_bytes()) == blob.sha256()


@pytest.mark.parametrize("code,errno_name", [(401, "EACCES"), (403, "EACCES"), (404, "ENOENT")])
def test_api_errors_map_to_errno(mount: MountFactory, emulator: Emulator, code: int, errno_name: str) -> None:
    m = mount(timeout=2)
    m.expected_log.append("")
    emulator.faults("api").set("status", code=code, path_contains="/tasks/")
    with pytest.raises(OSError) as info:
        os.listdir(m.path / "sigmic" / TASK)
    assert info.value.errno == getattr(__import__("errno"), errno_name)


def test_stale_listing_is_served_when_the_api_fails_after_the_ttl(
        mount: MountFactory, emulator: Emulator) -> None:
    m = mount(listing_ttl=1, timeout=1)
    m.expected_log.append("")
    before = sorted(os.listdir(m.path / "sigmic" / TASK / "downloads"))
    emulator.faults("api").set("status", code=503, path_contains="/tasks/")
    time.sleep(1.2)
    assert sorted(os.listdir(m.path / "sigmic" / TASK / "downloads")) == before
    assert "serving the last good listing" in m.log_text()


@pytest.mark.parametrize("origin,kind,options", [
    ("api", "cut", {"after": 300_000}), ("api", "refuse", {}), ("api", "status", {"code": 503}),
    ("api", "bad_range", {"shift": 7}), ("api", "bad_range", {"total": 123}),
])
def test_byte_faults_on_the_api_origin_never_serve_partial_bytes(
        mount: MountFactory, emulator: Emulator, origin: str, kind: str, options: dict) -> None:
    m = mount(timeout=2)
    m.expected_log.append("")
    target, blob = sigmic_file(emulator, m)
    target.stat()
    emulator.faults(origin).set(kind, count=2, path_contains="/download", **options)
    assert sha(target.read_bytes()) == blob.sha256()
    assert faults_seen(emulator, kind) >= 1


def test_a_body_always_cut_short_is_eio_and_never_cached(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=2)
    m.expected_log.append("")
    target, blob = sigmic_file(emulator, m, size=3 * MiB)
    target.stat()
    emulator.faults("api").set("cut", after=1000, path_contains="/download")
    with pytest.raises(OSError) as info:
        target.read_bytes()
    assert info.value.errno == 5
    emulator.faults("api").clear()
    assert sha(target.read_bytes()) == blob.sha256()


@pytest.mark.parametrize("kind,options", [
    ("cut", {"after": 200_000}), ("status", {"code": 503}), ("throttle", {"retry_after": 0}),
    ("refuse", {}), ("status", {"code": 403}),
])
def test_storage_faults_on_signed_urls(mount: MountFactory, emulator: Emulator, kind: str, options: dict) -> None:
    m = mount(("gumloop",), timeout=2)
    m.expected_log.append("")
    target, blob = gumloop_file(emulator, m)
    target.stat()
    emulator.faults("storage").set(kind, count=2, **options)
    assert sha(target.read_bytes()) == blob.sha256()
    assert faults_seen(emulator, kind) >= 1


def test_signatures_expiring_early_mid_read_are_resolved_again(
        mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",), timeout=5)
    m.expected_log.append("")
    target, blob = gumloop_file(emulator, m, size=24 * MiB)
    with open(target, "rb") as f:
        first = f.read(2 * MiB)
        emulator.faults("storage").set("expire_signatures")
        rest = f.read()
    assert sha(first + rest) == blob.sha256()
    resolutions = [r for r in emulator.requests(origin="api") if "/download" in r["path"]]
    assert len(resolutions) >= 2


def test_storage_that_ignores_range_still_serves_exact_bytes(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",), timeout=5)
    target, blob = gumloop_file(emulator, m, size=12 * MiB)
    emulator.faults("storage").set("ignore_range")
    with open(target, "rb") as f:
        assert os.pread(f.fileno(), 4096, 9 * MiB) == blob.read(9 * MiB, 4096)
        assert sha(f.read()) == blob.sha256()
