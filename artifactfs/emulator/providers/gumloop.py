"""Gumloop public API: ``/agents/{agent_id}/artifacts`` and ``/artifacts/{artifact_id}/download``.

To the docs (docs.gumloop.com API reference) and the official SDK (gumloop-py):
- ``Authorization: Bearer <token>`` with one of three kinds of token: the personal API key
  (``tokens["gumloop"]``), which also needs ``x-auth-key: <user id>``; an OAuth access
  token, which needs nothing else; a team key, which needs ``team_id=<team id>`` as a query
  parameter on every request (``x-auth-key`` optional, and checked when given).
- Errors are ``{"error": {"message", "code", "type"[, "param"]}}``, what the SDK parses.
- ``page_size`` defaults to 20 and is clamped to 1–100; one that is not an integer is 400.
- ``url`` and ``download_url`` are GCS V4 signed URLs (``signing.GCS``); an artifact put
  with ``external_url`` is linked there instead, with the same signed query appended,
  and the storage origin is not involved.

Choices where the docs are silent:
- Auth failures: no token is 401 ``missing_api_key``; an unknown one 401 ``invalid_api_key``;
  a personal key without ``x-auth-key`` 401 ``missing_user_id``, with a wrong one (any key)
  401 ``invalid_user_id``; a team key without ``team_id`` 401 ``missing_team_id`` (it cannot
  be validated), with another team's id 403 ``forbidden``. OAuth tokens ignore ``x-auth-key``.
- The list holds the current version of each artifact, ordered by that version's
  ``created_at`` (then id); a new version therefore moves its artifact to the front.
- ``sort_order`` other than ``newest``/``oldest`` or a bad ``cursor`` is 400
  ``invalid_parameter``. An unknown ``session_id`` is simply an empty list; an unknown
  agent is 404.
- ``metadata`` is ``{"media_type", "size"}``, or ``{}`` for artifacts stored without it;
  then the download endpoint's ``media_type`` and ``size`` are null too.
- Every ``url``/``download_url`` is freshly signed, valid 900 s (the lifetime of Google's
  V4 signing sample) unless the ``url_ttl`` switch says otherwise.
"""

from __future__ import annotations

import functools
import hmac
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import paging, storage
from ..blobs import Blob, as_blob
from ..clock import Timestamp, iso
from ..control import content
from ..mime import guess_mime
from ..samplefiles import pdf_bytes, png_bytes
from ..server import BlobReply, Reply, Request, json_reply
from ..signing import GCS
from . import ProviderState

if TYPE_CHECKING:
    from ..world import World

BASE_PATH = "/gumloop/api/v1"
DEFAULT_TOKEN = "demo-gumloop-token"
BUCKET = "gumloop-artifacts"
EXPORTS = {
    "add_gumloop_agent": "add_agent",
    "put_gumloop_artifact": "put_artifact",
    "gumloop_version": "version",
    "gumloop_user_id": "user_id",
}

DEFAULT_USER_ID = "user_demo"
DEFAULT_OAUTH_TOKEN = "gumloop-oauth-demo-access-token"
DEFAULT_TEAM_TOKEN = "gumloop-team-demo-key"
DEFAULT_TEAM_ID = "team_demo"
DEFAULT_URL_TTL = 900.0
SORT_ORDERS = ("newest", "oldest")
DEFAULT_CREATOR: dict[str, str | None] = {
    "id": "user_19a3bc",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "profile_picture": "https://example.com/avatars/ada.png",
}
_UNSET: Any = object()


@dataclass
class GumloopVersion:
    version_id: str
    major_version: int
    filename: str | None
    session_id: str | None
    created_at: float
    blob: Blob
    media_type: str
    metadata_size: bool  # False: metadata is {} and the download endpoint gives no size/type
    creator: dict[str, Any] | None
    external_url: str | None  # where the bytes live when not on the storage origin

    @functools.cached_property
    def external_path(self) -> str:
        """The path of ``external_url``, which its signature covers: worked out once."""
        return urllib.parse.urlsplit(self.external_url or "").path


@dataclass
class GumloopArtifact:
    artifact_id: str
    agent_id: str
    versions: list[GumloopVersion] = field(default_factory=list)

    @property
    def current(self) -> GumloopVersion:
        return self.versions[-1]

    def version(self, version_id: str) -> GumloopVersion | None:
        return next((v for v in self.versions if v.version_id == version_id), None)


def _order_key(artifact: GumloopArtifact) -> paging.Key:
    """Listings go by the current version's creation time, then id."""
    return artifact.current.created_at, artifact.artifact_id


class State(ProviderState):
    """Agents, their artifacts and each artifact's versions."""

    def __init__(
        self,
        world: World,
        user_id: str = DEFAULT_USER_ID,
        oauth_token: str = DEFAULT_OAUTH_TOKEN,
        team_token: str = DEFAULT_TEAM_TOKEN,
        team_id: str = DEFAULT_TEAM_ID,
    ) -> None:
        super().__init__(world)
        self.user_id = user_id
        self.oauth_token = oauth_token
        self.team_token = team_token
        self.team_id = team_id
        self.agents: set[str] = set()
        self.artifacts: dict[str, GumloopArtifact] = {}
        self._orders: dict[tuple[str, str | None, str, bool], tuple[list[GumloopArtifact], list[paging.Key]]] = {}

    def ordered(self, agent_id: str, session_id: str | None, needle: str,
                newest_first: bool) -> tuple[list[GumloopArtifact], list[paging.Key]]:
        """The artifacts a listing shows, in its order, with their sort keys (under the lock);
        kept until an artifact changes, so paging a big agent does not sort it per page."""
        wanted = (agent_id, session_id, needle, newest_first)
        if wanted not in self._orders:
            matching = [a for a in self.artifacts.values() if a.agent_id == agent_id
                        and (not session_id or a.current.session_id == session_id)
                        and needle in (a.current.filename or "").casefold()]
            matching.sort(key=_order_key, reverse=newest_first)
            self._orders[wanted] = (matching, [_order_key(a) for a in matching])
        return self._orders[wanted]

    def ready_info(self) -> dict[str, Any]:
        return {
            "gumloop_user_id": self.user_id,
            "gumloop_oauth_token": self.oauth_token,
            "gumloop_team_token": self.team_token,
            "gumloop_team_id": self.team_id,
        }

    def add_agent(self, agent_id: str) -> None:
        with self.world.lock:
            self.agents.add(agent_id)

    def put_artifact(
        self,
        agent_id: str,
        filename: str | None,
        data: bytes | str | Blob,
        session_id: str | None = None,
        media_type: str | None = None,
        artifact_id: str | None = None,
        metadata_size: bool = True,
        creator: dict[str, Any] | None = _UNSET,
        version_id: str | None = None,
        created_at: Timestamp = None,
        external_url: str | None = None,
    ) -> tuple[str, str]:
        """A new artifact, or a new current version of ``artifact_id`` (major_version + 1).

        A new version without ``session_id`` stays in its predecessor's session. With
        ``external_url`` the links point there (signed query appended) and ``data`` only
        describes the file (its size; a ``PatternBlob`` costs nothing).
        """
        with self.world.lock:
            self.agents.add(agent_id)
            artifact = self.artifacts.get(artifact_id or "")
            if artifact is None:
                artifact = GumloopArtifact(artifact_id or self.world.new_id("art_"), agent_id)
                self.artifacts[artifact.artifact_id] = artifact
            elif artifact.agent_id != agent_id:
                raise ValueError(f"artifact {artifact_id} belongs to agent {artifact.agent_id}")
            previous = artifact.versions[-1] if artifact.versions else None
            if version_id is not None and artifact.version(version_id) is not None:
                raise ValueError(f"artifact {artifact.artifact_id} already has version {version_id}")
            version = GumloopVersion(
                version_id=version_id or self.world.new_id("ver_"),
                major_version=previous.major_version + 1 if previous else 1,
                filename=filename,
                session_id=session_id if session_id or not previous else previous.session_id,
                created_at=self.world.timestamp(created_at),
                blob=as_blob(data),
                media_type=media_type or guess_mime(filename),
                metadata_size=metadata_size,
                creator=dict(DEFAULT_CREATOR) if creator is _UNSET else creator,
                external_url=external_url,
            )
            artifact.versions.append(version)
            self._orders.clear()
            return artifact.artifact_id, version.version_id

    def version(self, artifact_id: str, version_id: str | None = None) -> Blob:
        """The bytes of one version (default: current)."""
        with self.world.lock:
            artifact = self.artifacts[artifact_id]
            found = artifact.current if version_id is None else artifact.version(version_id)
            if found is None:
                raise KeyError(version_id)
            return found.blob

    def signed_url(self, artifact_id: str, version_id: str) -> str:
        """A freshly signed URL of one version's bytes (``version_url``)."""
        with self.world.lock:
            version = self.artifacts[artifact_id].version(version_id)
        if version is None:
            raise KeyError(version_id)
        return self.version_url(artifact_id, version)

    def version_url(self, artifact_id: str, version: GumloopVersion) -> str:
        """A freshly signed URL of ``version``'s bytes: on the storage origin, or its ``external_url``."""
        ttl = self.world.url_ttl(DEFAULT_URL_TTL)
        if version.external_url is None:
            path = f"/{BUCKET}/{storage.quote(artifact_id)}/{storage.quote(version.version_id)}"
            return self.world.signed_url(path, GCS, ttl)
        query = self.world.signer.query(version.external_path, GCS, ttl)
        return version.external_url + ("&" if "?" in version.external_url else "?") + query

    def serve_object(self, req: Request, parts: list[str]) -> Reply | BlobReply:
        refused = storage.refusal(self.world, req, GCS)
        if refused is not None:
            return refused
        with self.world.lock:
            artifact = self.artifacts.get(parts[0]) if len(parts) == 2 else None
            version = artifact.version(parts[1]) if artifact else None
        if version is None:
            return storage.no_such_key()
        return BlobReply(version.blob, version.media_type, f'"{version.version_id}"', version.created_at)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
}


def _error(status: int, code: str, message: str, param: str | None = None) -> Reply:
    kind = _ERROR_TYPES.get(status, "api_error")
    body = {"message": message, "code": code, "type": kind, **({"param": param} if param else {})}
    return json_reply(status, {"error": body})


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _auth(state: State, req: Request) -> Reply | None:
    """Which of the three kinds of token this is, and whether it comes with what that kind needs."""
    header = req.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header:
        return _error(401, "missing_api_key", "Missing Authorization header")
    kind = None
    if scheme.lower() == "bearer":
        kinds = {"personal": state.world.tokens["gumloop"], "oauth": state.oauth_token, "team": state.team_token}
        kind = next((k for k, expected in kinds.items() if _same(token, expected)), None)
    if kind is None:
        return _error(401, "invalid_api_key", "Invalid API key")
    user = req.headers.get("x-auth-key")
    if kind == "personal" and not user:
        return _error(401, "missing_user_id", "Personal API keys also require the x-auth-key header with your user ID")
    if kind != "oauth" and user and not _same(user, state.user_id):
        return _error(401, "invalid_user_id", "x-auth-key does not name the key's user")
    team = req.params.get("team_id")
    if kind == "team" and not team:
        return _error(401, "missing_team_id", "Team keys require the team_id query parameter")
    if kind == "team" and not _same(team or "", state.team_id):
        return _error(403, "forbidden", "This key does not belong to that team")
    return None


def handle(state: State, req: Request, parts: list[str]) -> Reply:
    denied = _auth(state, req)
    if denied:
        return denied
    match parts:
        case ["agents", agent_id, "artifacts"]:
            return _list(state, req, agent_id)
        case ["artifacts", artifact_id, "download"]:
            return _download(state, req, artifact_id)
    return _error(404, "not_found", "Not Found")


def _metadata(version: GumloopVersion) -> dict[str, Any]:
    return {"media_type": version.media_type, "size": version.blob.size} if version.metadata_size else {}


def _artifact_json(state: State, artifact: GumloopArtifact) -> dict[str, Any]:
    version = artifact.current
    return {
        "id": artifact.artifact_id,
        "version_id": version.version_id,
        "major_version": version.major_version,
        "agent_id": artifact.agent_id,
        "session_id": version.session_id,
        "filename": version.filename,
        "created_at": iso(version.created_at),
        "metadata": _metadata(version),
        "url": state.version_url(artifact.artifact_id, version),
        "creator": dict(version.creator) if version.creator is not None else None,
    }


def _list(state: State, req: Request, agent_id: str) -> Reply:
    params = req.params
    try:
        page_size = paging.parse_limit(params.get("page_size"))
    except ValueError:
        return _error(400, "invalid_parameter", "page_size must be an integer", "page_size")
    sort_order = params.get("sort_order") or "newest"
    if sort_order not in SORT_ORDERS:
        return _error(400, "invalid_parameter", "sort_order must be 'newest' or 'oldest'", "sort_order")
    session_id = params.get("session_id")
    needle = (params.get("search_query") or "").casefold()
    with state.world.lock:
        if agent_id not in state.agents:
            return _error(404, "not_found", "Agent not found")
        ordered, keys = state.ordered(agent_id, session_id, needle, sort_order == "newest")
        try:
            chunk, next_cursor = paging.page_of(ordered, keys, params.get("cursor"), page_size,
                                                newest_first=sort_order == "newest")
        except ValueError:
            return _error(400, "invalid_parameter", "Invalid cursor", "cursor")
        return json_reply(200, {"artifacts": [_artifact_json(state, a) for a in chunk], "next_cursor": next_cursor})


def _download(state: State, req: Request, artifact_id: str) -> Reply:
    wanted = req.params.get("version_id")
    with state.world.lock:
        artifact = state.artifacts.get(artifact_id)
        if artifact is None:
            return _error(404, "not_found", "Artifact not found")
        version = artifact.version(wanted) if wanted else artifact.current
        if version is None:
            return _error(404, "not_found", "Artifact version not found")
        meta = _metadata(version)
        return json_reply(
            200,
            {
                "download_url": state.version_url(artifact.artifact_id, version),
                "filename": version.filename,
                "media_type": meta.get("media_type"),
                "size": meta.get("size"),
            },
        )


def _control_put(state: State, body: dict[str, Any]) -> dict[str, Any]:
    artifact_id, version_id = state.put_artifact(
        body["agent_id"],
        body.get("filename"),
        content(body),
        session_id=body.get("session_id"),
        media_type=body.get("media_type"),
        artifact_id=body.get("artifact_id"),
        external_url=body.get("external_url"),
    )
    return {"artifact_id": artifact_id, "version_id": version_id}


CONTROL = {"put": _control_put}

AGENT = "abc123DEFghiJKL"
SESSIONS = ("ses_8h2k4m1n", "ses_3p9q7r2s")
GRACE = {
    "id": "user_7c2d9e",
    "first_name": "Grace",
    "last_name": "Hopper",
    "email": "grace@example.com",
    "profile_picture": None,
}


def seed(state: State) -> None:
    """Ids and times of the doc's examples (``abc123DEFghiJKL``, ``art_aBcDeF123``/``ver_xYz9012``)."""
    first, second = SESSIONS
    ada_no_picture = {**DEFAULT_CREATOR, "profile_picture": None}
    # (artifact_id, version_id, created_at, session, filename, content, extra keyword arguments)
    versions: list[tuple[str, str, str, str, str | None, bytes | str, dict[str, Any]]] = [
        ("art_aBcDeF123", "ver_mNo3456", "2026-05-14T10:05:00Z", first, "q4_sales_report.pdf",
         pdf_bytes("Q4 sales report (draft)", ["Draft numbers, not reviewed."]), {}),
        ("art_aBcDeF123", "ver_xYz9012", "2026-05-15T14:32:00Z", first, "q4_sales_report.pdf",
         pdf_bytes("Q4 sales report", ["Total revenue: 1.2M USD", "Top region: north"]), {}),
        ("art_gHiJkL456", "ver_aBc4567", "2026-05-15T14:30:11Z", first, "summary.txt",
         "Q4 revenue grew 12%; north led all regions.\n", {"metadata_size": False, "creator": ada_no_picture}),
        ("art_qRsTuV345", "ver_dEf5678", "2026-05-15T14:35:00Z", first, None,
         json.dumps({"rows": 120, "status": "ok"}, indent=2) + "\n", {"media_type": "application/json"}),
        ("art_pQrStU789", "ver_gHi6789", "2026-05-16T09:00:00Z", second, "chart.png",
         png_bytes(24, 12, 200), {"creator": None}),
        ("art_vWxYz0123", "ver_jKl7890", "2026-05-16T09:05:00Z", second, "report.md",
         "# Report (first run)\n", {"creator": GRACE}),
        ("art_kLmNoP234", "ver_mNo8901", "2026-05-16T09:10:00Z", second, "report.md",
         "# Report (second run)\n\nAll checks passed.\n", {"creator": GRACE}),
    ]  # fmt: skip
    for artifact_id, version_id, created_at, session, filename, data, extra in versions:
        state.put_artifact(
            AGENT,
            filename,
            data,
            session,
            artifact_id=artifact_id,
            version_id=version_id,
            created_at=created_at,
            **extra,
        )
