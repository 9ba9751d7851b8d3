"""The Provider protocol: what the namespace asks of every provider, and shared helpers.

A provider turns its API's JSON into ``Entry`` objects and a file into a ``Source``.
It never sees inodes, FUSE or the cache, and it is the only place that knows its JSON.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Hashable

from ..config import ProviderConfig
from ..errors import NotFound
from ..httpclient import HttpClient
from ..model import Entry, Kind, Source

log = logging.getLogger("artifactfs.providers")


class Provider:
    """Base of the four providers. Subclasses implement ``list_dir`` and ``resolve``;
    the base itself is a provider with nothing in it.

    ``ref`` values are the provider's own: ``ROOT`` for its top directory, anything hashable
    below; ``ref=None`` marks a directory whose contents come embedded in its parent's listing.
    ``state_dir`` is the provider's own folder under ``cache.dir`` (created on first use). ``lookup`` is asked for a name the last listing did not have (an agent id typed
    by the user, a search text); the default is that such names do not exist.
    """

    ROOT: Hashable = ("root",)

    def __init__(self, config: ProviderConfig, http: HttpClient, state_dir: Path) -> None:
        self.config = config
        self.name = config.name
        self.listing_ttl = config.listing_ttl
        self.http = http
        self.state_dir = state_dir

    def root(self) -> Entry:
        return Entry(name=self.name, kind=Kind.DIR, ref=self.ROOT, key=(self.name,))

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        return []

    async def lookup(self, ref: Hashable, name: str) -> Entry | None:
        return None

    async def resolve(self, ref: Hashable) -> Source:
        raise NotImplementedError

    async def open_unlisted(self, known: dict[str, None], name: str,
                            tree: Callable[[str], Awaitable[list[Entry]]],
                            entry: Callable[[str], Entry]) -> Entry | None:
        """A top-level id the config does not name (an agent, a task): if the API knows it,
        it opens with its subtree and is remembered in ``known``, so it is listed from then on."""
        try:
            children = await tree(name)
        except NotFound:
            return None
        known[name] = None
        found = entry(name)
        found.children = children
        return found

    async def aclose(self) -> None:
        await self.http.aclose()


def parse_time(value: Any) -> float | None:
    """An ISO 8601 timestamp (``Z`` or offset, with or without fraction) → epoch seconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def as_int(value: Any) -> int | None:
    """A non-negative integer from JSON, or None (strings of digits accepted, bools not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string from JSON, or None; numbers are accepted as their text."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def fingerprint(*parts: Any) -> str:
    """What must change when the bytes may have changed: version, size, mtime, ETag."""
    return "|".join("" if p is None else str(p) for p in parts)


def api_base(base_url: str, suffix: str) -> str:
    """``base_url`` ending in ``suffix`` exactly once: users write either form in the config."""
    base = base_url.rstrip("/")
    return base if base.endswith(suffix) else base + suffix
