"""Sigmic tasks API: the task list and task, and each task's workspace files.

To the docs (docs.sigmic.ai):
  GET /api/v1/tasks?limit=&offset=              every task, most recent activity first:
      ``{"success": true, "data": [task + lastActivityAt, messageCount], "pagination":
      {"total", "limit", "offset", "hasMore"}}``; ``limit`` default 50, clamped to 1–100,
      ``offset`` default 0
  GET /api/v1/tasks/{id}                        ``{"success": true, "data": task}``
  GET /api/v1/tasks/{id}/artifacts              ``{"success": true, "data": {"files": [...]}}``
  GET /api/v1/tasks/{id}/artifacts/download?path=   the bytes (400 ``VALIDATION_ERROR`` without
                                                path, 404 ``NOT_FOUND`` for an unknown one)
- Auth is ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No credential is 401
  ``AUTH_REQUIRED``; one that starts with neither ``sigmic_`` nor ``eyJ`` (or an
  Authorization scheme other than Bearer) ``INVALID_AUTH_FORMAT``; a wrong ``sigmic_`` key
  ``INVALID_API_KEY``; a JWT (``eyJ``) ``INVALID_TOKEN``, as the emulator issues none.
- Errors are ``{"success": false, "error": {"message", "code"}}``.
- Statuses ``pending``, ``running``, ``awaiting_approval``, ``completed``, ``failed``,
  ``cancelled``; a finished task can be resumed (``resume``), so its files change.

Choices where the docs are silent:
- With both headers, ``Authorization`` is the one checked.
- A task's ``lastActivityAt`` is its latest change: creation, a status change or a file
  put; the list is sorted by it, then by ``createdAt`` and id, newest first.
- ``limit`` or ``offset`` that is not an integer, and a negative ``offset``, are 400
  ``VALIDATION_ERROR``.
- ``messageCount`` counts the user's messages and the agent's answers: 1 when a task is
  created, +1 when it completes, +1 per follow-up (``resume``).
- ``error`` is a message string (null unless failed); ``output`` is null until the task
  has started, then ``{content, updatedAt, thoughts: [], toolCalls: []}``;
  ``pendingApprovals`` holds one ``{id, toolName, description, createdAt}`` while the task
  is ``awaiting_approval``. ``apiKeyId``, ``sessionId`` and ``conversationId`` are
  deterministic per task; ``env`` is ``{}``.
- Files are listed sorted by ``path`` (as in the doc's example). ``path`` must equal a
  listed path exactly; anything else is 404 ``NOT_FOUND``.
- Downloads honour Range (206/416); the ETag changes on every put of the file, and
  Last-Modified is its ``modifiedAt``.

Also here: ``/static/``, every task's files as a plain directory tree (see ``static``).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import static
from ..blobs import Blob, PatternBlob, as_blob
from ..clock import Timestamp, iso, iso_ms
from ..control import content
from ..mime import guess_mime
from ..samplefiles import MIB, csv_text, pdf_bytes, png_bytes
from ..server import BlobReply, Reply, Request, json_reply
from . import ProviderState

if TYPE_CHECKING:
    from ..world import World

BASE_PATH = "/sigmic"
DEFAULT_TOKEN = "sigmic_demo_" + hashlib.sha256(b"artifactfs emulator sigmic demo key").hexdigest()[:32]
ROUTES = {static.PREFIX: static.handle}
EXPORTS = {
    "add_sigmic_task": "add_task",
    "put_sigmic_file": "put_file",
    "remove_sigmic_file": "remove_file",
    "sigmic_file": "file",
    "set_sigmic_status": "set_status",
    "resume_sigmic_task": "resume",
    "sigmic_tasks": "tasks",
}

STATUSES = ("pending", "running", "awaiting_approval", "completed", "failed", "cancelled")
FINAL = ("completed", "failed", "cancelled")
DEFAULT_LIMIT, MAX_LIMIT = 50, 100
USERNAME = "demo"
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


@dataclass
class SigmicTask:
    task_id: str
    status: str
    message: str
    created_at: float
    last_activity_at: float
    started_at: float | None = None
    completed_at: float | None = None
    error: str | None = None
    output: str = ""
    message_count: int = 1
    files: dict[str, SigmicFile] = field(default_factory=dict)

    def touch(self, when: float) -> None:
        self.last_activity_at = max(self.last_activity_at, when)


class State(ProviderState):
    """Tasks, their status and their workspace files."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.tasks: dict[str, SigmicTask] = {}
        self._revisions = 0

    def add_task(
        self,
        task_id: str,
        status: str = "completed",
        message: str = "Run the analysis",
        created_at: Timestamp = None,
        output: str = "",
    ) -> None:
        """A new task in ``status`` (started and, if final, finished when created); an existing one is kept."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.world.lock:
            if task_id in self.tasks:
                return
            when = self.world.timestamp(created_at)
            task = SigmicTask(task_id, "pending", message, when, when, output=output)
            self.tasks[task_id] = task
            self._move(task, status, None, when)

    def set_status(self, task_id: str, status: str, error: str | None = None, at: Timestamp = None) -> None:
        """Move a task to ``status`` at ``at``: running stamps ``startedAt``, a final status ``completedAt``."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.world.lock:
            self._move(self.tasks[task_id], status, error, self.world.timestamp(at))

    def _move(self, task: SigmicTask, status: str, error: str | None, when: float) -> None:
        if status != "pending" and task.started_at is None:
            task.started_at = when
        if status in FINAL:
            if task.status not in FINAL:
                task.completed_at = when
                task.message_count += status == "completed"
        else:
            task.completed_at = None
        task.status = status
        task.error = (error or "Task failed") if status == "failed" else None
        task.touch(when)

    def resume(self, task_id: str, message: str = "Please continue", at: Timestamp = None) -> _Resumed:
        """A follow-up message: a finished task runs again now. Used as a context manager, it
        completes when the block ends (files put inside are the new output)."""
        with self.world.lock:
            task = self.tasks[task_id]
            if task.status not in FINAL:
                raise ValueError(f"task {task_id} is {task.status}; only a finished task can be resumed")
            task.message_count += 1
            task.message = message
            self._move(task, "running", None, self.world.timestamp(at))
        return _Resumed(self, task_id)

    def put_file(
        self,
        task_id: str,
        path: str,
        data: bytes | str | Blob,
        mime_type: str | None = None,
        category: str | None = None,
        modified_at: Timestamp = None,
    ) -> None:
        """Add or replace a workspace file (the task is created, completed, if new)."""
        mime = mime_type or guess_mime(path)
        with self.world.lock:
            when = self.world.timestamp(modified_at)
            self.add_task(task_id, created_at=when)
            self._revisions += 1
            task = self.tasks[task_id]
            task.files[path] = SigmicFile(
                path, as_blob(data), mime, category or category_of(path, mime), when, self._revisions
            )
            task.touch(when)

    def remove_file(self, task_id: str, path: str) -> None:
        with self.world.lock:
            task = self.tasks[task_id]
            del task.files[path]
            task.touch(self.world.timestamp())

    def file(self, task_id: str, path: str) -> Blob:
        with self.world.lock:
            return self.tasks[task_id].files[path].blob

    @staticmethod
    def file_reply(task_id: str, f: SigmicFile, filename: str | None) -> BlobReply:
        """The bytes of one workspace file (also served by the ``static`` tree)."""
        tag = hashlib.sha256(f"{task_id}\n{f.path}\n{f.revision}\n{f.blob.size}\n{f.modified_at}".encode())
        return BlobReply(f.blob, f.mime_type, f'"{tag.hexdigest()[:32]}"', f.modified_at, filename=filename)


class _Resumed:
    """What ``State.resume`` returns: the task is already running; leaving a ``with`` block completes it."""

    def __init__(self, state: State, task_id: str) -> None:
        self._state = state
        self._task_id = task_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self._state.set_status(self._task_id, "completed")


# ---- the API ------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"success": False, "error": {"message": message, "code": code}})


def _auth(state: State, req: Request) -> Reply | None:
    header = req.headers.get("authorization")
    if header:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer":
            credential = ""
    else:
        credential = req.headers.get("x-api-key", "")
    credential = credential.strip()
    if not header and not credential:
        return _error(401, "AUTH_REQUIRED", "Authentication required")
    if not credential.startswith(("sigmic_", "eyJ")):
        return _error(401, "INVALID_AUTH_FORMAT", "Use an API key (sigmic_...) or a token (eyJ...)")
    if credential.startswith("eyJ"):
        return _error(401, "INVALID_TOKEN", "Invalid or expired token")
    if not hmac.compare_digest(credential.encode(), state.world.tokens["sigmic"].encode()):
        return _error(401, "INVALID_API_KEY", "Invalid or expired API key")
    return None


def handle(state: State, req: Request, parts: list[str]) -> Reply | BlobReply:
    denied = _auth(state, req)
    if denied:
        return denied
    match parts:
        case ["api", "v1", "tasks"]:
            return _list_tasks(state, req)
        case ["api", "v1", "tasks", task_id, *rest] if rest in ([], ["artifacts"], ["artifacts", "download"]):
            with state.world.lock:
                task = state.tasks.get(task_id)
                if task is None:
                    return _error(404, "NOT_FOUND", "Task not found")
                if not rest:
                    return json_reply(200, {"success": True, "data": _task_json(task)})
                files = dict(task.files)
            if rest == ["artifacts"]:
                listing = [_file_json(files[p]) for p in sorted(files)]
                return json_reply(200, {"success": True, "data": {"files": listing}})
            return _download(state, req, task_id, files)
    return _error(404, "NOT_FOUND", "Not found")


def _integer(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name) or str(default)
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


def _list_tasks(state: State, req: Request) -> Reply:
    try:
        limit = max(1, min(MAX_LIMIT, _integer(req.params, "limit", DEFAULT_LIMIT)))
        offset = _integer(req.params, "offset", 0)
        if offset < 0:
            raise ValueError("offset must not be negative")
    except ValueError as exc:
        return _error(400, "VALIDATION_ERROR", str(exc))
    with state.world.lock:
        ordered = sorted(
            state.tasks.values(), key=lambda t: (t.last_activity_at, t.created_at, t.task_id), reverse=True
        )
        page = [
            {**_task_json(t), "lastActivityAt": iso(t.last_activity_at, millis=True), "messageCount": t.message_count}
            for t in ordered[offset : offset + limit]
        ]
    pagination = {"total": len(ordered), "limit": limit, "offset": offset, "hasMore": offset + len(page) < len(ordered)}
    return json_reply(200, {"success": True, "data": page, "pagination": pagination})


def _derived_uuid(task: SigmicTask, what: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sigmic:{what}:{task.task_id}"))


def _task_json(task: SigmicTask) -> dict[str, Any]:
    output: dict[str, Any] | None = None
    if task.started_at is not None:
        output = {"content": task.output, "updatedAt": iso_ms(task.last_activity_at), "thoughts": [], "toolCalls": []}
    approvals = []
    if task.status == "awaiting_approval":
        approvals.append(
            {
                "id": _derived_uuid(task, "approval"),
                "toolName": "bash",
                "description": "Run a shell command in the workspace",
                "createdAt": iso_ms(task.last_activity_at),
            }
        )
    return {
        "id": task.task_id,
        "apiKeyId": _derived_uuid(task, "api-key"),
        "username": USERNAME,
        "sessionId": _derived_uuid(task, "session"),
        "conversationId": _derived_uuid(task, "conversation"),
        "status": task.status,
        "message": task.message,
        "systemPrompt": None,
        "showInHistory": True,
        "autoExecute": True,
        "env": {},
        "error": task.error,
        "createdAt": iso_ms(task.created_at),
        "startedAt": iso_ms(task.started_at),
        "completedAt": iso_ms(task.completed_at),
        "output": output,
        "pendingApprovals": approvals,
    }


def _file_json(f: SigmicFile) -> dict[str, object]:
    return {
        "name": f.path.rsplit("/", 1)[-1],
        "path": f.path,
        "size": f.blob.size,
        "mimeType": f.mime_type,
        "category": f.category,
        "modifiedAt": iso(f.modified_at, millis=True),
    }


def _download(state: State, req: Request, task_id: str, files: dict[str, SigmicFile]) -> Reply | BlobReply:
    path = req.params.get("path")
    if not path:
        return _error(400, "VALIDATION_ERROR", "Missing required query parameter: path")
    f = files.get(path)
    if f is None:
        return _error(404, "NOT_FOUND", "File not found")
    return state.file_reply(task_id, f, filename=f.path.rsplit("/", 1)[-1])


# ---- control and sample data ----------------------------------------------------------


def _control_put(state: State, body: dict[str, Any]) -> None:
    state.put_file(
        body["task_id"],
        body["path"],
        content(body),
        mime_type=body.get("mime_type"),
        category=body.get("category"),
        modified_at=body.get("modified_at"),
    )


def _control_resume(state: State, body: dict[str, Any]) -> None:
    state.resume(body["task_id"], body.get("message", "Please continue"))


CONTROL = {
    "put": _control_put,
    "remove": lambda state, body: state.remove_file(body["task_id"], body["path"]),
    "status": lambda state, body: state.set_status(body["task_id"], body["status"], body.get("error")),
    "resume": _control_resume,
}


def seed(state: State) -> None:
    """``task_123``/``task_456`` (the seed's ids) and tasks with UUIDs (the docs' ids), one per status."""
    state.add_task("task_123", "running", "Summarise the Q4 sales data", created_at="2026-01-26T15:45:00.000Z")
    put = state.put_file
    put("task_123", "uploads/data.csv", csv_text(60, start=100), modified_at="2026-01-26T15:50:00.000Z")
    put("task_123", "downloads/output.csv", csv_text(30), modified_at="2026-01-26T16:00:00.000Z")
    put(
        "task_123",
        "downloads/report.pdf",
        pdf_bytes("Quarterly report", ["Revenue grew 12% quarter on quarter.", "See output.csv for the data."]),
        modified_at="2026-01-26T16:01:00.000Z",
    )
    put("task_123", "downloads/charts/q4.png", png_bytes(16, 16, 90), modified_at="2026-01-26T16:02:00.000Z")
    state.set_status("task_123", "completed", at="2026-01-26T16:03:00.000Z")

    state.add_task("task_456", "running", "Train the tiny model", created_at="2026-01-27T08:55:00.000Z")
    put(
        "task_456",
        "code/train.py",
        "import sys\n\n\ndef main() -> int:\n    print('training...')\n    return 0\n\n\nsys.exit(main())\n",
        modified_at="2026-01-27T09:00:00.000Z",
    )
    put("task_456", "downloads/model.bin", PatternBlob(8 * MIB, seed=456), modified_at="2026-01-27T09:15:00.000Z")
    put(
        "task_456",
        "downloads/notes.md",
        "# Training notes\n\n- 3 epochs, lr 3e-4\n- validation loss 0.412\n",
        modified_at="2026-01-27T09:16:00.000Z",
    )
    state.set_status("task_456", "completed", at="2026-01-27T09:17:00.000Z")

    running = "c37c1d78-4d23-4e53-949a-ddd775f25e01"  # the docs' example id
    state.add_task(running, "running", "Crawl the pricing pages", created_at="2026-01-28T10:00:00.000Z")
    put(running, "downloads/progress.md", "# Progress\n\n3 of 12 pages done.\n", modified_at="2026-01-28T10:05:00.000Z")
    waiting = "5b0a6f0e-7c1d-4e2f-9a3b-2c4d6e8f0a1b"
    state.add_task(waiting, "running", "Clean up the build cache", created_at="2026-01-28T11:00:00.000Z")
    state.set_status(waiting, "awaiting_approval", at="2026-01-28T11:01:00.000Z")
    state.add_task(
        "8d2e4f6a-1b3c-4d5e-8f7a-9b0c1d2e3f4a",
        "pending",
        "Draft the release notes",
        created_at="2026-01-28T12:00:00.000Z",
    )
    failed = "1f4c7a2e-3b5d-4e6f-8a9b-0c1d2e3f4a5b"
    state.add_task(failed, "running", "Convert the scans", created_at="2026-01-27T14:00:00.000Z")
    put(failed, "logs/run.log", "converting 1/40\nkilled\n", modified_at="2026-01-27T14:10:00.000Z")
    state.set_status(failed, "failed", "Sandbox ran out of memory", at="2026-01-27T14:10:01.000Z")
    cancelled = "9a7b5c3d-1e2f-4a6b-8c0d-2e4f6a8b0c1d"
    state.add_task(cancelled, "running", "Scrape every page", created_at="2026-01-27T12:00:00.000Z")
    state.set_status(cancelled, "cancelled", at="2026-01-27T12:30:00.000Z")
