"""Reading provider JSON defensively: what a server says never breaks a listing.

A field may be missing, null, of another type, absurdly large, or spelled in camelCase next
to snake_case (vm0 migrated field by field); each reader here returns a clean value or None.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Mapping

MAX_SIZE = 1 << 62
"""A size beyond this is a lie (CONTRACT §3): treated as unknown."""
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: later times do not fit a FUSE timestamp
_DIGITS = re.compile(r"[0-9]{1,19}")


def as_size(value: Any) -> int | None:
    """A byte count: a non-negative integer up to 2^62 (JSON number or ASCII digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            return None
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _DIGITS.fullmatch(text):
            return None
        value = int(text)
    if isinstance(value, int) and 0 <= value <= MAX_SIZE:
        return value
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string from JSON, or None; numbers are accepted as their text."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    return None


def parse_time(value: Any) -> float | None:
    """An ISO 8601 timestamp (``Z`` or offset, with or without fraction) → epoch seconds,
    within 1970–9999; anything else is None."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        stamp = parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return stamp if 0 <= stamp <= MAX_TIME else None


def pick(item: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present in ``item`` with a non-null value (camelCase, snake_case)."""
    for name in names:
        value = item.get(name)
        if value is not None:
            return value
    return None


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def fingerprint(*parts: Any) -> str:
    """What must change when the bytes may have changed: version, size, mtime, ETag."""
    return "|".join("" if p is None else str(p) for p in parts)


def texts(item: Mapping[str, Any], fields: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """``{xattr name: text}`` for each field that has a value under one of its spellings."""
    found: dict[str, str] = {}
    for name, spellings in fields.items():
        text = as_str(pick(item, *spellings))
        if text is not None:
            found[name] = text
    return found
