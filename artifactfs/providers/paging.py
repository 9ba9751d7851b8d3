"""Following a paginated listing to its end, whatever the server does with its cursors."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Hashable, Iterable, TypeVar

log = logging.getLogger("artifactfs.providers")

T = TypeVar("T")
MAX_PAGES = 10_000

PageFetcher = Callable[[Any], Awaitable[tuple[list[Any], Any]]]
"""``await fetch(cursor)`` → (items, next cursor or None); the first call gets None."""


async def collect_pages(fetch: PageFetcher, where: str, *, key: Callable[[Any], Hashable | None],
                        max_pages: int = MAX_PAGES) -> list[Any]:
    """Every item of every page, each ``key`` once. A repeated cursor, or a page that brings
    nothing new, ends the listing with a warning (a server in a loop must not make a listing
    endless), and so does passing ``max_pages``."""
    items: list[Any] = []
    keys: set[Hashable] = set()
    seen: set[Any] = set()
    cursor: Any = None
    for _ in range(max_pages):
        page, cursor = await fetch(cursor)
        fresh = unique((item for item in page if key(item) not in keys), key)
        keys.update(key(item) for item in fresh)
        items.extend(fresh)
        if cursor is None:
            return items
        if cursor in seen or (page and not fresh):
            log.warning("%s: the API repeated a page; the listing ends there", where)
            return items
        seen.add(cursor)
    log.warning("%s: the listing stopped after %d pages", where, max_pages)
    return items


def unique(items: Iterable[T], key: Callable[[T], Hashable | None]) -> list[T]:
    """``items`` without those whose key is None or already seen (first one kept)."""
    seen: set[Hashable] = set()
    kept: list[T] = []
    for item in items:
        k = key(item)
        if k is not None and k not in seen:
            seen.add(k)
            kept.append(item)
    return kept
