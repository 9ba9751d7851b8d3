"""Plangrep's JSON: projects, jobs and the normalized v1 result document.

The docs name the result's parts but leave their contents open; this is what the emulator puts there.

Documents: one per uploaded file (``job.file_names``), ``classification`` ``specifications``
when the name says "spec", else ``plans``; 4 pages each, or one per sheet if it has more.
Pages of plans are drawing pages (10 credits each), others document pages (1 credit each,
the docs' default rates); ``usage`` counts them with ``creditsPerDrawingPage`` and
``creditsPerDocumentPage`` beside the documented counters. In a ``completed_with_errors``
result with several documents the last one failed whole (``status: failed`` and an
``error``); with one document its last page failed (``status: completed_with_errors``);
either way ``errors`` names what failed, with ``documentId``, ``fileName`` (and ``pageNumber``).

Where each artifact is linked (the docs only say links sit in ``documents[].artifacts[]`` and
``documents[].sheets[].artifacts[]``):
- every artifact once, from the first document (the one that never fails);
- a path with a ``sheets/<sheet>/`` directory from that sheet (``sheetNumber`` ``<sheet>``,
  sheets in path order, ``pageNumber`` 1, 2, ...); any other path from the document itself;
- links numbered in path order: every third (the 3rd, 6th, ...) has no ``path``, only
  ``{"type", "url"}`` with the path in the url's ``path`` query (``type``: ``thumbnail`` for
  images, ``extracted_json`` for JSON, ``vector_crop`` for SVG/PDF, ``file`` otherwise); the
  others are ``{"path", "url"}`` as in the seed;
- ``url`` is origin-relative, ``/api/open/v1/jobs/<id>/artifact?path=<urlencoded>``, except on
  every other link without a path (the 1st, 3rd, ... of them): absolute on the API origin.
Each sheet carries one ``evidence`` region.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...clock import iso_ms
from ...mime import guess_mime
from ...storage import quote
from .statuses import PAGES_KNOWN, WITH_RESULT

if TYPE_CHECKING:
    from .state import PlangrepJob, PlangrepProject

DOC_PREFIX = "/api/open/v1"  # where the docs' origin-relative artifact URLs point
PAGES_PER_DOCUMENT = 4
CREDITS = {"plans": 10, "other": 1}  # per successful drawing page / document page
LIMITS = {"maxDeclaredBytes": 10_000_000_000, "maxFiles": 100}
_FILE_STATUS = {
    "provisioning": "pending",
    "awaiting_uploads": "pending",
    "uploading": "uploading",
    "preflighting": "uploaded",
    "blocked_insufficient_credits": "uploaded",
    "processing": "processing",
    "completed": "completed",
    "completed_with_errors": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
}
_DISCIPLINES = {
    "A": "architectural",
    "C": "civil",
    "E": "electrical",
    "L": "landscape",
    "M": "mechanical",
    "P": "plumbing",
    "S": "structural",
}
_LINK_TYPES = {
    "png": "thumbnail",
    "jpg": "thumbnail",
    "jpeg": "thumbnail",
    "webp": "thumbnail",
    "json": "extracted_json",
    "svg": "vector_crop",
    "pdf": "vector_crop",
}


def _short_id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class _Document:
    document_id: str
    file_id: str
    file_name: str
    classification: str
    pages: int
    failed_pages: int
    failed_whole: bool

    @property
    def status(self) -> str:
        if self.failed_whole:
            return "failed"
        return "completed_with_errors" if self.failed_pages else "completed"


def _documents(job: PlangrepJob) -> list[_Document]:
    sheets = len(_sheets(job))
    partial = job.status == "completed_with_errors"
    found = []
    for i, name in enumerate(job.file_names):
        pages = max(PAGES_PER_DOCUMENT, sheets) if i == 0 else PAGES_PER_DOCUMENT
        whole = partial and len(job.file_names) > 1 and i == len(job.file_names) - 1
        failed = pages if whole else int(partial and len(job.file_names) == 1)
        kind = "specifications" if "spec" in name.lower() else "plans"
        found.append(
            _Document(
                _short_id("doc_", job.job_id, str(i), name),
                _short_id("file_", job.job_id, str(i), name),
                name,
                kind,
                pages,
                failed,
                whole,
            )
        )
    return found


def _sheet_of(path: str) -> str | None:
    """The ``<sheet>`` of a path with a ``sheets/<sheet>/`` directory."""
    parts = path.split("/")
    for i, part in enumerate(parts[:-2]):
        if part == "sheets":
            return parts[i + 1]
    return None


def _sheets(job: PlangrepJob) -> list[str]:
    return sorted({sheet for path in job.artifacts if (sheet := _sheet_of(path)) is not None})


def _url(job: PlangrepJob, path: str) -> str:
    return f"{DOC_PREFIX}/jobs/{quote(job.job_id)}/artifact?path={quote(path)}"


def _links(job: PlangrepJob, api_url: str) -> Iterator[tuple[str | None, dict[str, str]]]:
    """Each artifact's link, in path order, with the sheet it belongs to (None: the document)."""
    pathless = 0
    for i, path in enumerate(sorted(job.artifacts)):
        url = _url(job, path)
        if i % 3 == 2:
            ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
            link = {"type": _LINK_TYPES.get(ext, "file"), "url": api_url + url if pathless % 2 == 0 else url}
            pathless += 1
        else:
            link = {"path": path, "url": url}
        yield _sheet_of(path), link


def job_error(job: PlangrepJob) -> dict[str, str] | None:
    if job.status == "failed":
        return {"code": "processing_failed", "message": job.error or "Job failed"}
    if job.status == "expired":
        return {"code": "job_expired", "message": job.error or "The job expired before it completed"}
    return None


def _usage(documents: list[_Document]) -> dict[str, int]:
    counts = {"plans": [0, 0], "other": [0, 0]}  # pages, successful pages
    for doc in documents:
        kind = counts["plans" if doc.classification == "plans" else "other"]
        kind[0] += doc.pages
        kind[1] += doc.pages - doc.failed_pages
    (drawing, good_drawing), (other, good_other) = counts["plans"], counts["other"]
    return {
        "pageCount": drawing + other,
        "successfulPageCount": good_drawing + good_other,
        "drawingPageCount": drawing,
        "documentPageCount": other,
        "successfulDrawingPageCount": good_drawing,
        "successfulDocumentPageCount": good_other,
        "creditsPerDrawingPage": CREDITS["plans"],
        "creditsPerDocumentPage": CREDITS["other"],
        "creditsDebited": good_drawing * CREDITS["plans"] + good_other * CREDITS["other"],
    }


def project_json(project: PlangrepProject) -> dict[str, Any]:
    return {
        "id": project.project_id,
        "name": project.name,
        "projectKind": "open_api",
        "status": project.status,
        "runtime": {"status": "running" if project.status == "ready" else "starting", "upgradeStatus": "none"},
        "createdAt": iso_ms(project.created_at),
        "updatedAt": iso_ms(project.updated_at),
    }


def job_json(job: PlangrepJob, result_url: str | None) -> dict[str, Any]:
    documents = _documents(job)
    usage = _usage(documents)
    with_result = job.status in WITH_RESULT
    files = [
        {
            "id": d.file_id,
            "fileName": d.file_name,
            "status": "failed" if d.failed_whole else _FILE_STATUS[job.status],
        }
        for d in documents
    ]
    return {
        "id": job.job_id,
        "externalId": job.external_id,
        "status": job.status,
        "projectId": job.project_id,
        "limits": dict(LIMITS),
        "pageCount": usage["pageCount"] if job.status in PAGES_KNOWN else 0,
        "successfulPageCount": usage["successfulPageCount"] if with_result else 0,
        "billing": {"creditsDebited": usage["creditsDebited"] if with_result else 0},
        "files": files,
        "resultUrl": result_url,
        "error": job_error(job),
        "createdAt": iso_ms(job.created_at),
        "updatedAt": iso_ms(job.updated_at),
        "completedAt": iso_ms(job.completed_at),
        "expiresAt": iso_ms(job.expires_at),
    }


def result_document(job: PlangrepJob, api_url: str, result_url: str | None) -> dict[str, Any]:
    """The ``GET /jobs/{id}/result`` body (or the seed's ``{"result": {"artifacts"}}`` shape)."""
    if job.result_shape == "seed":
        return {"result": {"artifacts": [{"path": path, "url": _url(job, path)} for path in sorted(job.artifacts)]}}
    documents = _documents(job)
    sheet_numbers = _sheets(job)
    rendered = [_document_json(job, doc) for doc in documents]
    sheets = {key: _sheet_json(key, page) for page, key in enumerate(sheet_numbers, 1)}
    for sheet, link in _links(job, api_url):
        (sheets[sheet] if sheet is not None else rendered[0])["artifacts"].append(link)
    rendered[0]["sheets"] = list(sheets.values())
    return {
        "schemaVersion": "v1",
        "job": {
            "id": job.job_id,
            "status": job.status,
            "externalId": job.external_id,
            "createdAt": iso_ms(job.created_at),
            "completedAt": iso_ms(job.completed_at),
            "expiresAt": iso_ms(job.expires_at),
            "resultUrl": result_url,
            "error": job_error(job),
        },
        "usage": _usage(documents),
        "documents": rendered,
        "evidence": [_evidence(job, documents[0], key, page) for page, key in enumerate(sheet_numbers, 1)],
        "warnings": [],
        "errors": [_failure(job, doc) for doc in documents if doc.failed_pages],
        "generatedAt": iso_ms(job.completed_at),
    }


def _document_json(job: PlangrepJob, doc: _Document) -> dict[str, Any]:
    specifications = doc.classification == "specifications"
    return {
        "documentId": doc.document_id,
        "fileName": doc.file_name,
        "classification": doc.classification,
        "contentType": guess_mime(doc.file_name),
        "fileSize": 100_000 + zlib.crc32(f"{job.job_id}/{doc.file_name}".encode()) % 9_000_000,
        "status": doc.status,
        "pageCount": doc.pages,
        "successfulPageCount": doc.pages - doc.failed_pages,
        "failedPageCount": doc.failed_pages,
        "error": {"code": "document_failed", "message": _failure(job, doc)["message"]} if doc.failed_whole else None,
        "artifacts": [],
        "sheets": [],
        "specifications": [] if specifications else None,
        "docs": None,
    }


def _sheet_json(key: str, page: int) -> dict[str, Any]:
    return {
        "sheetNumber": key,
        "sheetName": f"Sheet {key}",
        "pageNumber": page,
        "drawingType": "plan",
        "discipline": _DISCIPLINES.get(key[:1].upper(), "general"),
        "artifacts": [],
    }


def _evidence(job: PlangrepJob, doc: _Document, key: str, page: int) -> dict[str, Any]:
    return {
        "id": _short_id("ev_", job.job_id, key),
        "type": "region",
        "regionType": "detail",
        "text": f"Detail 1 on sheet {key}",
        "documentId": doc.document_id,
        "pageNumber": page,
    }


def _failure(job: PlangrepJob, doc: _Document) -> dict[str, Any]:
    if doc.failed_whole:
        message = job.error or f"{doc.file_name} could not be processed"
        return {"code": "document_failed", "message": message, "documentId": doc.document_id, "fileName": doc.file_name}
    message = job.error or f"Page {doc.pages} of {doc.file_name} could not be processed"
    return {
        "code": "page_failed",
        "message": message,
        "documentId": doc.document_id,
        "fileName": doc.file_name,
        "pageNumber": doc.pages,
    }
