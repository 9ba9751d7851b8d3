"""The byte engine on real mounts: persistent verified cache, readahead, sharing, eviction."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from artifactfs import blockcache
from artifactfs.emulator import Emulator, PatternBlob
from artifactfs.emulator.blobs import Blob
from artifactfs.emulator.server import Reply
from artifactfs.engine import BLOCK_SIZE
from tests.conftest import Mount, MountFactory, cache_settled, run
from tests.integration.task_files import TASK, MiB, downloads, file_of, put


class SlowBlob(Blob):
    """A pattern served at a crawl, so a test can act in the middle of a download."""

    def __init__(self, size: int, seed: int, delay: float) -> None:
        self.inner, self.size, self.delay = PatternBlob(size, seed), size, delay

    def chunks(self, offset: int, length: int) -> Iterator[memoryview]:
        for chunk in self.inner.chunks(offset, length):
            for start in range(0, len(chunk), 256 << 10):
                time.sleep(self.delay)
                yield chunk[start:start + (256 << 10)]


def served(emu: Emulator, path: str) -> int:
    return sum(r["bytes_sent"] for r in downloads(emu, path))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()



def cache_dir(m: Mount) -> Path:
    return m.config_file.parent / "cache"


def test_restart_keeps_cached_bytes_with_the_origin_down(mount: MountFactory, emulator: Emulator) -> None:
    blob = put(emulator, "data/big.bin", 12 * MiB)
    first = mount()
    assert sha(file_of(first, "data/big.bin").read_bytes()) == blob.sha256()
    first.stop()

    def refuse_downloads(request):  # type: ignore[no-untyped-def]
        return Reply(503, b"down", {}) if "/download" in request.path else None

    emulator.origins["api"].faults = refuse_downloads
    emulator.clear_requests()
    second = mount()
    assert sha(file_of(second, "data/big.bin").read_bytes()) == blob.sha256()
    assert downloads(emulator, "data/big.bin") == []


def test_kill_9_mid_download_leaves_nothing_partial(mount: MountFactory, emulator: Emulator) -> None:
    size = 24 * MiB
    stamp = "2026-02-01T10:00:00.000Z"
    emulator.put_sigmic_file(TASK, "data/slow.bin", SlowBlob(size, 5, 0.05), modified_at=stamp)
    first = mount()
    reader = subprocess.Popen(["cat", str(file_of(first, "data/slow.bin"))], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while served(emulator, "data/slow.bin") < 3 * MiB and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(first.path)], capture_output=True)
        reader.kill()
        reader.wait()
    before = blockcache.read_stats(cache_dir(first))
    assert before.bytes < size  # what made it to the cache is verified; the rest is fetched again
    emulator.put_sigmic_file(TASK, "data/slow.bin", PatternBlob(size, 5), modified_at=stamp)  # same version, fast
    second = mount()
    assert sha(file_of(second, "data/slow.bin").read_bytes()) == PatternBlob(size, 5).sha256()


def test_max_size_is_honoured_and_reads_stay_exact(mount: MountFactory, emulator: Emulator) -> None:
    blobs = {f"data/f{i}.bin": put(emulator, f"data/f{i}.bin", 6 * MiB, seed=i) for i in range(4)}
    m = mount(args=("--cache-size", "8MiB"))
    for path, blob in blobs.items():
        assert sha(file_of(m, path).read_bytes()) == blob.sha256()
        assert blockcache.read_stats(cache_dir(m)).bytes <= 8 * MiB
    stats = run(sys.executable, "-m", "artifactfs", "cache", "stats", "--cache-dir", cache_dir(m)).stdout
    assert "files:" in stats and "hit ratio:" in stats


def test_parallel_readers_of_one_uncached_file_share_one_download(
        mount: MountFactory, emulator: Emulator) -> None:
    blob = put(emulator, "data/shared.bin", 16 * MiB)
    m = mount()
    target = file_of(m, "data/shared.bin")
    target.stat()
    emulator.clear_requests()
    results: list[str] = []
    barrier = threading.Barrier(16)

    def read_all() -> None:
        barrier.wait()
        with open(target, "rb") as f:
            results.append(sha(f.read()))

    threads = [threading.Thread(target=read_all) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [blob.sha256()] * 16
    assert blob.size <= served(emulator, "data/shared.bin") <= 1.25 * blob.size


def test_files_larger_than_the_cap_read_exactly_in_any_pattern(
        mount: MountFactory, emulator: Emulator) -> None:
    blob = put(emulator, "data/large.bin", 20 * MiB, seed=9)
    m = mount(args=("--cache-size", "4MiB"))
    target = file_of(m, "data/large.bin")
    assert run("sha256sum", target).stdout.split()[0] == blob.sha256()
    rnd = random.Random(3)
    fd = os.open(target, os.O_RDONLY)
    try:
        for _ in range(300):
            offset = rnd.randrange(0, blob.size)
            length = rnd.choice([1, 4096, 65536, 3 * MiB])
            assert os.pread(fd, length, offset) == blob.read(offset, length)
    finally:
        os.close(fd)
    assert blockcache.read_stats(cache_dir(m)).bytes <= 4 * MiB


def test_sequential_reads_grow_the_readahead(mount: MountFactory, emulator: Emulator) -> None:
    blob = put(emulator, "data/seq.bin", 64 * MiB, seed=6)
    m = mount()
    assert run("sha256sum", file_of(m, "data/seq.bin")).stdout.split()[0] == blob.sha256()
    requests = downloads(emulator, "data/seq.bin")
    assert 1 <= len(requests) <= 16, [r["headers"].get("range") for r in requests]
    assert blob.size <= served(emulator, "data/seq.bin") <= 1.1 * blob.size


def test_a_read_after_a_seek_asks_its_pages_then_its_block(mount: MountFactory, emulator: Emulator) -> None:
    """The first two small reads in a block fetch exactly what the kernel asks, kept nowhere;
    the block's third read fetches the block, which is then served without the origin."""
    blob = put(emulator, "data/random.bin", 64 * MiB, seed=11)
    m = mount()
    target = file_of(m, "data/random.bin")
    target.stat()
    emulator.clear_requests()
    at = 40 * MiB + 5
    for offset in (at, at + 64 * 1024, at + 96 * 1024, at + 32 * 1024):  # one block; a new handle each: seeks
        with open(target, "rb") as f:
            assert os.pread(f.fileno(), 100, offset) == blob.read(offset, 100)
    ranges = [r["headers"].get("range") for r in downloads(emulator, "data/random.bin")]
    block, page = 40 * MiB, 40 * MiB + 64 * 1024
    assert ranges == [f"bytes={block}-{block + 4095}", f"bytes={page}-{page + 4095}",
                      f"bytes={block}-{block + BLOCK_SIZE - 1}"], ranges


def test_head_c_of_a_big_file_asks_its_pages_and_reading_on_takes_blocks(mount: MountFactory,
                                                                          emulator: Emulator) -> None:
    """``head -c`` of a file bigger than the first window fetches what the kernel asks at
    offset 0, as the bare file system would; reading the file whole then goes by blocks."""
    blob = put(emulator, "data/big.bin", 8 * MiB, seed=12)
    m = mount()
    target = file_of(m, "data/big.bin")
    target.stat()
    emulator.clear_requests()
    head = subprocess.run(["head", "-c", "4096", str(target)], capture_output=True, check=True, timeout=60)
    assert head.stdout == blob.read(0, 4096)
    assert 4096 <= served(emulator, "data/big.bin") <= 4 * MiB
    ranges = [r["headers"].get("range") for r in downloads(emulator, "data/big.bin")]
    assert len(ranges) == 1 and ranges[0].startswith("bytes=0-"), ranges
    assert 4096 <= int(ranges[0].split("-")[1]) + 1 < BLOCK_SIZE, ranges
    assert run("sha256sum", target).stdout.split()[0] == blob.sha256()
    sizes = [int(r["headers"]["range"].split("-")[1]) - int(r["headers"]["range"][6:].split("-")[0]) + 1
             for r in downloads(emulator, "data/big.bin")[1:]]
    assert min(sizes) >= BLOCK_SIZE, sizes


def test_origin_that_ignores_range_still_works(mount: MountFactory, emulator: Emulator) -> None:
    emulator.set(api_ignore_range=True)
    blob = put(emulator, "data/norange.bin", 24 * MiB, seed=8)
    m = mount()
    target = file_of(m, "data/norange.bin")
    assert run("sha256sum", target).stdout.split()[0] == blob.sha256()
    assert blob.size <= served(emulator, "data/norange.bin") <= 2 * blob.size
    with open(target, "rb") as f:
        assert os.pread(f.fileno(), 1000, 20 * MiB + 5) == blob.read(20 * MiB + 5, 1000)


def test_cache_prefetch_stats_and_clear(mount: MountFactory, emulator: Emulator) -> None:
    blobs = [put(emulator, f"bulk/{i}.bin", 3 * MiB, seed=20 + i) for i in range(3)]
    m = mount()
    out = run(sys.executable, "-m", "artifactfs", "cache", "prefetch", m.path / "sigmic" / TASK / "bulk")
    assert "prefetched 3 files" in out.stdout
    assert "prefetch" in out.stderr  # the tqdm bar
    assert cache_settled(cache_dir(m), lambda s: s.bytes >= sum(b.size for b in blobs)).bytes >= sum(
        b.size for b in blobs)
    emulator.clear_requests()
    for i, blob in enumerate(blobs):
        assert sha(file_of(m, f"bulk/{i}.bin").read_bytes()) == blob.sha256()
    assert emulator.requests(path_contains="/download") == []
    cleared = run(sys.executable, "-m", "artifactfs", "cache", "clear", "--cache-dir", cache_dir(m)).stdout
    assert "freed" in cleared
    assert blockcache.read_stats(cache_dir(m)).bytes == 0
