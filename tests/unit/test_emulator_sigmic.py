"""The emulator's Sigmic API follows the Sigmic docs: two auth headers, the task list and task, resumable tasks."""

from __future__ import annotations

import re

import httpx
import pytest

from artifactfs.emulator import Emulator

from .emulator_client import get

TASK_FIELDS = {"id", "apiKeyId", "username", "sessionId", "conversationId", "status", "message", "systemPrompt",
               "showInHistory", "autoExecute", "env", "error", "createdAt", "startedAt", "completedAt", "output",
               "pendingApprovals"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def tasks(http: httpx.Client, emu: Emulator, **params: str) -> dict:
    r = get(http, emu, "sigmic", "/api/v1/tasks", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def task(http: httpx.Client, emu: Emulator, task_id: str) -> dict:
    r = get(http, emu, "sigmic", f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    return r.json()["data"]


def test_listing_and_download(emu: Emulator, http: httpx.Client) -> None:
    r = get(http, emu, "sigmic", "/api/v1/tasks/task_123/artifacts")
    assert r.status_code == 200 and r.json()["success"] is True
    files = {f["path"]: f for f in r.json()["data"]["files"]}
    assert set(files) == {"downloads/output.csv", "downloads/report.pdf", "uploads/data.csv", "downloads/charts/q4.png"}
    csv = files["downloads/output.csv"]
    assert set(csv) == {"name", "path", "size", "mimeType", "category", "modifiedAt"}
    assert (csv["name"], csv["mimeType"], csv["category"]) == ("output.csv", "text/csv", "csv")
    assert csv["modifiedAt"] == "2026-01-26T16:00:00.000Z"
    assert files["downloads/charts/q4.png"]["category"] == "image"

    r = get(http, emu, "sigmic", "/api/v1/tasks/task_123/artifacts/download", params={"path": "downloads/report.pdf"})
    assert r.status_code == 200 and r.content.startswith(b"%PDF-") and r.content.rstrip().endswith(b"%%EOF")
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == 'attachment; filename="report.pdf"'
    assert int(r.headers["content-length"]) == files["downloads/report.pdf"]["size"] == len(r.content)
    assert r.content == emu.sigmic_file("task_123", "downloads/report.pdf").read_all()
    png = get(
        http, emu, "sigmic", "/api/v1/tasks/task_123/artifacts/download", params={"path": "downloads/charts/q4.png"}
    )
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_put_and_remove_file(emu: Emulator, http: httpx.Client) -> None:
    def listing() -> dict[str, dict[str, object]]:
        r = get(http, emu, "sigmic", "/api/v1/tasks/task_123/artifacts")
        return {f["path"]: f for f in r.json()["data"]["files"]}

    before = listing()["downloads/output.csv"]
    emu.put_sigmic_file("task_123", "downloads/output.csv", b"a,b\n1,2\n")
    after = listing()["downloads/output.csv"]
    assert after["size"] == 8 and after["modifiedAt"] != before["modifiedAt"]
    r = get(http, emu, "sigmic", "/api/v1/tasks/task_123/artifacts/download", params={"path": "downloads/output.csv"})
    assert r.content == b"a,b\n1,2\n"
    emu.remove_sigmic_file("task_123", "downloads/output.csv")
    assert "downloads/output.csv" not in listing()


def test_auth_headers_and_codes(emu: Emulator, http: httpx.Client) -> None:
    url = emu.base_urls()["sigmic"] + "/api/v1/tasks/task_123/artifacts"
    key = emu.tokens["sigmic"]
    assert key.startswith("sigmic_")
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}, {"authorization": f"bearer {key}"},
                    {"Authorization": f"Bearer {key}", "X-API-Key": "sigmic_other"}):
        assert http.get(url, headers=headers).status_code == 200, headers
    refused = [
        ({}, "AUTH_REQUIRED"),
        ({"X-API-Key": ""}, "AUTH_REQUIRED"),
        ({"Authorization": "Bearer nope"}, "INVALID_AUTH_FORMAT"),
        ({"X-API-Key": "demo-sigmic-token"}, "INVALID_AUTH_FORMAT"),
        ({"Authorization": f"Basic {key}"}, "INVALID_AUTH_FORMAT"),
        ({"Authorization": "Bearer sigmic_wrong"}, "INVALID_API_KEY"),
        ({"X-API-Key": "sigmic_wrong"}, "INVALID_API_KEY"),
        ({"Authorization": "Bearer sigmic_other", "X-API-Key": key}, "INVALID_API_KEY"),
        ({"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"}, "INVALID_TOKEN"),
    ]
    for headers, code in refused:
        r = http.get(url, headers=headers)
        assert r.status_code == 401, headers
        assert r.json() == {"success": False, "error": {"message": r.json()["error"]["message"], "code": code}}
        assert r.json()["error"]["message"]


def test_errors(emu: Emulator, http: httpx.Client) -> None:
    for path in ("/api/v1/tasks/task_999", "/api/v1/tasks/task_999/artifacts",
                 "/api/v1/tasks/task_999/artifacts/download?path=a", "/api/v1/elsewhere"):
        r = get(http, emu, "sigmic", path)
        assert (r.status_code, r.json()["success"], r.json()["error"]["code"]) == (404, False, "NOT_FOUND"), path
    r = get(http, emu, "sigmic", "/api/v1/tasks/task_123/artifacts/download")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "VALIDATION_ERROR")
    r = get(http, emu, "sigmic", "/api/v1/tasks/task_123/artifacts/download", params={"path": "../etc/passwd"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "NOT_FOUND")
    for params in ({"limit": "ten"}, {"offset": "x"}, {"offset": "-1"}):
        r = get(http, emu, "sigmic", "/api/v1/tasks", params=params)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "VALIDATION_ERROR"), params


def test_task_list_is_most_recent_activity_first(emu: Emulator, http: httpx.Client) -> None:
    body = tasks(http, emu)
    assert body["success"] is True and body["pagination"] == {"total": 7, "limit": 50, "offset": 0, "hasMore": False}
    data = body["data"]
    assert all(set(t) == TASK_FIELDS | {"lastActivityAt", "messageCount"} for t in data)
    activity = [t["lastActivityAt"] for t in data]
    assert activity == sorted(activity, reverse=True) and all(a.endswith(".000Z") for a in activity)
    statuses = {t["status"] for t in data}
    assert statuses == {"pending", "running", "awaiting_approval", "completed", "failed", "cancelled"}
    ids = [t["id"] for t in data]
    assert {"task_123", "task_456", "c37c1d78-4d23-4e53-949a-ddd775f25e01"} <= set(ids)
    assert sum(bool(UUID.fullmatch(i)) for i in ids) == 5
    assert [t["messageCount"] for t in data if t["id"] in ("task_123", "task_456")] == [2, 2]


def test_offset_pages(emu: Emulator, http: httpx.Client) -> None:
    everything = [t["id"] for t in tasks(http, emu)["data"]]
    seen, offset = [], 0
    while True:
        body = tasks(http, emu, limit="2", offset=str(offset))
        assert body["pagination"]["limit"] == 2 and body["pagination"]["total"] == 7
        seen += [t["id"] for t in body["data"]]
        offset += 2
        if not body["pagination"]["hasMore"]:
            break
    assert seen == everything and offset == 8
    assert tasks(http, emu, limit="500")["pagination"]["limit"] == 100
    assert tasks(http, emu, limit="0")["pagination"]["limit"] == 1
    assert tasks(http, emu, offset="99")["data"] == [] and tasks(http, emu, offset="99")["pagination"]["hasMore"] is False


def test_task_objects_by_status(emu: Emulator, http: httpx.Client) -> None:
    done = task(http, emu, "task_123")
    assert set(done) == TASK_FIELDS
    assert (done["status"], done["error"], done["env"], done["pendingApprovals"]) == ("completed", None, {}, [])
    assert (done["createdAt"], done["startedAt"], done["completedAt"]) == (
        "2026-01-26T15:45:00.000Z", "2026-01-26T15:45:00.000Z", "2026-01-26T16:03:00.000Z")
    assert set(done["output"]) == {"content", "updatedAt", "thoughts", "toolCalls"}
    assert all(UUID.fullmatch(done[k]) for k in ("apiKeyId", "sessionId", "conversationId"))
    by_status = {t["status"]: t for t in tasks(http, emu)["data"]}
    pending = by_status["pending"]
    assert (pending["startedAt"], pending["completedAt"], pending["output"]) == (None, None, None)
    running = by_status["running"]
    assert running["id"] == "c37c1d78-4d23-4e53-949a-ddd775f25e01" and running["completedAt"] is None
    waiting = by_status["awaiting_approval"]
    assert len(waiting["pendingApprovals"]) == 1 and waiting["pendingApprovals"][0]["toolName"]
    assert by_status["failed"]["error"] == "Sandbox ran out of memory"
    assert by_status["cancelled"]["completedAt"] and by_status["cancelled"]["error"] is None
    pending_files = get(http, emu, "sigmic", f"/api/v1/tasks/{pending['id']}/artifacts").json()
    assert pending_files == {"success": True, "data": {"files": []}}


def test_a_finished_task_resumes_and_its_files_change(emu: Emulator, http: httpx.Client) -> None:
    with emu.resume_sigmic_task("task_123", "Add a chart for Q3"):
        now = task(http, emu, "task_123")
        assert (now["status"], now["completedAt"], now["message"]) == ("running", None, "Add a chart for Q3")
        assert tasks(http, emu)["data"][0]["id"] == "task_123"  # the most recent activity
        emu.put_sigmic_file("task_123", "downloads/charts/q3.png", b"png")
        emu.put_sigmic_file("task_123", "downloads/output.csv", b"a,b\n")
    after = task(http, emu, "task_123")
    assert after["status"] == "completed" and after["completedAt"] > "2026-01-26T16:03:00.000Z"
    assert tasks(http, emu)["data"][0]["messageCount"] == 4
    files = {f["path"]: f for f in get(http, emu, "sigmic", "/api/v1/tasks/task_123/artifacts").json()["data"]["files"]}
    assert "downloads/charts/q3.png" in files and files["downloads/output.csv"]["size"] == 4
    with pytest.raises(ValueError):
        emu.resume_sigmic_task("c37c1d78-4d23-4e53-949a-ddd775f25e01")  # still running
    with pytest.raises(ValueError):
        emu.set_sigmic_status("task_123", "sleeping")


def test_control_endpoints(emu: Emulator, http: httpx.Client) -> None:
    control = emu.api_url + "/_emulator/sigmic"
    assert http.post(control + "/resume", json={"task_id": "task_456", "message": "again"}).json() == {"ok": True}
    assert task(http, emu, "task_456")["status"] == "running"
    assert http.post(control + "/remove", json={"task_id": "task_456", "path": "downloads/notes.md"}).status_code == 200
    assert http.post(control + "/status", json={"task_id": "task_456", "status": "failed", "error": "boom"}).json() == {
        "ok": True}
    failed = task(http, emu, "task_456")
    assert (failed["status"], failed["error"]) == ("failed", "boom")
    paths = {f["path"] for f in get(http, emu, "sigmic", "/api/v1/tasks/task_456/artifacts").json()["data"]["files"]}
    assert "downloads/notes.md" not in paths
    assert http.post(control + "/status", json={"task_id": "task_456", "status": "bogus"}).status_code == 400
    assert http.post(control + "/resume", json={"task_id": "nope"}).status_code == 400
