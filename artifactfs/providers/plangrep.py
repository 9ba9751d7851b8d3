"""Plangrep: jobs and their result artifacts (seeds/plangrep-job-artifact.txt).

``GET {base}/jobs/{id}`` gives a job's ``status`` and, once completed, ``result.artifacts[]``
with each artifact's ``path``; bytes come from ``GET {base}/jobs/{id}/artifact?path=`` on the
API origin. Job directories arrive with their files in the ``plangrep/`` listing, so an
unfinished job is asked again whenever that listing is refreshed (the listing TTL); a
completed or failed job is final: kept in memory, marked immutable, never asked again. The
artifact endpoint may send no length and ignore Range, so files have no size until read.
"""

from __future__ import annotations

from typing import Any, Hashable
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from ..errors import NotFound
from ..model import Entry, Kind, Source
from .base import Provider, api_base, as_int, as_str, fingerprint, log, parse_time
from .tree import build_tree

FINAL = ("completed", "failed")


class PlangrepProvider(Provider):
    """Configured jobs and any opened by id at the top, each with its result's files below."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = api_base(self.http.base_url, "/api/open/v1")
        self._jobs: dict[str, dict[str, Any] | None] = dict.fromkeys(self.config.ids)

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        if ref != self.ROOT:
            return []
        for job, body in list(self._jobs.items()):
            if _status(body) not in FINAL:
                self._jobs[job] = await self._job(job)
        return [self._job_entry(job, body) for job, body in self._jobs.items() if body is not None]

    async def lookup(self, ref: Hashable, name: str) -> Entry | None:
        if ref != self.ROOT:
            return None
        body = await self._job(name)
        if body is None:
            return None
        self._jobs[name] = body
        return self._job_entry(name, body)

    async def resolve(self, ref: Hashable) -> Source:
        _, job, path = ref  # type: ignore[misc]
        return self.http.source(f"{self._job_url(job)}/artifact?{urlencode({'path': path})}")

    def _job_url(self, job: str) -> str:
        return f"{self._api}/jobs/{quote(job, safe='')}"

    async def _job(self, job: str) -> dict[str, Any] | None:
        """The job's JSON, or None if there is no such job."""
        try:
            body = await self.http.get_json(self._job_url(job))
        except NotFound:
            log.info("%s: job %s not found", self.name, job)
            return None
        return body if isinstance(body, dict) else {}

    def _job_entry(self, job: str, body: dict[str, Any]) -> Entry:
        """A job's directory: its files once completed; status and error as xattrs."""
        status = _status(body) or "unknown"
        xattrs = {"id": job, "status": status}
        xattrs.update((k, v) for k in ("created_at", "completed_at") if (v := as_str(body.get(k))))
        error = body.get("error")
        message = as_str(error.get("message")) if isinstance(error, dict) else as_str(error)
        if message:
            xattrs["error"] = message
        files = self._files(job, body) if status == "completed" else []
        return Entry(name=job, kind=Kind.DIR, ref=None, key=("job", job), short_id=job,
                     mtime=parse_time(body.get("completed_at") or body.get("created_at")),
                     xattrs=xattrs, immutable=status in FINAL, children=files)

    def _files(self, job: str, body: dict[str, Any]) -> list[Entry]:
        result = body.get("result")
        artifacts = result.get("artifacts") if isinstance(result, dict) else None
        if not isinstance(artifacts, list):
            log.warning("%s: job %s is completed but its result has no artifacts array", self.name, job)
            artifacts = []
        completed = as_str(body.get("completed_at"))
        files = (self._file(job, item, completed) for item in artifacts if isinstance(item, dict))
        return build_tree((file for file in files if file is not None), ("job", job))

    def _file(self, job: str, item: dict[str, Any], completed: str | None) -> tuple[str, Entry] | None:
        path = as_str(item.get("path")) or _path_param(as_str(item.get("url")))
        if path is None:
            return None
        size = as_int(item.get("size"))
        entry = Entry(name=path, kind=Kind.FILE, ref=("artifact", job, path), key=("artifact", job, path),
                      size=size, mtime=parse_time(completed), fingerprint=fingerprint(completed, size),
                      short_id=path.rsplit("/", 1)[-1] or "artifact",
                      xattrs={"id": path, "job_id": job}, immutable=True)
        return path, entry


def _status(body: dict[str, Any] | None) -> str | None:
    return as_str(body.get("status")) if body else None


def _path_param(url: str | None) -> str | None:
    """The ``path`` query parameter of a result's artifact ``url`` (the doc's other spelling)."""
    values = parse_qs(urlsplit(url or "").query).get("path")
    return values[0] if values else None
