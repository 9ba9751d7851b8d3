"""Hostile names and JSON from a provider: a working tree, never a crash."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from artifactfs.emulator import Emulator
from artifactfs.emulator.server import Reply, Request
from tests.conftest import MountFactory, run

HOSTILE_FILES: list = [
    {"path": "../../etc/passwd", "size": 5, "modifiedAt": "2026-01-01T00:00:00Z"},
    {"path": "/abs/olute.txt", "size": 1},
    {"path": "a//b/./c/../d.txt", "size": 2},
    {"path": "nul\x00byte.txt", "size": 3},
    {"path": "ctrl\x01\x1f\x7f.txt", "size": 3},
    {"path": "", "name": "", "size": 1},
    {"path": ".", "size": 1},
    {"path": "..", "size": 1},
    {"path": "dup.txt", "size": 1, "modifiedAt": "2026-01-01T00:00:00Z"},
    {"path": "dup.txt", "size": 2, "modifiedAt": "2026-02-01T00:00:00Z"},
    {"path": "same\x01name.txt", "size": 5, "modifiedAt": "2026-01-01T00:00:00Z"},
    {"path": "same\x02name.txt", "size": 6, "modifiedAt": "2026-02-01T00:00:00Z"},
    {"path": "/".join(f"d{i}" for i in range(200)) + "/deep.txt", "size": 4},
    {"path": "x" * 1000, "size": 1},
    {"path": "wrong-types.txt", "size": "many", "modifiedAt": 12, "mimeType": ["a"], "category": {}},
    {"path": 12345, "size": -3},
    {"path": None, "name": None},
    {},
    None,
    "a string",
    ["a", "list"],
    {"path": "no-size.txt"},
    {"path": "unicode/файл-📄.txt", "size": 7},
]


def hostile_listing(body: object, task: str = "hostile"):  # type: ignore[no-untyped-def]
    """A fault hook that answers the listing of ``task`` with ``body``."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    def hook(request: Request) -> Reply | None:
        if request.path.endswith(f"/tasks/{task}/artifacts"):
            return Reply(200, raw, {"Content-Type": "application/json"})
        return None
    return hook


def walk(root: Path) -> list[str]:
    out = run("find", root).stdout.splitlines()
    return [line[len(str(root)):] for line in out]


def test_hostile_paths_and_wrong_types_give_a_safe_tree(mount: MountFactory, emulator: Emulator) -> None:
    many = [{"path": f"many/f{i:05d}.txt", "size": i, "modifiedAt": "2026-01-01T00:00:00Z"} for i in range(10_000)]
    emulator.origins["api"].faults = hostile_listing({"success": True, "data": {"files": HOSTILE_FILES + many}})
    m = mount(ids={"sigmic": ["hostile"]})
    root = m.path / "sigmic" / "hostile"
    names = walk(root)
    assert len(os.listdir(root / "many")) == 10_000
    assert not any(part in ("", ".", "..") for name in names for part in name.split("/")[1:])
    assert all("\x00" not in n and not any(ord(c) < 32 for c in n) for n in names)
    assert "/etc/passwd" in names  # ../../ dropped, still inside the task
    # One path listed twice is one file, shown once (CONTRACT §3: duplicate ids are shown once).
    assert [n for n in names if n.startswith("/dup")] == ["/dup.txt"]
    assert os.stat(root / "dup.txt").st_size in (1, 2)
    # Two files whose names clean to the same one: the newest keeps it, the other gets ~<id>.
    assert sorted(n for n in names if n.startswith("/same")) == ["/same_name.txt", "/same_name~same_name.txt.txt"]
    assert os.stat(root / "same_name.txt").st_size == 6
    assert os.stat(root / "same_name~same_name.txt.txt").st_size == 5
    deep = root / "/".join(f"d{i}" for i in range(200)) / "deep.txt"
    assert os.stat(deep).st_size == 4
    assert os.stat(root / "wrong-types.txt").st_size == 0
    assert "файл-📄.txt" in os.listdir(root / "unicode")
    assert m.proc.poll() is None


def test_bodies_that_are_not_listings_leave_the_mount_working(mount: MountFactory, emulator: Emulator) -> None:
    for body in (b"<html>not json</html>", b"[1, 2, 3]", {"success": True, "data": None},
                 {"success": True, "data": {"files": {"not": "a list"}}}, {"success": False},
                 b"\xff\xfe\x00garbage", b"{" * 10_000):
        m = mount(ids={"sigmic": ["hostile", "task_123"]})  # a fresh mount: no listing to fall back on
        emulator.origins["api"].faults = hostile_listing(body)
        # Not a listing: EIO, and one line that says which task and why.
        m.expect_log(r" ERROR artifactfs\.core: opendir: sigmic: .*\bhostile\b", 1)
        result = subprocess.run(["ls", str(m.path / "sigmic" / "hostile")], capture_output=True, text=True,
                                check=False)
        assert result.returncode != 0 and "Input/output error" in result.stderr, (body, result.stderr)
        assert m.proc.poll() is None
        assert "downloads" in os.listdir(m.path / "sigmic" / "task_123")
        m.stop()


def test_a_gumloop_page_far_larger_than_asked_works(mount: MountFactory, emulator: Emulator) -> None:
    artifacts: list[Any] = [{"id": f"art_{i}", "version_id": f"ver_{i}", "filename": f"f{i}.txt",
                  "created_at": "2026-05-15T14:32:00Z", "metadata": {"size": i}} for i in range(10_000)]
    artifacts += [{"id": None}, {"id": 7, "filename": 8}, {"filename": "no-id"}, None, {"id": "art_x", "metadata": "junk"}]

    def hook(request: Request) -> Reply | None:
        if request.path.endswith("/agents/hugeagent/artifacts"):
            return Reply(200, json.dumps({"artifacts": artifacts, "next_cursor": None}).encode(),
                         {"Content-Type": "application/json"})
        return None

    emulator.origins["api"].faults = hook
    m = mount(("gumloop",), ids={"gumloop": ["hugeagent"]})
    latest = os.listdir(m.path / "gumloop" / "hugeagent" / "latest")
    assert len(latest) >= 10_000 and "f9999.txt" in latest
