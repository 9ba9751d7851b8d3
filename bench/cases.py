"""The cases: each runs on a directory tree (a mount or local disk), and where it makes sense the
same way with ``curl`` on nginx, with an fsspec file system, or on the Gumloop API alone.

A case runs on one fresh setup and yields figures for one or more metrics; reads are plain
Python file reads or real tools (``head``, ``ls``, ``curl``), timed with ``perf_counter``.
Content is checked after the timed part, so a fast but wrong system shows "wrong data".
A case returns None for a kind of access it has no meaning for.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset import BIG, GIB, MIB, Dataset, Item, agent
from .gumloopapi import GumloopApi
from .measure import CaseError, CaseStopped, CaseTimeout, Deadline, Stopwatch, mb_per_s
from .proc import BenchError

PAGE = 4096
Figures = dict[str, float]
CpuClock = Callable[[], float]


@dataclass(frozen=True)
class Settings:
    """Knobs shared by the cases."""

    random_reads: int = 2000
    readers: int = 8
    seed: int = 4


@dataclass(frozen=True)
class Tree:
    """The dataset as directories, one per part; the CPU clock of the daemon behind it, if any."""

    roots: Mapping[str, Path]
    cpu: CpuClock | None = None

    def path(self, item: Item) -> Path:
        return self.roots[item.part] / item.name


@dataclass(frozen=True)
class Endpoint:
    """How ``curl`` reaches the dataset: a URL per file and per part's directory listing."""

    url: Callable[[Item], str]
    part_url: Callable[[str], str]
    scratch: Path  # where curl config files are written


@dataclass(frozen=True)
class FsView:
    """An fsspec file system holding the dataset, and the CPU clock of the process using it."""

    fs: Any
    path: Callable[[Item], str]
    cpu: CpuClock


class Case(ABC):
    """One scenario; ``metrics`` are the keys its runs fill in."""

    key: str
    metrics: tuple[str, ...]
    origin_item: Item | None = None  # the file whose origin bytes are reported, if any
    origin_metric: str | None = None

    @abstractmethod
    def on_files(self, tree: Tree, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        """Run on a directory tree holding the dataset."""

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures | None:
        """Run the same reads with ``curl``."""
        return None

    def on_fsspec(self, view: FsView, ds: Dataset, s: Settings, deadline: Deadline) -> Figures | None:
        """Run the same reads through an fsspec file system."""
        return None

    def on_api(self, api: GumloopApi, ds: Dataset, s: Settings, deadline: Deadline) -> Figures | None:
        """Run the same listing on the Gumloop API alone."""
        return None


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


CURL = ["curl", "-sS", "--fail"]


def curl_config(ep: Endpoint, name: str, operations: Iterable[list[tuple[str, str]]]) -> Path:
    """A ``curl -K`` file: operations separated by ``next``, each with its options."""
    lines: list[str] = []
    for op in operations:
        if lines:
            lines.append("next")
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


def read_stream(f: Any, size: int, deadline: Deadline, metric: str) -> float:
    """MB/s of reading an open binary file to its end with ``readinto`` of a 1 MiB buffer."""
    buf = bytearray(MIB)
    total = 0
    with Stopwatch() as watch:
        try:
            while n := f.readinto(buf):
                total += n
                if deadline.expired():
                    raise CaseTimeout({metric: mb_per_s(total, watch.elapsed())})
        except OSError as exc:
            raise BenchError(f"{exc.strerror or exc} after reading {total / MIB:.2f} of {size / MIB:.0f} MiB "
                             f"({mb_per_s(total, watch.elapsed()):.0f} MB/s until then)") from None
    check(total == size, f"read {total} of {size} bytes")
    return mb_per_s(total, watch.seconds)


def read_at(f: Any, offset: int) -> bytes:
    f.seek(offset)
    return bytes(f.read(PAGE))


def check_pages(ds: Dataset, offsets: list[int], got: list[bytes]) -> None:
    blob = ds.big()
    for offset, data in zip(offsets, got, strict=True):
        check(data == blob.read(offset, PAGE), f"{BIG.path} at {offset}")


def check_ends(ds: Dataset, heads: dict[Item, bytes]) -> None:
    """Each file's first and last 64 bytes as read (``heads``) against the dataset."""
    for item, got in heads.items():
        blob = ds.blob(item)
        check(got == blob.read(0, 64) + blob.read(blob.size - 64, 64), item.path)


def parallel(items: list[Item], read: Callable[[Item], bytes], ds: Dataset, s: Settings,
             deadline: Deadline) -> Figures:
    """Every file read whole by ``s.readers`` threads: MB/s, then the contents checked."""
    heads: dict[Item, bytes] = {}
    lock = threading.Lock()

    def one(item: Item) -> None:
        if deadline.expired():
            raise CaseTimeout()
        data = read(item)
        check(len(data) == ds.mib_size, f"{item.path}: {len(data)} bytes")
        with lock:
            heads[item] = data[:64] + data[-64:]

    with Stopwatch() as watch, ThreadPoolExecutor(s.readers) as pool:
        try:
            list(pool.map(one, items))
        except CaseTimeout:
            raise CaseTimeout({"par_mbs": mb_per_s(len(heads) * ds.mib_size, watch.elapsed())}) from None
    check_ends(ds, heads)
    return {"par_mbs": mb_per_s(len(items) * ds.mib_size, watch.seconds)}


def random_figures(seconds: float, count: int) -> Figures:
    return {"rand_ms": seconds * 1000, "rand_ops": count / max(seconds, 1e-9)}


# ---- cases -------------------------------------------------------------------------------


class Sequential(Case):
    """Read the big file in 1 MiB blocks twice on the same setup: cold (with the daemon's CPU
    seconds per GiB), then warm."""

    key = "seq"
    metrics = ("seq_cold", "cpu_gib", "seq_warm")

    def on_files(self, tree: Tree, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        return self._twice(lambda: open(tree.path(BIG), "rb", buffering=0), tree.cpu, ds, s, deadline)

    def on_fsspec(self, view: FsView, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        return self._twice(lambda: view.fs.open(view.path(BIG), "rb"), view.cpu, ds, s, deadline)

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        args = [*CURL, "-o", "/dev/null", ep.url(BIG)]
        metrics = tuple(m for m in self.metrics if m != "cpu_gib")
        return measure_each(metrics, lambda _: mb_per_s(ds.big_size, run_tool(args, deadline)[0]))

    def _twice(self, opener: Callable[[], Any], cpu: CpuClock | None, ds: Dataset, s: Settings,
               deadline: Deadline) -> Figures:
        start = cpu() if cpu else 0.0

        def measure(metric: str) -> float:
            if metric == "cpu_gib":
                return (cpu() - start) / (ds.big_size / GIB)  # type: ignore[misc]
            with opener() as f:
                return read_stream(f, ds.big_size, deadline, metric)

        figures = measure_each(tuple(m for m in self.metrics if cpu or m != "cpu_gib"), measure)
        offsets = random_offsets(ds, Settings(random_reads=4, seed=s.seed + 1))
        with opener() as f:
            got = [read_at(f, offset) for offset in offsets]
        check_pages(ds, offsets, got)
        return figures


class Head(Case):
    """``head -c 4096`` of the big file on a fresh setup (and what it cost the origin)."""

    key = "head"
    metrics = ("head_ms", "head_bytes")
    origin_item = BIG
    origin_metric = "head_bytes"

    def on_files(self, tree: Tree, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        return self._verify(ds, *run_tool(["head", "-c", str(PAGE), str(tree.path(BIG))], deadline))

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        return self._verify(ds, *run_tool([*CURL, "-r", f"0-{PAGE - 1}", ep.url(BIG)], deadline))

    def _verify(self, ds: Dataset, seconds: float, out: bytes) -> Figures:
        check(out == ds.big().read(0, PAGE), "head -c 4096 output")
        return {"head_ms": seconds * 1000}


class RandomReads(Case):
    """4 KiB reads at seeded random offsets of the big file, on a fresh setup: ``os.pread`` on a
    tree, one ranged request each with curl, ``cat_file`` with a range through fsspec."""

    key = "random"
    metrics = ("rand_ms", "rand_ops", "rand_bytes")
    origin_item = BIG
    origin_metric = "rand_bytes"

    def on_files(self, tree: Tree, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        fd = os.open(tree.path(BIG), os.O_RDONLY)
        try:
            return self._timed(lambda offset: os.pread(fd, PAGE, offset), ds, s, deadline)
        finally:
            os.close(fd)

    def on_fsspec(self, view: FsView, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        path = view.path(BIG)
        return self._timed(lambda offset: view.fs.cat_file(path, start=offset, end=offset + PAGE), ds, s, deadline)

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        offsets = random_offsets(ds, s)
        ops = ([("url", ep.url(BIG)), ("range", f"{o}-{o + PAGE - 1}"), ("output", "/dev/null")] for o in offsets)
        seconds, _ = run_tool([*CURL, "-K", str(curl_config(ep, "random.curl", ops))], deadline)
        return random_figures(seconds, len(offsets))

    def _timed(self, read: Callable[[int], bytes], ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        offsets = random_offsets(ds, s)
        got: list[bytes] = []
        with Stopwatch() as watch:
            for offset in offsets:
                got.append(read(offset))
                if deadline.expired():
                    raise CaseTimeout(random_figures(watch.elapsed() * len(offsets) / len(got), len(offsets)))
        check_pages(ds, offsets, got)
        return random_figures(watch.seconds, len(offsets))


class LongListing(Case):
    """``ls -l`` of the small files on a fresh setup, then again (warm)."""

    key = "ls"
    metrics = ("ls_cold", "ls_warm")

    def on_files(self, tree: Tree, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        def ls_ms(_: str) -> float:
            seconds, out = run_tool(["ls", "-l", str(tree.roots["small"])], deadline)
            entries = len(out.splitlines()) - 1  # minus the "total" line
            check(entries == ds.small_count, f"ls -l listed {entries} entries")
            return seconds * 1000

        return measure_each(self.metrics, ls_ms)

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        args = [*CURL, "-o", "/dev/null", ep.part_url("small")]
        return measure_each(self.metrics, lambda _: run_tool(args, deadline)[0] * 1000)


class FirstListing(Case):
    """The first plain ``ls`` of the small files on a fresh setup: for artifactfs, the agent's
    ``latest/`` (every page of its listing); beside it the same pages fetched alone."""

    key = "list"
    metrics = ("list_ms",)

    def on_files(self, tree: Tree, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        seconds, out = run_tool(["ls", str(tree.roots["small"])], deadline)
        check(len(out.splitlines()) == ds.small_count, f"ls listed {len(out.splitlines())} entries")
        return {"list_ms": seconds * 1000}

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        return {"list_ms": run_tool([*CURL, "-o", "/dev/null", ep.part_url("small")], deadline)[0] * 1000}

    def on_api(self, api: GumloopApi, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        with Stopwatch() as watch:
            names = api.filenames(agent("small"), timeout=deadline.remaining())
        check(sorted(names) == [item.name for item in ds.small_items()], f"the API listed {len(names)} artifacts")
        return {"list_ms": watch.seconds * 1000}


class ParallelFiles(Case):
    """Every 1 MiB file read whole by ``readers`` threads, on a fresh setup."""

    key = "parallel"
    metrics = ("par_mbs",)

    def on_files(self, tree: Tree, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        return parallel(ds.mib_items(), lambda item: tree.path(item).read_bytes(), ds, s, deadline)

    def on_fsspec(self, view: FsView, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        return parallel(ds.mib_items(), lambda item: bytes(view.fs.cat_file(view.path(item))), ds, s, deadline)

    def on_curl(self, ep: Endpoint, ds: Dataset, s: Settings, deadline: Deadline) -> Figures:
        one_op = [pair for item in ds.mib_items() for pair in (("url", ep.url(item)), ("output", "/dev/null"))]
        config = curl_config(ep, "parallel.curl", [one_op])
        seconds, _ = run_tool([*CURL, "--parallel", "--parallel-max", str(s.readers), "-K", str(config)], deadline)
        return {"par_mbs": mb_per_s(ds.mib_count * ds.mib_size, seconds)}


CASES: tuple[Case, ...] = (Sequential(), Head(), RandomReads(), LongListing(), FirstListing(), ParallelFiles())
CASES_BY_KEY = {case.key: case for case in CASES}
