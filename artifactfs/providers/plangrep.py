"""Plangrep: jobs, their normalized results and result artifacts (api/plangrep.md).

``plangrep/`` lists every job of every project (``GET /projects``, ``GET /projects/{id}/jobs``)
plus configured jobs and jobs opened by id (``GET /jobs/{id}`` → ``{"job": {...}}``). A job's
status decides its directory: not terminal yet (``provisioning`` … ``processing``) → empty,
asked again when ``plangrep/`` is refreshed (the listing TTL); ``completed`` and
``completed_with_errors`` → ``result.json`` (``GET /jobs/{id}/result``, byte for byte) and every
artifact the result links to, wherever it sits (``documents[].artifacts[]``,
``documents[].sheets[].artifacts[]``, a top-level ``artifacts[]``), at its ``path`` (or the
``path`` query of its ``url``); ``failed``/``cancelled``/``expired`` → empty. A terminal job is
immutable: never asked again. Artifact bytes come from ``GET /jobs/{id}/artifact?path=`` on
the API origin; the endpoint may send no length and ignore Range.
"""

from __future__ import annotations

import json
from typing import Any, Hashable, Iterator
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from ..errors import NotFound, RemoteError
from ..model import Entry, Kind, Source
from .base import Probe, Provider, ProviderSpec, api_base
from .fields import as_dict, as_list, as_size, as_str, fingerprint, parse_time, pick, texts
from .paging import unique
from .tree import build_tree

WITH_RESULT = frozenset({"completed", "completed_with_errors"})
TERMINAL = WITH_RESULT | {"failed", "cancelled", "expired"}
MAX_RESULT_NODES = 1_000_000  # a result document is walked iteratively, within this many values
JOB_FIELDS = {"status": ("status",), "project_id": ("projectId", "project_id"),
              "external_id": ("externalId", "external_id"), "created_at": ("createdAt", "created_at"),
              "completed_at": ("completedAt", "completed_at"), "expires_at": ("expiresAt", "expires_at")}


def job_object(body: Any) -> dict[str, Any]:
    """The job of ``{"job": {...}}`` (the documented shape) or of a bare job object."""
    body = as_dict(body)
    return as_dict(body["job"]) if isinstance(body.get("job"), dict) else body


def error_text(value: Any) -> str | None:
    """A job's ``error``: an object with ``message`` (and ``code``), or plain text."""
    error = as_dict(value)
    return as_str(error.get("message")) or as_str(error.get("code")) if error else as_str(value)


def artifact_links(result: Any) -> Iterator[dict[str, Any]]:
    """Every object inside an ``artifacts`` array anywhere in ``result``, walked iteratively
    (a hostile document cannot exhaust the stack) and within ``MAX_RESULT_NODES`` values."""
    stack, visited = [result], 0
    while stack and visited < MAX_RESULT_NODES:
        node = stack.pop()
        visited += 1
        if isinstance(node, dict):
            links = node.get("artifacts")
            if isinstance(links, list):
                yield from (link for link in links if isinstance(link, dict))
            stack.extend(value for key, value in node.items() if isinstance(value, (dict, list)))
        elif isinstance(node, list):
            stack.extend(value for value in node if isinstance(value, (dict, list)))


def link_path(link: dict[str, Any]) -> str | None:
    """A link's ``path``, or the ``path`` query parameter of its ``url``."""
    path = as_str(link.get("path"))
    if path:
        return path
    url = as_str(link.get("url"))
    values = parse_qs(urlsplit(url or "").query).get("path")
    return values[0] if values else None


class PlangrepProvider(Provider):
    """Jobs at the top, each with its result's files below once it has one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = api_base(self.http.base_url, SPEC.api_prefix)
        self._jobs: dict[str, dict[str, Any] | None] = dict.fromkeys(self.config.ids)

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        if ref == self.ROOT:
            listed = {job_id: job for job in await self._discover() if (job_id := as_str(job.get("id")))}
            self._jobs.update(listed)
            for job_id, job in list(self._jobs.items()):
                if job_id not in listed and (job is None or _status(job) not in TERMINAL):
                    self._jobs[job_id] = await self._job(job_id)
            return [self._job_entry(job_id, job) for job_id, job in self._jobs.items() if job is not None]
        match ref:
            case ("job", job_id):
                return await self._result_files(job_id)
        return []

    async def lookup(self, ref: Hashable, name: str) -> Entry | None:
        if ref != self.ROOT:
            return None
        job = await self._job(name)
        if job is None:
            return None
        self._jobs[name] = job
        return self._job_entry(name, job)

    async def resolve(self, ref: Hashable) -> Source:
        match ref:
            case ("result", job_id):
                return self.http.source(f"{self._job_url(job_id)}/result")
            case ("artifact", job_id, path):
                return self.http.source(f"{self._job_url(job_id)}/artifact?{urlencode({'path': path})}")
        raise NotFound(f"{self.name}: no such file")

    def _job_url(self, job_id: str) -> str:
        return f"{self._api}/jobs/{quote(job_id, safe='')}"

    async def _discover(self) -> list[dict[str, Any]]:
        """Every job of every project the key sees; none if it may not list projects."""
        body = await self.discovered(lambda: self.http.get_json(f"{self._api}/projects"), "projects", "jobs")
        projects = as_list(as_dict(body).get("projects"))
        jobs: list[dict[str, Any]] = []
        for project_id in unique((as_str(as_dict(p).get("id")) for p in projects), lambda p: p):
            body = as_dict(await self.http.get_json(f"{self._api}/projects/{quote(project_id, safe='')}/jobs"))
            jobs.extend(job for job in as_list(body.get("jobs")) if isinstance(job, dict))
        return unique(jobs, lambda job: as_str(job.get("id")))

    async def _job(self, job_id: str) -> dict[str, Any] | None:
        """The job, or None if there is no such job."""
        try:
            body = await self.http.get_json(self._job_url(job_id))
        except NotFound:
            return None
        return job_object(body)

    def _job_entry(self, job_id: str, job: dict[str, Any]) -> Entry:
        """A job's directory; status (and error) as xattrs."""
        status = _status(job) or "unknown"
        xattrs = {"id": job_id, **texts(job, JOB_FIELDS), "status": status}
        error = error_text(job.get("error"))
        if error:
            xattrs["error"] = error
        mtime = parse_time(pick(job, "completedAt", "completed_at")) or parse_time(pick(job, "createdAt", "created_at"))
        if status in WITH_RESULT:
            return Entry(name=job_id, kind=Kind.DIR, ref=("job", job_id), key=("job", job_id), short_id=job_id,
                         mtime=mtime, xattrs=xattrs, immutable=True, fingerprint=status)
        return Entry(name=job_id, kind=Kind.DIR, ref=None, key=("job", job_id), short_id=job_id, mtime=mtime,
                     xattrs=xattrs, immutable=status in TERMINAL, children=[], fingerprint=status)

    async def _result_files(self, job_id: str) -> list[Entry]:
        """``result.json`` and every linked artifact of a finished job."""
        job = self._jobs.get(job_id) or {}
        completed = as_str(pick(job, "completedAt", "completed_at"))
        try:
            resp = await self.http.request(f"{self._job_url(job_id)}/result")
            raw = resp.content
            result: Any = json.loads(raw)
        except NotFound:
            result, raw = job.get("result"), None  # an older server: the result inside the job
        except ValueError:
            raise RemoteError(f"{self.name}: job {job_id}: the result is not JSON") from None
        entries: list[tuple[str, Entry]] = []
        if raw is not None:
            entries.append(("result.json", Entry(
                name="result.json", kind=Kind.FILE, ref=("result", job_id), key=("result", job_id),
                size=len(raw), mtime=parse_time(completed), fingerprint=fingerprint(completed, len(raw)),
                short_id="result", mime_type="application/json", xattrs={"id": "result.json", "job_id": job_id},
                immutable=True)))
        links = unique(artifact_links(result), link_path)
        entries.extend(self._artifact(job_id, link, completed) for link in links)
        return build_tree(entries, ("job", job_id))

    def _artifact(self, job_id: str, link: dict[str, Any], completed: str | None) -> tuple[str, Entry]:
        path = link_path(link) or ""
        size = as_size(pick(link, "size", "fileSize", "contentLength"))
        xattrs = {"id": path, "job_id": job_id, **texts(link, {"type": ("type", "kind")})}
        entry = Entry(name=path, kind=Kind.FILE, ref=("artifact", job_id, path), key=("artifact", job_id, path),
                      size=size, mtime=parse_time(completed), fingerprint=fingerprint(completed, size),
                      short_id=path.rsplit("/", 1)[-1] or "artifact",
                      mime_type=as_str(pick(link, "contentType", "mimeType", "mime_type")),
                      xattrs=xattrs, immutable=True)
        return path, entry


def _status(job: dict[str, Any] | None) -> str | None:
    return as_str(job.get("status")) if job else None


SPEC = ProviderSpec(
    type="plangrep",
    provider=PlangrepProvider,
    default_base_url="https://plangrep.com/api/open/v1",
    api_prefix="/api/open/v1",
    ids_key="jobs",
    probe=Probe("/projects"),
    demo=lambda info: {},
)
