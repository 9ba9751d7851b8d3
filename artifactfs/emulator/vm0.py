"""vm0 artifacts API: list, get, versions, and download (a 302 to a presigned tar.gz).

Choices where the docs are silent:
- Artifacts are addressed by id only (not by name). Lists are newest-created first;
  ``limit`` defaults to 20 and is clamped to 1–100 (non-integer: 400); cursors are opaque.
- ``size``/``file_count`` are the uncompressed total and count of the version's regular
  files, not the archive's size (the archive size is only known from the storage response).
- ``version_id`` for download is the full 64-hex id or a unique prefix of ≥ 8 characters
  (case-insensitive): shorter is 400 ``BAD_REQUEST``, ambiguous is 400
  ``AMBIGUOUS_VERSION``, no match is 404 ``NOT_FOUND``.
- Errors are ``{"error": {"message", "code"}}``: 401 ``UNAUTHORIZED``, 404 ``NOT_FOUND``,
  400 ``BAD_REQUEST``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import paging, storage
from .server import Reply, Request, bearer_problem, json_reply
from .state import Vm0Artifact, Vm0Version, World, iso

MIN_PREFIX = 8


def _error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"error": {"message": message, "code": code}})


def handle(world: World, req: Request, parts: list[str]) -> Reply:
    if bearer_problem(req, world.tokens["vm0"]) is not None:
        return _error(401, "UNAUTHORIZED", "Invalid or missing API key")
    match parts:
        case ["v1", "artifacts"]:
            return _list(world, req)
        case ["v1", "artifacts", artifact_id, *rest] if rest in ([], ["versions"], ["download"]):
            with world.lock:
                artifact = world.vm0_artifacts.get(artifact_id)
                if artifact is None:
                    return _error(404, "NOT_FOUND", "Artifact not found")
                if rest == ["versions"]:
                    return _versions(req, artifact)
                if rest == ["download"]:
                    return _download(world, req, artifact)
                return json_reply(200, {**_summary(artifact), "current_version": _version_json(artifact.current)})
    return _error(404, "NOT_FOUND", "Not found")


def _summary(artifact: Vm0Artifact) -> dict[str, Any]:
    current = artifact.current
    return {
        "id": artifact.artifact_id,
        "name": artifact.name,
        "current_version_id": current.version_id,
        "size": current.size,
        "file_count": current.file_count,
        "created_at": iso(artifact.versions[0].created_at),
        "updated_at": iso(current.created_at),
    }


def _version_json(version: Vm0Version) -> dict[str, Any]:
    return {
        "id": version.version_id,
        "artifact_id": version.artifact_id,
        "size": version.size,
        "file_count": version.file_count,
        "message": version.message,
        "created_by": version.created_by,
        "created_at": iso(version.created_at),
    }


def _paged(
    req: Request, items: list[Any], key: Callable[[Any], paging.Key], render: Callable[[Any], dict[str, Any]]
) -> Reply:
    try:
        limit = paging.parse_limit(req.params.get("limit"))
        chunk, next_cursor = paging.page(items, key, req.params.get("cursor"), limit)
    except ValueError:
        return _error(400, "BAD_REQUEST", "limit must be an integer and cursor one returned by the API")
    return json_reply(
        200,
        {
            "data": [render(i) for i in chunk],
            "pagination": {"has_more": next_cursor is not None, "next_cursor": next_cursor},
        },
    )


def _list(world: World, req: Request) -> Reply:
    with world.lock:
        return _paged(
            req, list(world.vm0_artifacts.values()), lambda a: (a.versions[0].created_at, a.artifact_id), _summary
        )


def _versions(req: Request, artifact: Vm0Artifact) -> Reply:
    return _paged(req, artifact.versions, lambda v: (v.created_at, v.version_id), _version_json)


def _download(world: World, req: Request, artifact: Vm0Artifact) -> Reply:
    wanted = (req.params.get("version_id") or "").lower()
    version = artifact.current
    if wanted:
        if len(wanted) < MIN_PREFIX:
            return _error(400, "BAD_REQUEST", f"version_id prefix must be at least {MIN_PREFIX} characters")
        matches = [v for v in artifact.versions if v.version_id.startswith(wanted)]
        if not matches:
            return _error(404, "NOT_FOUND", "Version not found")
        if len(matches) > 1:
            return _error(400, "AMBIGUOUS_VERSION", "version_id prefix matches more than one version")
        version = matches[0]
    return Reply(302, headers={"Location": storage.vm0_url(world, artifact.artifact_id, version.version_id)})
