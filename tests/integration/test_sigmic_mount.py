"""Sigmic end to end on a real mount: real tools against the emulator's bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from artifactfs.emulator import Emulator
from artifactfs.emulator.server import Reply, Request, json_reply
from tests.conftest import MountFactory, run, token_environ

TASK = "task_123"


def api_files(emu: Emulator, task: str = TASK) -> list[dict]:
    """The emulator's own answer to the listing call, as a client would get it."""
    resp = httpx.get(f"{emu.base_urls()['sigmic']}/api/v1/tasks/{task}/artifacts",
                     headers={"Authorization": f"Bearer {emu.tokens['sigmic']}"})
    resp.raise_for_status()
    return resp.json()["data"]["files"]


def origin_bytes(emu: Emulator, path: str, task: str = TASK) -> bytes:
    return emu.sigmic_file(task, path).read_all()


def api_tasks(emu: Emulator) -> list[str]:
    """Every task id the task list gives, all pages, as a client following the docs sees them."""
    ids: list[str] = []
    while True:
        resp = httpx.get(f"{emu.base_urls()['sigmic']}/api/v1/tasks", params={"limit": 100, "offset": len(ids)},
                         headers={"Authorization": f"Bearer {emu.tokens['sigmic']}"})
        resp.raise_for_status()
        body = resp.json()
        ids += [task["id"] for task in body["data"]]
        if not body["pagination"]["hasMore"]:
            return ids


def test_top_level_lists_every_configured_provider(mount: MountFactory) -> None:
    m = mount(("sigmic", "gumloop", "vm0", "plangrep"))
    assert sorted(os.listdir(m.path)) == ["gumloop", "plangrep", "sigmic", "vm0"]


def test_every_task_of_every_page_is_listed_without_ids(mount: MountFactory, emulator: Emulator) -> None:
    for n in range(230):
        emulator.put_sigmic_file(f"bulk-{n:03d}", "out.txt", f"{n}\n")
    m = mount(ids={"sigmic": ["task_configured_only"]})
    listed = os.listdir(m.path / "sigmic")
    expected = api_tasks(emulator)
    assert len(expected) > 200 and sorted(listed) == sorted([*expected, "task_configured_only"])
    assert (m.path / "sigmic" / "bulk-229" / "out.txt").read_bytes() == b"229\n"
    assert run("getfattr", "-n", "user.artifactfs.status", "--only-values", m.path / "sigmic" / TASK).stdout


def refuse_task_list(emu: Emulator) -> None:
    """A key that may not list tasks (the list answers 403); each task still opens by id."""
    def hook(req: Request) -> Reply | None:
        if req.path.endswith("/api/v1/tasks"):
            return json_reply(403, {"success": False, "error": {"code": "FORBIDDEN", "message": "no"}})
        return None
    emu.origins["api"].faults = hook


def test_ls_shows_sizes_and_mtimes_of_the_listing(mount: MountFactory, emulator: Emulator) -> None:
    m = mount()
    for item in api_files(emulator):
        st = os.stat(m.path / "sigmic" / TASK / item["path"])
        assert st.st_size == item["size"], item["path"]
        expected = datetime.fromisoformat(item["modifiedAt"].replace("Z", "+00:00")).timestamp()
        assert abs(st.st_mtime - expected) < 1e-3, item["path"]
    listing = run("ls", "-l", m.path / "sigmic" / TASK / "downloads").stdout
    assert "output.csv" in listing and "-r--------" in listing


def test_cp_r_and_sha256sum_match_the_origin(mount: MountFactory, emulator: Emulator, tmp_path: Path) -> None:
    m = mount()
    run("cp", "-r", m.path / "sigmic" / TASK, tmp_path / "copy")
    for item in api_files(emulator):
        copied = tmp_path / "copy" / item["path"]
        expected = hashlib.sha256(origin_bytes(emulator, item["path"])).hexdigest()
        assert run("sha256sum", copied).stdout.split()[0] == expected
        assert run("sha256sum", m.path / "sigmic" / TASK / item["path"]).stdout.split()[0] == expected


@pytest.mark.parametrize("offset,count", [(0, 1), (0, 4096), (1, 100), (1048575, 2), (1048576, 70000),
                                          (3_000_000, 1_500_000), (8 * 1048576 - 10, 100)])
def test_reads_at_any_offset_are_exact(mount: MountFactory, emulator: Emulator,
                                       offset: int, count: int) -> None:
    m = mount(ids={"sigmic": ["task_456"]})
    target = m.path / "sigmic" / "task_456" / "downloads" / "model.bin"
    blob = emulator.sigmic_file("task_456", "downloads/model.bin")
    expected = blob.read(offset, count)
    assert _tail_head(target, offset, count) == expected
    with open(target, "rb") as f:
        assert os.pread(f.fileno(), count, offset) == expected


def _tail_head(path: Path, offset: int, count: int) -> bytes:
    """``tail -c +N | head -c M``: the bytes real tools see at an offset."""
    out = subprocess.run(f'tail -c +{offset + 1} "{path}" | head -c {count}', shell=True,
                         capture_output=True, timeout=60, check=True)
    return out.stdout


def test_head_c_fetches_only_what_it_needs(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(ids={"sigmic": ["task_456"]})
    target = m.path / "sigmic" / "task_456" / "downloads" / "model.bin"
    assert target.stat().st_size == 8 << 20
    emulator.clear_requests()
    head = subprocess.run(["head", "-c", "4096", str(target)], capture_output=True, check=True, timeout=30)
    assert head.stdout == emulator.sigmic_file("task_456", "downloads/model.bin").read(0, 4096)
    served = sum(r["bytes_sent"] for r in emulator.requests(path_contains="/download"))
    assert 4096 <= served <= 2 << 20, served
    assert all("range" in r["headers"] for r in emulator.requests(path_contains="/download"))


def test_python_open_read(mount: MountFactory, emulator: Emulator) -> None:
    m = mount()
    for item in api_files(emulator):
        with open(m.path / "sigmic" / TASK / item["path"], "rb") as f:
            assert f.read() == origin_bytes(emulator, item["path"])


def test_getfattr_shows_provider_metadata(mount: MountFactory, emulator: Emulator) -> None:
    m = mount()
    item = next(i for i in api_files(emulator) if i["path"] == "downloads/report.pdf")
    out = run("getfattr", "-d", m.path / "sigmic" / TASK / "downloads" / "report.pdf").stdout
    assert f'user.mime_type="{item["mimeType"]}"' in out
    assert 'user.artifactfs.provider="sigmic"' in out
    assert 'user.artifactfs.id="downloads/report.pdf"' in out
    assert f'user.artifactfs.category="{item["category"]}"' in out
    assert emulator.tokens["sigmic"] not in out


@pytest.mark.parametrize("command", [
    ["touch", "{dir}/new.txt"], ["mkdir", "{dir}/newdir"], ["rm", "{file}"], ["mv", "{file}", "{dir}/x"],
    ["chmod", "777", "{file}"], ["truncate", "-s", "0", "{file}"], ["setfattr", "-n", "user.x", "-v", "1", "{file}"],
    ["touch", "{file}"], ["ln", "-s", "x", "{dir}/link"], ["rmdir", "{dir}"],
])
def test_every_write_is_erofs(mount: MountFactory, command: list[str]) -> None:
    m = mount()
    folder = m.path / "sigmic" / TASK / "downloads"
    os.listdir(folder)
    args = [a.format(dir=folder, file=folder / "output.csv") for a in command]
    result = run(*args, check=False)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr, result.stderr


def test_write_open_is_erofs_in_python(mount: MountFactory) -> None:
    m = mount()
    with pytest.raises(OSError) as info:
        open(m.path / "sigmic" / TASK / "downloads" / "output.csv", "ab")
    assert info.value.errno == 30


def test_changed_file_is_served_anew_after_the_ttl(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(listing_ttl=1)
    target = m.path / "sigmic" / TASK / "downloads" / "output.csv"
    old = target.read_bytes()
    assert old == origin_bytes(emulator, "downloads/output.csv")
    new = b"id,value\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(5000))
    emulator.put_sigmic_file(TASK, "downloads/output.csv", new)
    assert target.read_bytes() == old  # within the TTL the last listing is trusted
    time.sleep(1.3)
    assert target.stat().st_size == len(new)
    assert target.read_bytes() == new
    assert run("cat", target).stdout.encode() == new


def test_unconfigured_task_opens_on_lookup_and_stays(mount: MountFactory, emulator: Emulator) -> None:
    refuse_task_list(emulator)
    m = mount(ids={"sigmic": [TASK]})
    m.expect_log(r"sigmic: cannot list tasks .*showing configured and opened tasks only")
    assert os.listdir(m.path / "sigmic") == [TASK]
    assert "downloads" in os.listdir(m.path / "sigmic" / "task_456")
    assert sorted(os.listdir(m.path / "sigmic")) == [TASK, "task_456"]


def test_unknown_task_is_enoent_and_bad_token_is_eacces(mount: MountFactory, emulator: Emulator) -> None:
    m = mount()
    result = run("ls", m.path / "sigmic" / "no_such_task", check=False)
    assert result.returncode != 0 and "No such file or directory" in result.stderr
    env = token_environ(emulator)
    env["TEST_SIGMIC_TOKEN"] = "wrong-token"
    bad = mount(env=env)
    bad.expect_log(r"WARNING artifactfs.core: lookup: sigmic: GET /sigmic/api/v1/tasks: HTTP 401")
    result = run("ls", bad.path / "sigmic" / TASK, check=False)
    assert result.returncode != 0 and "Permission denied" in result.stderr
    assert "wrong-token" not in bad.log_text()
