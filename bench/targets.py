"""The release targets: each compares one column's figure on one row with a reference.

A reference is another column (or the best of several in that row) or a fixed limit; a target
without a bound is reported (figures and ratio) but never passes or misses.
"""

from __future__ import annotations

from dataclasses import dataclass

from .columns import AFS, AFS_FSSPEC, AFS_NO_XATTRS, ANCHORS, API, BARE, FSSPEC_HTTP, RCLONE_FULL, RCLONES
from .dataset import MIB
from .measure import Cell

Results = dict[str, dict[str, Cell]]  # column -> metric -> cell


@dataclass(frozen=True)
class Target:
    """``subject``'s ``metric`` against the best of ``against`` (or ``limit``): ratio within ``bound``."""

    metric: str
    subject: str
    text: str
    against: tuple[str, ...] = ()
    bound: float | None = None  # subject / reference must be >= (higher is better) or <= this
    limit: float | None = None  # or the figure itself must be <= this
    strict: bool = False  # > instead of >=


@dataclass(frozen=True)
class Verdict:
    """A target evaluated: the figures, the ratio and PASS / MISS / n/a / "" (reported only)."""

    subject: Cell | None
    reference: str  # the column picked, or the limit's text
    reference_cell: Cell | None
    ratio: float | None
    result: str


TARGETS: tuple[Target, ...] = (
    Target("seq_cold", AFS, "≥ 1.3× best anchor", ANCHORS, 1.3),
    Target("seq_warm", AFS, "≥ 2× best anchor", ANCHORS, 2.0),
    Target("head_ms", AFS, "≤ best rclone", RCLONES, 1.0),
    Target("head_bytes", AFS, "≤ 4 MiB", limit=4 * MIB),
    Target("rand_ops", AFS, "≥ 1.5× rclone full", (RCLONE_FULL,), 1.5),
    Target("rand_bytes", AFS, "≤ 0.5× rclone full", (RCLONE_FULL,), 0.5),
    Target("par_mbs", AFS, "≥ 1.5× best anchor", ANCHORS, 1.5),
    Target("ls_cold", AFS_NO_XATTRS, "≤ best anchor", ANCHORS, 1.0),
    Target("ls_warm", AFS_NO_XATTRS, "≤ 1.5× best anchor", ANCHORS, 1.5),
    Target("ls_warm", AFS, "≤ 1.2× bare pyfuse3", (BARE,), 1.2),
    Target("rss", AFS, "≤ 150 MiB", limit=150 * MIB),
    Target("list_ms", AFS, "reported (vs the API alone)", (API,)),
    Target("cpu_gib", AFS, "reported (vs best anchor)", ANCHORS),
    Target("seq_cold", AFS_FSSPEC, "≥ fsspec http", (FSSPEC_HTTP,), 1.0),
    Target("seq_warm", AFS_FSSPEC, "> fsspec http", (FSSPEC_HTTP,), 1.0, strict=True),
    Target("rand_ops", AFS_FSSPEC, "≥ fsspec http", (FSSPEC_HTTP,), 1.0),
    Target("par_mbs", AFS_FSSPEC, "≥ fsspec http", (FSSPEC_HTTP,), 1.0),
)


def best(results: Results, metric: str, columns: tuple[str, ...], higher_better: bool) -> tuple[str, Cell] | None:
    """The column among ``columns`` with the best figure on ``metric`` (timeouts never count)."""
    found = [(name, results[name][metric]) for name in columns if results.get(name, {}).get(metric, Cell()).ok]
    if not found:
        return None
    pick = max if higher_better else min
    return pick(found, key=lambda pair: pair[1].value)  # type: ignore[arg-type, return-value]


def evaluate(target: Target, results: Results, higher_better: bool) -> Verdict:
    """PASS/MISS when both figures exist (a subject that failed is a MISS); n/a when a column
    could not run here or no reference has a figure."""
    subject = results.get(target.subject, {}).get(target.metric)
    if subject is not None and subject.note.startswith("not available"):
        subject = None
    if target.limit is not None:
        outcome = "n/a" if subject is None else ("PASS" if subject.ok and subject.value <= target.limit else "MISS")  # type: ignore[operator]
        return Verdict(subject, target.text.lstrip("≤ "), None, None, outcome)
    picked = best(results, target.metric, target.against, higher_better)
    if picked is None or subject is None:
        return Verdict(subject, picked[0] if picked else "—", picked[1] if picked else None, None, "n/a")
    name, reference = picked
    if not subject.ok or not reference.value:
        return Verdict(subject, name, reference, None, "MISS" if target.bound is not None else "")
    ratio = subject.value / reference.value  # type: ignore[operator]
    if target.bound is None:
        return Verdict(subject, name, reference, ratio, "")
    if higher_better:
        passed = ratio > target.bound if target.strict else ratio >= target.bound
    else:
        passed = ratio < target.bound if target.strict else ratio <= target.bound
    return Verdict(subject, name, reference, ratio, "PASS" if passed else "MISS")
