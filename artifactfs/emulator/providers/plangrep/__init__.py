"""Plangrep open API v1 (docs.plangrep.com): projects, jobs, job results and job artifacts.

  GET /projects                    ``{"projects": [Project]}``, no pagination
  GET /projects/{projectId}        ``{"project": Project}``
  GET /projects/{projectId}/jobs   ``{"jobs": [Job]}``, newest first, no pagination
  GET /jobs/{jobId}                ``{"job": Job}``
  GET /jobs/{jobId}/result         the normalized v1 result (``schemaVersion, job, usage, documents,
                                   evidence, warnings, errors, generatedAt``), only for ``completed``
                                   and ``completed_with_errors`` jobs; immutable
  GET /jobs/{jobId}/artifact?path= the bytes of an artifact the result links to, ``application/octet-stream``
under ``/plangrep/api/open/v1`` and, because the docs' artifact URLs are origin-relative,
``/api/open/v1``. A job's ``resultUrl`` is a pre-signed URL (``?token=``) of the same
result on the storage origin. Statuses: ``provisioning``, ``awaiting_uploads``, ``uploading``,
``preflighting``, ``blocked_insufficient_credits``, ``processing``, then the terminal
``completed``, ``completed_with_errors``, ``failed``, ``cancelled``, ``expired``. Auth is
``Authorization: Bearer``; a missing or wrong key is 401 with a machine-readable ``code``.
What the JSON holds, and where a result links each artifact: ``render``.

Choices where the docs are silent:
- Errors are ``{"error": {"code", "message"}}``: 401 ``missing_api_key``/``invalid_api_key``;
  404 ``project_not_found``, ``job_not_found``, ``artifact_not_found`` (a path the result does
  not link) or ``not_found``; 409 ``result_not_available`` (the result of a job without one)
  and ``job_not_completed`` (an artifact of one); 400 ``validation_error`` (no ``path``).
- Projects are listed newest first too (then by id, as jobs are).
- ``completedAt`` is when processing ended (``completed``, ``completed_with_errors``,
  ``failed``); a cancelled or expired job never completed (null). ``updatedAt`` is the last
  status change; ``expiresAt`` ``createdAt`` + 7 days (as in every example).
- ``error`` is ``{"code": "processing_failed", ...}`` for a failed job, ``{"code":
  "job_expired", ...}`` for an expired one, else null (a partial result lists what failed in
  its ``errors``).
- ``pageCount`` is known from preflight on (``blocked_insufficient_credits``, ``processing``,
  results), ``successfulPageCount`` and ``billing.creditsDebited`` once there is a result;
  ``files[].status`` follows the job.
- The result document is built when first asked for (``GET .../result``, ``resultUrl`` or
  ``State.result``) and is the same bytes ever after. A terminal job is frozen:
  ``set_status`` refuses to move it; ``put_job`` replaces a job whole.
- Artifact bytes carry ``Content-Disposition`` (the path's last component) and are chunked
  without Content-Length, ignoring Range (the docs promise neither); the
  ``plangrep_content_length`` and ``plangrep_ranges`` switches turn each on.
- Project artifacts and single-use token downloads (``/artifact-downloads/{token}``) are not emulated.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from ...server import BlobReply, Reply, Request, json_reply
from .render import DOC_PREFIX, project_json
from .sample import seed
from .state import RESULTS_BUCKET, PlangrepJob, State
from .statuses import WITH_RESULT

BASE_PATH = "/plangrep/api/open/v1"
DEFAULT_TOKEN = "pgk_live_" + hashlib.sha256(b"artifactfs emulator plangrep demo key").hexdigest()[:32]
BUCKET = RESULTS_BUCKET
EXPORTS = {
    "add_plangrep_project": "add_project",
    "put_plangrep_job": "put_job",
    "set_plangrep_status": "set_status",
    "complete_plangrep_job": "complete",
    "plangrep_file": "file",
    "plangrep_result": "result",
    "plangrep_projects": "projects",
    "plangrep_jobs": "jobs",
}
__all__ = ["BASE_PATH", "BUCKET", "CONTROL", "DEFAULT_TOKEN", "EXPORTS", "ROUTES", "State", "handle", "seed"]


def _error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"error": {"code": code, "message": message}})


def _auth(state: State, req: Request) -> Reply | None:
    header = req.headers.get("authorization", "")
    if not header:
        return _error(401, "missing_api_key", "Missing Authorization header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), state.world.tokens["plangrep"].encode()
    ):
        return _error(401, "invalid_api_key", "Invalid, expired or revoked API key")
    return None


def _newest_first(items: list[Any], key: str) -> list[Any]:
    return sorted(items, key=lambda item: (item.created_at, getattr(item, key)), reverse=True)


def handle(state: State, req: Request, parts: list[str]) -> Reply | BlobReply:
    denied = _auth(state, req)
    if denied:
        return denied
    with state.world.lock:
        match parts:
            case ["projects"]:
                projects = _newest_first(list(state.projects.values()), "project_id")
                return json_reply(200, {"projects": [project_json(p) for p in projects]})
            case ["projects", project_id, *rest] if rest in ([], ["jobs"]):
                project = state.projects.get(project_id)
                if project is None:
                    return _error(404, "project_not_found", f"No project {project_id}")
                if not rest:
                    return json_reply(200, {"project": project_json(project)})
                jobs = _newest_first([j for j in state.jobs.values() if j.project_id == project_id], "job_id")
                return json_reply(200, {"jobs": [state.job_json(j) for j in jobs]})
            case ["jobs", job_id, *rest] if rest in ([], ["result"], ["artifact"]):
                job = state.jobs.get(job_id)
                if job is None:
                    return _error(404, "job_not_found", f"No job {job_id}")
                if not rest:
                    return json_reply(200, {"job": state.job_json(job)})
                if rest == ["result"]:
                    return _result(state, job)
                return _artifact(state, req, job)
    return _error(404, "not_found", "Not found")


ROUTES = {DOC_PREFIX: handle}


def _result(state: State, job: PlangrepJob) -> Reply:
    if job.status not in WITH_RESULT:
        message = f"Job {job.job_id} is {job.status}; a result exists once it is completed or completed_with_errors"
        return _error(409, "result_not_available", message)
    return Reply(200, state.result(job.job_id), {"Content-Type": "application/json"})


def _artifact(state: State, req: Request, job: PlangrepJob) -> Reply | BlobReply:
    path = req.params.get("path")
    if not path:
        return _error(400, "validation_error", "Missing required query parameter: path")
    if job.status not in WITH_RESULT:
        return _error(409, "job_not_completed", f"Job {job.job_id} is {job.status}; it has no artifacts yet")
    blob = job.artifacts.get(path)
    if blob is None:
        return _error(404, "artifact_not_found", "The job's result links no artifact at that path")
    completed = job.completed_at or job.updated_at
    tag = hashlib.sha256(f"{job.job_id}\n{path}\n{completed}".encode()).hexdigest()[:32]
    return BlobReply(
        blob,
        "application/octet-stream",
        f'"{tag}"',
        completed,
        filename=path.rsplit("/", 1)[-1],
        ranges=state.switches.ranges,
        length=state.switches.content_length,
    )


def _control_complete(state: State, body: dict[str, Any]) -> None:
    state.complete(body["job_id"], body.get("status", "completed"))


def _control_put(state: State, body: dict[str, Any]) -> None:
    state.put_job(
        body["job_id"],
        body["status"],
        {path: str(text) for path, text in dict(body.get("artifacts", {})).items()},
        error=body.get("error"),
        project_id=body.get("project_id"),
        files=body.get("files"),
        result_shape=body.get("result_shape", "v1"),
    )


CONTROL = {"complete": _control_complete, "put": _control_put}
