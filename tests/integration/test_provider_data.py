"""What a provider says cannot hurt the mount (CONTRACT §3), on real mounts: long equal names,
looping cursors, repeated ids, absurd sizes, deep paths, lone surrogates, odd Retry-After values,
names that are not UTF-8."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Callable

import pytest

from artifactfs.emulator import Emulator
from artifactfs.emulator.server import Reply, Request, json_reply
from tests.conftest import MountFactory, run

AGENT = "abc123DEFghiJKL"
CJK = "報告書の最終版" * 13 + ".pdf"  # 91 characters, 277 bytes


def timed_listdir(path: Path, limit: float = 10.0) -> list[str]:
    started = time.monotonic()
    names = os.listdir(path)
    assert time.monotonic() - started < limit
    return names


def test_two_artifacts_with_one_long_name_both_show(mount: MountFactory, emulator: Emulator) -> None:
    emulator.put_gumloop_artifact(AGENT, CJK, "older\n", created_at="2026-05-20T00:00:00Z")
    emulator.put_gumloop_artifact(AGENT, CJK, "newer\n", created_at="2026-05-21T00:00:00Z")
    m = mount(("gumloop",))
    latest = m.path / "gumloop" / AGENT / "latest"
    long_names = [n for n in timed_listdir(latest) if n.startswith("報告書")]
    assert len(long_names) == 2 and all(len(n.encode()) <= 255 and n.endswith(".pdf") for n in long_names)
    assert sorted((latest / n).read_bytes() for n in long_names) == [b"newer\n", b"older\n"]


def vm0_pages(emu: Emulator, page: Callable[[str | None], dict]) -> None:
    """The artifact list answered by ``page(cursor)`` (a dict), everything else as usual."""
    def hook(req: Request) -> Reply | None:
        if req.path.endswith("/vm0/v1/artifacts"):
            return json_reply(200, page(req.params.get("cursor")))
        return None
    emu.origins["api"].faults = hook


def artifact(n: int | str) -> dict:
    return {"id": f"art_{n}", "name": f"name-{n}", "currentVersionId": None, "size": 1, "fileCount": 1,
            "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"}


def test_a_repeated_cursor_ends_the_vm0_listing(mount: MountFactory, emulator: Emulator) -> None:
    vm0_pages(emulator, lambda cursor: {"data": [artifact(cursor or "first")],
                                        "pagination": {"hasMore": True, "nextCursor": "again"}})
    m = mount(("vm0",))
    m.expect_log(r"WARNING artifactfs.providers: vm0: /artifacts: the API repeated a page; the listing ends there")
    assert sorted(timed_listdir(m.path / "vm0")) == ["name-again", "name-first"]


def test_one_id_repeated_on_every_page_is_shown_once_promptly(mount: MountFactory, emulator: Emulator) -> None:
    vm0_pages(emulator, lambda cursor: {"data": [artifact("same")] * 100,
                                        "pagination": {"hasMore": True, "nextCursor": f"c{int((cursor or 'c0')[1:]) + 1}"}})
    m = mount(("vm0",))
    m.expect_log(r"vm0: /artifacts: the API repeated a page; the listing ends there")
    assert timed_listdir(m.path / "vm0", 5) == ["name-same"]
    assert len(emulator.requests(path_contains="/vm0/v1/artifacts")) <= 3


HOSTILE = [
    {"name": "deep.txt", "path": "/".join(["d"] * 1000) + "/deep.txt", "size": 4},
    {"name": "huge.bin", "path": "odd/huge.bin", "size": 2 ** 63},
    {"name": "super.bin", "path": "odd/super.bin", "size": "²"},
    {"name": "digits.bin", "path": "odd/digits.bin", "size": "9" * 5000},
    {"name": "lone\ud800.txt", "path": "odd/lone\ud800.txt", "size": 5},
    {"name": "good.csv", "path": "downloads/good.csv", "size": 6, "modifiedAt": "2026-01-26T16:00:00.000Z"},
]


def test_odd_entries_never_hide_the_others(mount: MountFactory, emulator: Emulator) -> None:
    for item in HOSTILE:
        emulator.put_sigmic_file("task_odd", item["path"].replace("\ud800", "_"), "x" * 6)

    def hook(req: Request) -> Reply | None:
        if req.path.endswith("/tasks/task_odd/artifacts"):
            body = json.dumps({"success": True, "data": {"files": HOSTILE}}).encode()  # \ud800 as a JSON escape
            return Reply(200, body, {"Content-Type": "application/json"})
        return None

    emulator.origins["api"].faults = hook
    m = mount(ids={"sigmic": ["task_odd"]})
    task = m.path / "sigmic" / "task_odd"
    assert sorted(timed_listdir(task / "odd")) == sorted(["huge.bin", "super.bin", "digits.bin", "lone\ufffd.txt"])
    assert (task / "downloads" / "good.csv").read_bytes() == b"x" * 6
    assert all((task / "odd" / name).stat().st_size == 0 for name in ("huge.bin", "super.bin", "digits.bin"))
    assert (task / "odd" / "huge.bin").read_bytes() == b"x" * 6  # unknown size: still read whole
    deep = task.joinpath(*(["d"] * 1000), "deep.txt")
    assert len(str(deep)) > 2000 and run("find", task, "-name", "deep.txt").stdout.strip().endswith("deep.txt")


def test_an_unusable_retry_after_is_backoff_not_a_crash(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=3)
    emulator.faults("api").set("throttle", retry_after="nan", count=1, path_contains="/tasks/task_123/")
    assert "downloads" in timed_listdir(m.path / "sigmic" / "task_123")


@pytest.mark.parametrize("where", ["gumloop", f"gumloop/{AGENT}/search", "sigmic", "vm0"])
def test_a_name_that_is_not_utf8_is_no_such_file(mount: MountFactory, where: str) -> None:
    m = mount(("gumloop", "sigmic", "vm0"))
    with pytest.raises(OSError) as info:
        os.stat(os.fsencode(m.path / where) + b"/\xff\xfename")
    assert info.value.errno == errno.ENOENT
    assert "Traceback" not in m.log_text()
