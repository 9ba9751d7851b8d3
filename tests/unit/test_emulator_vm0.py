"""The emulator's vm0 API follows the vm0 docs: camelCase (or the older shapes), strict limits, 404 downloads."""

from __future__ import annotations

import io
import re
import tarfile
import urllib.parse

import httpx
import pytest

from artifactfs.emulator import Emulator

from .emulator_client import get

SUMMARY = {"id", "name", "currentVersionId", "size", "fileCount", "createdAt", "updatedAt"}
VERSION = {"id", "artifactId", "size", "fileCount", "message", "createdBy", "createdAt"}
SEED_SUMMARY = {"id", "name", "current_version_id", "size", "file_count", "created_at", "updated_at"}
SEED_VERSION = {"id", "artifact_id", "size", "file_count", "message", "created_by", "created_at"}
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")


def listing(http: httpx.Client, emu: Emulator, **params: str) -> dict:
    r = get(http, emu, "vm0", "/v1/artifacts", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def download(http: httpx.Client, emu: Emulator, artifact_id: str, **params: str) -> httpx.Response:
    return get(http, emu, "vm0", f"/v1/artifacts/{artifact_id}/download", params=params)


def test_list_is_camel_case_newest_first_with_milliseconds(emu: Emulator, http: httpx.Client) -> None:
    r = get(http, emu, "vm0", "/v1/artifacts")
    assert REQUEST_ID.fullmatch(r.headers["x-request-id"]) and r.headers["x-api-version"] == "v1"
    assert r.json()["pagination"] == {"hasMore": False, "nextCursor": None}
    data = r.json()["data"]
    assert [a["name"] for a in data] == ["pending-run", "empty-output", "training-run", "output-results"]
    assert all(set(a) == SUMMARY for a in data)
    out = data[-1]
    assert (out["fileCount"], out["createdAt"], out["updatedAt"]) == (
        4, "2024-01-01T00:00:00.000Z", "2024-01-02T00:00:00.000Z")
    assert re.fullmatch("[0-9a-f]{64}", out["currentVersionId"])
    assert out["size"] == sum(len(emu.vm0_file(out["id"], None, p).read_all())
                              for p in ("README.md", "results/summary.json", "results/plots/loss.png", "logs/run.log"))
    pending = data[0]
    assert (pending["currentVersionId"], pending["size"], pending["fileCount"]) == (None, 0, 0)
    assert pending["updatedAt"] == pending["createdAt"] == "2024-01-05T09:30:00.000Z"
    assert get(http, emu, "vm0", "/v1/artifacts").headers["x-request-id"] != r.headers["x-request-id"]


def test_get_and_versions(emu: Emulator, http: httpx.Client) -> None:
    artifact_id = emu.vm0_artifact_id("output-results")
    old, new = emu.vm0_versions(artifact_id)
    r = get(http, emu, "vm0", f"/v1/artifacts/{artifact_id}")
    one = r.json()
    assert r.headers["x-api-version"] == "v1" and set(one) == SUMMARY | {"currentVersion"}
    assert one["currentVersion"] == {
        "id": new, "artifactId": artifact_id, "size": one["size"], "fileCount": 4, "message": "Latest output",
        "createdBy": "user_vm0demo", "createdAt": "2024-01-02T00:00:00.000Z",
    }
    r = get(http, emu, "vm0", f"/v1/artifacts/{artifact_id}/versions")
    assert REQUEST_ID.fullmatch(r.headers["x-request-id"])
    assert [v["id"] for v in r.json()["data"]] == [new, old] and all(set(v) == VERSION for v in r.json()["data"])
    assert r.json()["pagination"] == {"hasMore": False, "nextCursor": None}

    pending = get(http, emu, "vm0", f"/v1/artifacts/{emu.vm0_artifact_id('pending-run')}").json()
    assert (pending["currentVersionId"], pending["currentVersion"]) == (None, None)
    versions = get(http, emu, "vm0", f"/v1/artifacts/{pending['id']}/versions").json()
    assert versions == {"data": [], "pagination": {"hasMore": False, "nextCursor": None}}
    empty = get(http, emu, "vm0", f"/v1/artifacts/{emu.vm0_artifact_id('empty-output')}").json()
    assert (empty["fileCount"], empty["size"], empty["currentVersion"]["fileCount"]) == (0, 0, 0)


def test_snake_shape_is_the_seeds_field_for_field(emu: Emulator, http: httpx.Client) -> None:
    emu.set(vm0_shape="snake")
    body = listing(http, emu)
    assert body["pagination"] == {"has_more": False, "next_cursor": None}
    assert all(set(a) == SEED_SUMMARY for a in body["data"])
    artifact_id = emu.vm0_artifact_id("output-results")
    one = get(http, emu, "vm0", f"/v1/artifacts/{artifact_id}").json()
    assert set(one) == SEED_SUMMARY | {"current_version"} and set(one["current_version"]) == SEED_VERSION
    assert one["created_at"] == "2024-01-01T00:00:00.000Z"
    versions = get(http, emu, "vm0", f"/v1/artifacts/{artifact_id}/versions").json()
    assert all(set(v) == SEED_VERSION for v in versions["data"]) and set(versions["pagination"]) == {
        "has_more", "next_cursor"}


def test_mixed_shape_is_a_deterministic_half_migration(emu: Emulator, http: httpx.Client) -> None:
    control = http.post(emu.api_url + "/_emulator/set", json={"vm0_shape": "mixed"})
    assert control.json() == {"ok": True}
    first = listing(http, emu, limit="1")
    assert set(first["data"][0]) == {"id", "name", "currentVersionId", "size", "file_count", "created_at", "updatedAt"}
    assert set(first["pagination"]) == {"hasMore", "next_cursor"}
    one = get(http, emu, "vm0", f"/v1/artifacts/{emu.vm0_artifact_id('output-results')}").json()
    assert set(one["current_version"]) == {"id", "artifactId", "size", "file_count", "message", "createdBy",
                                           "created_at"}
    assert listing(http, emu, limit="1") == first  # the same spelling every time
    emu.set(vm0_shape="camel")
    assert set(listing(http, emu)["pagination"]) == {"hasMore", "nextCursor"}
    with pytest.raises(ValueError):
        emu.set(vm0_shape="kebab")
    with pytest.raises(TypeError):
        emu.set(vm0_shape=1)
    assert http.post(emu.api_url + "/_emulator/set", json={"vm0_shape": "kebab"}).status_code == 400


def test_cursor_pages_never_skip_or_repeat(emu: Emulator, http: httpx.Client) -> None:
    for i in range(25):
        emu.add_vm0_artifact(f"bulk-{i:02d}")
    default = listing(http, emu)
    assert len(default["data"]) == 20 and default["pagination"]["hasMore"] is True
    seen, cursor = [], None
    while True:
        body = listing(http, emu, limit="7", **({"cursor": cursor} if cursor else {}))
        seen += [a["name"] for a in body["data"]]
        if len(seen) == 7:
            emu.add_vm0_artifact("added-while-paging")  # newer than everything: never on a later page
        cursor = body["pagination"]["nextCursor"]
        assert body["pagination"]["hasMore"] is (cursor is not None)
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 29 and "added-while-paging" not in seen
    assert seen[:3] == ["bulk-24", "bulk-23", "bulk-22"]


@pytest.mark.parametrize(("value", "message"), [
    ("0", "Number must be greater than or equal to 1"),
    ("101", "Number must be less than or equal to 100"),
    ("abc", "Expected number, received nan"),
    ("", "Number must be greater than or equal to 1"),
    ("2.5", "Expected integer, received float"),
])
def test_limit_out_of_range_is_rejected_not_clamped(emu: Emulator, http: httpx.Client, value: str,
                                                    message: str) -> None:
    for path in ("/v1/artifacts", f"/v1/artifacts/{emu.vm0_artifact_id('output-results')}/versions"):
        r = get(http, emu, "vm0", path, params={"limit": value})
        assert r.status_code == 400 and r.headers["x-api-version"] == "v1"
        assert r.json() == {"error": {"type": "invalid_request_error", "code": "invalid_parameter",
                                      "message": message, "param": "limit"}}
    assert len(listing(http, emu, limit="100")["data"]) == 4 and len(listing(http, emu, limit="1")["data"]) == 1


def test_bad_cursor_auth_and_not_found(emu: Emulator, http: httpx.Client) -> None:
    r = get(http, emu, "vm0", "/v1/artifacts", params={"cursor": "not-ours"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "cursor"
    assert r.json()["error"]["code"] == "invalid_parameter"
    unauthorized = {"error": {"type": "authentication_error", "code": "invalid_api_key",
                              "message": "Invalid API key provided"}}
    for headers in ({}, {"Authorization": "Bearer vm0_live_" + "0" * 64}, {"Authorization": emu.tokens["vm0"]}):
        r = http.get(emu.base_urls()["vm0"] + "/v1/artifacts", headers=headers)
        assert (r.status_code, r.json()) == (401, unauthorized) and REQUEST_ID.fullmatch(r.headers["x-request-id"])
    assert re.fullmatch("vm0_live_[0-9a-f]{64}", emu.tokens["vm0"])
    r = get(http, emu, "vm0", "/v1/artifacts/art_missing")
    assert r.status_code == 404 and r.headers["x-api-version"] == "v1"
    assert r.json() == {"error": {"type": "not_found_error", "code": "resource_not_found",
                                  "message": "No such artifact: 'art_missing'"}}
    assert get(http, emu, "vm0", "/v1/artifacts/art_missing/versions").status_code == 404
    r = get(http, emu, "vm0", "/v1/elsewhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "resource_not_found"


def test_download_redirects_to_a_presigned_archive(emu: Emulator, http: httpx.Client) -> None:
    artifact_id = emu.vm0_artifact_id("output-results")
    old, new = emu.vm0_versions(artifact_id)
    r = download(http, emu, artifact_id)
    assert r.status_code == 302 and "x-request-id" not in r.headers and "x-api-version" not in r.headers
    location = r.headers["location"]
    assert location.startswith(f"{emu.storage_url}/vm0-artifacts/{artifact_id}/{new}.tar.gz?X-Amz-Algorithm=")
    assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["X-Amz-Expires"] == "3600"
    archive = http.get(location)
    assert archive.status_code == 200 and archive.content == emu.vm0_archive(artifact_id, new)
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert set(files) == {"README.md", "results/summary.json", "results/plots/loss.png", "logs/run.log"}
    assert files["results/summary.json"] == emu.vm0_file(artifact_id, new, "results/summary.json").read_all()

    for params in ({"versionId": old}, {"version_id": old}, {"versionId": old[:8]}, {"version_id": old[:8].upper()},
                   {"versionId": old, "version_id": new}, {"versionId": "", "version_id": old}):
        r = download(http, emu, artifact_id, **params)
        assert r.status_code == 302 and f"/{old}.tar.gz?" in r.headers["location"], params
    tampered = location.replace(f"{new}.tar.gz", f"{old}.tar.gz")
    r = http.get(tampered)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    emu.set(url_ttl=60)
    location = download(http, emu, artifact_id).headers["location"]
    assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["X-Amz-Expires"] == "60"


def test_files_download_gives_a_presigned_url_per_file(emu: Emulator, http: httpx.Client) -> None:
    """The intermediate contract's download: 200 JSON, one URL per file, ``version`` accepted."""
    artifact_id = emu.vm0_artifact_id("output-results")
    old, new = emu.vm0_versions(artifact_id)
    emu.set(vm0_download="files")
    r = download(http, emu, artifact_id)
    assert r.status_code == 200 and set(r.json()) == {"version_id", "files", "expires_at"}
    body = r.json()
    assert body["version_id"] == new and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["expires_at"])
    paths = {f["path"] for f in body["files"]}
    assert paths == {"README.md", "results/summary.json", "results/plots/loss.png", "logs/run.log"}
    for item in body["files"]:
        assert set(item) == {"path", "size", "download_url"} and "X-Amz-Signature=" in item["download_url"]
        got = http.get(item["download_url"])
        assert got.status_code == 200 and got.content == emu.vm0_file(artifact_id, new, item["path"]).read_all()
        assert len(got.content) == item["size"]
    assert download(http, emu, artifact_id, version=old[:8]).json()["version_id"] == old
    url = body["files"][0]["download_url"]
    assert http.get(url.replace(new, old)).status_code == 403
    hostile_id, _ = emu.put_vm0_raw_archive("raw", b"not a tar at all")
    assert download(http, emu, hostile_id).status_code == 404


def test_every_resolver_failure_is_404(emu: Emulator, http: httpx.Client) -> None:
    first = "abcdef01" + "0" * 56
    emu.put_vm0_version("twins", {"a.txt": "a"}, version_id=first)
    emu.put_vm0_version("twins", {"b.txt": "b"}, version_id="abcdef01" + "1" * 56)
    twins = emu.vm0_artifact_id("twins")
    gone = emu.put_vm0_version("broken-head", {"a.txt": "a"})[1]
    emu.drop_vm0_version(emu.vm0_artifact_id("broken-head"), gone)
    cases = [
        (twins, {"versionId": "abcdef0"}, "Version prefix too short. Minimum 8 characters required."),
        (twins, {"versionId": "abcdef01"}, 'Ambiguous version prefix "abcdef01". Please use more characters.'),
        (twins, {"version_id": "ffffffff"}, 'Version "ffffffff" not found'),
        (twins, {"version_id": "f" * 64}, f'Version "{"f" * 64}" not found'),
        (emu.vm0_artifact_id("pending-run"), {}, "Artifact 'pending-run' has no versions"),
        (emu.vm0_artifact_id("broken-head"), {}, "Artifact 'broken-head' HEAD version not found"),
        (emu.vm0_artifact_id("empty-output"), {}, "Artifact 'empty-output' version has no files"),
        ("art_nope", {}, "No such artifact: 'art_nope'"),
    ]
    for artifact_id, params, message in cases:
        r = download(http, emu, artifact_id, **params)
        assert r.status_code == 404 and "x-request-id" not in r.headers, message
        assert r.json() == {"error": {"type": "not_found_error", "code": "resource_not_found", "message": message}}
    assert download(http, emu, twins, versionId="abcdef010").status_code == 302
    assert download(http, emu, twins, versionId=first).status_code == 302
    r = http.get(f"{emu.base_urls()['vm0']}/v1/artifacts/{twins}/download")
    assert r.status_code == 401 and "x-request-id" not in r.headers
    with pytest.raises(ValueError):
        emu.put_vm0_version("twins", {"c.txt": "c"}, version_id=first)


def test_raw_archive_served_verbatim(emu: Emulator, http: httpx.Client) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    artifact_id, version_id = emu.put_vm0_raw_archive("hostile", buf.getvalue())
    r = get(http, emu, "vm0", f"/v1/artifacts/{artifact_id}")
    assert (r.json()["size"], r.json()["fileCount"]) == (3, 1)
    location = download(http, emu, artifact_id).headers["location"]
    assert http.get(location).content == buf.getvalue() == emu.vm0_archive(artifact_id, version_id)
    garbage_id, _ = emu.put_vm0_raw_archive("garbage", b"not a tar at all")
    assert get(http, emu, "vm0", f"/v1/artifacts/{garbage_id}").json()["fileCount"] == 1
    assert download(http, emu, garbage_id).status_code == 302
    none_id, _ = emu.put_vm0_raw_archive("declared-empty", buf.getvalue(), file_count=0)
    assert download(http, emu, none_id).status_code == 404


def test_control_endpoints_put_and_add(emu: Emulator, http: httpx.Client) -> None:
    control = emu.api_url + "/_emulator/vm0"
    put = http.post(control + "/put", json={"name": "remote", "files": {"a/b.txt": "hello"}}).json()
    assert put["ok"] is True and put["version_id"] == emu.vm0_versions(put["artifact_id"])[-1]
    assert emu.vm0_file(put["artifact_id"], None, "a/b.txt").read_all() == b"hello"
    added = http.post(control + "/add", json={"name": "remote-empty"}).json()
    assert get(http, emu, "vm0", f"/v1/artifacts/{added['artifact_id']}").json()["currentVersion"] is None
    assert http.post(control + "/add", json={"name": "remote-empty"}).status_code == 400
    assert http.post(control + "/nothing", json={}).status_code == 404
