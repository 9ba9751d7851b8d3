"""Gumloop public API: ``/agents/{agent_id}/artifacts`` and ``/artifacts/{artifact_id}/download``.

Choices where the docs are silent:
- Auth is a personal API key: ``Authorization: Bearer`` and ``x-auth-key: <user id>`` are
  both required; either missing or wrong is 401 ``{"detail": ...}`` (FastAPI style).
- The list holds the current version of each artifact, ordered by that version's
  ``created_at`` (then id); a new version therefore moves its artifact to the front.
- ``sort_order`` other than ``newest``/``oldest``, a bad ``cursor``, or a non-integer
  ``page_size`` is 400. An unknown ``session_id`` is simply an empty list.
- ``metadata`` is ``{"media_type", "size"}``, or ``{}`` for artifacts stored without it;
  then the download endpoint's ``media_type`` and ``size`` are null too.
- Every ``url``/``download_url`` is freshly signed for ``url_ttl`` seconds.
"""

from __future__ import annotations

import hmac
from typing import Any

from . import paging, storage
from .server import AuthProblem, Reply, Request, bearer_problem, json_reply
from .state import GumloopArtifact, GumloopVersion, World, iso

SORT_ORDERS = ("newest", "oldest")


def _error(status: int, detail: str) -> Reply:
    return json_reply(status, {"detail": detail})


def _auth(world: World, req: Request) -> Reply | None:
    problem = bearer_problem(req, world.tokens["gumloop"])
    if problem is AuthProblem.MISSING:
        return _error(401, "Not authenticated")
    if problem is AuthProblem.INVALID:
        return _error(401, "Invalid API key")
    user = req.headers.get("x-auth-key")
    if not user:
        return _error(401, "Personal API keys require the x-auth-key header with your user ID")
    if not hmac.compare_digest(user.encode(), world.gumloop_user_id.encode()):
        return _error(401, "Invalid x-auth-key")
    return None


def handle(world: World, req: Request, parts: list[str]) -> Reply:
    denied = _auth(world, req)
    if denied:
        return denied
    match parts:
        case ["agents", agent_id, "artifacts"]:
            return _list(world, req, agent_id)
        case ["artifacts", artifact_id, "download"]:
            return _download(world, req, artifact_id)
    return _error(404, "Not Found")


def _metadata(version: GumloopVersion) -> dict[str, Any]:
    return {"media_type": version.media_type, "size": version.blob.size} if version.metadata_size else {}


def _artifact_json(world: World, artifact: GumloopArtifact) -> dict[str, Any]:
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
        "url": storage.gumloop_url(world, artifact.artifact_id, version.version_id),
        "creator": dict(version.creator) if version.creator is not None else None,
    }


def _list(world: World, req: Request, agent_id: str) -> Reply:
    params = req.params
    try:
        page_size = paging.parse_limit(params.get("page_size"))
    except ValueError:
        return _error(400, "page_size must be an integer")
    sort_order = params.get("sort_order") or "newest"
    if sort_order not in SORT_ORDERS:
        return _error(400, "sort_order must be 'newest' or 'oldest'")
    session_id = params.get("session_id")
    needle = (params.get("search_query") or "").casefold()
    with world.lock:
        if agent_id not in world.gumloop_agents:
            return _error(404, "Agent not found")
        matching = [
            a
            for a in world.gumloop_artifacts.values()
            if a.agent_id == agent_id
            and (not session_id or a.current.session_id == session_id)
            and needle in (a.current.filename or "").casefold()
        ]
        try:
            chunk, next_cursor = paging.page(
                matching,
                lambda a: (a.current.created_at, a.artifact_id),
                params.get("cursor"),
                page_size,
                newest_first=sort_order == "newest",
            )
        except ValueError:
            return _error(400, "Invalid cursor")
        return json_reply(200, {"artifacts": [_artifact_json(world, a) for a in chunk], "next_cursor": next_cursor})


def _download(world: World, req: Request, artifact_id: str) -> Reply:
    wanted = req.params.get("version_id")
    with world.lock:
        artifact = world.gumloop_artifacts.get(artifact_id)
        if artifact is None:
            return _error(404, "Artifact not found")
        version = next((v for v in artifact.versions if v.version_id == wanted), None) if wanted else artifact.current
        if version is None:
            return _error(404, "Artifact version not found")
        meta = _metadata(version)
        return json_reply(
            200,
            {
                "download_url": storage.gumloop_url(world, artifact.artifact_id, version.version_id),
                "filename": version.filename,
                "media_type": meta.get("media_type"),
                "size": meta.get("size"),
            },
        )
