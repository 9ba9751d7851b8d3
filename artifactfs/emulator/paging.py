"""Keyset pagination shared by Gumloop and vm0 listings.

The cursor is opaque to clients: URL-safe base64 of ``{"created_ts": ISO, "id": ...}``,
the sort key of the last item served (the shape of Gumloop's documented example).
Keyset rather than offset so that items added while a client pages never shift
what it sees next.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from .clock import iso, to_epoch

T = TypeVar("T")
Key = tuple[float, str]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def parse_limit(raw: str | None) -> int:
    """Clamp to 1–100, default 20; ValueError if not an integer."""
    return DEFAULT_LIMIT if raw in (None, "") else max(1, min(MAX_LIMIT, int(raw)))


def encode_cursor(key: Key) -> str:
    payload = json.dumps({"created_ts": iso(key[0]), "id": key[1]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_cursor(cursor: str) -> Key:
    """ValueError for anything that is not a cursor we issued."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return to_epoch(data["created_ts"]), str(data["id"])
    except (binascii.Error, UnicodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError("invalid cursor") from exc


def page(
    items: Sequence[T], key: Callable[[T], Key], cursor: str | None, limit: int, newest_first: bool = True
) -> tuple[list[T], str | None]:
    """One page of ``items`` ordered by ``key`` and the cursor of the next page (None at the end)."""
    ordered = sorted(items, key=key, reverse=newest_first)
    return page_of(ordered, [key(i) for i in ordered], cursor, limit, newest_first)


def page_of(
    ordered: Sequence[T], keys: Sequence[Key], cursor: str | None, limit: int, newest_first: bool = True
) -> tuple[list[T], str | None]:
    """One page of items already in order (``keys`` are theirs), found by binary search, so
    paging a long listing costs per page what the page holds."""
    start = 0
    if cursor:
        after = decode_cursor(cursor)
        low, high = 0, len(keys)
        while low < high:  # the first item past the cursor: keys are monotonic in listing order
            middle = (low + high) // 2
            if keys[middle] < after if newest_first else keys[middle] > after:
                high = middle
            else:
                low = middle + 1
        start = low
    chunk = list(ordered[start:start + limit])
    return chunk, encode_cursor(keys[start + limit - 1]) if len(ordered) > start + limit else None
