"""``artifactfs://`` through fsspec's own API, pandas and pyarrow, against the emulator over real HTTP;
compared with a real mount of the same config, and sharing its disk cache."""

from __future__ import annotations

import errno
import io
import os
import pickle
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.callbacks import Callback

from artifactfs.emulator import Emulator, PatternBlob
from artifactfs.engine import BLOCK_SIZE
from artifactfs.fsspec_fs import ArtifactFileSystem
from artifactfs.runtime import shutdown
from tests.conftest import MountFactory, config_text, run, token_environ

TASK = "task_123"
CSV = f"sigmic/{TASK}/downloads/output.csv"
MODEL = "sigmic/task_456/downloads/model.bin"
PROVIDERS = ("sigmic", "gumloop", "vm0", "plangrep")
OUR_THREADS = ("artifactfs-trio", "cache-writer")
MIB = 1 << 20


def our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in OUR_THREADS]


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After each test the front end stops as at exit: none of its threads may outlive that."""
    yield
    shutdown()
    ArtifactFileSystem.clear_instance_cache()
    assert our_threads() == [], "a thread of the fsspec front end outlived shutdown()"


def use_tokens(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's credentials in this process's environment, where test configs name them."""
    for name, value in token_environ(emu).items():
        if name.startswith("TEST_"):
            monkeypatch.setenv(name, value)


@pytest.fixture
def config(tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config of every provider of the emulator, with the mounts' cache dir (``tmp_path/cache``)."""
    path = tmp_path / "fsspec.toml"
    path.write_text(config_text(emulator, PROVIDERS, listing_ttl=60, cache_dir=tmp_path / "cache"))
    use_tokens(emulator, monkeypatch)
    return path


@pytest.fixture
def fs(config: Path) -> ArtifactFileSystem:
    return fsspec.filesystem("artifactfs", config=str(config))


def sigmic_bytes(emu: Emulator, path: str) -> bytes:
    """The origin's bytes of ``sigmic/<task>/<path>``."""
    _, task, rest = path.split("/", 2)
    return emu.sigmic_file(task, rest).read_all()


# ---- the tree -------------------------------------------------------------------------------------


def mount_entry(path: Path) -> dict[str, Any]:
    """What the mount shows of ``path`` in fsspec's terms (links followed, as ``stat`` does)."""
    st = os.stat(path)
    xattrs = {name.removeprefix("user.artifactfs.").removeprefix("user."): os.getxattr(path, name).decode()
              for name in os.listxattr(path)}
    return {"type": "directory" if stat.S_ISDIR(st.st_mode) else "file", "size": st.st_size,
            "mtime": st.st_mtime, "metadata": xattrs}


def test_ls_equals_what_a_mount_of_the_same_config_lists(mount: MountFactory, emulator: Emulator,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    m = mount(PROVIDERS)
    use_tokens(emulator, monkeypatch)
    started = time.time()  # directories without a provider time show their core's start
    afs = ArtifactFileSystem(config=m.config_file)
    compared = 0
    for root, _, _ in os.walk(m.path):
        relative = Path(root).relative_to(m.path).as_posix().removeprefix(".")
        listed = {Path(item["name"]).name: item for item in afs.ls(relative)}
        assert sorted(listed) == sorted(os.listdir(root)), relative
        for name, item in listed.items():
            expected = mount_entry(Path(root) / name)
            assert item["name"] == (f"{relative}/{name}" if relative else name)
            assert {k: item[k] for k in ("type", "size", "metadata")} == \
                {k: expected[k] for k in ("type", "size", "metadata")}, item["name"]
            assert abs(item["mtime"] - expected["mtime"]) < 1e-3 or item["mtime"] >= started, item["name"]
            assert afs.info(item["name"]) == item
            compared += 1
    assert compared > 50


def test_info_carries_the_listing_and_the_provider_metadata(fs: ArtifactFileSystem, emulator: Emulator) -> None:
    info = fs.info(f"artifactfs://{CSV}")
    assert info["name"] == CSV and info["type"] == "file"
    assert info["size"] == len(sigmic_bytes(emulator, CSV))
    assert info["mtime"] == pd.Timestamp("2026-01-26T16:00:00Z").timestamp()
    assert fs.modified(CSV) == pd.Timestamp("2026-01-26T16:00:00Z").to_pydatetime()
    assert {k: info[k] for k in ("provider", "id", "task_id", "mime_type", "category")} == {
        "provider": "sigmic", "id": "downloads/output.csv", "task_id": TASK, "mime_type": "text/csv",
        "category": "csv"}
    assert info["metadata"]["provider"] == "sigmic"
    assert fs.info(f"/{CSV}/") == info
    assert fs.isfile(CSV) and not fs.isdir(CSV) and fs.isdir(f"sigmic/{TASK}") and fs.isdir("")
    assert fs.ls(CSV) == [info]
    assert fs.ls("", detail=False) == sorted(PROVIDERS)
    assert emulator.tokens["sigmic"] not in repr(info)


def test_vm0_current_is_followed(fs: ArtifactFileSystem, emulator: Emulator) -> None:
    artifact = emulator.vm0_artifact_id("output-results")
    last = emulator.vm0_versions(artifact)[-1]
    current = fs.info("vm0/output-results/current")
    assert current["type"] == "directory" and current["islink"] and current["destination"] == f"versions/{last}"
    assert current["version_id"] == last
    inside = [Path(p).name for p in fs.ls("vm0/output-results/current", detail=False)]
    assert inside == [Path(p).name for p in fs.ls(f"vm0/output-results/versions/{last}", detail=False)]
    assert fs.cat_file("vm0/output-results/current/README.md") == \
        emulator.vm0_file(artifact, last, "README.md").read_all()
    found = fs.find("vm0/output-results/current")
    assert "vm0/output-results/current/results/summary.json" in found
    assert fs.glob("vm0/output-results/current/results/*.json") == ["vm0/output-results/current/results/summary.json"]


# ---- bytes ----------------------------------------------------------------------------------------


def test_whole_files_are_byte_exact(fs: ArtifactFileSystem, emulator: Emulator) -> None:
    files = fs.find(f"sigmic/{TASK}")
    assert CSV in files and len(files) >= 4
    for path in files:
        expected = sigmic_bytes(emulator, path)
        assert fs.cat_file(path) == expected, path
        with fs.open(path, "rb") as f:
            assert f.read() == expected, path
    with fs.open(CSV, "r") as text:
        assert text.readline() == sigmic_bytes(emulator, CSV).decode().splitlines(keepends=True)[0]


@pytest.mark.parametrize("start,end", [(0, 1), (0, 4096), (1, 101), (MIB - 1, MIB + 1), (MIB, MIB + 70000),
                                       (3_000_000, 4_500_000), (8 * MIB - 10, None), (-100, None), (-300, -200),
                                       (None, 10), (8 * MIB, None), (5, 5)])
def test_ranges_are_byte_exact(fs: ArtifactFileSystem, emulator: Emulator, start: int | None,
                               end: int | None) -> None:
    blob = emulator.sigmic_file("task_456", "downloads/model.bin").read_all()
    assert fs.cat_file(MODEL, start, end) == blob[start:end]


def test_open_seek_read(fs: ArtifactFileSystem, emulator: Emulator) -> None:
    blob = emulator.sigmic_file("task_456", "downloads/model.bin")
    with fs.open(f"artifactfs://{MODEL}", "rb") as f:
        assert f.size == blob.size and f.seekable()
        f.seek(MIB)
        assert f.read(4096) == blob.read(MIB, 4096)
        f.seek(-8, os.SEEK_END)
        assert f.read() == blob.read(blob.size - 8, 8)
        f.seek(10)
        assert f.read(5) == blob.read(10, 5) and f.tell() == 15
        assert f.read(0) == b""
    emulator.clear_requests()
    with fs.open(MODEL, "rb") as f:
        f.read(4096)
    served = sum(r["bytes_sent"] for r in emulator.requests(path_contains="/download"))
    assert served == 0  # already in the engine's memory, and on disk


def test_large_reads_pass_the_file_buffer_and_mix_with_small_ones(fs: ArtifactFileSystem, emulator: Emulator) -> None:
    """Reads of a block or more come straight from the core (``read``, ``readinto``); small
    ones through fsspec's buffer; both keep the position and the bytes exact."""
    blob = emulator.sigmic_file("task_456", "downloads/model.bin")
    buffer = bytearray(MIB + 3)
    with fs.open(MODEL, "rb", block_size=MIB) as f:
        assert f.read(10) == blob.read(0, 10)
        assert f.readinto(buffer) == len(buffer) and bytes(buffer) == blob.read(10, len(buffer))
        assert f.tell() == 10 + len(buffer)
        assert f.read(7) == blob.read(f.tell() - 7, 7)
        at = f.tell()
        assert f.read(2 * MIB) == blob.read(at, 2 * MIB) and f.tell() == at + 2 * MIB
        f.seek(-MIB - 2, os.SEEK_END)  # the file ends before the buffer does
        assert f.readinto(buffer) == MIB + 2 and bytes(buffer[:MIB + 2]) == blob.read(blob.size - MIB - 2, MIB + 2)
        assert f.readinto(buffer) == 0 and f.read() == b""
        f.seek(3)
        assert f.read() == blob.read(3, blob.size - 3)
    with pytest.raises(ValueError):
        f.readinto(buffer)


def test_a_small_range_asks_exactly_its_bytes_then_its_block(fs: ArtifactFileSystem, emulator: Emulator) -> None:
    """The first two small ranges read in a block cost their bytes; the block's third read
    fetches the block, and the fourth is served from memory."""
    blob = emulator.sigmic_file("task_456", "downloads/model.bin")
    at = 5 * MIB + 7
    emulator.clear_requests()
    for offset in (at, at + 1000, at + 2000, at + 3000):
        assert fs.cat_file(MODEL, offset, offset + 100) == blob.read(offset, 100)
    ranges = [r["headers"]["range"] for r in emulator.requests(path_contains="/download") if "range" in r["headers"]]
    block = at // BLOCK_SIZE * BLOCK_SIZE
    assert ranges == [f"bytes={at}-{at + 99}", f"bytes={at + 1000}-{at + 1099}",
                      f"bytes={block}-{block + BLOCK_SIZE - 1}"]


def test_unsized_chunked_files_read_exactly(fs: ArtifactFileSystem, emulator: Emulator) -> None:
    data = PatternBlob(3 * MIB + 77, seed=5).read_all()
    files = {"out/a.bin": data, "out/b.bin": data, "out/c.bin": data, "out/empty.txt": b""}
    emulator.put_plangrep_job("job_big", "completed", files)
    folder = "plangrep/job_big/out"
    assert fs.info(f"{folder}/a.bin")["size"] == 0  # unknown until read, as on the mount
    assert fs.cat_file(f"{folder}/a.bin") == data
    assert fs.cat_file(f"{folder}/c.bin", -1000) == data[-1000:]
    with fs.open(f"{folder}/b.bin", "rb") as f:
        assert f.size == len(data)
        f.seek(-1000, os.SEEK_END)
        assert f.read() == data[-1000:]
    assert fs.cat_file(f"{folder}/empty.txt") == b""


def test_a_connection_cut_mid_read_is_retried(fs: ArtifactFileSystem, emulator: Emulator) -> None:
    blob = emulator.sigmic_file("task_456", "downloads/model.bin")
    emulator.faults("api").set("cut", count=1, after=300_000, path_contains="/download")
    with fs.open(MODEL, "rb") as f:
        assert f.read() == blob.read_all()
    assert len([r for r in emulator.requests() if r["fault"] == "cut"]) == 1


# ---- errors and writes ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["sigmic/no_such_task", f"sigmic/{TASK}/downloads/nope.csv", "nope",
                                  "vm0/no-such-artifact/current"])
def test_missing_paths_are_file_not_found(fs: ArtifactFileSystem, path: str) -> None:
    for call in (fs.info, fs.ls, fs.cat_file, fs.open):
        with pytest.raises(FileNotFoundError) as info:
            call(path)
        assert info.value.errno == errno.ENOENT and path in str(info.value) and "\n" not in str(info.value)
    assert not fs.exists(path) and not fs.isfile(path) and not fs.isdir(path)


def test_a_directory_is_no_file_and_a_file_no_directory(fs: ArtifactFileSystem) -> None:
    for call in (fs.open, fs.cat_file):
        with pytest.raises(IsADirectoryError):
            call(f"sigmic/{TASK}/downloads")
    with pytest.raises(IsADirectoryError):
        fs.open("vm0/output-results/current")
    with pytest.raises(NotADirectoryError):
        fs.ls(f"{CSV}/inside")


def test_a_refused_token_is_permission_error(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SIGMIC_TOKEN", "sigmic_wrong")
    afs = ArtifactFileSystem(config=config)
    with pytest.raises(PermissionError) as info:
        afs.ls(f"sigmic/{TASK}")
    assert info.value.errno == errno.EACCES and "sigmic_wrong" not in str(info.value)


@pytest.mark.parametrize("write", [
    lambda fs: fs.open(CSV, "wb"), lambda fs: fs.open(CSV, "ab"), lambda fs: fs.open("sigmic/new.txt", "w"),
    lambda fs: fs.rm(CSV), lambda fs: fs.rm_file(CSV), lambda fs: fs.rmdir(f"sigmic/{TASK}"),
    lambda fs: fs.mkdir("sigmic/new"), lambda fs: fs.makedirs("sigmic/a/b"), lambda fs: fs.touch(CSV),
    lambda fs: fs.mv(CSV, "sigmic/x.csv"), lambda fs: fs.copy(CSV, "sigmic/x.csv"),
    lambda fs: fs.put(__file__, "sigmic/x.py"), lambda fs: fs.pipe(CSV, b"x"), lambda fs: fs.pipe_file(CSV, b"x"),
    lambda fs: fs.write_text(CSV, "x"), lambda fs: fs.write_bytes(CSV, b"x"),
])
def test_every_write_is_refused(fs: ArtifactFileSystem, emulator: Emulator,
                                write: Callable[[ArtifactFileSystem], Any]) -> None:
    with pytest.raises(PermissionError) as info:
        write(fs)
    assert info.value.errno == errno.EROFS and "read-only" in str(info.value)
    assert fs.cat_file(CSV) == sigmic_bytes(emulator, CSV)


@pytest.mark.parametrize("options,message", [
    ({"config": "/nonexistent/artifactfs.toml"}, "/nonexistent/artifactfs.toml: no such config file"),
    ({"listing_ttl": -1}, "listing_ttl: must be a number of seconds >= 0"),
    ({"cache_size": "lots"}, "cache_size: 'lots' is not a size"),
])
def test_a_bad_option_is_one_line(config: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        ArtifactFileSystem(**{"config": config, **options})
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_config_problem_is_the_config_line(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_VM0_TOKEN")
    with pytest.raises(ValueError, match=r"^.*fsspec\.toml: providers\.vm0: token_env TEST_VM0_TOKEN is not set"):
        ArtifactFileSystem(config=config)
    config.write_text("[mount]\n")
    with pytest.raises(ValueError, match="no providers configured"):
        ArtifactFileSystem(config=config)


# ---- pandas, pyarrow ------------------------------------------------------------------------------


def test_pandas_read_csv_by_url(config: Path, emulator: Emulator) -> None:
    df = pd.read_csv(f"artifactfs://{CSV}", storage_options={"config": str(config)})
    pd.testing.assert_frame_equal(df, pd.read_csv(io.BytesIO(sigmic_bytes(emulator, CSV))))


def test_pyarrow_reads_parquet(fs: ArtifactFileSystem, config: Path, emulator: Emulator) -> None:
    table = pa.table({"step": list(range(5000)), "loss": [1 / (i + 1) for i in range(5000)],
                      "tag": [f"run-{i % 7}" for i in range(5000)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=1000)
    emulator.put_sigmic_file(TASK, "downloads/metrics.parquet", sink.getvalue().to_pybytes())
    path = f"sigmic/{TASK}/downloads/metrics.parquet"
    assert pq.read_table(path, filesystem=fs).equals(table)
    assert pq.ParquetFile(fs.open(path)).read_row_group(3).equals(table.slice(3000, 1000))
    read = pd.read_parquet(f"artifactfs://{path}", storage_options={"config": str(config)})
    pd.testing.assert_frame_equal(read, table.to_pandas())


# ---- copies ---------------------------------------------------------------------------------------


class Recorder(Callback):
    """Records what fsspec reports: sizes set and bytes counted, per file."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, Recorder] = {}

    def branched(self, path_1: str, path_2: str, **kwargs: Any) -> Callback:
        return self.files.setdefault(path_1, Recorder())


def test_get_copies_a_tree_and_reports_progress(fs: ArtifactFileSystem, emulator: Emulator, tmp_path: Path,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    recorder = Recorder()
    fs.get(f"sigmic/{TASK}", str(tmp_path / "copy"), recursive=True, callback=recorder)
    copied = {p.relative_to(tmp_path / "copy").as_posix(): p.read_bytes()
              for p in (tmp_path / "copy").rglob("*") if p.is_file()}
    expected = {path.split("/", 2)[2]: sigmic_bytes(emulator, path) for path in fs.find(f"sigmic/{TASK}")}
    assert copied == expected
    assert recorder.size == len(recorder.files) >= len(expected)
    for path, child in recorder.files.items():
        if fs.isfile(path):
            assert child.size == child.value == len(sigmic_bytes(emulator, path)), path

    fs.get(f"sigmic/{TASK}", str(tmp_path / "again"), recursive=True, progress=True)
    bar = capfd.readouterr().err
    total = sum(len(data) for data in expected.values())
    assert "get: 100%" in bar and f"/{total / 1024:.2f}k" in bar, bar
    fs.get_file(MODEL, str(tmp_path / "model.bin"), progress=True)
    assert "get: 100%" in capfd.readouterr().err
    assert (tmp_path / "model.bin").read_bytes() == emulator.sigmic_file("task_456", "downloads/model.bin").read_all()
    with pytest.raises(ValueError, match="not both"):
        fs.get_file(CSV, str(tmp_path / "x.csv"), callback=Recorder(), progress=True)


# ---- one core per process, closed at exit -------------------------------------------------------------


def test_equal_options_share_one_core_across_threads(fs: ArtifactFileSystem, config: Path) -> None:
    fs.ls(f"sigmic/{TASK}")
    results: list[bytes] = []
    worker = threading.Thread(target=lambda: results.append(
        fsspec.filesystem("artifactfs", config=str(config)).cat_file(CSV)))
    worker.start()
    worker.join(30)
    assert results and fsspec.filesystem("artifactfs", config=str(config)) is fs
    assert sorted(our_threads()) == sorted(OUR_THREADS)  # one loop, one core (one cache writer)
    assert pickle.loads(pickle.dumps(fs)).cat_file(CSV) == results[0]
    with fs.open(CSV) as f:
        f.seek(7)
        again = pickle.loads(pickle.dumps(f))
        assert again.read() == results[0][7:]
        again.close()


def test_a_file_system_goes_on_in_a_new_run_after_shutdown(fs: ArtifactFileSystem, emulator: Emulator) -> None:
    """An instance keeps the core of its last call only while that core's run is alive."""
    first = fs.cat_file(CSV)
    shutdown()
    assert our_threads() == []
    assert fs.cat_file(CSV) == first == sigmic_bytes(emulator, CSV)
    assert sorted(our_threads()) == sorted(OUR_THREADS)


def run_python(code: str, emu: Emulator, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in a process where FUSE cannot be used: importing pyfuse3 fails there."""
    stub = tmp_path / "no-fuse"
    stub.mkdir(exist_ok=True)
    (stub / "pyfuse3.py").write_text('raise ImportError("no FUSE in this process")\n')
    env = {**token_environ(emu), "PYTHONPATH": os.pathsep.join([str(stub), str(Path(__file__).parents[2])])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_works_in_a_process_without_fuse(config: Path, emulator: Emulator, tmp_path: Path) -> None:
    code = f"""
import sys
import artifactfs.fsspec_fs
import fsspec
with fsspec.open("artifactfs://{CSV}", "rb", config={str(config)!r}) as f:
    data = f.read()
assert "pyfuse3" not in sys.modules, "pyfuse3 was imported"
sys.stdout.write(data.hex())
"""
    assert bytes.fromhex(run_python(code, emulator, tmp_path).stdout) == sigmic_bytes(emulator, CSV)


def test_mounts_and_fsspec_share_the_disk_cache(mount: MountFactory, config: Path, emulator: Emulator,
                                                tmp_path: Path) -> None:
    """What one reads, the other reads without a byte from the origin (same ``cache_dir``)."""
    code = f"import fsspec; fsspec.filesystem('artifactfs', config={str(config)!r}).cat_file({MODEL!r})"
    run_python(code, emulator, tmp_path)  # the process exits: its cache writer has flushed
    assert len(emulator.requests(path_contains="/download")) > 0
    emulator.clear_requests()
    m = mount()
    assert (m.path / MODEL).read_bytes() == emulator.sigmic_file("task_456", "downloads/model.bin").read_all()
    assert emulator.requests(path_contains="/download") == []

    notes = "sigmic/task_456/downloads/notes.md"
    assert (m.path / notes).read_bytes() == sigmic_bytes(emulator, notes)
    run("fusermount3", "-u", m.path)
    assert m.proc.wait(15) == 0  # unmounted and exited: its cache writer has flushed
    emulator.clear_requests()
    assert ArtifactFileSystem(config=config).cat_file(notes) == sigmic_bytes(emulator, notes)
    assert emulator.requests(path_contains="/download") == []
