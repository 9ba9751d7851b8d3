"""The cases: each runs on a directory tree (a mount or local disk) and, the same way, with ``curl``.

A case runs on one fresh mount and yields figures for one or more metrics; reads are plain
Python file reads or real tools (``head``, ``ls``, ``curl``), timed with ``perf_counter``.
Content is checked after the timed part, so a fast but wrong system shows "wrong data".
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .dataset import BIG, MIB, SMALL_DIR, Dataset
from .measure import CaseError, CaseStopped, CaseTimeout, Deadline, Stopwatch, mb_per_s
from .proc import BenchError

PAGE = 4096
Figures = dict[str, float]


@dataclass(frozen=True)
class Settings:
    """Knobs shared by the cases."""

    random_reads: int = 2000
    readers: int = 8
    seed: int = 4


@dataclass(frozen=True)
class Endpoint:
    """How ``curl`` reaches the dataset: a URL per file, a listing URL per directory, headers."""

    file_url: Callable[[str], str]
    listing_url: Callable[[str], str]
    headers: tuple[str, ...] = ()
    scratch: Path = Path("/tmp")  # where curl config files are written


class Case(ABC):
    """One scenario; ``metrics`` are the keys its runs fill in."""

    key: str
    metrics: tuple[str, ...]
    origin_file: str | None = None  # the file whose origin bytes are reported, if any
    origin_metric: str | None = None

    @abstractmethod
    def on_files(self, root: Path, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        """Run on a directory tree holding the dataset."""

    @abstractmethod
    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        """Run the same reads with ``curl``."""


# ---- helpers -----------------------------------------------------------------------------


def run_tool(args: list[str], deadline: Deadline) -> tuple[float, bytes]:
    """Run a real tool, timed; its stdout; raise on failure or when the deadline passes."""
    with Stopwatch() as watch:
        try:
            result = subprocess.run(args, capture_output=True, timeout=deadline.remaining())
        except subprocess.TimeoutExpired:
            raise CaseTimeout() from None
    if result.returncode != 0:
        raise BenchError(f"{args[0]} exited {result.returncode}: {result.stderr.decode(errors='replace').strip()[:200]}")
    return watch.seconds, result.stdout


def curl_args(ep: Endpoint, *args: str) -> list[str]:
    headers = [arg for h in ep.headers for arg in ("-H", h)]
    return ["curl", "-sS", "--fail", *headers, *args]


def curl_config(ep: Endpoint, name: str, operations: Iterable[list[tuple[str, str]]]) -> Path:
    """A ``curl -K`` file: operations separated by ``next``, each with the headers and its options."""
    lines: list[str] = []
    for op in operations:
        if lines:
            lines.append("next")
        lines += [f'header = "{h}"' for h in ep.headers]
        lines += [f'{key} = "{value}"' for key, value in op]
    path = ep.scratch / name
    path.write_text("\n".join(lines) + "\n")
    return path


def check(condition: bool, what: str) -> None:
    if not condition:
        raise BenchError(f"wrong data: {what}")


def measure_each(metrics: tuple[str, ...], measure: Callable[[str], float]) -> Figures:
    """Measure ``metrics`` in order; if one stops the case, the figures already measured are kept."""
    figures: Figures = {}
    for metric in metrics:
        try:
            figures[metric] = measure(metric)
        except CaseStopped as exc:
            exc.done = {**figures, **exc.done}
            raise
        except (BenchError, OSError) as exc:
            raise CaseError(str(exc), figures) from None
    return figures


def random_offsets(ds: Dataset, s: Settings) -> list[int]:
    """Seeded page-aligned offsets within the big file (the same on every system)."""
    rng = random.Random(s.seed)
    pages = max(1, ds.big_size // PAGE)
    return [rng.randrange(pages) * PAGE for _ in range(s.random_reads)]


# ---- cases -------------------------------------------------------------------------------


class Sequential(Case):
    """Read the big file in 1 MiB blocks, twice on the same mount: cold, then warm."""

    key = "seq"
    metrics = ("seq_cold", "seq_warm")

    def on_files(self, root: Path, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        figures = measure_each(self.metrics, lambda metric: _read_whole(root / BIG, ds.big_size, deadline, metric))
        _spot_check(root / BIG, ds, s)
        return figures

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        args = curl_args(ep, "-o", "/dev/null", ep.file_url(BIG))
        return measure_each(self.metrics, lambda _: mb_per_s(ds.big_size, run_tool(args, deadline)[0]))


def _read_whole(path: Path, size: int, deadline: Deadline, metric: str) -> float:
    """MB/s of reading ``path`` with ``readinto`` of a 1 MiB buffer."""
    buf = bytearray(MIB)
    total = 0
    with Stopwatch() as watch:
        try:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    total += n
                    if deadline.expired():
                        raise CaseTimeout({metric: mb_per_s(total, watch.elapsed())})
        except OSError as exc:
            raise BenchError(f"{exc.strerror} after reading {total / MIB:.2f} of {size / MIB:.0f} MiB "
                             f"({mb_per_s(total, watch.elapsed()):.0f} MB/s until then)") from None
    check(total == size, f"read {total} of {size} bytes")
    return mb_per_s(total, watch.seconds)


def _spot_check(path: Path, ds: Dataset, s: Settings) -> None:
    blob = ds.big()
    with open(path, "rb") as f:
        for offset in random_offsets(ds, Settings(random_reads=4, seed=s.seed + 1)):
            f.seek(offset)
            check(f.read(PAGE) == blob.read(offset, PAGE), f"{BIG} at {offset}")


class Head(Case):
    """``head -c 4096`` of the big file on a fresh mount (and what it cost the origin)."""

    key = "head"
    metrics = ("head_ms", "head_bytes")
    origin_file = BIG
    origin_metric = "head_bytes"

    def on_files(self, root: Path, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        return self._verify(ds, *run_tool(["head", "-c", str(PAGE), str(root / BIG)], deadline))

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        return self._verify(ds, *run_tool(curl_args(ep, "-r", f"0-{PAGE - 1}", ep.file_url(BIG)), deadline))

    def _verify(self, ds: Dataset, seconds: float, out: bytes) -> Figures:
        check(out == ds.big().read(0, PAGE), "head -c 4096 output")
        return {"head_ms": seconds * 1000}


class RandomReads(Case):
    """``os.pread`` of 4 KiB at seeded random offsets of the big file, on a fresh mount."""

    key = "random"
    metrics = ("rand_ms", "rand_bytes")
    origin_file = BIG
    origin_metric = "rand_bytes"

    def on_files(self, root: Path, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        offsets = random_offsets(ds, s)
        got: list[bytes] = []
        fd = os.open(root / BIG, os.O_RDONLY)
        try:
            with Stopwatch() as watch:
                for offset in offsets:
                    got.append(os.pread(fd, PAGE, offset))
                    if deadline.expired():
                        raise CaseTimeout({"rand_ms": watch.elapsed() * 1000 * len(offsets) / len(got)})
        finally:
            os.close(fd)
        blob = ds.big()
        for offset, data in zip(offsets, got):
            check(data == blob.read(offset, PAGE), f"pread at {offset}")
        return {"rand_ms": watch.seconds * 1000}

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        url = ep.file_url(BIG)
        ops = ([("url", url), ("range", f"{o}-{o + PAGE - 1}"), ("output", "/dev/null")] for o in random_offsets(ds, s))
        seconds, _ = run_tool(["curl", "-sS", "--fail", "-K", str(curl_config(ep, "random.curl", ops))], deadline)
        return {"rand_ms": seconds * 1000}


class Listing(Case):
    """``ls -l`` of the small-files directory on a fresh mount, then again (warm)."""

    key = "ls"
    metrics = ("ls_cold", "ls_warm")

    def on_files(self, root: Path, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        def ls_ms(_: str) -> float:
            seconds, out = run_tool(["ls", "-l", str(root / SMALL_DIR)], deadline)
            entries = len(out.splitlines()) - 1  # minus the "total" line
            check(entries == ds.small_count, f"ls -l listed {entries} entries")
            return seconds * 1000

        return measure_each(self.metrics, ls_ms)

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        args = curl_args(ep, "-o", "/dev/null", ep.listing_url(SMALL_DIR))
        return measure_each(self.metrics, lambda _: run_tool(args, deadline)[0] * 1000)


class ParallelFiles(Case):
    """Every 1 MiB file read whole by ``readers`` threads, on a fresh mount."""

    key = "parallel"
    metrics = ("par_mbs",)

    def on_files(self, root: Path, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        paths = ds.mib_paths()
        heads: dict[str, bytes] = {}
        lock = threading.Lock()

        def read(path: str) -> None:
            if deadline.expired():
                raise CaseTimeout()
            with open(root / path, "rb") as f:
                data = f.read()
            check(len(data) == ds.mib_size, f"{path}: {len(data)} bytes")
            with lock:
                heads[path] = data[:64] + data[-64:]

        with Stopwatch() as watch, ThreadPoolExecutor(s.readers) as pool:
            try:
                list(pool.map(read, paths))
            except CaseTimeout:
                raise CaseTimeout({"par_mbs": mb_per_s(len(heads) * ds.mib_size, watch.elapsed())}) from None
        for path, got in heads.items():
            blob = ds.blob(path)
            check(got == blob.read(0, 64) + blob.read(blob.size - 64, 64), path)
        return {"par_mbs": mb_per_s(len(paths) * ds.mib_size, watch.seconds)}

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        one_op = [pair for p in ds.mib_paths() for pair in (("url", ep.file_url(p)), ("output", "/dev/null"))]
        config = curl_config(ep, "parallel.curl", [one_op])
        args = ["curl", "-sS", "--fail", "--parallel", "--parallel-max", str(s.readers), "-K", str(config)]
        seconds, _ = run_tool(args, deadline)
        return {"par_mbs": mb_per_s(ds.mib_count * ds.mib_size, seconds)}


CASES: tuple[Case, ...] = (Sequential(), Head(), RandomReads(), Listing(), ParallelFiles())
