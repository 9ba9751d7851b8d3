"""Plangrep's data: projects, their jobs, each job's status and the artifacts its result links to."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...blobs import Blob, BytesBlob, as_blob
from ...clock import Timestamp
from ...server import BlobReply, Reply, Request
from ...storage import error, no_such_key, quote
from .. import ProviderState
from . import render
from .statuses import FINISHED, OLD_NAMES, STATUSES, TERMINAL, WITH_RESULT

if TYPE_CHECKING:
    from ...world import World

RESULT_SHAPES = ("v1", "seed")
DEFAULT_PROJECT = "proj_default"
RESULTS_BUCKET = "plangrep-results"
JOB_TTL = 7 * 24 * 3600.0  # expiresAt = createdAt + 7 days, as in every example


@dataclass
class Switches:
    content_length: bool = False  # artifact bytes: send Content-Length instead of chunked
    ranges: bool = False  # artifact bytes: honour Range


@dataclass
class PlangrepProject:
    project_id: str
    name: str
    created_at: float
    updated_at: float
    status: str = "ready"


@dataclass
class PlangrepJob:
    job_id: str
    project_id: str
    status: str
    created_at: float
    updated_at: float
    file_names: list[str]
    external_id: str | None = None
    completed_at: float | None = None
    artifacts: dict[str, Blob] = field(default_factory=dict)
    error: str | None = None  # what went wrong: failed, expired, or the failed part of completed_with_errors
    result_shape: str = "v1"
    snapshot: bytes | None = None  # the result document, frozen once served

    @property
    def expires_at(self) -> float:
        return self.created_at + JOB_TTL


class State(ProviderState):
    """Projects and jobs. A terminal job is frozen: only ``put_job`` replaces it."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.switches = Switches()
        self.projects: dict[str, PlangrepProject] = {}
        self.jobs: dict[str, PlangrepJob] = {}

    def add_project(
        self, name: str, project_id: str | None = None, created_at: Timestamp = None, status: str = "ready"
    ) -> str:
        """A new project (``proj_`` + 9 characters unless ``project_id`` is given); its id."""
        with self.world.lock:
            project_id = project_id or self.world.new_id("proj_")
            if project_id in self.projects:
                raise ValueError(f"project {project_id} already exists")
            when = self.world.timestamp(created_at)
            self.projects[project_id] = PlangrepProject(project_id, name, when, when, status)
            return project_id

    def put_job(
        self,
        job_id: str,
        status: str,
        artifacts: dict[str, bytes | str | Blob] | None = None,
        error: str | None = None,
        created_at: Timestamp = None,
        completed_at: Timestamp = None,
        project_id: str | None = None,
        external_id: str | None = None,
        files: list[str] | None = None,
        result_shape: str = "v1",
    ) -> None:
        """Create (or replace) a job in ``project_id`` (default: ``proj_default``, created if missing).

        ``files`` are the uploaded files' names (one document each; default one drawing set);
        ``artifacts`` are what its result links to once it is completed, wherever ``render``
        places them; ``result_shape="seed"`` serves the seed's ``{"result": {"artifacts"}}``
        instead of the v1 document. See ``set_status`` for ``status``, ``error`` and ``completed_at``.
        """
        if result_shape not in RESULT_SHAPES:
            raise ValueError(f"result_shape must be one of {RESULT_SHAPES}")
        with self.world.lock:
            if project_id is None:
                project_id = DEFAULT_PROJECT
                if project_id not in self.projects:
                    self.add_project("Default project", project_id)
            if project_id not in self.projects:
                raise KeyError(f"no project {project_id}")
            when = self.world.timestamp(created_at)
            names = list(files or ["drawings.pdf"])
            self.jobs[job_id] = PlangrepJob(
                job_id, project_id, "provisioning", when, when, names, external_id, result_shape=result_shape
            )
            self.set_status(job_id, status, artifacts, error, completed_at)

    def set_status(
        self,
        job_id: str,
        status: str,
        artifacts: dict[str, bytes | str | Blob] | None = None,
        error: str | None = None,
        completed_at: Timestamp = None,
    ) -> None:
        """Move a job that is not terminal yet to any of the 11 statuses (or ``queued``/``running``,
        the earlier names of ``provisioning``/``processing``).

        ``completed_at`` is when that happened (default: the next tick); it is the job's
        ``completedAt`` once processing has ended (completed, completed_with_errors, failed).
        ``artifacts`` (if given) replaces what the result will link to; ``error`` is the
        message of a failed or expired job, or of the failed part of a partial result.
        """
        status = OLD_NAMES.get(status, status)
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.world.lock:
            job = self.jobs[job_id]
            if job.status in TERMINAL:
                raise ValueError(f"job {job_id} is {job.status}: a terminal job is frozen")
            when = self.world.timestamp(completed_at)
            job.status = status
            job.updated_at = when
            job.completed_at = when if status in FINISHED else None
            if artifacts is not None:
                job.artifacts = {path: as_blob(data) for path, data in artifacts.items()}
            if error is not None:
                job.error = error

    def complete(self, job_id: str, status: str = "completed") -> None:
        """Finish a job with the artifacts it was given (``completed`` or ``completed_with_errors``)."""
        if status not in WITH_RESULT:
            raise ValueError(f"status must be one of {WITH_RESULT}")
        self.set_status(job_id, status)

    def file(self, job_id: str, path: str) -> Blob:
        with self.world.lock:
            return self.jobs[job_id].artifacts[path]

    def result(self, job_id: str) -> bytes:
        """The job's result document, as served: built on first use, then never changed."""
        with self.world.lock:
            job = self.jobs[job_id]
            if job.status not in WITH_RESULT:
                raise ValueError(f"job {job_id} is {job.status}: it has no result")
            if job.snapshot is None:
                if not self.world.api_url:
                    raise RuntimeError("the emulator is not started")
                document = render.result_document(job, self.world.api_url, self.result_url(job))
                job.snapshot = json.dumps(document, separators=(",", ":")).encode()
            return job.snapshot

    def result_url(self, job: PlangrepJob) -> str | None:
        """The job's pre-signed ``resultUrl`` on the storage origin, while it has a result."""
        if job.status not in WITH_RESULT:
            return None
        path = f"/{RESULTS_BUCKET}/{quote(job.job_id)}"
        return f"{self.world.storage_url}{path}?token={self.world.signer.token(path)}"

    def job_json(self, job: PlangrepJob) -> dict[str, Any]:
        return render.job_json(job, self.result_url(job))

    def serve_object(self, req: Request, parts: list[str]) -> Reply | BlobReply:
        if not self.world.signer.token_valid(req.path, req.params.get("token", "")):
            return error(403, "AccessDenied", "Invalid or expired token")
        with self.world.lock:
            job = self.jobs.get(parts[0]) if len(parts) == 1 else None
            if job is None or job.status not in WITH_RESULT:
                return no_such_key()
            completed = job.completed_at or job.updated_at
        return BlobReply(BytesBlob(self.result(job.job_id)), "application/json", f'"{job.job_id}"', completed)
