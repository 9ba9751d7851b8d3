"""Plangrep end to end on a real mount: job states, unsized chunked artifacts, immutability."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from artifactfs.emulator import Emulator
from artifactfs.emulator.blobs import PatternBlob
from artifactfs.emulator.server import Reply, Request, json_reply
from tests.conftest import MountFactory, run

DONE = "job_01abc123"
RUNNING = "job_02running"
FAILED = "job_03failed"
PARTIAL = "job_04partial"
BIG = "job_big"
MIB = 1 << 20


def put_big_job(emu: Emulator) -> dict[str, bytes]:
    """A completed job whose files have no size until read: one per tool, so each reads cold."""
    files = {f"out/{tool}.bin": PatternBlob(6 * MIB + 1234 * i, seed=i).read_all()
             for i, tool in enumerate(("cat", "cp", "wc", "python"))}
    files["out/notes/empty.txt"] = b""
    emu.put_plangrep_job(BIG, "completed", files)
    return files


def artifact_requests(emu: Emulator, job: str) -> list[dict]:
    return emu.requests(path_contains=f"/jobs/{job}/artifact")


def job_requests(emu: Emulator, job: str) -> list[dict]:
    return [r for r in emu.requests(path_contains=f"/jobs/{job}")
            if not r["path"].endswith(("/artifact", "/result"))]


def api(emu: Emulator, path: str) -> dict:
    resp = httpx.get(f"{emu.base_urls()['plangrep']}{path}", headers={"Authorization": f"Bearer {emu.tokens['plangrep']}"})
    resp.raise_for_status()
    return resp.json()


def api_jobs(emu: Emulator) -> list[str]:
    """Every job of every project, as the documented endpoints give them."""
    return [job["id"] for project in api(emu, "/projects")["projects"]
            for job in api(emu, f"/projects/{project['id']}/jobs")["jobs"]]


def linked_paths(result: object) -> set[str]:
    """The path of every artifact link anywhere in a result document (or the link's url query)."""
    found: set[str] = set()
    stack = [result]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for link in node.get("artifacts") or []:
                found.add(link.get("path") or parse_qs(urlsplit(link["url"]).query)["path"][0])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def status_of(path: Path) -> str:
    return run("getfattr", "-n", "user.artifactfs.status", "--only-values", path).stdout


def test_every_job_of_every_project_is_listed_without_ids(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("plangrep",), ids={"plangrep": ["job_configured_only"]})
    expected = api_jobs(emulator)
    assert len(expected) >= 8
    assert sorted(os.listdir(m.path / "plangrep")) == sorted(expected)  # an unknown configured id is no job


def test_a_finished_job_shows_its_result_and_every_linked_artifact(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("plangrep",))
    for job in (DONE, PARTIAL):
        folder = m.path / "plangrep" / job
        raw = emulator.plangrep_result(job)
        assert (folder / "result.json").read_bytes() == raw
        paths = linked_paths(json.loads(raw))
        assert len(paths) >= 2
        shown = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert shown == paths | {"result.json"}
        for path in paths:
            assert (folder / path).read_bytes() == emulator.plangrep_file(job, path).read_all(), path
        assert status_of(folder) == ("completed" if job == DONE else "completed_with_errors")
    attrs = run("getfattr", "-d", m.path / "plangrep" / DONE / "results" / DONE / "summary.md").stdout
    assert 'user.artifactfs.provider="plangrep"' in attrs and f'user.artifactfs.job_id="{DONE}"' in attrs
    assert emulator.tokens["plangrep"] not in attrs


def test_the_seed_shape_of_a_result_works_too(mount: MountFactory, emulator: Emulator) -> None:
    emulator.put_plangrep_job("job_seed", "completed", {"results/job_seed/out.json": "{}\n"}, result_shape="seed")
    m = mount(("plangrep",))
    folder = m.path / "plangrep" / "job_seed"
    assert (folder / "results" / "job_seed" / "out.json").read_bytes() == b"{}\n"
    assert (folder / "result.json").read_bytes() == emulator.plangrep_result("job_seed")


@pytest.mark.parametrize("job,status,error", [(FAILED, "failed", "Input document could not be parsed"),
                                              ("job_05cancelled", "cancelled", None),
                                              ("job_06expired", "expired", "")])
def test_jobs_ended_without_a_result_are_empty_with_status_and_error(
        mount: MountFactory, emulator: Emulator, job: str, status: str, error: str | None) -> None:
    m = mount(("plangrep",))
    folder = m.path / "plangrep" / job
    assert os.listdir(folder) == []
    attrs = run("getfattr", "-d", folder).stdout
    assert f'user.artifactfs.status="{status}"' in attrs
    assert ("user.artifactfs.error=" in attrs) == (error is not None)
    if error:
        assert f'user.artifactfs.error="{error}"' in attrs
    assert emulator.requests(path_contains=f"/jobs/{job}/result") == []


def test_unsized_chunked_artifacts_read_exactly_with_every_tool(mount: MountFactory, emulator: Emulator,
                                                                 tmp_path: Path) -> None:
    files = put_big_job(emulator)
    m = mount(("plangrep",), ids={"plangrep": [BIG]})
    out = m.path / "plangrep" / BIG / "out"
    assert (out / "cat.bin").stat().st_size == 0  # unknown until read
    cat = subprocess.run(["cat", out / "cat.bin"], capture_output=True, check=True, timeout=60)
    assert cat.stdout == files["out/cat.bin"]
    run("cp", out / "cp.bin", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == files["out/cp.bin"]
    assert run("wc", "-c", out / "wc.bin").stdout.split()[0] == str(len(files["out/wc.bin"]))
    with open(out / "python.bin", "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(files["out/python.bin"]).digest()
    assert (out / "notes" / "empty.txt").read_bytes() == b""
    for path, data in files.items():
        assert (m.path / "plangrep" / BIG / path).stat().st_size == len(data), path


def test_a_range_ignoring_server_sends_a_file_about_once(mount: MountFactory, emulator: Emulator) -> None:
    """Readahead must not ask a server that ignores Range for the whole body again and again."""
    blob = PatternBlob(24 * MIB, seed=24)
    emulator.put_plangrep_job(BIG, "completed", {"big.bin": blob})
    m = mount(("plangrep",), ids={"plangrep": [BIG]})
    cat = subprocess.run(["cat", m.path / "plangrep" / BIG / "big.bin"], capture_output=True, check=True, timeout=60)
    assert hashlib.sha256(cat.stdout).hexdigest() == blob.sha256()
    served = sum(r["bytes_sent"] for r in artifact_requests(emulator, BIG))
    assert served <= 1.5 * blob.size, f"{served / blob.size:.1f}x the file"


def test_running_job_fills_in_once_completed(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("plangrep",), listing_ttl=1)
    folder = m.path / "plangrep" / RUNNING
    assert os.listdir(folder) == []
    assert status_of(folder) == "processing"
    emulator.complete_plangrep_job(RUNNING)
    assert os.listdir(folder) == []  # the listing is trusted for its TTL
    time.sleep(1.2)
    assert "result.json" in os.listdir(folder)
    assert status_of(folder) == "completed"
    paths = linked_paths(json.loads(emulator.plangrep_result(RUNNING)))
    assert all((folder / path).read_bytes() == emulator.plangrep_file(RUNNING, path).read_all() for path in paths)


def test_a_finished_job_is_never_asked_again(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("plangrep",), ids={"plangrep": [DONE, FAILED, RUNNING]}, listing_ttl=1)
    root = m.path / "plangrep"
    summary = root / DONE / "results" / DONE / "summary.md"
    summary.read_bytes()
    os.listdir(root / FAILED)
    emulator.clear_requests()
    for _ in range(2):
        time.sleep(1.1)
        assert DONE in os.listdir(root)
        assert summary.stat().st_size == emulator.plangrep_file(DONE, f"results/{DONE}/summary.md").size
        os.listdir(root / DONE / "results")
        os.listdir(root / FAILED)
        os.listdir(root / RUNNING)
    assert job_requests(emulator, DONE) == [] and job_requests(emulator, FAILED) == []
    assert len(emulator.requests(path_contains="/projects/")) >= 2  # the project lists are asked again


def test_with_no_project_list_configured_jobs_show_and_any_job_opens(mount: MountFactory, emulator: Emulator) -> None:
    def hook(req: Request) -> Reply | None:
        if req.path.endswith("/projects"):
            return json_reply(403, {"error": {"code": "insufficient_scope", "message": "no"}})
        return None

    emulator.origins["api"].faults = hook
    m = mount(("plangrep",), ids={"plangrep": [RUNNING]})
    m.expect_log(r"plangrep: cannot list projects .*showing configured and opened jobs only")
    root = m.path / "plangrep"
    assert os.listdir(root) == [RUNNING]
    with pytest.raises(FileNotFoundError):
        os.listdir(root / "job_nope")
    assert "result.json" in os.listdir(root / DONE)
    assert sorted(os.listdir(root)) == sorted([RUNNING, DONE])
