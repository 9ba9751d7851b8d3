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
import urllib.parse
from typing import Any

from .server import BlobReply, Reply, Request, bearer_problem, json_reply
from .state import PlangrepJob, World, iso

DOC_PREFIX = "/api/open/v1"


def _error(status: int, message: str) -> Reply:
    return json_reply(status, {"error": {"message": message}})


def handle(world: World, req: Request, parts: list[str]) -> Reply | BlobReply:
    if bearer_problem(req, world.tokens["plangrep"]) is not None:
        return _error(401, "Missing or invalid API key")
    match parts:
        case ["jobs", job_id]:
            with world.lock:
                job = world.plangrep_jobs.get(job_id)
                return _job_json(job) if job else _error(404, "Job not found")
        case ["jobs", job_id, "artifact"]:
            return _artifact(world, req, job_id)
    return _error(404, "Not found")


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


def _artifact(world: World, req: Request, job_id: str) -> Reply | BlobReply:
    path = req.params.get("path")
    if not path:
        return _error(400, "Missing required query parameter: path")
    with world.lock:
        job = world.plangrep_jobs.get(job_id)
        if job is None:
            return _error(404, "Job not found")
        if job.status != "completed":
            return _error(409, f"Job is {job.status}; artifacts are available once it has completed")
        blob = job.artifacts.get(path)
        if blob is None:
            return _error(404, "Artifact not found in the job result")
        switches = world.switches
        tag = hashlib.sha256(f"{job_id}\n{path}\n{job.completed_at}".encode()).hexdigest()[:32]
        return BlobReply(
            blob,
            "application/octet-stream",
            f'"{tag}"',
            job.completed_at or job.created_at,
            filename=path.rsplit("/", 1)[-1],
            ranges=switches.plangrep_ranges,
            length=switches.plangrep_content_length,
        )
