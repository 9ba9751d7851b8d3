"""Plangrep end to end on a real mount: job states, unsized chunked artifacts, immutability."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from artifactfs.emulator import Emulator
from artifactfs.emulator.blobs import PatternBlob
from tests.conftest import MountFactory, run

DONE = "job_01abc123"
RUNNING = "job_02running"
FAILED = "job_03failed"
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
    return [r for r in emu.requests(path_contains=f"/jobs/{job}") if not r["path"].endswith("/artifact")]


def test_completed_job_shows_its_result_paths(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("plangrep",), ids={"plangrep": [DONE, RUNNING, FAILED]})
    root = m.path / "plangrep"
    assert sorted(os.listdir(root)) == [DONE, RUNNING, FAILED]
    folder = root / DONE / "results" / DONE
    assert sorted(os.listdir(folder)) == ["normalized-output.json", "summary.md"]
    for name in os.listdir(folder):
        expected = emulator.plangrep_file(DONE, f"results/{DONE}/{name}").read_all()
        assert (folder / name).read_bytes() == expected
    attrs = run("getfattr", "-d", folder / "summary.md").stdout
    assert 'user.artifactfs.provider="plangrep"' in attrs and f'user.artifactfs.job_id="{DONE}"' in attrs
    assert emulator.tokens["plangrep"] not in attrs


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
    m = mount(("plangrep",), ids={"plangrep": [RUNNING]}, listing_ttl=1)
    folder = m.path / "plangrep" / RUNNING
    assert os.listdir(folder) == []
    assert run("getfattr", "-n", "user.artifactfs.status", "--only-values", folder).stdout == "running"
    emulator.set_plangrep_status(RUNNING, "completed", {"report/final.txt": "all done\n"})
    assert os.listdir(folder) == []  # the listing is trusted for its TTL
    time.sleep(1.2)
    assert os.listdir(folder) == ["report"]
    assert (folder / "report" / "final.txt").read_bytes() == b"all done\n"
    assert run("getfattr", "-n", "user.artifactfs.status", "--only-values", folder).stdout == "completed"


def test_a_finished_job_is_never_asked_again(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("plangrep",), ids={"plangrep": [DONE, FAILED, RUNNING]}, listing_ttl=1)
    root = m.path / "plangrep"
    summary = root / DONE / "results" / DONE / "summary.md"
    summary.read_bytes()
    os.listdir(root / FAILED)
    emulator.clear_requests()
    for _ in range(2):
        time.sleep(1.1)
        assert sorted(os.listdir(root)) == [DONE, RUNNING, FAILED]
        assert summary.stat().st_size == emulator.plangrep_file(DONE, f"results/{DONE}/summary.md").size
        os.listdir(root / DONE / "results")
        os.listdir(root / FAILED)
        os.listdir(root / RUNNING)
    assert job_requests(emulator, DONE) == [] and job_requests(emulator, FAILED) == []
    assert len(job_requests(emulator, RUNNING)) >= 2


def test_failed_job_is_empty_with_its_error(mount: MountFactory) -> None:
    m = mount(("plangrep",), ids={"plangrep": [FAILED]})
    folder = m.path / "plangrep" / FAILED
    assert os.listdir(folder) == []
    attrs = run("getfattr", "-d", folder).stdout
    assert 'user.artifactfs.status="failed"' in attrs
    assert 'user.artifactfs.error="Input document could not be parsed"' in attrs


def test_any_job_opens_on_lookup_and_unknown_ones_are_enoent(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("plangrep",), ids={"plangrep": []})
    root = m.path / "plangrep"
    assert os.listdir(root) == []
    with pytest.raises(FileNotFoundError):
        os.listdir(root / "job_nope")
    assert os.listdir(root / DONE) == ["results"]
    assert os.listdir(root) == [DONE]
