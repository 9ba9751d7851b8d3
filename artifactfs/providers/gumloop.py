"""Gumloop: an agent's artifacts (api/gumloop.md; seeds/gumloop-*.txt).

``GET /agents/{id}/artifacts`` (paged) gives the current version of every artifact, so one
listing builds an agent's whole directory: ``latest/``, and, built only when first opened,
``sessions/<id>/`` and ``artifacts/<id>/versions/<version>/``. The API never lists old
versions, so every version a listing reveals is remembered for the life of the mount.
``search/<text>/`` is the same listing with ``search_query``, fetched on lookup.

Bytes: each listed artifact carries a signed ``url``; the first read uses it while its
signature is valid, then ``GET /artifacts/{id}/download?version_id=`` gives a fresh
``download_url``. Both are on storage's origin and fetched without credentials.

Credentials: ``Authorization: Bearer`` with a personal API key, a team key or an OAuth access
token; personal keys also need ``x-auth-key: <user id>`` (``user_id_env``), team keys the
``team_id`` query parameter on every request (``team_id``).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Hashable, Mapping
from urllib.parse import quote, unquote_plus

from ..config import TEXT, ProviderConfig, Secret
from ..errors import RemoteError
from ..model import Entry, Kind, Source
from ..names import assign_names
from .base import Probe, Provider, ProviderSpec, api_base, bearer, folder, newest
from .fields import as_dict, as_size, as_str, fingerprint, parse_time
from .paging import collect_pages

PAGE_SIZE = 100
MAX_SIGNED_SECONDS = 7 * 86400  # the longest a GCS V4 / S3 presigned URL may live
EXPIRY_PARAMS = (("x-goog-expires", "x-goog-date"), ("x-amz-expires", "x-amz-date"), ("expires", ""))
EXPIRY_NAMES = frozenset(name for pair in EXPIRY_PARAMS for name in pair if name)


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
    url: str | None = None
    xattrs: dict[str, str] = field(default_factory=dict)

    @property
    def mtime(self) -> float | None:
        return parse_time(self.created_at)


class GumloopProvider(Provider):
    """Agents at the top (configured ones, then any opened by name); their trees below."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = api_base(self.http.base_url, SPEC.api_prefix)
        self._agents: dict[str, None] = dict.fromkeys(self.config.ids)
        self._versions: dict[str, dict[str, dict[str, Version]]] = {}
        self._listed_urls: dict[tuple[str, str | None], str] = {}

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
                entry = Entry(name=name, kind=Kind.DIR, ref=("search", agent, name), key=("search", name),
                              listed=False)
                entry.children = await self._search(agent, name)
                return entry
        return None

    async def resolve(self, ref: Hashable) -> Source:
        """The listed signed URL while it is valid (once), else a fresh ``download_url``."""
        _, artifact, version = ref  # type: ignore[misc]
        listed = self._listed_urls.pop((artifact, version), None)
        if listed is not None:
            source = self.http.source(listed, expires_at=url_expiry(listed))
            if source.expires_at is not None and not source.expiring(time.time()):
                return source
        url = f"{self._api}/artifacts/{quote(artifact, safe='')}/download"
        body = as_dict(await self.http.get_json(url, {"version_id": version} if version else None))
        download = as_str(body.get("download_url"))
        if download is None:
            raise RemoteError(f"{self.name}: artifact {artifact}: the download answer has no download_url")
        return self.http.source(download, expires_at=url_expiry(download), size=as_size(body.get("size")))

    # ---- listings ---------------------------------------------------------

    async def _listing(self, agent: str, **query: str) -> list[Version]:
        """Every page of the agent's artifacts (current versions), remembered as versions seen."""
        url = f"{self._api}/agents/{quote(agent, safe='')}/artifacts"

        async def page(cursor: str | None) -> tuple[list[Any], str | None]:
            params = {"page_size": PAGE_SIZE, **query, **({"cursor": cursor} if cursor else {})}
            body = as_dict(await self.http.get_json(url, params))
            items = body.get("artifacts")
            return (items if isinstance(items, list) else []), as_str(body.get("next_cursor"))

        versions = await collect_pages(page, f"{self.name}: agent {agent}", key=lambda i: as_str(as_dict(i).get("id")),
                                       convert=lambda item: self._version(agent, item))
        self._remember(agent, versions)
        return versions

    def _version(self, agent: str, item: Any) -> Version | None:
        """A listing item; one without an id cannot be downloaded and is left out."""
        item = as_dict(item)
        artifact = as_str(item.get("id"))
        if artifact is None:
            return None
        meta = as_dict(item.get("metadata"))
        creator = as_dict(item.get("creator"))
        full_name = " ".join(n for n in (as_str(creator.get("first_name")), as_str(creator.get("last_name"))) if n)
        version = Version(
            artifact_id=artifact, version_id=as_str(item.get("version_id")),
            filename=as_str(item.get("filename")) or "", session_id=as_str(item.get("session_id")),
            size=as_size(meta.get("size")), created_at=as_str(item.get("created_at")),
            mime_type=as_str(meta.get("media_type")), url=as_str(item.get("url")),
        )
        extra = {
            "id": artifact, "version_id": version.version_id, "created_at": version.created_at,
            "major_version": as_str(as_size(item.get("major_version"))), "session_id": version.session_id,
            "agent_id": as_str(item.get("agent_id")) or agent,
            "creator_email": as_str(creator.get("email")), "creator_name": full_name or None,
        }
        version.xattrs = {key: value for key, value in extra.items() if value is not None}
        return version

    def _remember(self, agent: str, versions: list[Version]) -> None:
        seen = self._versions.setdefault(agent, {})
        first_url = None
        for v in versions:
            if v.version_id is not None:
                seen.setdefault(v.artifact_id, {})[v.version_id] = v
            if v.url is not None:
                self._listed_urls[(v.artifact_id, v.version_id)] = v.url
                first_url = first_url or v.url
        if first_url is not None:
            self.http.listed(first_url)  # its storage, connected to ahead of the first read

    async def _search(self, agent: str, text: str) -> list[Entry]:
        return [self._file(v) for v in await self._listing(agent, search_query=text)]

    # ---- the agent's tree -------------------------------------------------

    async def _agent_tree(self, agent: str) -> list[Entry]:
        current = await self._listing(agent)
        known = self._versions.get(agent, {})
        for gone in set(known) - {v.artifact_id for v in current}:
            del known[gone]
        latest = [self._file(v) for v in current]
        return [
            folder("latest", ("latest",), latest, mtime=newest(latest)),
            folder("sessions", ("sessions",), lambda: self._sessions(current), mtime=newest(latest)),
            folder("artifacts", ("artifacts",), lambda: [self._artifact(agent, v) for v in current],
                   mtime=newest(latest)),
            Entry(name="search", kind=Kind.DIR, ref=("search", agent), key=("search",)),
        ]

    def _sessions(self, current: list[Version]) -> list[Entry]:
        by_session: dict[str, list[Entry]] = {}
        for v in current:
            if v.session_id is not None:
                by_session.setdefault(v.session_id, []).append(self._file(v))
        return [folder(session, ("session", session), files, short_id=session, mtime=newest(files))
                for session, files in by_session.items()]

    def _artifact(self, agent: str, current: Version) -> Entry:
        """``versions/<id>/<filename>`` for every version seen, and ``current`` → the listed one."""
        versions = self._versions.get(agent, {}).get(current.artifact_id, {})
        folders = [folder(vid, ("version", vid), [self._file(v, immutable=True)], short_id=vid,
                          immutable=True, mtime=v.mtime) for vid, v in versions.items()]
        children = [folder("versions", ("versions",), folders, mtime=newest(folders))]
        named = {entry.short_id: name for name, entry in assign_names(folders)}
        if current.version_id in named:
            target = f"versions/{named[current.version_id]}"
            children.append(Entry(name="current", kind=Kind.LINK, ref=None, key=("current",),
                                  target=target, fingerprint=target, mtime=current.mtime))
        return folder(current.artifact_id, ("artifact", current.artifact_id), children,
                      short_id=current.artifact_id, mtime=current.mtime)

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


def url_expiry(url: str) -> float | None:
    """When a signed URL stops working, if its query says so in a common form, else None.

    ``X-Goog-Expires``/``X-Amz-Expires`` count seconds from ``X-Goog-Date``/``X-Amz-Date``;
    without a date, or for ``Expires``, a number beyond a week is an absolute unix time.
    Anything else is opaque: storage's refusal then makes the reader resolve again.
    """
    query = _expiry_params(url.partition("#")[0].partition("?")[2])
    for expires_param, date_param in EXPIRY_PARAMS:
        seconds = as_size(query.get(expires_param))
        if seconds is None:
            continue
        signed_at = _signing_time(query.get(date_param))
        if signed_at is not None:
            return signed_at + seconds
        if seconds > MAX_SIGNED_SECONDS:
            return float(seconds)
    return None


def _expiry_params(query: str) -> dict[str, str]:
    """The query's expiry and date parameters (names in lower case), decoded as ``parse_qsl``
    would; the rest (a 256-character signature) is not decoded at all."""
    found: dict[str, str] = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        name = (unquote_plus(name) if "%" in name or "+" in name else name).lower()
        if name in EXPIRY_NAMES and value:
            found[name] = unquote_plus(value)
    return found


@functools.lru_cache(maxsize=64)  # the URLs of one listing share their signing time
def _signing_time(value: str | None) -> float | None:
    """``20260515T143200Z`` (the form of X-Goog-Date and X-Amz-Date) → epoch seconds."""
    text = value or ""
    if len(text) != 16 or text[8] != "T" or text[15] != "Z" or not (text[:8] + text[9:15]).isdigit():
        return None
    try:
        return datetime(int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]), int(text[11:13]),
                        int(text[13:15]), tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _headers(config: ProviderConfig) -> dict[str, str]:
    """Bearer, plus ``x-auth-key`` when a user id is configured (personal API keys)."""
    user_id = config.secrets.get("user_id")
    return {**bearer(config), **({"x-auth-key": user_id} if user_id else {})}


def _params(config: ProviderConfig) -> dict[str, str]:
    """``team_id`` on every request when configured (team keys are checked against it)."""
    team = config.options.get("team_id")
    return {"team_id": team} if team else {}


def _demo(info: Mapping[str, Any]) -> dict[str, Any]:
    return {"user_id": info["gumloop_user_id"], "agents": ["abc123DEFghiJKL"]}


SPEC = ProviderSpec(
    type="gumloop",
    provider=GumloopProvider,
    default_base_url="https://api.gumloop.com/api/v1",
    api_prefix="/api/v1",
    ids_key="agents",
    options={"team_id": TEXT},
    secrets={"user_id": Secret("GUMLOOP_USER_ID", required=False, inline_needs_private=False)},
    headers=_headers,
    params=_params,
    probe=Probe("/agents/{id}/artifacts", {"page_size": 1}),
    demo=_demo,
)
