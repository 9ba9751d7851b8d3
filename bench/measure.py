"""What a measurement yields: a ``Cell`` per (system, metric); deadlines that stop a case in time."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One figure, or why there is none; a timed-out figure keeps its partial estimate."""

    value: float | None = None
    note: str = ""  # "" (a real figure), "timeout", "error: ...", "not available", "n/a"
    detail: str = ""  # a footnote on a figure, e.g. runs that failed

    @property
    def ok(self) -> bool:
        return self.value is not None and not self.note


def combine(samples: list[Cell]) -> Cell:
    """The cell of repeated runs: the median of the runs that gave a figure, with a footnote
    counting those that did not; the first failure when none did."""
    values = [c.value for c in samples if c.ok]
    failed = [c for c in samples if not c.ok]
    if not values:
        return failed[0]
    detail = f"{len(failed)} of {len(samples)} runs failed, first: {failed[0].note}" if failed else ""
    return Cell(statistics.median(values), detail=detail)  # type: ignore[type-var]


class CaseStopped(Exception):
    """A case that did not finish: ``done`` holds its complete figures, ``partial`` estimates."""

    def __init__(self, message: str, done: dict[str, float] | None = None,
                 partial: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.done = done or {}
        self.partial = partial or {}


class CaseTimeout(CaseStopped):
    """The case ran out of time; ``partial`` estimates come from the part that finished."""

    def __init__(self, partial: dict[str, float] | None = None) -> None:
        super().__init__("timeout", partial=partial)


class CaseError(CaseStopped):
    """The case failed (a tool, a read, wrong data, a daemon that died)."""


class Deadline:
    """The end of a case's time budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() > self.end

    def remaining(self) -> float:
        """Seconds left (at least 1, so a subprocess always gets a chance to finish)."""
        return max(1.0, self.end - time.monotonic())


class Stopwatch:
    """``perf_counter`` around a block: ``with Stopwatch() as w: ...; w.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def mb_per_s(nbytes: int, seconds: float) -> float:
    """Throughput in MB/s (10^6 bytes per second, as ``dd`` reports it)."""
    return nbytes / max(seconds, 1e-9) / 1e6
