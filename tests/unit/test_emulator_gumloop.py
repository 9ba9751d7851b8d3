"""The emulator's Gumloop API follows the Gumloop docs and SDK: three kinds of token, SDK errors, signed URLs."""

from __future__ import annotations

import base64
import json
import urllib.parse

import httpx
import pytest

from artifactfs.emulator import Emulator, PatternBlob

from .emulator_client import get

AGENT = "abc123DEFghiJKL"


def test_list_shape(emu: Emulator, http: httpx.Client) -> None:
    r = get(http, emu, "gumloop", f"/agents/{AGENT}/artifacts")
    assert r.status_code == 200 and set(r.json()) == {"artifacts", "next_cursor"}
    arts = {a["id"]: a for a in r.json()["artifacts"]}
    assert r.json()["next_cursor"] is None and len(arts) == 6
    fields = {
        "id",
        "version_id",
        "major_version",
        "agent_id",
        "session_id",
        "filename",
        "created_at",
        "metadata",
        "url",
        "creator",
    }
    assert all(set(a) == fields for a in arts.values())
    report = arts["art_aBcDeF123"]  # the doc's example, at its current (second) version
    assert (report["version_id"], report["major_version"], report["filename"]) == (
        "ver_xYz9012",
        2,
        "q4_sales_report.pdf",
    )
    assert report["created_at"] == "2026-05-15T14:32:00Z" and report["session_id"] == "ses_8h2k4m1n"
    assert report["metadata"]["media_type"] == "application/pdf"
    assert report["metadata"]["size"] == emu.gumloop_version("art_aBcDeF123").size
    assert report["creator"]["email"] == "ada@example.com"
    assert report["url"].startswith(emu.storage_url + "/gumloop-artifacts/art_aBcDeF123/ver_xYz9012?X-Goog-Algorithm=")
    assert arts["art_gHiJkL456"]["metadata"] == {}
    assert arts["art_pQrStU789"]["creator"] is None
    assert any(a["filename"] is None for a in arts.values())
    assert sorted(a["filename"] or "" for a in arts.values()).count("report.md") == 2
    created = [a["created_at"] for a in r.json()["artifacts"]]
    assert created == sorted(created, reverse=True)


def test_pagination_over_250(emu: Emulator, http: httpx.Client) -> None:
    emu.add_gumloop_agent("bulkAgent")
    for i in range(250):
        emu.put_gumloop_artifact("bulkAgent", f"file_{i:03d}.txt", f"{i}\n")
    seen: list[str] = []
    cursors: list[str | None] = []
    cursor = None
    for _ in range(3):
        params = {"page_size": "100", **({"cursor": cursor} if cursor else {})}
        body = get(http, emu, "gumloop", "/agents/bulkAgent/artifacts", params=params).json()
        seen += [a["filename"] for a in body["artifacts"]]
        cursor = body["next_cursor"]
        cursors.append(cursor)
    assert [len(seen[:100]), len(seen[100:200]), len(seen[200:])] == [100, 100, 50]
    assert cursors[0] and cursors[1] and cursors[2] is None
    assert set(json.loads(base64.urlsafe_b64decode(cursors[0]))) == {"created_ts", "id"}
    assert seen == [f"file_{i:03d}.txt" for i in reversed(range(250))]  # newest first, no repeats
    oldest = get(
        http, emu, "gumloop", "/agents/bulkAgent/artifacts", params={"sort_order": "oldest", "page_size": "500"}
    )
    assert [a["filename"] for a in oldest.json()["artifacts"]] == [f"file_{i:03d}.txt" for i in range(100)]


def test_search_and_session(emu: Emulator, http: httpx.Client) -> None:
    def names(**params: str) -> list[str | None]:
        body = get(http, emu, "gumloop", f"/agents/{AGENT}/artifacts", params=params).json()
        return sorted(a["filename"] or "" for a in body["artifacts"])

    assert names(search_query="REPORT") == ["q4_sales_report.pdf", "report.md", "report.md"]
    assert names(session_id="ses_3p9q7r2s") == ["chart.png", "report.md", "report.md"]
    assert names(session_id="ses_3p9q7r2s", search_query=".png") == ["chart.png"]
    assert names(session_id="ses_unknown") == []


def test_versions_and_signed_urls(emu: Emulator, http: httpx.Client) -> None:
    r = get(http, emu, "gumloop", "/artifacts/art_aBcDeF123/download")
    assert r.status_code == 200 and set(r.json()) == {"download_url", "filename", "media_type", "size"}
    current = r.json()
    assert (current["filename"], current["media_type"]) == ("q4_sales_report.pdf", "application/pdf")
    body = http.get(current["download_url"])  # no token: the URL is the credential
    assert body.status_code == 200 and body.content == emu.gumloop_version("art_aBcDeF123").read_all()
    assert current["size"] == len(body.content)

    old = get(http, emu, "gumloop", "/artifacts/art_aBcDeF123/download", params={"version_id": "ver_mNo3456"}).json()
    assert "/ver_mNo3456?" in old["download_url"]
    assert http.get(old["download_url"]).content == emu.gumloop_version("art_aBcDeF123", "ver_mNo3456").read_all()
    assert http.get(old["download_url"]).content != body.content

    no_meta = get(http, emu, "gumloop", "/artifacts/art_gHiJkL456/download").json()
    assert no_meta["size"] is None and no_meta["media_type"] is None

    tampered = current["download_url"].replace("X-Goog-Signature=", "X-Goog-Signature=0")
    r = http.get(tampered)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    r = http.get(current["download_url"].split("?")[0])
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    emu.set_url_ttl(0)
    expired = get(http, emu, "gumloop", "/artifacts/art_aBcDeF123/download").json()["download_url"]
    r = http.get(expired)
    assert r.status_code == 403 and "<Code>ExpiredToken</Code>" in r.text


def test_new_version_becomes_current(emu: Emulator, http: httpx.Client) -> None:
    artifact_id, version_id = emu.put_gumloop_artifact(AGENT, "q4_sales_report.pdf", b"v3", artifact_id="art_aBcDeF123")
    assert artifact_id == "art_aBcDeF123"
    first = get(http, emu, "gumloop", f"/agents/{AGENT}/artifacts").json()["artifacts"][0]
    assert (first["id"], first["version_id"], first["major_version"]) == (artifact_id, version_id, 3)
    assert first["session_id"] == "ses_8h2k4m1n"  # inherited from the previous version


def auth_headers(emu: Emulator, kind: str) -> dict[str, str]:
    token = {"personal": emu.tokens["gumloop"], "oauth": emu.gumloop.oauth_token, "team": emu.gumloop.team_token}
    return {"Authorization": f"Bearer {token[kind]}"}


def test_three_kinds_of_token(emu: Emulator, http: httpx.Client) -> None:
    url = emu.base_urls()["gumloop"] + f"/agents/{AGENT}/artifacts"
    info = emu.ready_info()
    assert {k: info[k] for k in info if k.startswith("gumloop_")} == {
        "gumloop_user_id": "user_demo", "gumloop_oauth_token": emu.gumloop.oauth_token,
        "gumloop_team_token": emu.gumloop.team_token, "gumloop_team_id": "team_demo"}
    personal, oauth, team = (auth_headers(emu, kind) for kind in ("personal", "oauth", "team"))
    user = {"x-auth-key": "user_demo"}
    team_id = {"team_id": "team_demo"}
    allowed = [({**personal, **user}, {}), (oauth, {}), ({**oauth, "x-auth-key": "anyone"}, {}), (team, team_id),
               ({**team, **user}, team_id), ({**personal, **user}, {"team_id": "ignored"})]
    for headers, params in allowed:
        r = http.get(url, headers=headers, params=params)
        assert r.status_code == 200 and len(r.json()["artifacts"]) == 6, (headers, params)
    refused = [
        ({}, {}, 401, "missing_api_key"),
        ({"Authorization": "Bearer nope", **user}, {}, 401, "invalid_api_key"),
        ({"Authorization": f"Basic {emu.tokens['gumloop']}", **user}, {}, 401, "invalid_api_key"),
        (personal, {}, 401, "missing_user_id"),
        ({**personal, "x-auth-key": "user_other"}, {}, 401, "invalid_user_id"),
        (team, {}, 401, "missing_team_id"),
        ({**team, "x-auth-key": "user_other"}, team_id, 401, "invalid_user_id"),
        (team, {"team_id": "team_other"}, 403, "forbidden"),
    ]
    for headers, params, status, code in refused:
        r = http.get(url, headers=headers, params=params)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (headers, params)
        assert set(r.json()) == {"error"} and r.json()["error"]["message"]
        assert r.json()["error"]["type"] == ("permission_error" if status == 403 else "authentication_error")


def test_tokens_are_configurable(http: httpx.Client) -> None:
    with Emulator(seed_sample_data=False, gumloop_oauth_token="oat", gumloop_team_token="ttk",
                  gumloop_team_id="team_9", gumloop_user_id="user_9") as emu:
        emu.add_gumloop_agent("a1")
        base = emu.base_urls()["gumloop"] + "/agents/a1/artifacts"
        assert http.get(base, headers={"Authorization": "Bearer oat"}).status_code == 200
        assert http.get(base, headers={"Authorization": "Bearer ttk"}, params={"team_id": "team_9"}).status_code == 200
        assert http.get(base, headers={"Authorization": f"Bearer {emu.tokens['gumloop']}",
                                       "x-auth-key": "user_9"}).status_code == 200
        assert emu.ready_info()["gumloop_team_id"] == "team_9"


def test_errors_use_the_sdk_envelope(emu: Emulator, http: httpx.Client) -> None:
    def error(path: str, **params: str) -> tuple[int, dict]:
        r = get(http, emu, "gumloop", path, params=params)
        return r.status_code, r.json()["error"]

    assert error("/agents/nobody/artifacts") == (404, {"message": "Agent not found", "code": "not_found",
                                                       "type": "not_found_error"})
    status, body = error(f"/agents/{AGENT}/artifacts", page_size="ten")
    assert (status, body["code"], body["type"], body["param"]) == (
        400, "invalid_parameter", "invalid_request_error", "page_size")
    assert error(f"/agents/{AGENT}/artifacts", cursor="garbage")[1]["param"] == "cursor"
    assert error(f"/agents/{AGENT}/artifacts", sort_order="sideways")[0] == 400
    assert error("/artifacts/art_nope/download")[0] == 404
    assert error("/artifacts/art_aBcDeF123/download", version_id="ver_nope") == (
        404, {"message": "Artifact version not found", "code": "not_found", "type": "not_found_error"})
    assert error("/elsewhere")[0] == 404


@pytest.mark.parametrize(("page_size", "count"), [("0", 1), ("-5", 1), ("1", 1), ("3", 3), ("500", 6), ("", 6)])
def test_page_size_is_clamped(emu: Emulator, http: httpx.Client, page_size: str, count: int) -> None:
    r = get(http, emu, "gumloop", f"/agents/{AGENT}/artifacts", params={"page_size": page_size})
    assert r.status_code == 200 and len(r.json()["artifacts"]) == count


def test_external_url_links_outside_the_storage_origin(emu: Emulator, http: httpx.Client) -> None:
    blob = PatternBlob(5 << 20, seed=11)
    artifact_id, _ = emu.put_gumloop_artifact(
        "benchAgent", "big.bin", blob, external_url="http://127.0.0.1:9/files/big.bin")
    emu.put_gumloop_artifact(
        "benchAgent", "q.bin", b"q", external_url="http://127.0.0.1:9/get?name=q.bin")
    listed = {a["filename"]: a for a in get(http, emu, "gumloop", "/agents/benchAgent/artifacts").json()["artifacts"]}
    url = listed["big.bin"]["url"]
    assert url.startswith("http://127.0.0.1:9/files/big.bin?X-Goog-Algorithm=GOOG4-RSA-SHA256&")
    assert listed["big.bin"]["metadata"] == {"media_type": "application/octet-stream", "size": 5 << 20}
    assert listed["q.bin"]["url"].startswith("http://127.0.0.1:9/get?name=q.bin&X-Goog-Algorithm=")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert {"X-Goog-Date", "X-Goog-Expires", "X-Goog-Signature", "X-Goog-Credential"} <= set(query)
    download = get(http, emu, "gumloop", f"/artifacts/{artifact_id}/download").json()
    assert download["download_url"].startswith("http://127.0.0.1:9/files/big.bin?X-Goog-")
    assert (download["size"], download["filename"]) == (5 << 20, "big.bin")
    assert emu.requests(origin="storage") == []


def test_signed_urls_live_900_seconds_by_default(emu: Emulator, http: httpx.Client) -> None:
    url = get(http, emu, "gumloop", "/artifacts/art_aBcDeF123/download").json()["download_url"]
    assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["X-Goog-Expires"] == "900"


def test_control_put(emu: Emulator, http: httpx.Client) -> None:
    body = {"agent_id": "remoteAgent", "filename": "r.bin", "size": 3000, "seed": 4,
            "external_url": "http://127.0.0.1:9/r.bin", "session_id": "ses_remote"}
    r = http.post(emu.api_url + "/_emulator/gumloop/put", json=body).json()
    assert r["ok"] is True and emu.gumloop_version(r["artifact_id"]).read_all() == PatternBlob(3000, 4).read_all()
    listed = get(http, emu, "gumloop", "/agents/remoteAgent/artifacts").json()["artifacts"]
    assert [(a["id"], a["version_id"], a["session_id"]) for a in listed] == [
        (r["artifact_id"], r["version_id"], "ses_remote")]
    assert listed[0]["url"].startswith("http://127.0.0.1:9/r.bin?")
    assert http.post(emu.api_url + "/_emulator/gumloop/put", json={"filename": "x"}).status_code == 400
