"""Sigmic task artifacts: ``/api/v1/tasks/{id}/artifacts`` and ``.../artifacts/download?path=``.

Choices where the docs are silent:
- Files are listed sorted by ``path`` (as in the doc's example).
- ``path`` must equal a listed path exactly; anything else is 404 ``NOT_FOUND``.
- Downloads honour Range (206/416); the ETag changes on every put of the file, and
  Last-Modified is its ``modifiedAt``.
- A missing ``Authorization`` header is ``AUTH_REQUIRED``; any other bad header ``INVALID_API_KEY``.
"""

from __future__ import annotations

import hashlib

from .server import AuthProblem, BlobReply, Reply, Request, bearer_problem, json_reply
from .state import SigmicFile, World, iso

_AUTH_ERRORS = {
    AuthProblem.MISSING: ("AUTH_REQUIRED", "Authentication required"),
    AuthProblem.INVALID: ("INVALID_API_KEY", "Invalid or expired API key"),
}


def _error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"success": False, "error": {"code": code, "message": message}})


def handle(world: World, req: Request, parts: list[str]) -> Reply | BlobReply:
    problem = bearer_problem(req, world.tokens["sigmic"])
    if problem is not None:
        return _error(401, *_AUTH_ERRORS[problem])
    match parts:
        case ["api", "v1", "tasks", task_id, "artifacts"]:
            return _list(world, task_id)
        case ["api", "v1", "tasks", task_id, "artifacts", "download"]:
            return _download(world, req, task_id)
    return _error(404, "NOT_FOUND", "Not found")


def _file_json(f: SigmicFile) -> dict[str, object]:
    return {
        "name": f.path.rsplit("/", 1)[-1],
        "path": f.path,
        "size": f.blob.size,
        "mimeType": f.mime_type,
        "category": f.category,
        "modifiedAt": iso(f.modified_at, millis=True),
    }


def _list(world: World, task_id: str) -> Reply:
    with world.lock:
        files = world.sigmic_tasks.get(task_id)
        if files is None:
            return _error(404, "NOT_FOUND", "Task not found")
        listing = [_file_json(files[p]) for p in sorted(files)]
    return json_reply(200, {"success": True, "data": {"files": listing}})


def _download(world: World, req: Request, task_id: str) -> Reply | BlobReply:
    path = req.params.get("path")
    if not path:
        return _error(400, "VALIDATION_ERROR", "Missing required query parameter: path")
    with world.lock:
        files = world.sigmic_tasks.get(task_id)
        if files is None:
            return _error(404, "NOT_FOUND", "Task not found")
        f = files.get(path)
    if f is None:
        return _error(404, "NOT_FOUND", "File not found")
    return file_reply(task_id, f, filename=f.path.rsplit("/", 1)[-1])


def file_reply(task_id: str, f: SigmicFile, filename: str | None) -> BlobReply:
    """The bytes of one workspace file (also served by the ``static`` tree)."""
    tag = hashlib.sha256(f"{task_id}\n{f.path}\n{f.revision}\n{f.blob.size}\n{f.modified_at}".encode()).hexdigest()[:32]
    return BlobReply(f.blob, f.mime_type, f'"{tag}"', f.modified_at, filename=filename)
