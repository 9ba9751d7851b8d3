"""Plangrep sample data: two projects, jobs in every terminal state and a few active ones.

``job_01abc123`` is the docs' example (completed, ``results/job_01abc123/normalized-output.json``);
``job_02running`` is processing and completes on ``State.complete`` (``POST
/_emulator/plangrep/complete``), with the artifacts it already holds.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ...blobs import Blob
from ...samplefiles import png_bytes

if TYPE_CHECKING:
    from .state import State

Outputs = tuple[int, dict[str, int]]  # rooms, and each sheet's thumbnail tint
HARBOR = "proj_01hy3m8harbor"
CLINIC = "proj_01hy3m8clinic"


def _outputs(job_id: str, rooms: int, sheets: dict[str, int]) -> dict[str, bytes | str | Blob]:
    """A job's normalized output and summary, and a thumbnail and region list per sheet."""
    files: dict[str, bytes | str | Blob] = {
        f"results/{job_id}/normalized-output.json": json.dumps(
            {"job_id": job_id, "sheets": sorted(sheets), "rooms": rooms, "normalized": True}, indent=2
        )
        + "\n",
        f"results/{job_id}/summary.md": f"# Job {job_id}\n\n{len(sheets)} sheets, {rooms} rooms.\n",
    }
    for sheet, tint in sheets.items():
        files[f"results/{job_id}/sheets/{sheet}/thumbnail.png"] = png_bytes(24, 16, tint)
        files[f"results/{job_id}/sheets/{sheet}/regions.json"] = json.dumps([{"type": "detail", "sheet": sheet}]) + "\n"
    return files


def seed(state: State) -> None:
    state.add_project("Harbor Tower", HARBOR, created_at="2026-03-01T09:00:00.000Z")
    state.add_project("Riverside Clinic", CLINIC, created_at="2026-03-05T09:00:00.000Z")
    # (job id, status, project, created, status changed, files, outputs, error)
    jobs: list[tuple[str, str, str, str, str | None, list[str] | None, Outputs | None, str | None]] = [
        ("job_01abc123", "completed", HARBOR, "2026-03-10T08:00:00.000Z", "2026-03-10T08:02:30.000Z",
         ["architectural_drawings.pdf"], (7, {"A-101": 40, "A-102": 80}), None),
        ("job_02running", "processing", HARBOR, "2026-03-10T09:00:00.000Z", None,
         ["level2_drawings.pdf"], (3, {"A-201": 120}), None),
        ("job_03failed", "failed", CLINIC, "2026-03-10T09:30:00.000Z", "2026-03-10T09:30:05.000Z",
         ["scan.pdf"], None, "Input document could not be parsed"),
        ("job_04partial", "completed_with_errors", CLINIC, "2026-03-11T10:00:00.000Z", "2026-03-11T10:06:00.000Z",
         ["structural_drawings.pdf", "specifications.pdf"], (12, {"S-201": 160}),
         "specifications.pdf: the file is password-protected"),
        ("job_05cancelled", "cancelled", HARBOR, "2026-03-11T11:00:00.000Z", "2026-03-11T11:01:00.000Z",
         None, None, None),
        ("job_06expired", "expired", CLINIC, "2026-02-20T08:00:00.000Z", "2026-02-27T08:00:00.000Z",
         None, None, None),
        ("job_07provisioning", "provisioning", HARBOR, "2026-03-12T08:00:00.000Z", None, None, None, None),
        ("job_08blocked", "blocked_insufficient_credits", CLINIC, "2026-03-12T09:00:00.000Z", None,
         ["site_plan.pdf", "civil_specs.pdf"], None, None),
    ]  # fmt: skip
    for job_id, status, project_id, created_at, changed_at, files, outputs, error in jobs:
        state.put_job(
            job_id,
            status,
            _outputs(job_id, *outputs) if outputs else None,
            error=error,
            created_at=created_at,
            completed_at=changed_at,
            project_id=project_id,
            external_id="order-7890" if job_id == "job_01abc123" else None,
            files=files,
        )
