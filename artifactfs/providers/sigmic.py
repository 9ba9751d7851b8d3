"""Sigmic: a task's workspace files (seeds/sigmic-task-artifacts.txt).

``GET /api/v1/tasks/{id}/artifacts`` lists every file of a task with its ``path``; one call
gives the whole workspace, so a task directory arrives with its subtree. Bytes come from
``GET /api/v1/tasks/{id}/artifacts/download?path=`` on the API origin (token attached).
"""

from __future__ import annotations

from typing import Any, Hashable
from urllib.parse import quote, urlencode

from ..errors import AccessDenied, FsError, NotFound, RemoteError
from ..model import Entry, Kind, Source
from .base import Provider, api_base, as_int, as_str, fingerprint, log, parse_time
from .tree import build_tree

ERROR_CODES: dict[str, type[FsError]] = {
    "AUTH_REQUIRED": AccessDenied,
    "INVALID_API_KEY": AccessDenied,
    "FORBIDDEN": AccessDenied,
    "NOT_FOUND": NotFound,
}


def classify(status: int, body: Any) -> type[FsError] | None:
    """Sigmic errors come as ``{"success": false, "error": {"code": ...}}``, even with a 200."""
    if not isinstance(body, dict) or body.get("success") is not False:
        return None
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else error
    return ERROR_CODES.get(str(code), RemoteError)


class SigmicProvider(Provider):
    """Tasks at the top (configured ones, then any opened by name); their files below."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tasks: dict[str, None] = dict.fromkeys(self.config.ids)
        self._api = api_base(self.http.base_url, "/api/v1")

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        if ref == self.ROOT:
            return [self._task_entry(task) for task in self._tasks]
        _, task = ref  # type: ignore[misc]
        return await self._workspace(task)

    async def lookup(self, ref: Hashable, name: str) -> Entry | None:
        if ref != self.ROOT:
            return None
        return await self.open_unlisted(self._tasks, name, self._workspace, self._task_entry)

    async def resolve(self, ref: Hashable) -> Source:
        _, task, path = ref  # type: ignore[misc]
        return self.http.source(f"{self._task_url(task)}/artifacts/download?{urlencode({'path': path})}")

    def _task_url(self, task: str) -> str:
        return f"{self._api}/tasks/{quote(task, safe='')}"

    def _task_entry(self, task: str) -> Entry:
        return Entry(name=task, kind=Kind.DIR, ref=("task", task), key=("task", task), short_id=task)

    async def _workspace(self, task: str) -> list[Entry]:
        body = await self.http.get_json(f"{self._task_url(task)}/artifacts", classify=classify)
        data = body.get("data") if isinstance(body, dict) else None
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list):
            log.warning("%s: task %s: listing has no data.files array; showing it empty", self.name, task)
            files = []
        return build_tree((self._file(task, item) for item in files if isinstance(item, dict)),
                          ("task", task))

    def _file(self, task: str, item: dict[str, Any]) -> tuple[str, Entry]:
        path = as_str(item.get("path")) or as_str(item.get("name")) or ""
        size = as_int(item.get("size"))
        modified = as_str(item.get("modifiedAt"))
        mime = as_str(item.get("mimeType"))
        xattrs = {"id": path, "task_id": task}
        if modified:
            xattrs["modified_at"] = modified
        category = as_str(item.get("category"))
        if category:
            xattrs["category"] = category
        entry = Entry(
            name=as_str(item.get("name")) or path, kind=Kind.FILE, ref=("file", task, path),
            key=("file", task, path), size=size, mtime=parse_time(modified),
            fingerprint=fingerprint(size, modified), short_id=path.rsplit("/", 1)[-1] or "file",
            mime_type=mime, xattrs=xattrs,
        )
        return path, entry
