"""Sigmic task artifacts: ``/api/v1/tasks/{id}/artifacts`` and ``.../artifacts/download?path=``.

Choices where the docs are silent:
- Files are listed sorted by ``path`` (as in the doc's example).
- ``path`` must equal a listed path exactly; anything else is 404 ``NOT_FOUND``.
- Downloads honour Range (206/416); the ETag changes on every put of the file, and
  Last-Modified is its ``modifiedAt``.
- A missing ``Authorization`` header is ``AUTH_REQUIRED``; any other bad header ``INVALID_API_KEY``.

Also here: ``/static/``, every task's files as a plain directory tree (see ``static``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import static
from ..blobs import Blob, PatternBlob, as_blob
from ..clock import Timestamp, iso
from ..control import content
from ..mime import guess_mime
from ..samplefiles import MIB, csv_text, pdf_bytes, png_bytes
from ..server import AuthProblem, BlobReply, Reply, Request, bearer_problem, json_reply
from . import ProviderState

if TYPE_CHECKING:
    from ..world import World

BASE_PATH = "/sigmic"
DEFAULT_TOKEN = "demo-sigmic-token"
BUCKET = ""
ROUTES = {static.PREFIX: static.handle}
EXPORTS = {
    "add_sigmic_task": "add_task",
    "put_sigmic_file": "put_file",
    "remove_sigmic_file": "remove_file",
    "sigmic_file": "file",
    "sigmic_tasks": "tasks",
}

_AUTH_ERRORS = {
    AuthProblem.MISSING: ("AUTH_REQUIRED", "Authentication required"),
    AuthProblem.INVALID: ("INVALID_API_KEY", "Invalid or expired API key"),
}
_CATEGORIES = {
    "csv": "csv",
    "pdf": "pdf",
    "json": "json",
    "md": "text",
    "txt": "text",
    "py": "code",
    "js": "code",
    "ts": "code",
    "sh": "code",
    "sql": "code",
}


def category_of(path: str, mime: str) -> str:
    """Sigmic's ``category``: by extension, else ``image``/``text`` by MIME type, else ``other``."""
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    if ext in _CATEGORIES:
        return _CATEGORIES[ext]
    for prefix in ("image", "text"):
        if mime.startswith(prefix + "/"):
            return prefix
    return "other"


@dataclass
class SigmicFile:
    path: str
    blob: Blob
    mime_type: str
    category: str
    modified_at: float
    revision: int  # bumped on every put, so the ETag changes even if size and time do not


class State(ProviderState):
    """Tasks and their workspace files."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.tasks: dict[str, dict[str, SigmicFile]] = {}
        self._revisions = 0

    def add_task(self, task_id: str) -> None:
        with self.world.lock:
            self.tasks.setdefault(task_id, {})

    def put_file(
        self,
        task_id: str,
        path: str,
        data: bytes | str | Blob,
        mime_type: str | None = None,
        category: str | None = None,
        modified_at: Timestamp = None,
    ) -> None:
        """Add or replace a workspace file (the task is created if new)."""
        mime = mime_type or guess_mime(path)
        with self.world.lock:
            self._revisions += 1
            self.tasks.setdefault(task_id, {})[path] = SigmicFile(
                path,
                as_blob(data),
                mime,
                category or category_of(path, mime),
                self.world.timestamp(modified_at),
                self._revisions,
            )

    def remove_file(self, task_id: str, path: str) -> None:
        with self.world.lock:
            del self.tasks[task_id][path]

    def file(self, task_id: str, path: str) -> Blob:
        with self.world.lock:
            return self.tasks[task_id][path].blob

    @staticmethod
    def file_reply(task_id: str, f: SigmicFile, filename: str | None) -> BlobReply:
        """The bytes of one workspace file (also served by the ``static`` tree)."""
        tag = hashlib.sha256(f"{task_id}\n{f.path}\n{f.revision}\n{f.blob.size}\n{f.modified_at}".encode())
        return BlobReply(f.blob, f.mime_type, f'"{tag.hexdigest()[:32]}"', f.modified_at, filename=filename)


def _error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"success": False, "error": {"code": code, "message": message}})


def handle(state: State, req: Request, parts: list[str]) -> Reply | BlobReply:
    problem = bearer_problem(req, state.world.tokens["sigmic"])
    if problem is not None:
        return _error(401, *_AUTH_ERRORS[problem])
    match parts:
        case ["api", "v1", "tasks", task_id, "artifacts"]:
            return _list(state, task_id)
        case ["api", "v1", "tasks", task_id, "artifacts", "download"]:
            return _download(state, req, task_id)
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


def _list(state: State, task_id: str) -> Reply:
    with state.world.lock:
        files = state.tasks.get(task_id)
        if files is None:
            return _error(404, "NOT_FOUND", "Task not found")
        listing = [_file_json(files[p]) for p in sorted(files)]
    return json_reply(200, {"success": True, "data": {"files": listing}})


def _download(state: State, req: Request, task_id: str) -> Reply | BlobReply:
    path = req.params.get("path")
    if not path:
        return _error(400, "VALIDATION_ERROR", "Missing required query parameter: path")
    with state.world.lock:
        files = state.tasks.get(task_id)
        if files is None:
            return _error(404, "NOT_FOUND", "Task not found")
        f = files.get(path)
    if f is None:
        return _error(404, "NOT_FOUND", "File not found")
    return state.file_reply(task_id, f, filename=f.path.rsplit("/", 1)[-1])


def _control_put(state: State, body: dict[str, Any]) -> None:
    state.put_file(
        body["task_id"],
        body["path"],
        content(body),
        mime_type=body.get("mime_type"),
        category=body.get("category"),
        modified_at=body.get("modified_at"),
    )


CONTROL = {"put": _control_put}


def seed(state: State) -> None:
    put = state.put_file
    put("task_123", "downloads/output.csv", csv_text(30), modified_at="2026-01-26T16:00:00.000Z")
    put(
        "task_123",
        "downloads/report.pdf",
        pdf_bytes("Quarterly report", ["Revenue grew 12% quarter on quarter.", "See output.csv for the data."]),
        modified_at="2026-01-26T16:01:00.000Z",
    )
    put("task_123", "uploads/data.csv", csv_text(60, start=100), modified_at="2026-01-26T15:50:00.000Z")
    put("task_123", "downloads/charts/q4.png", png_bytes(16, 16, 90), modified_at="2026-01-26T16:02:00.000Z")
    put("task_456", "downloads/model.bin", PatternBlob(8 * MIB, seed=456), modified_at="2026-01-27T09:15:00.000Z")
    put(
        "task_456",
        "downloads/notes.md",
        "# Training notes\n\n- 3 epochs, lr 3e-4\n- validation loss 0.412\n",
        modified_at="2026-01-27T09:16:00.000Z",
    )
    put(
        "task_456",
        "code/train.py",
        "import sys\n\n\ndef main() -> int:\n    print('training...')\n    return 0\n\n\nsys.exit(main())\n",
        modified_at="2026-01-27T09:00:00.000Z",
    )
