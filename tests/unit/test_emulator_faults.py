"""The emulator's fault switches (``Emulator.faults(origin)``) misbehave exactly as asked, on both origins."""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest
import urllib3

from artifactfs.emulator import Emulator, PatternBlob

TASK = "task_faults"
SIZE = 200_000


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = Emulator(seed_sample_data=False).start()
    emulator.put_sigmic_file(TASK, "data.bin", PatternBlob(SIZE, seed=7))
    emulator.put_sigmic_file(TASK, "other.txt", b"other file\n")
    yield emulator
    emulator.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def api_target(emu: Emulator, path: str = "data.bin") -> str:
    return f"/sigmic/api/v1/tasks/{TASK}/artifacts/download?path={urllib.parse.quote(path)}"


def api_get(http: httpx.Client, emu: Emulator, path: str = "data.bin", **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {emu.tokens['sigmic']}"}
    return http.get(emu.api_url + api_target(emu, path), headers={**auth, **headers})


def data(emu: Emulator) -> bytes:
    return emu.sigmic_file(TASK, "data.bin").read_all()


def gumloop_url(emu: Emulator, content: bytes = b"stored bytes 0123456789") -> str:
    artifact_id, version_id = emu.put_gumloop_artifact("agentF", "f.bin", content)
    return emu.gumloop.signed_url(artifact_id, version_id)


def raw_get(base_url: str, target: str, headers: dict[str, str] | None = None, timeout: float = 5) -> bytes:
    """Everything the server sends for one ``Connection: close`` request, until it closes."""
    host, port = urllib.parse.urlsplit(base_url).netloc.rsplit(":", 1)
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    received = []
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while chunk := sock.recv(65536):
            received.append(chunk)
    return b"".join(received)


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}, body


def faults_logged(emu: Emulator, kind: str, origin: str | None = None) -> int:
    return sum(1 for e in emu.requests(origin=origin) if e["fault"] == kind)


# ---- refuse / hang ---------------------------------------------------------------------


def test_refuse_closes_without_a_response_then_heals(emu: Emulator, http: httpx.Client) -> None:
    emu.faults("api").set("refuse", count=2)
    with pytest.raises(httpx.TransportError):
        api_get(http, emu)
    with pytest.raises(ConnectionResetError):  # not a byte: the close is a reset
        raw_get(emu.api_url, api_target(emu))
    assert api_get(http, emu).content == data(emu)
    refused = [e for e in emu.requests(origin="api") if e["fault"] == "refuse"]
    assert len(refused) == 2 and all(e["status"] is None and e["bytes_sent"] == 0 for e in refused)
    assert emu.requests(origin="api")[-1]["fault"] is None


def test_hang_times_out_the_client_and_stop_ends_it_promptly(emu: Emulator) -> None:
    emu.faults("api").set("hang", seconds=30)
    auth = {"Authorization": f"Bearer {emu.tokens['sigmic']}"}
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(emu.api_url + api_target(emu), headers=auth, timeout=0.3)
    assert time.monotonic() - started < 3

    result: list[bytes] = []
    client = threading.Thread(target=lambda: result.append(raw_get(emu.api_url, api_target(emu), auth, timeout=10)))
    client.start()
    deadline = time.monotonic() + 5
    while faults_logged(emu, "hang") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert faults_logged(emu, "hang") == 2
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 2
    client.join(5)
    assert not client.is_alive() and result == [b""]  # closed without a byte, not after 30 s


def test_hang_ends_after_its_seconds(emu: Emulator) -> None:
    emu.faults("storage").set("hang", seconds=0.3)
    started = time.monotonic()
    assert raw_get(emu.storage_url, "/anything") == b""
    assert 0.25 < time.monotonic() - started < 3


# ---- slow / cut ------------------------------------------------------------------------


def test_slow_rate_and_delay(emu: Emulator, http: httpx.Client) -> None:
    emu.faults("api").set("slow", rate=SIZE / 0.5, count=1)  # the whole body in no less than 0.5 s
    started = time.monotonic()
    r = api_get(http, emu)
    assert r.content == data(emu) and 0.45 <= time.monotonic() - started < 5
    started = time.monotonic()
    assert api_get(http, emu).content == data(emu)  # healthy again
    assert time.monotonic() - started < 0.4

    url = gumloop_url(emu, PatternBlob(150_000, 3).read_all())  # three 64 KiB pieces
    emu.faults("storage").set("slow", delay=0.15)
    started = time.monotonic()
    assert http.get(url).content == PatternBlob(150_000, 3).read_all()
    assert time.monotonic() - started >= 0.45
    assert faults_logged(emu, "slow") == 2


def test_cut_sized_body(emu: Emulator, http: httpx.Client) -> None:
    emu.faults("api").set("cut", after=1000)
    auth = {"Authorization": f"Bearer {emu.tokens['sigmic']}"}
    status, headers, body = split_response(raw_get(emu.api_url, api_target(emu), auth))
    assert status.endswith("200 OK") and headers["content-length"] == str(SIZE)
    assert body == data(emu)[:1000]

    with pytest.raises(httpx.RemoteProtocolError):
        api_get(http, emu)
    pool = urllib3.PoolManager(retries=False)
    with pytest.raises(urllib3.exceptions.ProtocolError, match="IncompleteRead"):
        pool.request("GET", emu.api_url + api_target(emu), headers=auth)

    emu.faults("api").clear()
    emu.faults("api").set("cut")  # default: half
    _, headers, body = split_response(raw_get(emu.api_url, api_target(emu), auth))
    assert body == data(emu)[: SIZE // 2] and headers["content-length"] == str(SIZE)
    cut = [e for e in emu.requests(origin="api") if e["fault"] == "cut"]
    assert len(cut) == 4 and cut[0]["bytes_sent"] == 1000 and cut[-1]["bytes_sent"] == SIZE // 2


def test_cut_chunked_body_has_no_terminating_chunk(emu: Emulator, http: httpx.Client) -> None:
    content = PatternBlob(50_000, 1).read_all()
    url = gumloop_url(emu, content)
    target = url[len(emu.storage_url) :]
    emu.set(storage_chunked=True)
    _, headers, body = split_response(raw_get(emu.storage_url, target))
    assert headers["transfer-encoding"] == "chunked" and body.endswith(b"0\r\n\r\n")  # healthy

    emu.faults("storage").set("cut", after=100)
    _, headers, body = split_response(raw_get(emu.storage_url, target))
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert body == b"%x\r\n" % len(content) + content[:100]  # mid-chunk, no terminator
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(url)


# ---- status / throttle ---------------------------------------------------------------------


def test_status_bodies_and_retry_after(emu: Emulator, http: httpx.Client) -> None:
    emu.faults("api").set("status", code=503, retry_after=7, count=1)
    r = api_get(http, emu)
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"code": "SERVICE_UNAVAILABLE", "message": "Service Unavailable"}}
    assert api_get(http, emu).status_code == 200

    emu.faults("api").set("status", code=401)
    r = api_get(http, emu)
    assert r.status_code == 401 and "retry-after" not in r.headers and r.json()["error"]["code"] == "UNAUTHORIZED"
    head = http.head(emu.api_url + api_target(emu))
    assert head.status_code == 401 and head.content == b""

    url = gumloop_url(emu)
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    emu.faults("storage").set("status", code=500, retry_after=date)
    r = http.get(url)
    assert r.status_code == 500 and r.headers["retry-after"] == date
    assert r.headers["content-type"].startswith("application/xml") and "<Code>InternalError</Code>" in r.text
    emu.faults("storage").clear()
    emu.faults("storage").set("status", code=404)
    assert "<Code>NoSuchKey</Code>" in http.get(url).text
    assert [e["fault"] for e in emu.requests(origin="storage")] == ["status", "status"]


def test_throttle(emu: Emulator, http: httpx.Client) -> None:
    emu.faults("api").set("throttle", retry_after=1.5, count=1)
    emu.faults("storage").set("throttle")
    r = api_get(http, emu)
    assert r.status_code == 429 and r.headers["retry-after"] == "1.5" and r.json()["error"]["code"]
    assert api_get(http, emu).status_code == 200
    r = http.get(gumloop_url(emu))
    assert r.status_code == 429 and "retry-after" not in r.headers and "<Code>SlowDown</Code>" in r.text
    assert faults_logged(emu, "throttle", "api") == 1 and faults_logged(emu, "throttle", "storage") == 1


# ---- matching -------------------------------------------------------------------------------


def test_count_path_contains_and_newest_rule_first(emu: Emulator, http: httpx.Client) -> None:
    faults = emu.faults("api")
    faults.set("status", code=502, path_contains="other.txt")
    assert api_get(http, emu, "other.txt").status_code == 502
    assert api_get(http, emu).status_code == 200  # another path: untouched
    faults.set("status", code=503, count=2)  # newer: wins wherever it matches, twice
    assert [api_get(http, emu, "other.txt").status_code for _ in range(3)] == [503, 503, 502]
    assert api_get(http, emu).status_code == 200
    faults.clear()
    assert api_get(http, emu, "other.txt").status_code == 200
    logged = [e["fault"] for e in emu.requests(origin="api")]
    assert logged == ["status", None, "status", "status", "status", None, None]


def test_count_is_exact_under_concurrency(emu: Emulator) -> None:
    emu.faults("api").set("status", code=503, count=5)
    with httpx.Client(timeout=5) as client, concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: api_get(client, emu, "other.txt").status_code, range(30)))
    assert sorted(codes) == [200] * 25 + [503] * 5
    assert faults_logged(emu, "status") == 5


def test_faults_are_per_origin_and_never_touch_control_paths(emu: Emulator, http: httpx.Client) -> None:
    url = gumloop_url(emu)
    emu.faults("storage").set("status", code=503)
    assert api_get(http, emu).status_code == 200 and http.get(url).status_code == 503
    emu.faults("api").set("refuse")
    assert http.get(emu.api_url + "/_emulator/requests").status_code == 200
    assert http.post(emu.api_url + "/_emulator/faults", json={"clear": True}).json() == {"ok": True}
    assert api_get(http, emu).status_code == 200 and http.get(url).status_code == 200
    assert all(e["fault"] is None for e in emu.requests(path_contains="/_emulator/"))


def test_clear_faults_also_drops_a_custom_hook(emu: Emulator, http: httpx.Client) -> None:
    from artifactfs.emulator.server import json_reply

    emu.origins["api"].faults = lambda req: json_reply(418, {}) if "other" in req.query else None
    emu.faults("api").set("status", code=500, path_contains="data.bin")
    emu.faults("storage").set("throttle")
    assert api_get(http, emu, "other.txt").status_code == 418  # the custom hook comes first
    assert api_get(http, emu).status_code == 500  # the switches still answer when it does not
    emu.clear_faults()
    assert api_get(http, emu, "other.txt").status_code == 200 and api_get(http, emu).status_code == 200
    assert http.get(gumloop_url(emu)).status_code == 200


# ---- ranges --------------------------------------------------------------------------------


def test_bad_range_shift_and_lying_total(emu: Emulator, http: httpx.Client) -> None:
    content = data(emu)
    emu.faults("api").set("bad_range", shift=10, count=1)
    assert api_get(http, emu).status_code == 200  # no Range: not matched, count kept
    r = api_get(http, emu, Range="bytes=100-199")
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 110-209/{SIZE}"
    assert r.content == content[110:210]
    r = api_get(http, emu, Range="bytes=100-199")  # count used up: honest again
    assert r.headers["content-range"] == f"bytes 100-199/{SIZE}" and r.content == content[100:200]

    url = gumloop_url(emu, content)
    emu.faults("storage").set("bad_range", total=SIZE + 5)
    r = http.get(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == content[:10]
    assert r.headers["content-range"] == f"bytes 0-9/{SIZE + 5}"
    emu.faults("storage").clear()
    emu.faults("storage").set("bad_range")  # default: shifted by one byte
    r = http.get(url, headers={"Range": "bytes=0-9"})
    assert r.headers["content-range"] == f"bytes 1-10/{SIZE}" and r.content == content[1:11]
    assert faults_logged(emu, "bad_range") == 3


def test_ignore_range_through_the_fault_api(emu: Emulator, http: httpx.Client) -> None:
    url = gumloop_url(emu, data(emu))
    emu.faults("storage").set("ignore_range", count=1)
    assert http.get(url).status_code == 200  # no Range: not matched
    r = http.get(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 200 and r.content == data(emu) and "accept-ranges" not in r.headers
    assert http.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
    assert faults_logged(emu, "ignore_range") == 1


# ---- signatures --------------------------------------------------------------------------------


def test_expire_signatures_then_fresh_urls_work(emu: Emulator, http: httpx.Client) -> None:
    old_gcs = gumloop_url(emu)
    artifact_id, version_id = emu.put_vm0_version("faulty", {"a.txt": b"a"})
    old_s3 = emu.vm0.signed_url(artifact_id, version_id)
    assert http.get(old_gcs).status_code == 200 and http.get(old_s3).status_code == 200

    emu.faults("storage").set("expire_signatures")
    r = http.get(old_gcs)
    assert r.status_code == 403 and "<Code>ExpiredToken</Code>" in r.text
    r = http.get(old_s3)
    assert r.status_code == 403 and "Request has expired" in r.text
    assert faults_logged(emu, "expire_signatures") == 2

    fresh = gumloop_url(emu)
    assert http.get(fresh).status_code == 200
    assert http.get(emu.vm0.signed_url(artifact_id, version_id)).status_code == 200
    tampered = fresh.replace("X-Goog-Signature=", "X-Goog-Signature=0")
    assert "<Code>SignatureDoesNotMatch</Code>" in http.get(tampered).text  # forgeries are still forgeries
    emu.faults("storage").clear()
    assert http.get(old_gcs).status_code == 403  # expired URLs stay expired
    with pytest.raises(ValueError):
        emu.faults("api").set("expire_signatures")
    with pytest.raises(TypeError):
        emu.faults("storage").set("expire_signatures", count=1)


# ---- API, control endpoint, server hygiene -------------------------------------------------


def test_bad_fault_arguments(emu: Emulator) -> None:
    faults = emu.faults("api")
    with pytest.raises(ValueError):
        faults.set("explode")
    with pytest.raises(TypeError):
        faults.set("cut", rate=5)
    with pytest.raises(TypeError):
        faults.set("status")  # code is required
    with pytest.raises(ValueError):
        faults.set("hang", seconds=10_000)
    with pytest.raises(ValueError):
        faults.set("refuse", count=0)
    with pytest.raises(TypeError):
        faults.set("slow", rate=5, delay=1)
    with pytest.raises(KeyError):
        emu.faults("elsewhere")


def test_control_endpoint(emu: Emulator, http: httpx.Client) -> None:
    control = emu.api_url + "/_emulator/faults"
    body = {"origin": "api", "kind": "status", "code": 503, "retry_after": 3, "count": 1, "path_contains": "data"}
    assert http.post(control, json=body).json() == {"ok": True}
    r = api_get(http, emu)
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert api_get(http, emu).status_code == 200

    url = gumloop_url(emu)
    assert http.post(control, json={"origin": "storage", "kind": "cut", "after": 3}).status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(url)
    assert http.post(control, json={"origin": "api", "kind": "throttle"}).status_code == 200
    assert http.post(control, json={"clear": True, "origin": "storage"}).json() == {"ok": True}
    assert http.get(url).status_code == 200 and api_get(http, emu).status_code == 429
    assert http.post(control, json={"clear": True}).status_code == 200
    assert api_get(http, emu).status_code == 200

    for bad in ({"origin": "mars", "kind": "refuse"}, {"origin": "api", "kind": "explode"},
                {"origin": "api", "kind": "cut", "bogus": 1}, {"kind": "refuse"}, [1]):
        r = http.post(control, json=bad)
        assert r.status_code == 400 and "error" in r.json()
    logged = http.get(emu.api_url + "/_emulator/requests").json()
    assert [e["fault"] for e in logged if e["fault"]] == ["status", "cut", "throttle"]


def test_client_resets_leave_no_traceback(emu: Emulator, capfd: pytest.CaptureFixture[str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    host, port = urllib.parse.urlsplit(emu.api_url).netloc.rsplit(":", 1)
    for _ in range(3):  # reset in the middle of the request headers
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /sigmic/ HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.05)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    time.sleep(0.2)
    assert "Traceback" not in capfd.readouterr().err

    origin = emu._server("api")
    with caplog.at_level(logging.ERROR, logger="artifactfs.emulator.server"):
        try:
            raise ValueError("a real bug")
        except ValueError:
            origin.handle_error(None, ("127.0.0.1", 1))
    assert any("a real bug" in (r.exc_text or "") for r in caplog.records)
