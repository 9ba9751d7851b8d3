"""Time for the emulated world: a logical clock, and the timestamp formats providers use.

Timestamps not given explicitly come from a logical clock that starts at
2026-06-01T00:00:00Z and advances one second per change (past any explicit time
seen): listings are the same on every run, and every change gets a later, distinct
time, so mtimes always move.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

CLOCK_START = datetime(2026, 6, 1, tzinfo=UTC).timestamp()

Timestamp = float | int | str | datetime | None


def to_epoch(value: float | int | str | datetime) -> float:
    """Unix seconds (rounded to ms, so ISO round trips are exact) from a number, ISO string or datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return round(float(value), 3)


@functools.lru_cache(maxsize=65536)
def iso(ts: float, millis: bool = False) -> str:
    """``2026-05-15T14:32:00Z``; with ``millis`` (or a fractional time) ``...00.000Z``. Kept per
    time: a listing page formats a hundred of them, and ``strftime`` was a tenth of its cost."""
    moment = datetime.fromtimestamp(ts, UTC)
    if millis or ts != int(ts):
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(ts: float | None) -> str | None:
    """JavaScript's ``toISOString()`` of ``ts`` (always milliseconds), or None for no time."""
    return None if ts is None else iso(ts, millis=True)


class Clock:
    """The logical clock; not thread-safe on its own (the world calls it under its lock)."""

    def __init__(self) -> None:
        self._now = CLOCK_START

    def stamp(self, value: Timestamp = None) -> float:
        """``value`` as epoch seconds, or the next tick; a tick is always later than any time seen."""
        if value is not None:
            ts = to_epoch(value)
            self._now = max(self._now, ts)
            return ts
        self._now = float(int(self._now) + 1)
        return self._now
