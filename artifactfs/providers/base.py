"""The Provider protocol and the declaration every provider module makes of itself.

A provider turns its API's JSON into ``Entry`` objects and a file into a ``Source``.
It never sees inodes, FUSE or the cache, and it is the only place that knows its JSON.
Each provider module ends with ``SPEC = ProviderSpec(...)``: its type name, default base
URL, config keys and their checks, credentials, auth, doctor probe and demo settings. The
registry (``providers/__init__.py``) finds the modules; config, doctor and demo read the specs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Hashable, Mapping, TypeVar

from ..errors import AccessDenied, NotFound, Unauthorized
from ..model import Entry, Kind, Source

if TYPE_CHECKING:
    from ..config import ProviderConfig, Secret, _Kind
    from ..engine import Engine
    from ..httpclient import Classifier, HttpClient

log = logging.getLogger("artifactfs.providers")
T = TypeVar("T")


class Provider:
    """Base of the providers. Subclasses implement ``list_dir`` and ``resolve``; the base
    itself is a provider with nothing in it.

    ``ref`` values are the provider's own: ``ROOT`` for its top directory, anything hashable
    below; ``ref=None`` marks a directory whose contents come embedded in its parent's listing.
    ``lookup`` is asked for a name the last listing did not have (an id typed by the user, a
    search text); by default such names do not exist. ``engine`` (set by the core before the
    first request) lets a provider read bytes of its own files through the cache (vm0 unpacks
    its archives from it) and keep unpacked trees under ``state_dir`` inside the cache budget.
    """

    ROOT: Hashable = ("root",)
    spec: "ProviderSpec"

    def __init__(self, config: ProviderConfig, http: HttpClient, state_dir: Path) -> None:
        self.config = config
        self.name = config.name
        self.listing_ttl = config.listing_ttl
        self.http = http
        self.state_dir = state_dir
        self.engine: Engine | None = None
        self._cannot_list = False

    def root(self) -> Entry:
        return Entry(name=self.name, kind=Kind.DIR, ref=self.ROOT, key=(self.name,))

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        return []

    async def lookup(self, ref: Hashable, name: str) -> Entry | None:
        return None

    async def resolve(self, ref: Hashable) -> Source:
        raise NotFound(f"{self.name}: nothing to read")

    async def local_file(self, ref: Hashable) -> str:
        """The path of a file kept complete on local disk (``Entry.local``), made again if the
        cache dropped it."""
        raise NotFound(f"{self.name}: no local files")

    async def open_unlisted(self, known: dict[str, None], name: str,
                            tree: Callable[[str], Awaitable[list[Entry]]],
                            entry: Callable[[str], Entry]) -> Entry | None:
        """A top-level id nobody listed (an agent, a task): if the API knows it, it opens with
        its subtree and is remembered in ``known``, so it is listed from then on."""
        try:
            children = await tree(name)
        except NotFound:
            return None
        known[name] = None
        found = entry(name)
        found.children = children
        return found

    async def discovered(self, listing: Callable[[], Awaitable[T]], what: str, shown: str) -> T | None:
        """What a discovery call (every ``what`` the key sees) answers; None, from then on,
        if the key may not list them or the server has no such endpoint (403, 404): the
        configured and opened ``shown`` still show. A refused token (401) stays an error."""
        if self._cannot_list:
            return None
        try:
            return await listing()
        except (AccessDenied, NotFound) as exc:
            if isinstance(exc, Unauthorized):
                raise
            log.warning("%s: cannot list %s (%s); showing configured and opened %s only", self.name, what, exc, shown)
            self._cannot_list = True
            return None

    async def aclose(self) -> None:
        await self.http.aclose()


def bearer(config: ProviderConfig) -> dict[str, str]:
    """``Authorization: Bearer <token>``: what every provider's API takes."""
    return {"Authorization": f"Bearer {config.token}"}


def no_params(config: ProviderConfig) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Probe:
    """One cheap authenticated request for ``doctor``: a path below the API base (``{id}`` is
    the first configured id, or a made-up one whose 404 proves the token was accepted)."""

    path: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderSpec:
    """What the rest of artifactfs knows of a provider type, declared in its own module.

    ``api_prefix`` is the API's version path, appended to ``base_url`` unless already there
    (users write either form). ``options`` are the type's own config keys with their checks,
    ``secrets`` its credentials beyond the token, ``ids_key`` the key listing ids to show at
    the top. ``headers``/``params`` authenticate a request (sent only to the ``base_url``
    origin); ``classify`` maps error bodies an API sends. ``demo`` gives the provider's config
    table for the bundled emulator from its ready info (``artifactfs demo``, tests).
    """

    type: str
    provider: type[Provider]
    default_base_url: str
    api_prefix: str
    probe: Probe
    demo: Callable[[Mapping[str, Any]], dict[str, Any]]
    ids_key: str | None = None
    options: Mapping[str, "_Kind"] = field(default_factory=dict)
    secrets: Mapping[str, "Secret"] = field(default_factory=dict)
    headers: Callable[["ProviderConfig"], dict[str, str]] = bearer
    params: Callable[["ProviderConfig"], dict[str, str]] = no_params
    classify: "Classifier | None" = None


def api_base(base_url: str, suffix: str) -> str:
    """``base_url`` ending in ``suffix`` exactly once: users write either form in the config."""
    base = base_url.rstrip("/")
    return base if base.endswith(suffix) else base + suffix


def folder(name: str, key: Hashable, children: list[Entry] | Callable[[], list[Entry]], *,
           short_id: str = "", immutable: bool = False, mtime: float | None = None,
           xattrs: dict[str, str] | None = None) -> Entry:
    """A directory delivered with its parent's listing (its children now, or built on first use)."""
    return Entry(name=name, kind=Kind.DIR, ref=None, key=key, mtime=mtime, short_id=short_id,
                 immutable=immutable, children=children, xattrs=xattrs or {})


def newest(entries: list[Entry]) -> float | None:
    """The newest mtime among ``entries``: a folder's mtime."""
    return max((e.mtime for e in entries if e.mtime is not None), default=None)
