"""Plangrep open API: ``/jobs/{jobId}`` and ``/jobs/{jobId}/artifact?path=``.

Choices where the docs are silent:
- The job object is ``{id, status, created_at, completed_at, result, error}``; ``result``
  is ``{"artifacts": [{path, url}]}`` only once completed (else null), ``error`` is
  ``{"message"}`` only when failed. Each ``url`` is origin-relative exactly as in the doc
  (``/api/open/v1/jobs/{id}/artifact?path=<urlencoded>``), and the API origin answers that
  path too, so resolving it against the origin works.
- The artifact endpoint of a job that is not completed is 409; a path not in the result
  snapshot is 404. Errors are ``{"error": {"message"}}`` (401 for auth, 400 without path).
- Bytes are ``application/octet-stream``, chunked without Content-Length, and Range is
  ignored (the docs promise neither); the ``plangrep_content_length`` and
  ``plangrep_ranges`` switches turn each on.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..blobs import Blob, as_blob
from ..clock import Timestamp, iso
from ..server import BlobReply, Reply, Request, bearer_problem, json_reply
from . import ProviderState

if TYPE_CHECKING:
    from ..world import World

BASE_PATH = "/plangrep/api/open/v1"
DOC_PREFIX = "/api/open/v1"  # the doc's origin-relative artifact ``url``s
DEFAULT_TOKEN = "demo-plangrep-token"
BUCKET = ""
EXPORTS = {
    "put_plangrep_job": "put_job",
    "set_plangrep_status": "set_status",
    "plangrep_file": "file",
    "plangrep_jobs": "jobs",
}
CONTROL: dict[str, Any] = {}
STATUSES = ("queued", "running", "completed", "failed")


@dataclass
class Switches:
    content_length: bool = False  # artifact bytes: send Content-Length instead of chunked
    ranges: bool = False  # artifact bytes: honour Range


@dataclass
class PlangrepJob:
    job_id: str
    status: str
    created_at: float
    completed_at: float | None = None
    artifacts: dict[str, Blob] = field(default_factory=dict)
    error: str | None = None


class State(ProviderState):
    """Jobs and their result snapshots."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.switches = Switches()
        self.jobs: dict[str, PlangrepJob] = {}

    def put_job(
        self,
        job_id: str,
        status: str,
        artifacts: dict[str, bytes | str | Blob] | None = None,
        error: str | None = None,
        created_at: Timestamp = None,
        completed_at: Timestamp = None,
    ) -> None:
        """Create (or replace) a job; see ``set_status`` for the status rules."""
        with self.world.lock:
            self.jobs[job_id] = PlangrepJob(job_id, "queued", self.world.timestamp(created_at))
            self.set_status(job_id, status, artifacts, error, completed_at)

    def set_status(
        self,
        job_id: str,
        status: str,
        artifacts: dict[str, bytes | str | Blob] | None = None,
        error: str | None = None,
        completed_at: Timestamp = None,
    ) -> None:
        """Move a job to ``status``; reaching completed/failed stamps ``completed_at``.

        ``artifacts`` (if given) replaces the result snapshot, which is shown only once completed.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.world.lock:
            job = self.jobs[job_id]
            finished = status in ("completed", "failed")
            if finished and job.status not in ("completed", "failed"):
                job.completed_at = self.world.timestamp(completed_at)
            elif not finished:
                job.completed_at = None
            job.status = status
            if artifacts is not None:
                job.artifacts = {path: as_blob(data) for path, data in artifacts.items()}
            job.error = (error or "Job failed") if status == "failed" else None

    def file(self, job_id: str, path: str) -> Blob:
        with self.world.lock:
            return self.jobs[job_id].artifacts[path]


def _error(status: int, message: str) -> Reply:
    return json_reply(status, {"error": {"message": message}})


def handle(state: State, req: Request, parts: list[str]) -> Reply | BlobReply:
    if bearer_problem(req, state.world.tokens["plangrep"]) is not None:
        return _error(401, "Missing or invalid API key")
    match parts:
        case ["jobs", job_id]:
            with state.world.lock:
                job = state.jobs.get(job_id)
                return _job_json(job) if job else _error(404, "Job not found")
        case ["jobs", job_id, "artifact"]:
            return _artifact(state, req, job_id)
    return _error(404, "Not found")


ROUTES = {DOC_PREFIX: handle}


def _job_json(job: PlangrepJob) -> Reply:
    result: dict[str, Any] | None = None
    if job.status == "completed":
        result = {
            "artifacts": [
                {
                    "path": path,
                    "url": f"{DOC_PREFIX}/jobs/{urllib.parse.quote(job.job_id, safe='')}/artifact?path="
                    + urllib.parse.quote(path, safe=""),
                }
                for path in sorted(job.artifacts)
            ]
        }
    return json_reply(
        200,
        {
            "id": job.job_id,
            "status": job.status,
            "created_at": iso(job.created_at),
            "completed_at": iso(job.completed_at) if job.completed_at is not None else None,
            "result": result,
            "error": {"message": job.error} if job.error is not None else None,
        },
    )


def _artifact(state: State, req: Request, job_id: str) -> Reply | BlobReply:
    path = req.params.get("path")
    if not path:
        return _error(400, "Missing required query parameter: path")
    with state.world.lock:
        job = state.jobs.get(job_id)
        if job is None:
            return _error(404, "Job not found")
        if job.status != "completed":
            return _error(409, f"Job is {job.status}; artifacts are available once it has completed")
        blob = job.artifacts.get(path)
        if blob is None:
            return _error(404, "Artifact not found in the job result")
        switches = state.switches
        tag = hashlib.sha256(f"{job_id}\n{path}\n{job.completed_at}".encode()).hexdigest()[:32]
        return BlobReply(
            blob,
            "application/octet-stream",
            f'"{tag}"',
            job.completed_at or job.created_at,
            filename=path.rsplit("/", 1)[-1],
            ranges=switches.ranges,
            length=switches.content_length,
        )


def seed(state: State) -> None:
    output = {
        "job_id": "job_01abc123",
        "documents": [{"name": "floor-plan-A.pdf", "rooms": 7, "area_m2": 142.5}],
        "normalized": True,
    }
    state.put_job(
        "job_01abc123",
        "completed",
        {
            "results/job_01abc123/normalized-output.json": json.dumps(output, indent=2) + "\n",
            "results/job_01abc123/summary.md": "# Job job_01abc123\n\n1 document, 7 rooms, 142.5 m².\n",
        },
        created_at="2026-03-10T08:00:00Z",
        completed_at="2026-03-10T08:02:30Z",
    )
    state.put_job("job_02running", "running", created_at="2026-03-10T09:00:00Z")
    state.put_job(
        "job_03failed",
        "failed",
        error="Input document could not be parsed",
        created_at="2026-03-10T09:30:00Z",
        completed_at="2026-03-10T09:30:05Z",
    )
