"""What a running mount says about itself in one short line (systemd's ``STATUS=``).

Cheap on purpose: the cache figures come from its index (``blockcache.read_stats``) and the
problems from a counter of the warnings and errors the daemon has logged.
"""

from __future__ import annotations

import logging

from .blockcache import CacheStats


def human_size(size: float) -> str:
    """``1536`` → ``1.5 KiB``: sizes as a person reads them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class ProblemCounter(logging.Handler):
    """Counts the warnings and errors logged, so the status line can say something went wrong."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.warnings = 0
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
        else:
            self.warnings += 1


def status_line(stats: CacheStats, problems: ProblemCounter) -> str:
    """``3 files cached (12.0 MiB), 50% hits; 0 errors, 1 warning``."""
    return (f"{stats.files} files cached ({human_size(stats.bytes)}), {stats.hit_ratio:.0%} hits; "
            f"{_count(problems.errors, 'error')}, {_count(problems.warnings, 'warning')}")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
