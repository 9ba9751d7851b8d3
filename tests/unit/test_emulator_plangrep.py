"""The emulator's Plangrep API follows the Plangrep docs: projects, jobs, the v1 result and its artifacts."""

from __future__ import annotations

import json
import urllib.parse
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from artifactfs.emulator import Emulator

from .emulator_client import auth, get

HARBOR = ["job_07provisioning", "job_05cancelled", "job_02running", "job_01abc123"]
CLINIC = ["job_08blocked", "job_04partial", "job_03failed", "job_06expired"]
JOB_FIELDS = {"id", "externalId", "status", "projectId", "limits", "pageCount", "successfulPageCount", "billing",
              "files", "resultUrl", "error", "createdAt", "updatedAt", "completedAt", "expiresAt"}
DOCUMENT_FIELDS = {"documentId", "fileName", "classification", "contentType", "fileSize", "status", "pageCount",
                   "successfulPageCount", "failedPageCount", "error", "artifacts", "sheets", "specifications", "docs"}
ACTIVE = ["provisioning", "awaiting_uploads", "uploading", "preflighting", "blocked_insufficient_credits", "processing"]
TERMINAL = ["completed", "completed_with_errors", "failed", "cancelled", "expired"]


def job(http: httpx.Client, emu: Emulator, job_id: str) -> dict[str, Any]:
    r = get(http, emu, "plangrep", f"/jobs/{job_id}")
    assert r.status_code == 200 and set(r.json()) == {"job"}, r.text
    return r.json()["job"]


def result(http: httpx.Client, emu: Emulator, job_id: str) -> httpx.Response:
    return get(http, emu, "plangrep", f"/jobs/{job_id}/result")


def all_links(document: dict[str, Any]) -> list[dict[str, str]]:
    """Every artifact link of a v1 result, documents' first, then sheets'."""
    found = []
    for doc in document["documents"]:
        found += doc["artifacts"]
        for sheet in doc["sheets"]:
            found += sheet["artifacts"]
    return found


def link_path(link: dict[str, str]) -> str:
    return link.get("path") or dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link["url"]).query))["path"]


def test_projects_and_their_jobs(emu: Emulator, http: httpx.Client) -> None:
    projects = get(http, emu, "plangrep", "/projects").json()
    assert set(projects) == {"projects"}
    assert [p["name"] for p in projects["projects"]] == ["Riverside Clinic", "Harbor Tower"]
    harbor = projects["projects"][1]
    assert harbor == {"id": harbor["id"], "name": "Harbor Tower", "projectKind": "open_api", "status": "ready",
                      "runtime": {"status": "running", "upgradeStatus": "none"},
                      "createdAt": "2026-03-01T09:00:00.000Z", "updatedAt": "2026-03-01T09:00:00.000Z"}
    assert harbor["id"].startswith("proj_")
    assert get(http, emu, "plangrep", f"/projects/{harbor['id']}").json() == {"project": harbor}
    listed = {}
    for project in projects["projects"]:
        jobs = get(http, emu, "plangrep", f"/projects/{project['id']}/jobs").json()
        assert set(jobs) == {"jobs"} and all(set(j) == JOB_FIELDS for j in jobs["jobs"])
        assert all(j["projectId"] == project["id"] for j in jobs["jobs"])
        created = [j["createdAt"] for j in jobs["jobs"]]
        assert created == sorted(created, reverse=True)
        listed[project["name"]] = [j["id"] for j in jobs["jobs"]]
    assert listed == {"Harbor Tower": HARBOR, "Riverside Clinic": CLINIC}
    for path, code in (("/projects/proj_nope", "project_not_found"), ("/projects/proj_nope/jobs", "project_not_found"),
                       ("/jobs/job_nope", "job_not_found"), ("/jobs/job_nope/result", "job_not_found"),
                       ("/elsewhere", "not_found")):
        r = get(http, emu, "plangrep", path)
        assert r.status_code == 404 and r.json()["error"]["code"] == code and r.json()["error"]["message"], path


def test_a_job_without_a_project_goes_to_the_default_one(emu: Emulator, http: httpx.Client) -> None:
    emu.put_plangrep_job("job_loose", "queued")
    assert job(http, emu, "job_loose")["projectId"] == "proj_default"
    jobs = get(http, emu, "plangrep", "/projects/proj_default/jobs").json()["jobs"]
    assert [j["id"] for j in jobs] == ["job_loose"]
    project_id = emu.add_plangrep_project("Third", created_at="2027-01-01T00:00:00Z")
    emu.put_plangrep_job("job_third", "processing", project_id=project_id)
    assert get(http, emu, "plangrep", "/projects").json()["projects"][0]["id"] == project_id
    with pytest.raises(KeyError):
        emu.put_plangrep_job("job_orphan", "processing", project_id="proj_nope")


def test_job_objects(emu: Emulator, http: httpx.Client) -> None:
    done = job(http, emu, "job_01abc123")
    assert (done["status"], done["externalId"], done["error"]) == ("completed", "order-7890", None)
    assert done["limits"] == {"maxDeclaredBytes": 10_000_000_000, "maxFiles": 100}
    assert (done["createdAt"], done["completedAt"]) == ("2026-03-10T08:00:00.000Z", "2026-03-10T08:02:30.000Z")
    created = datetime.fromisoformat(done["createdAt"].replace("Z", "+00:00"))
    assert done["expiresAt"] == (created + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert done["pageCount"] == done["successfulPageCount"] == 4 and done["billing"] == {"creditsDebited": 40}
    assert [(f["fileName"], f["status"]) for f in done["files"]] == [("architectural_drawings.pdf", "completed")]
    assert done["files"][0]["id"].startswith("file_") and done["resultUrl"].startswith(emu.storage_url)

    failed = job(http, emu, "job_03failed")
    assert failed["error"] == {"code": "processing_failed", "message": "Input document could not be parsed"}
    assert failed["completedAt"] == "2026-03-10T09:30:05.000Z" and failed["resultUrl"] is None
    expired = job(http, emu, "job_06expired")
    assert expired["error"]["code"] == "job_expired" and expired["completedAt"] is None
    cancelled = job(http, emu, "job_05cancelled")
    assert (cancelled["error"], cancelled["completedAt"], cancelled["updatedAt"]) == (
        None, None, "2026-03-11T11:01:00.000Z")
    partial = job(http, emu, "job_04partial")
    assert partial["error"] is None and [f["status"] for f in partial["files"]] == ["completed", "failed"]
    assert partial["successfulPageCount"] < partial["pageCount"] and partial["resultUrl"]
    running = job(http, emu, "job_02running")
    assert (running["status"], running["completedAt"], running["resultUrl"], running["billing"]) == (
        "processing", None, None, {"creditsDebited": 0})
    assert running["pageCount"] == 4 and running["successfulPageCount"] == 0
    assert job(http, emu, "job_07provisioning")["pageCount"] == 0
    assert job(http, emu, "job_08blocked")["status"] == "blocked_insufficient_credits"


@pytest.mark.parametrize("status", ACTIVE + TERMINAL + ["queued", "running"])
def test_every_status_can_be_set(emu: Emulator, http: httpx.Client, status: str) -> None:
    emu.put_plangrep_job("job_x", "provisioning", {"out/a.txt": "a"})
    emu.set_plangrep_status("job_x", status, error="went wrong")
    expected = {"queued": "provisioning", "running": "processing"}.get(status, status)
    served = job(http, emu, "job_x")
    assert served["status"] == expected
    assert (served["completedAt"] is not None) == (expected in ("completed", "completed_with_errors", "failed"))
    r = result(http, emu, "job_x")
    if expected in ("completed", "completed_with_errors"):
        assert r.status_code == 200 and r.json()["job"]["status"] == expected
    else:
        assert r.status_code == 409 and r.json()["error"]["code"] == "result_not_available"
    if expected in TERMINAL:
        with pytest.raises(ValueError, match="frozen"):
            emu.set_plangrep_status("job_x", "processing")
    with pytest.raises(ValueError):
        emu.set_plangrep_status("job_x", "done")


def test_the_v1_result_document(emu: Emulator, http: httpx.Client) -> None:
    r = result(http, emu, "job_01abc123")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"schemaVersion", "job", "usage", "documents", "evidence", "warnings", "errors", "generatedAt"}
    assert body["schemaVersion"] == "v1" and body["errors"] == [] and body["warnings"] == []
    assert body["job"] == {"id": "job_01abc123", "status": "completed", "externalId": "order-7890",
                           "createdAt": "2026-03-10T08:00:00.000Z", "completedAt": "2026-03-10T08:02:30.000Z",
                           "expiresAt": "2026-03-17T08:00:00.000Z", "resultUrl": body["job"]["resultUrl"],
                           "error": None}
    assert body["generatedAt"] == "2026-03-10T08:02:30.000Z"
    assert body["usage"]["pageCount"] == 4 and body["usage"]["creditsDebited"] == 40
    (document,) = body["documents"]
    assert set(document) == DOCUMENT_FIELDS
    assert (document["fileName"], document["classification"], document["contentType"], document["status"]) == (
        "architectural_drawings.pdf", "plans", "application/pdf", "completed")
    assert document["documentId"].startswith("doc_") and document["failedPageCount"] == 0
    assert [(s["sheetNumber"], s["pageNumber"], s["discipline"]) for s in document["sheets"]] == [
        ("A-101", 1, "architectural"), ("A-102", 2, "architectural")]
    assert set(document["sheets"][0]) == {"sheetNumber", "sheetName", "pageNumber", "drawingType", "discipline",
                                          "artifacts"}
    assert len(body["evidence"]) == 2 and body["evidence"][0]["type"] == "region"
    assert document["artifacts"][0] == {
        "path": "results/job_01abc123/normalized-output.json",
        "url": "/api/open/v1/jobs/job_01abc123/artifact?path=results%2Fjob_01abc123%2Fnormalized-output.json",
    }
    sheet_paths = {s["sheetNumber"]: [link_path(a) for a in s["artifacts"]] for s in document["sheets"]}
    assert sheet_paths == {
        "A-101": ["results/job_01abc123/sheets/A-101/regions.json", "results/job_01abc123/sheets/A-101/thumbnail.png"],
        "A-102": ["results/job_01abc123/sheets/A-102/regions.json", "results/job_01abc123/sheets/A-102/thumbnail.png"],
    }
    links = all_links(body)
    assert sorted(link_path(a) for a in links) == sorted(emu.plangrep_jobs["job_01abc123"].artifacts)
    pathless = [a for a in links if "path" not in a]
    assert [set(a) for a in pathless] == [{"type", "url"}] * 2
    assert {a["type"] for a in pathless} == {"thumbnail", "file"}
    assert sorted(a["url"].startswith(emu.api_url + "/api/open/v1/jobs/") for a in pathless) == [False, True]
    assert "artifacts" not in body and "result" not in body


def test_the_result_is_immutable_and_also_at_its_result_url(emu: Emulator, http: httpx.Client) -> None:
    first = result(http, emu, "job_01abc123").content
    assert result(http, emu, "job_01abc123").content == first == emu.plangrep_result("job_01abc123")
    url = job(http, emu, "job_01abc123")["resultUrl"]
    assert url == json.loads(first)["job"]["resultUrl"] and "token=" in url
    assert http.get(url).content == first  # no auth: the URL is the credential
    r = http.get(url.replace("token=", "token=0"))
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    with pytest.raises(ValueError, match="frozen"):
        emu.set_plangrep_status("job_01abc123", "completed", {"other.txt": "x"})
    with pytest.raises(ValueError):
        emu.plangrep_result("job_02running")


def test_a_partial_result_lists_its_errors(emu: Emulator, http: httpx.Client) -> None:
    body = result(http, emu, "job_04partial").json()
    assert body["job"]["status"] == "completed_with_errors"
    good, bad = body["documents"]
    assert (good["status"], good["error"], good["classification"]) == ("completed", None, "plans")
    assert (bad["status"], bad["successfulPageCount"], bad["artifacts"], bad["classification"]) == (
        "failed", 0, [], "specifications")
    assert bad["error"] == {"code": "document_failed", "message": "specifications.pdf: the file is password-protected"}
    assert body["errors"] == [{"code": "document_failed", "message": bad["error"]["message"],
                               "documentId": bad["documentId"], "fileName": "specifications.pdf"}]
    assert body["usage"]["successfulPageCount"] == good["pageCount"] < body["usage"]["pageCount"]
    assert body["usage"]["documentPageCount"] == 4 and body["usage"]["successfulDocumentPageCount"] == 0

    emu.put_plangrep_job("job_one", "completed_with_errors", {"a.txt": "a"}, files=["only.pdf"])
    one = result(http, emu, "job_one").json()
    assert one["documents"][0]["status"] == "completed_with_errors" and one["documents"][0]["failedPageCount"] == 1
    assert one["errors"][0]["code"] == "page_failed" and one["errors"][0]["pageNumber"] == 4


@pytest.mark.parametrize("job_id", ["job_02running", "job_03failed", "job_05cancelled", "job_06expired",
                                    "job_07provisioning", "job_08blocked"])
def test_no_result_without_completion(emu: Emulator, http: httpx.Client, job_id: str) -> None:
    r = result(http, emu, job_id)
    assert r.status_code == 409 and r.json()["error"]["code"] == "result_not_available"
    r = get(http, emu, "plangrep", f"/jobs/{job_id}/artifact", params={"path": "x"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_completed"


def test_every_linked_artifact_is_served(emu: Emulator, http: httpx.Client) -> None:
    for job_id in ("job_01abc123", "job_04partial"):
        for link in all_links(result(http, emu, job_id).json()):
            url = link["url"] if link["url"].startswith("http") else emu.api_url + link["url"]
            r = http.get(url, headers=auth(emu, "plangrep"))
            assert r.status_code == 200 and r.content == emu.plangrep_file(job_id, link_path(link)).read_all()
            assert r.headers["content-type"] == "application/octet-stream"
            name = link_path(link).rsplit("/", 1)[-1]
            assert r.headers["content-disposition"] == f'attachment; filename="{name}"'


def test_artifact_bytes_chunked_without_length_ignoring_range(emu: Emulator, http: httpx.Client) -> None:
    path = "results/job_01abc123/normalized-output.json"
    expected = emu.plangrep_file("job_01abc123", path).read_all()
    r = get(http, emu, "plangrep", "/jobs/job_01abc123/artifact", params={"path": path}, headers={"Range": "bytes=0-3"})
    assert r.status_code == 200 and r.content == expected
    assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
    assert "accept-ranges" not in r.headers
    emu.set(plangrep_content_length=True, plangrep_ranges=True)
    r = get(http, emu, "plangrep", "/jobs/job_01abc123/artifact", params={"path": path}, headers={"Range": "bytes=0-3"})
    assert r.status_code == 206 and r.content == expected[:4] and r.headers["content-length"] == "4"
    r = get(http, emu, "plangrep", "/jobs/job_01abc123/artifact", params={"path": "secret.txt"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "artifact_not_found"
    r = get(http, emu, "plangrep", "/jobs/job_01abc123/artifact")
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"


def test_a_job_completes_on_the_switch(emu: Emulator, http: httpx.Client) -> None:
    path = "results/job_02running/normalized-output.json"
    assert get(http, emu, "plangrep", "/jobs/job_02running/artifact", params={"path": path}).status_code == 409
    control = emu.api_url + "/_emulator/plangrep/complete"
    assert http.post(control, json={"job_id": "job_02running"}).json() == {"ok": True}
    done = job(http, emu, "job_02running")
    assert done["status"] == "completed" and done["completedAt"] and done["resultUrl"]
    paths = {link_path(link) for link in all_links(result(http, emu, "job_02running").json())}
    assert path in paths and "results/job_02running/sheets/A-201/thumbnail.png" in paths
    r = get(http, emu, "plangrep", "/jobs/job_02running/artifact", params={"path": path})
    assert r.status_code == 200 and r.content == emu.plangrep_file("job_02running", path).read_all()
    assert http.post(control, json={"job_id": "job_02running"}).status_code == 400  # frozen now
    assert http.post(control, json={"job_id": "job_nope"}).status_code == 400
    emu.put_plangrep_job("job_later", "processing", {"a.txt": "a"})
    emu.complete_plangrep_job("job_later", "completed_with_errors")
    assert job(http, emu, "job_later")["status"] == "completed_with_errors"
    with pytest.raises(ValueError):
        emu.complete_plangrep_job("job_07provisioning", "failed")


def test_the_seed_shape_on_request(emu: Emulator, http: httpx.Client) -> None:
    emu.put_plangrep_job("job_seed", "completed", {"b.txt": "b", "a/c.json": "{}"}, result_shape="seed")
    body = result(http, emu, "job_seed").json()
    assert body == {"result": {"artifacts": [
        {"path": "a/c.json", "url": "/api/open/v1/jobs/job_seed/artifact?path=a%2Fc.json"},
        {"path": "b.txt", "url": "/api/open/v1/jobs/job_seed/artifact?path=b.txt"},
    ]}}
    r = http.get(emu.api_url + body["result"]["artifacts"][1]["url"], headers=auth(emu, "plangrep"))
    assert r.content == b"b"
    with pytest.raises(ValueError):
        emu.put_plangrep_job("job_bad", "completed", result_shape="v2")


def test_auth_and_the_doc_prefix(emu: Emulator, http: httpx.Client) -> None:
    url = emu.base_urls()["plangrep"] + "/jobs/job_01abc123"
    assert emu.tokens["plangrep"].startswith("pgk_live_")
    for headers, code in (({}, "missing_api_key"), ({"Authorization": "Bearer nope"}, "invalid_api_key"),
                          ({"Authorization": emu.tokens["plangrep"]}, "invalid_api_key")):
        r = http.get(url, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == code and r.json()["error"]["message"]
    r = http.get(emu.api_url + "/api/open/v1/projects", headers=auth(emu, "plangrep"))
    assert r.status_code == 200 and len(r.json()["projects"]) == 2
    assert http.get(emu.api_url + "/api/open/v1/projects").status_code == 401


def test_control_put(emu: Emulator, http: httpx.Client) -> None:
    body = {"job_id": "job_remote", "status": "completed", "artifacts": {"out/x.txt": "x"}, "files": ["a.pdf"]}
    assert http.post(emu.api_url + "/_emulator/plangrep/put", json=body).json() == {"ok": True}
    assert [link_path(a) for a in all_links(result(http, emu, "job_remote").json())] == ["out/x.txt"]
    assert http.post(emu.api_url + "/_emulator/plangrep/put", json={"job_id": "j"}).status_code == 400
