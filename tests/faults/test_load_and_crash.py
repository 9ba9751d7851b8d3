"""Load with faults on, memory bounds, and a daemon killed mid-read."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from artifactfs.emulator import Emulator, PatternBlob
from tests.conftest import MountFactory, fuse_mounts
from tests.faults.logs import retry

TASK = "task_123"
MiB = 1 << 20
RSS_LIMIT = 200 * MiB


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """The daemon's resident memory, sampled every 50 ms while a block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def test_32_readers_with_faults_get_exact_bytes_in_bounded_memory(
        mount: MountFactory, emulator: Emulator) -> None:
    small = {f"load/f{i:03d}.bin": PatternBlob(random.Random(i).randrange(1, 2 * MiB), i) for i in range(200)}
    big = PatternBlob(1 << 30, 999)
    for path, blob in small.items():
        emulator.put_sigmic_file(TASK, path, blob)
    emulator.put_sigmic_file(TASK, "load/big.bin", big)
    m = mount(timeout=3, args=("--cache-size", "256MiB"))
    root = m.path / "sigmic" / TASK
    expected = {path: blob.sha256() for path, blob in small.items()}
    expected["load/big.bin"] = big.sha256()
    emulator.faults("api").set("cut", after=100_000, count=15, path_contains="/download")
    emulator.faults("api").set("status", code=503, count=15, path_contains="/download")
    # The 503s go to the first wave of fetches, one each: a first failed attempt is INFO. A
    # WARNING only comes from a fetch whose retry (after its jittered backoff) got a 503 again.
    # A cut body made progress, so its retry counts as a first attempt again (INFO).
    m.expect_log(retry("sigmic", f"/sigmic/api/v1/tasks/{TASK}/artifacts/download", "HTTP 503"),
                 None, least=0, most=4)
    peaks = []
    for _ in range(2):
        with RssSampler(m.proc.pid) as sampler, ThreadPoolExecutor(32) as pool:
            results = dict(zip(expected, pool.map(lambda p: digest(root / p), expected)))
        assert results == expected
        peaks.append(sampler.peak)
    assert max(peaks) < RSS_LIMIT, peaks
    assert peaks[1] <= peaks[0] + 24 * MiB, peaks  # no growth across passes
    assert [sum(1 for r in emulator.requests() if r["fault"] == kind) for kind in ("status", "cut")] == [15, 15]


def test_kill_9_then_unmount_then_remount_reads_every_file_exactly(
        mount: MountFactory, emulator: Emulator, tmp_path: Path) -> None:
    blobs = {f"crash/f{i}.bin": PatternBlob((i + 1) * 3 * MiB, 50 + i) for i in range(4)}
    for path, blob in blobs.items():
        emulator.put_sigmic_file(TASK, path, blob)
    first = mount()
    emulator.faults("api").set("slow", rate=4 * MiB, path_contains="/download")
    reader = subprocess.Popen(["cat", *(str(first.path / "sigmic" / TASK / p) for p in blobs)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
    finally:
        reader.kill()
        reader.wait()
    result = subprocess.run([sys.executable, "-m", "artifactfs", "unmount", str(first.path)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert str(first.path) not in fuse_mounts()
    emulator.faults("api").clear()
    second = mount()
    for path, blob in blobs.items():
        assert digest(second.path / "sigmic" / TASK / path) == blob.sha256(), path
