"""Gumloop: an agent's artifacts (seeds/gumloop-list-artifacts.txt, gumloop-download-artifact.txt).

``GET /agents/{id}/artifacts`` (paged) gives the current version of every artifact, so one
listing builds an agent's whole directory: ``latest/``, ``sessions/<id>/`` and
``artifacts/<id>/versions/<version>/``. The API never lists old versions, so every version
a listing reveals is remembered for the life of the mount. ``search/<text>/`` is the same
listing with ``search_query``, fetched on lookup. Bytes: ``GET /artifacts/{id}/download``
on the first read gives a signed URL on another origin, fetched without the token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Hashable, Iterable
from urllib.parse import parse_qsl, quote, urlsplit

from ..errors import RemoteError
from ..model import Entry, Kind, Source
from ..names import assign_names
from .base import Provider, api_base, as_int, as_str, fingerprint, log, parse_time

PAGE_SIZE = 100
MAX_PAGES = 10_000
MAX_SIGNED_SECONDS = 7 * 86400  # the longest a GCS V4 / S3 presigned URL may live
EXPIRY_PARAMS = (("x-goog-expires", "x-goog-date"), ("x-amz-expires", "x-amz-date"), ("expires", ""))


@dataclass
class Version:
    """One artifact version as a listing described it; enough to build its entries again."""

    artifact_id: str
    version_id: str | None
    filename: str
    session_id: str | None
    size: int | None
    created_at: str | None
    mime_type: str | None
    xattrs: dict[str, str] = field(default_factory=dict)

    @property
    def mtime(self) -> float | None:
        return parse_time(self.created_at)


class GumloopProvider(Provider):
    """Agents at the top (configured ones, then any opened by name); their trees below."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = api_base(self.http.base_url, "/api/v1")
        self._agents: dict[str, None] = dict.fromkeys(self.config.ids)
        self._versions: dict[str, dict[str, dict[str, Version]]] = {}

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        if ref == self.ROOT:
            return [self._agent_entry(agent) for agent in self._agents]
        match ref:
            case ("agent", agent):
                return await self._agent_tree(agent)
            case ("search", agent, text):
                return await self._search(agent, text)
        return []

    async def lookup(self, ref: Hashable, name: str) -> Entry | None:
        """An agent id typed at the top, or a text typed under ``search/``."""
        if ref == self.ROOT:
            return await self.open_unlisted(self._agents, name, self._agent_tree, self._agent_entry)
        match ref:
            case ("search", agent):
                entry = self._search_entry(agent, name)
                entry.children = await self._search(agent, name)
                return entry
        return None

    async def resolve(self, ref: Hashable) -> Source:
        """The signed URL of one pinned version, asked for on the first read only."""
        _, artifact, version = ref  # type: ignore[misc]
        url = f"{self._api}/artifacts/{quote(artifact, safe='')}/download"
        body = await self.http.get_json(url, {"version_id": version} if version else None)
        download = as_str(body.get("download_url")) if isinstance(body, dict) else None
        if download is None:
            log.error("%s: artifact %s: download answer has no download_url", self.name, artifact)
            raise RemoteError(f"{self.name}: artifact {artifact}: no download_url")
        return self.http.source(download, expires_at=url_expiry(download), size=as_int(body.get("size")))

    # ---- listings ---------------------------------------------------------

    async def _listing(self, agent: str, **query: str) -> list[Version]:
        """Every page of the agent's artifacts (current versions), remembered as versions seen.

        Bounded: stops at a repeated cursor or after ``MAX_PAGES`` pages.
        """
        url = f"{self._api}/agents/{quote(agent, safe='')}/artifacts"
        params: dict[str, Any] = {"page_size": PAGE_SIZE, **query}
        items: list[Any] = []
        cursors: set[str] = set()
        for _ in range(MAX_PAGES):
            body = await self.http.get_json(url, params)
            page = body.get("artifacts") if isinstance(body, dict) else None
            if not isinstance(page, list):
                log.warning("%s: agent %s: a listing page has no artifacts array", self.name, agent)
                page = []
            items.extend(page)
            cursor = as_str(body.get("next_cursor")) if isinstance(body, dict) else None
            if cursor is None:
                break
            if cursor in cursors:
                log.warning("%s: agent %s: the API repeated a cursor; listing stops", self.name, agent)
                break
            cursors.add(cursor)
            params["cursor"] = cursor
        else:
            log.warning("%s: agent %s: listing stopped after %d pages", self.name, agent, MAX_PAGES)
        versions = [v for v in (self._version(agent, item) for item in items) if v is not None]
        self._remember(agent, versions)
        current: dict[str, Version] = {}
        for v in versions:  # an artifact listed twice (it changed while we paged): the first, newest
            current.setdefault(v.artifact_id, v)
        return list(current.values())

    def _version(self, agent: str, item: Any) -> Version | None:
        """A listing item; one without an id cannot be downloaded and is left out."""
        artifact = as_str(item.get("id")) if isinstance(item, dict) else None
        if artifact is None:
            return None
        meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
        creator = item.get("creator") if isinstance(item.get("creator"), dict) else {}
        names = (as_str(creator.get("first_name")), as_str(creator.get("last_name")))
        full_name = " ".join(name for name in names if name)
        version = Version(
            artifact_id=artifact, version_id=as_str(item.get("version_id")),
            filename=as_str(item.get("filename")) or "", session_id=as_str(item.get("session_id")),
            size=as_int(meta.get("size")), created_at=as_str(item.get("created_at")),
            mime_type=as_str(meta.get("media_type")),
        )
        extra = {
            "id": artifact, "version_id": version.version_id, "created_at": version.created_at,
            "major_version": as_str(as_int(item.get("major_version"))), "session_id": version.session_id,
            "agent_id": as_str(item.get("agent_id")) or agent,
            "creator_email": as_str(creator.get("email")), "creator_name": full_name or None,
        }
        version.xattrs = {key: value for key, value in extra.items() if value is not None}
        return version

    def _remember(self, agent: str, versions: Iterable[Version]) -> None:
        seen = self._versions.setdefault(agent, {})
        for v in versions:
            if v.version_id is not None:
                seen.setdefault(v.artifact_id, {})[v.version_id] = v

    async def _search(self, agent: str, text: str) -> list[Entry]:
        return [self._file(v) for v in await self._listing(agent, search_query=text)]

    # ---- the agent's tree -------------------------------------------------

    async def _agent_tree(self, agent: str) -> list[Entry]:
        current = await self._listing(agent)
        known = self._versions.get(agent, {})
        for gone in set(known) - {v.artifact_id for v in current}:
            del known[gone]
        return [
            _folder("latest", ("latest",), [self._file(v) for v in current]),
            _folder("sessions", ("sessions",), self._sessions(current)),
            _folder("artifacts", ("artifacts",), [self._artifact(agent, v) for v in current]),
            Entry(name="search", kind=Kind.DIR, ref=("search", agent), key=("search",)),
        ]

    def _sessions(self, current: list[Version]) -> list[Entry]:
        by_session: dict[str, list[Entry]] = {}
        for v in current:
            if v.session_id is not None:
                by_session.setdefault(v.session_id, []).append(self._file(v))
        return [_folder(session, ("session", session), files, short_id=session)
                for session, files in by_session.items()]

    def _artifact(self, agent: str, current: Version) -> Entry:
        """``versions/<id>/<filename>`` for every version seen, and ``current`` → the listed one."""
        versions = self._versions.get(agent, {}).get(current.artifact_id, {})
        folders = [_folder(vid, ("version", vid), [self._file(v, immutable=True)], short_id=vid,
                           immutable=True) for vid, v in versions.items()]
        children = [_folder("versions", ("versions",), folders)]
        named = {entry.short_id: name for name, entry in assign_names(folders)}
        if current.version_id in named:
            target = f"versions/{named[current.version_id]}"
            children.append(Entry(name="current", kind=Kind.LINK, ref=None, key=("current",),
                                  target=target, fingerprint=target))
        return _folder(current.artifact_id, ("artifact", current.artifact_id), children,
                       short_id=current.artifact_id)

    def _file(self, v: Version, immutable: bool = False) -> Entry:
        """The same key and fingerprint wherever a version appears, so all share one cache."""
        return Entry(
            name=v.filename, kind=Kind.FILE, ref=("file", v.artifact_id, v.version_id),
            key=("artifact", v.artifact_id), size=v.size, mtime=v.mtime,
            fingerprint=fingerprint(v.version_id, v.size, v.created_at), short_id=v.artifact_id,
            mime_type=v.mime_type, xattrs=dict(v.xattrs), immutable=immutable,
        )

    def _agent_entry(self, agent: str) -> Entry:
        return Entry(name=agent, kind=Kind.DIR, ref=("agent", agent), key=("agent", agent), short_id=agent)

    def _search_entry(self, agent: str, text: str) -> Entry:
        return Entry(name=text, kind=Kind.DIR, ref=("search", agent, text), key=("search", text),
                     listed=False)


def _folder(name: str, key: Hashable, children: list[Entry], *, short_id: str = "",
            immutable: bool = False) -> Entry:
    """A directory delivered with its parent's listing; its mtime is the newest below it."""
    mtime = max((c.mtime for c in children if c.mtime is not None), default=None)
    return Entry(name=name, kind=Kind.DIR, ref=None, key=key, mtime=mtime, short_id=short_id,
                 immutable=immutable, children=children)


def url_expiry(url: str) -> float | None:
    """When a signed URL stops working, if its query says so in a common form, else None.

    ``X-Goog-Expires``/``X-Amz-Expires`` count seconds from ``X-Goog-Date``/``X-Amz-Date``;
    without a date, or for ``Expires``, a number beyond a week is an absolute unix time.
    Anything else is opaque: storage's refusal then makes the reader resolve again.
    """
    query = {key.lower(): value for key, value in parse_qsl(urlsplit(url).query)}
    for expires_param, date_param in EXPIRY_PARAMS:
        seconds = as_int(query.get(expires_param))
        if seconds is None:
            continue
        signed_at = _signing_time(query.get(date_param))
        if signed_at is not None:
            return signed_at + seconds
        if seconds > MAX_SIGNED_SECONDS:
            return float(seconds)
    return None


def _signing_time(value: str | None) -> float | None:
    """``20260515T143200Z`` (the form of X-Goog-Date and X-Amz-Date) → epoch seconds."""
    try:
        return datetime.strptime(value or "", "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None
