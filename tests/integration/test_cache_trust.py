"""A cache you can trust, on real mounts: verified blocks, full disks, shared dirs, live clear,
vm0 archives inside the one cache, and servers that answer ranges their own way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from artifactfs import blockcache, engine
from artifactfs.emulator import Emulator
from artifactfs.emulator.server import Reply, Request, parse_range
from tests.conftest import IN_CI, Mount, MountFactory, cache_settled, run
from tests.integration.task_files import TASK, MiB, downloads, file_of, put


def cache_dir(m: Mount) -> Path:
    return m.config_file.parent / "cache"


def sha(path: Path) -> str:
    return run("sha256sum", path).stdout.split()[0]


def artifactfs(*args: str | Path) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "artifactfs", *args)


def test_a_flipped_byte_on_disk_is_fetched_again_never_served(mount: MountFactory, emulator: Emulator) -> None:
    blob = put(emulator, "data/a.bin", 3 * MiB)
    m = mount()
    assert sha(file_of(m, "data/a.bin")) == blob.sha256()
    m.stop()
    [data] = [p for p in (cache_dir(m) / blockcache.DATA_DIR).rglob("*") if p.is_file()]
    stride = blockcache.SLOT + engine.BLOCK_SIZE
    with open(data, "r+b") as f:  # one byte of block 5's payload
        f.seek(5 * stride + blockcache.SLOT + 1000)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    again = mount()
    again.expect_log(r"WARNING artifactfs.cache: cache block .* is damaged \(wrong checksum\); dropped, fetching it again")
    emulator.clear_requests()
    assert sha(file_of(again, "data/a.bin")) == blob.sha256()
    assert len(downloads(emulator, "data/a.bin")) == 1


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Path:
    """A 2 MiB file system for the cache: it fills up after a few blocks."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root; a full cache disk needs a tmpfs")
        pytest.skip("a full cache disk needs root for a tmpfs")
    where = tmp_path / "tiny"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_cache_disk_never_fails_a_read(mount: MountFactory, emulator: Emulator, tiny_disk: Path) -> None:
    blobs = [put(emulator, f"data/{n}.bin", 5 * MiB + n, seed=n) for n in range(3)]
    m = mount(args=("--cache-dir", str(tiny_disk)))
    m.expect_log(r"WARNING artifactfs.cache: cache .*: cannot write \(No space left on device\); serving from memory")
    m.expect_log(r"WARNING artifactfs.cache: cache index .* cannot be written", None, least=0, most=1)
    for n, blob in enumerate(blobs):
        assert sha(file_of(m, f"data/{n}.bin")) == blob.sha256()
    assert sha(file_of(m, "data/0.bin")) == blobs[0].sha256()


def test_cache_clear_on_a_live_mount_then_it_keeps_working(mount: MountFactory, emulator: Emulator) -> None:
    first, second = put(emulator, "data/first.bin", 2 * MiB, 1), put(emulator, "data/second.bin", 2 * MiB, 2)
    m = mount()
    assert sha(file_of(m, "data/first.bin")) == first.sha256()
    cache_settled(cache_dir(m), lambda s: s.bytes >= first.size)
    assert "freed 2.0 MiB" in artifactfs("cache", "clear", "--cache-dir", cache_dir(m)).stdout
    assert blockcache.read_stats(cache_dir(m)).bytes == 0
    assert sha(file_of(m, "data/second.bin")) == second.sha256()
    with open(file_of(m, "data/first.bin"), "rb") as f:  # not in the page cache at this offset
        assert os.pread(f.fileno(), 5000, MiB + 3) == first.read(MiB + 3, 5000)
    assert cache_settled(cache_dir(m), lambda s: s.bytes >= second.size).bytes >= second.size


def test_two_mounts_on_one_cache_dir_read_right_and_stay_within_the_budget(
        mount: MountFactory, emulator: Emulator) -> None:
    blobs = [put(emulator, f"data/{n}.bin", 6 * MiB, seed=10 + n) for n in range(4)]
    shared = put(emulator, "data/shared.bin", MiB, seed=20)
    one, two = mount(args=("--cache-size", "10MiB")), mount(args=("--cache-size", "10MiB"))
    readers = [subprocess.Popen(["sha256sum", str(file_of(m, f"data/{n}.bin"))], stdout=subprocess.PIPE, text=True)
               for n, m in enumerate((one, two, one, two))]
    for n, reader in enumerate(readers):
        out, _ = reader.communicate(timeout=60)
        assert out.split()[0] == blobs[n].sha256()
    assert blockcache.read_stats(cache_dir(one)).bytes <= 10 * MiB
    assert sha(file_of(two, "data/shared.bin")) == shared.sha256()
    cache_settled(cache_dir(one), lambda s: s.files >= 1 and s.bytes >= MiB)
    time.sleep(2.5)  # one's index hint follows two's writes within the writer's flush interval
    emulator.clear_requests()
    assert sha(file_of(one, "data/shared.bin")) == shared.sha256()  # what two cached, one reads from disk
    assert downloads(emulator, "data/shared.bin") == []


def test_a_vm0_archive_is_downloaded_once_and_its_tree_counts_in_the_cache(
        mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("vm0",))
    artifact = emulator.vm0_artifact_id("training-run")
    version = emulator.vm0_versions(artifact)[-1]
    folder = m.path / "vm0" / "training-run" / "versions"
    emulator.clear_requests()
    archive = (folder / f"{version}.tar.gz").read_bytes()
    assert archive == emulator.vm0_archive(artifact, version)
    assert "config.yaml" in os.listdir(folder / version)
    assert sum(r["bytes_sent"] for r in emulator.requests(origin="storage")) == len(archive)
    cache_settled(cache_dir(m), lambda s: s.trees == 1 and s.bytes >= len(archive) + 4 * MiB)
    stats = artifactfs("cache", "stats", "--cache-dir", cache_dir(m)).stdout
    assert "unpacked:  1 archives" in stats
    assert blockcache.read_stats(cache_dir(m)).bytes >= len(archive) + 4 * MiB
    artifactfs("cache", "clear", "--cache-dir", cache_dir(m))
    assert blockcache.read_stats(cache_dir(m)).trees == 0
    weights = folder / version / "checkpoints" / "model.safetensors"
    assert weights.read_bytes() == emulator.vm0_file(artifact, version, "checkpoints/model.safetensors").read_all()


def test_unpacking_does_not_block_unmount(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("vm0",))
    artifact = emulator.vm0_artifact_id("training-run")
    version = emulator.vm0_versions(artifact)[-1]
    emulator.faults("storage").set("slow", rate=64 << 10)
    lister = subprocess.Popen(["ls", str(m.path / "vm0" / "training-run" / "versions" / version)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    started = time.monotonic()
    m.proc.send_signal(signal.SIGTERM)
    m.proc.wait(15)
    assert time.monotonic() - started < 10
    lister.wait(15)


def test_a_known_size_served_whole_and_chunked_is_cached_to_its_last_byte(
        mount: MountFactory, emulator: Emulator) -> None:
    """No Content-Length, Range ignored (GCS decompressive transcoding), size from the listing."""
    blob = put(emulator, "data/gz.bin", 3 * MiB + 12345, seed=3)
    emulator.set(api_chunked=True, api_ignore_range=True)
    m = mount()
    assert sha(file_of(m, "data/gz.bin")) == blob.sha256()
    m.stop()
    again = mount()
    emulator.clear_requests()
    with open(file_of(again, "data/gz.bin"), "rb") as f:
        assert os.pread(f.fileno(), 20_000, blob.size - 20_000) == blob.read(blob.size - 20_000, 20_000)
    assert downloads(emulator, "data/gz.bin") == []


def cap_ranges(emu: Emulator, path: str, cap: int) -> None:
    """The API origin answers every Range for ``path`` with at most ``cap`` bytes (RFC 9110 allows it)."""
    def hook(req: Request) -> Reply | None:
        if not req.path.endswith("/download") or path not in unquote(req.query) or "range" not in req.headers:
            return None
        blob = emu.sigmic_file(TASK, path)
        first, last = parse_range(req.headers["range"], blob.size) or (0, blob.size - 1)
        last = min(last, first + cap - 1)
        return Reply(206, blob.read(first, last - first + 1),
                     {"Content-Range": f"bytes {first}-{last}/{blob.size}", "Content-Type": "application/octet-stream"})
    emu.origins["api"].faults = hook


def test_a_server_capping_its_ranges_is_read_to_the_end(mount: MountFactory, emulator: Emulator) -> None:
    blob = put(emulator, "data/capped.bin", 9 * MiB + 5, seed=4)
    cap_ranges(emulator, "data/capped.bin", 1_000_000)
    m = mount()
    assert sha(file_of(m, "data/capped.bin")) == blob.sha256()
    assert len(downloads(emulator, "data/capped.bin")) >= 9


def test_the_cache_budget_bounds_readahead_on_disk(mount: MountFactory, emulator: Emulator) -> None:
    blob = put(emulator, "data/long.bin", 40 * MiB, seed=6)
    m = mount(args=("--cache-size", "4MiB"))
    assert sha(file_of(m, "data/long.bin")) == blob.sha256()
    assert blockcache.read_stats(cache_dir(m)).bytes <= 4 * MiB

