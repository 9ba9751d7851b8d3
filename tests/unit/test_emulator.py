"""The bundled emulator answers to the letter of the provider docs (and its own switches work)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from artifactfs.emulator import BytesBlob, Emulator, PatternBlob

from .emulator_client import auth, get

AGENT = "abc123DEFghiJKL"


# ---- layout and blobs ---------------------------------------------------------------


def test_base_urls_and_defaults(emu: Emulator) -> None:
    api = emu.api_url
    assert api.startswith("http://127.0.0.1:") and emu.storage_url.startswith("http://127.0.0.1:")
    assert api != emu.storage_url
    assert emu.base_urls() == {
        "gumloop": f"{api}/gumloop/api/v1",
        "vm0": f"{api}/vm0",
        "sigmic": f"{api}/sigmic",
        "plangrep": f"{api}/plangrep/api/open/v1",
    }
    assert emu.tokens["sigmic"].startswith("sigmic_") and emu.gumloop_user_id == "user_demo"


FIFTH = """
from artifactfs.emulator.providers import ProviderState
from artifactfs.emulator.server import json_reply

BASE_PATH = "/fifth/v2"
DEFAULT_TOKEN = "fifth-token"


class State(ProviderState):
    def __init__(self, world, greeting="hello"):
        super().__init__(world)
        self.greeting = greeting
        self.items = []

    def add(self, item):
        self.items.append(item)

    def ready_info(self):
        return {"fifth_greeting": self.greeting}


def handle(state, req, parts):
    return json_reply(200, {"greeting": state.greeting, "items": state.items, "parts": parts})


def seed(state):
    state.add("sample")


CONTROL = {"add": lambda state, body: state.add(body["item"])}
EXPORTS = {"add_fifth_item": "add"}
"""


def test_a_fifth_provider_is_one_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        http: httpx.Client) -> None:
    from artifactfs.emulator import providers

    (tmp_path / "fifth.py").write_text(FIFTH)
    monkeypatch.setattr(providers, "__path__", [*providers.__path__, str(tmp_path)])
    try:
        with Emulator(fifth_greeting="hi") as emu:
            assert emu.base_urls()["fifth"] == emu.api_url + "/fifth/v2"
            info = emu.ready_info()
            assert info["tokens"]["fifth"] == "fifth-token" and info["fifth_greeting"] == "hi"
            emu.add_fifth_item("direct")
            assert http.post(emu.api_url + "/_emulator/fifth/add", json={"item": "remote"}).json() == {"ok": True}
            body = http.get(emu.base_urls()["fifth"] + "/a/b").json()
            assert body == {"greeting": "hi", "items": ["sample", "direct", "remote"], "parts": ["a", "b"]}
            assert emu.fifth.items is emu.providers["fifth"].items
    finally:
        sys.modules.pop("artifactfs.emulator.providers.fifth", None)
    with pytest.raises(TypeError, match="unknown options"):
        Emulator(nobody_option=1)


def test_a_provider_module_must_declare_the_essentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from artifactfs.emulator import providers

    (tmp_path / "halfway.py").write_text('BASE_PATH = "/halfway"\nDEFAULT_TOKEN = "t"\n')
    monkeypatch.setattr(providers, "__path__", [*providers.__path__, str(tmp_path)])
    try:
        with pytest.raises(AttributeError, match="halfway declares no State, handle, seed"):
            Emulator()
    finally:
        sys.modules.pop("artifactfs.emulator.providers.halfway", None)


def test_pattern_blob_is_deterministic_and_never_periodic() -> None:
    blob = PatternBlob(3 * (1 << 20) + 123, seed=5)
    assert blob.read(0, 64) == PatternBlob(10, seed=5).read(0, 10) + blob.read(10, 54)
    assert blob.read(0, 4096) != PatternBlob(4096, seed=6).read(0, 4096)
    one_mib = 1 << 20
    assert blob.read(0, 4096) != blob.read(one_mib, 4096)  # block N+1 is not block N
    assert blob.read(one_mib - 10, 20) == blob.read_all()[one_mib - 10 : one_mib + 10]
    assert len(blob.read_all()) == blob.size and blob.read(blob.size - 5, 100) == blob.read_all()[-5:]
    assert blob.sha256() == BytesBlob(blob.read_all()).sha256()


# ---- byte serving --------------------------------------------------------------------


def test_ranges_head_and_validators(emu: Emulator, http: httpx.Client) -> None:
    blob = emu.sigmic_file("task_456", "downloads/model.bin")
    data = blob.read_all()
    total = blob.size

    def fetch(range_header: str | None, method: str = "GET") -> httpx.Response:
        url = emu.base_urls()["sigmic"] + "/api/v1/tasks/task_456/artifacts/download?path=downloads/model.bin"
        headers = {**auth(emu, "sigmic"), **({"Range": range_header} if range_header else {})}
        return http.request(method, url, headers=headers)

    r = fetch("bytes=1048570-1048589")
    assert r.status_code == 206 and r.content == data[1048570:1048590]
    assert r.headers["content-range"] == f"bytes 1048570-1048589/{total}" and r.headers["accept-ranges"] == "bytes"
    r = fetch("bytes=-100")
    assert r.status_code == 206 and r.content == data[-100:]
    r = fetch(f"bytes={total - 10}-")
    assert r.status_code == 206 and r.content == data[-10:]
    r = fetch(f"bytes={total - 10}-{total + 1000}")
    assert r.status_code == 206 and r.content == data[-10:]
    r = fetch(f"bytes={total}-")
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{total}"
    head = fetch(None, "HEAD")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(total)
    assert head.headers["etag"].startswith('"') and head.headers["last-modified"].endswith("GMT")
    full = fetch(None)
    assert full.content == data and full.headers["etag"] == head.headers["etag"]

    emu.set(api_ignore_range=True)
    r = fetch("bytes=0-9")
    assert r.status_code == 200 and len(r.content) == total and "accept-ranges" not in r.headers


def test_storage_switches(emu: Emulator, http: httpx.Client) -> None:
    url = get(http, emu, "gumloop", "/artifacts/art_aBcDeF123/download").json()["download_url"]
    data = emu.gumloop_version("art_aBcDeF123").read_all()
    r = http.get(url, headers={"Range": "bytes=5-9"})
    assert r.status_code == 206 and r.content == data[5:10]
    emu.set(storage_ignore_range=True, storage_chunked=True)
    r = http.get(url, headers={"Range": "bytes=5-9"})
    assert r.status_code == 200 and r.content == data and "content-length" not in r.headers
    with pytest.raises(KeyError):
        emu.set(no_such_switch=True)
    with pytest.raises(TypeError):
        emu.set(storage_chunked="yes")


def signed_query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


@pytest.mark.parametrize(("prefix", "algorithm", "scope"), [
    ("X-Amz", "AWS4-HMAC-SHA256", "/auto/s3/aws4_request"),
    ("X-Goog", "GOOG4-RSA-SHA256", "/auto/storage/goog4_request"),
])
def test_signed_urls_are_shaped_like_sigv4_and_gcs_v4(emu: Emulator, http: httpx.Client, prefix: str,
                                                      algorithm: str, scope: str) -> None:
    if prefix == "X-Amz":
        url = get(http, emu, "vm0", f"/v1/artifacts/{emu.vm0_artifact_id('training-run')}/download").headers["location"]
    else:
        url = get(http, emu, "gumloop", "/artifacts/art_aBcDeF123/download").json()["download_url"]
    query = signed_query(url)
    names = ["Algorithm", "Credential", "Date", "Expires", "SignedHeaders", "Signature"]
    assert list(query) == [f"{prefix}-{name}" for name in names]
    signed_at = datetime.strptime(query[f"{prefix}-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs(signed_at.timestamp() - time.time()) < 5
    assert query[f"{prefix}-Algorithm"] == algorithm and query[f"{prefix}-SignedHeaders"] == "host"
    assert query[f"{prefix}-Credential"].endswith(f"/{signed_at:%Y%m%d}{scope}")
    assert query[f"{prefix}-Expires"].isdigit() and re.fullmatch("[0-9a-f]{64}", query[f"{prefix}-Signature"])
    assert http.get(url).status_code == 200
    for name, value in (("Date", "20200101T000000Z"), ("Expires", "999999"), ("SignedHeaders", "host;range")):
        tampered = url.replace(urllib.parse.urlencode({f"{prefix}-{name}": query[f"{prefix}-{name}"]}),
                               urllib.parse.urlencode({f"{prefix}-{name}": value}))
        r = http.get(tampered)
        assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text, name
    r = http.get(url.replace(f"&{prefix}-Credential=", f"&{prefix}-Nothing="))
    assert r.status_code == 403 and "SignatureDoesNotMatch" not in r.text
    emu.set(url_ttl=0)
    expired = get(http, emu, "gumloop", "/artifacts/art_aBcDeF123/download").json()["download_url"]
    assert signed_query(expired)["X-Goog-Expires"] == "0" and http.get(expired).status_code == 403


# ---- request log and control endpoints -----------------------------------------------


def test_request_log_covers_both_origins(emu: Emulator, http: httpx.Client) -> None:
    emu.clear_requests()
    url = get(http, emu, "gumloop", "/artifacts/art_aBcDeF123/download").json()["download_url"]
    http.get(url, headers={"Range": "bytes=0-9"})
    (api,) = emu.requests(origin="api")
    (storage,) = emu.requests(origin="storage")
    assert (
        api["headers"]["authorization"] == "Bearer demo-gumloop-token" and api["headers"]["x-auth-key"] == "user_demo"
    )
    assert api["path"] == "/gumloop/api/v1/artifacts/art_aBcDeF123/download" and api["status"] == 200
    assert "authorization" not in storage["headers"] and storage["headers"]["range"] == "bytes=0-9"
    assert storage["status"] == 206 and storage["bytes_sent"] == 10 and "X-Goog-Signature=" in storage["query"]
    assert storage["method"] == "GET" and isinstance(storage["time"], float)
    assert len(emu.requests(path_contains="/gumloop-artifacts/")) == 1
    emu.clear_requests()
    assert emu.requests() == []


def test_http_control_endpoints(emu: Emulator, http: httpx.Client) -> None:
    control = emu.api_url + "/_emulator"
    r = http.post(control + "/sigmic/put", json={"task_id": "task_new", "path": "a/b.txt", "content": "hello"})
    assert r.json() == {"ok": True}
    r = http.post(control + "/sigmic/put", json={"task_id": "task_new", "path": "big.bin", "size": 5000, "seed": 3})
    assert r.status_code == 200 and emu.sigmic_file("task_new", "big.bin").read_all() == PatternBlob(5000, 3).read_all()
    files = get(http, emu, "sigmic", "/api/v1/tasks/task_new/artifacts").json()["data"]["files"]
    assert {(f["path"], f["size"]) for f in files} == {("a/b.txt", 5), ("big.bin", 5000)}

    switches = {"url_ttl": 7, "storage_ignore_range": True, "vm0_shape": "snake", "plangrep_ranges": True}
    assert http.post(control + "/set", json=switches).json() == {"ok": True}
    assert emu.switches.url_ttl == 7.0 and emu.origins["storage"].ignore_range is True
    assert emu.vm0.switches.shape.value == "snake" and emu.plangrep.switches.ranges is True
    assert http.post(control + "/set", json={"bogus": 1}).status_code == 400

    logged = http.get(control + "/requests", params={"origin": "api", "path_contains": "/sigmic/api/"}).json()
    assert [e["path"] for e in logged] == ["/sigmic/api/v1/tasks/task_new/artifacts"]
    assert http.post(control + "/clear_requests").json() == {"ok": True}
    assert [e["path"] for e in http.get(control + "/requests").json()] == ["/_emulator/requests"]


def test_every_control_action_is_documented(emu: Emulator) -> None:
    from artifactfs.emulator import control

    documented = set(re.findall(r"^  ([a-z0-9]+/[a-z_]+) ", control.__doc__ or "", re.MULTILINE))
    assert documented == {f"{kind}/{name}" for kind, declared in emu.types.items() for name in declared.control}


def test_fault_hook_and_stop(http: httpx.Client) -> None:
    from artifactfs.emulator.server import json_reply

    emu = Emulator(seed_sample_data=False).start()
    emu.origins["api"].faults = lambda req: json_reply(503, {"error": "injected"}) if "/vm0/" in req.path else None
    assert get(http, emu, "vm0", "/v1/artifacts").status_code == 503
    assert get(http, emu, "sigmic", "/api/v1/tasks/x/artifacts").status_code == 404
    url = emu.api_url
    emu.stop()
    emu.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/vm0/v1/artifacts", timeout=2)


# ---- the command -----------------------------------------------------------------------


def test_module_runs_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "artifactfs.emulator", "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert set(info) == {"api_url", "storage_url", "base_urls", "tokens", "gumloop_user_id", "gumloop_oauth_token",
                             "gumloop_team_token", "gumloop_team_id"}
        r = httpx.get(
            info["base_urls"]["sigmic"] + "/api/v1/tasks/task_123/artifacts",
            headers={"Authorization": f"Bearer {info['tokens']['sigmic']}"},
        )
        assert r.status_code == 200
        # what a test does in-process, done from this one: complete a job, then read its result
        plangrep = {"Authorization": f"Bearer {info['tokens']['plangrep']}"}
        result = info["base_urls"]["plangrep"] + "/jobs/job_02running/result"
        assert httpx.get(result, headers=plangrep).status_code == 409
        done = httpx.post(info["api_url"] + "/_emulator/plangrep/complete", json={"job_id": "job_02running"})
        assert done.json() == {"ok": True}
        assert httpx.get(result, headers=plangrep).json()["job"]["status"] == "completed"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and b"Traceback" not in err
        assert json.loads(out.decode().splitlines()[0]) == info
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_quoted_ids_round_trip(emu: Emulator, http: httpx.Client) -> None:
    artifact_id, _ = emu.put_gumloop_artifact("odd agent", "a b/c?.txt", b"odd", artifact_id="art with space")
    quoted = urllib.parse.quote("odd agent", safe="")
    listed = get(http, emu, "gumloop", f"/agents/{quoted}/artifacts").json()["artifacts"]
    assert [a["filename"] for a in listed] == ["a b/c?.txt"]
    assert http.get(listed[0]["url"]).content == b"odd"
    download = get(http, emu, "gumloop", f"/artifacts/{urllib.parse.quote(artifact_id, safe='')}/download").json()
    assert http.get(download["download_url"]).content == b"odd"


def test_static_tree_lists_directories_and_serves_ranges(emu: Emulator, http: httpx.Client) -> None:
    index = http.get(f"{emu.api_url}/static/task_123/downloads/")
    assert index.status_code == 200 and 'href="output.csv"' in index.text
    blob = emu.sigmic_file("task_123", "downloads/output.csv")
    part = http.get(f"{emu.api_url}/static/task_123/downloads/output.csv", headers={"Range": "bytes=5-9"})
    assert part.status_code == 206 and part.content == blob.read(5, 5)
    assert "authorization" not in emu.requests(path_contains="/static/")[-1]["headers"]
    root = http.get(f"{emu.api_url}/static/").text
    assert 'href="task_123/"' in root and "8d2e4f6a" not in root  # a task without files has no directory
    assert http.get(f"{emu.api_url}/static/8d2e4f6a-1b3c-4d5e-8f7a-9b0c1d2e3f4a/").status_code == 404
