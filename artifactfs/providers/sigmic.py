"""Sigmic: tasks and their workspace files (api/sigmic.md; seeds/sigmic-task-artifacts.txt).

``GET /api/v1/tasks`` (offset pagination) lists every task the key sees; configured task ids
and ids opened by name are listed too. ``GET /api/v1/tasks/{id}/artifacts`` lists every file
of a task with its ``path``: one call gives the whole workspace, so a task directory arrives
with its subtree. A completed task can be resumed, so a task is refreshed like any listing.
Bytes come from ``GET /api/v1/tasks/{id}/artifacts/download?path=`` on the API origin.
"""

from __future__ import annotations

from typing import Any, Hashable
from urllib.parse import quote, urlencode

from ..errors import AccessDenied, FsError, NotFound, RemoteError, Unauthorized
from ..httpclient import url_path
from ..model import Entry, Kind, Source
from .base import Probe, Provider, ProviderSpec, api_base
from .fields import as_dict, as_size, as_str, fingerprint, parse_time, pick, texts
from .paging import collect_pages
from .tree import build_tree

PAGE_LIMIT = 100
ERROR_CODES: dict[str, type[FsError]] = {
    "AUTH_REQUIRED": Unauthorized,
    "INVALID_API_KEY": Unauthorized,
    "INVALID_AUTH_FORMAT": Unauthorized,
    "INVALID_TOKEN": Unauthorized,
    "FORBIDDEN": AccessDenied,
    "ORIGIN_NOT_ALLOWED": AccessDenied,
    "NOT_FOUND": NotFound,
}
TASK_FIELDS = {"status": ("status",), "created_at": ("createdAt", "created_at"),
               "completed_at": ("completedAt", "completed_at"), "message": ("message",)}


def classify(status: int, body: Any) -> type[FsError] | None:
    """Sigmic errors come as ``{"success": false, "error": {"code": ...}}``, even with a 200."""
    if not isinstance(body, dict) or body.get("success") is not False:
        return None
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else error
    return ERROR_CODES.get(str(code), RemoteError)


class SigmicProvider(Provider):
    """Every task the key sees at the top (plus configured and opened ones); files below."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = api_base(self.http.base_url, SPEC.api_prefix)
        self._tasks: dict[str, None] = dict.fromkeys(self.config.ids)
        self._details: dict[str, dict[str, str]] = {}

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        if ref == self.ROOT:
            for task in await self._discover():
                self._tasks.setdefault(task, None)
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

    async def _discover(self) -> list[str]:
        """Every task id of ``GET /tasks``, all pages. A key that may not list tasks (or a
        server without the endpoint) still shows the configured and opened tasks."""

        async def page(offset: int | None) -> tuple[list[Any], int | None]:
            start = offset or 0
            body = as_dict(await self.http.get_json(f"{self._api}/tasks", {"limit": PAGE_LIMIT, "offset": start}))
            data = body.get("data")
            items = [i for i in data if isinstance(i, dict)] if isinstance(data, list) else []
            paging = as_dict(body.get("pagination"))
            more = pick(paging, "hasMore", "has_more")
            total = as_size(paging.get("total"))
            if more is None and total is not None:
                more = start + len(items) < total
            return items, (start + len(items) if more and items else None)

        items = await self.discovered(
            lambda: collect_pages(page, f"{self.name}: tasks", key=lambda item: as_str(item.get("id"))),
            "tasks", "tasks")
        tasks = {str(as_str(item.get("id"))): item for item in items or []}
        self._details.update((task, texts(item, TASK_FIELDS)) for task, item in tasks.items())
        return list(tasks)

    def _task_entry(self, task: str) -> Entry:
        return Entry(name=task, kind=Kind.DIR, ref=("task", task), key=("task", task), short_id=task,
                     xattrs={"id": task, **self._details.get(task, {})})

    async def _workspace(self, task: str) -> list[Entry]:
        body = as_dict(await self.http.get_json(f"{self._task_url(task)}/artifacts"))
        files = as_dict(body.get("data")).get("files")
        if not isinstance(files, list):
            raise RemoteError(f"{self.name}: {url_path(self._task_url(task))}/artifacts: the answer has no data.files array")
        return build_tree((self._file(task, item) for item in files if isinstance(item, dict)), ("task", task))

    def _file(self, task: str, item: dict[str, Any]) -> tuple[str, Entry]:
        path = as_str(item.get("path")) or as_str(item.get("name")) or ""
        size = as_size(item.get("size"))
        modified = as_str(pick(item, "modifiedAt", "modified_at"))
        xattrs = {"id": path, "task_id": task,
                  **texts(item, {"modified_at": ("modifiedAt", "modified_at"), "category": ("category",)})}
        entry = Entry(
            name=as_str(item.get("name")) or path, kind=Kind.FILE, ref=("file", task, path),
            key=("file", task, path), size=size, mtime=parse_time(modified),
            fingerprint=fingerprint(size, modified), short_id=path.rsplit("/", 1)[-1] or "file",
            mime_type=as_str(pick(item, "mimeType", "mime_type")), xattrs=xattrs,
        )
        return path, entry


SPEC = ProviderSpec(
    type="sigmic",
    provider=SigmicProvider,
    default_base_url="https://api.sigmic.ai",
    api_prefix="/api/v1",
    ids_key="tasks",
    classify=classify,
    probe=Probe("/tasks", {"limit": 1}),
    demo=lambda info: {},
)
