"""Both HTTP paths (httpx for the API, http.client/urllib3 for bytes) honour the same proxy and
CA environment, and the byte path keeps its connections.

Behind a proxy or a private CA, listings that work while every read fails is the worst case:
here a real forward proxy and a real TLS server on 127.0.0.1 check each path.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from artifactfs import transport
from artifactfs.transport import TransportError, HttpTransport, api_client

BODY = b"artifact bytes\n"


class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


class Counting(Origin):
    """Records each request's client port (one per connection); ``/then-close`` closes the
    connection afterwards without saying so, as a server's keep-alive timeout does."""

    peers: list[int] = []

    def do_GET(self) -> None:
        Counting.peers.append(self.client_address[1])
        super().do_GET()
        self.close_connection = self.path == "/then-close"


class Proxy(BaseHTTPRequestHandler):
    """A forward proxy for plain HTTP: it gets absolute URLs and records them."""

    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_GET(self) -> None:
        Proxy.seen.append(self.path)
        target = urllib.parse.urlsplit(self.path)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        conn.request("GET", target.path or "/")
        resp = conn.getresponse()
        body = resp.read()
        self.send_response(resp.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext | None = None) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def origin() -> Iterator[str]:
    yield from serve(Origin)


@pytest.fixture
def proxy() -> Iterator[str]:
    Proxy.seen = []
    yield from serve(Proxy)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_origin(ca: trustme.CA) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    yield from serve(Origin, context)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    transport.ssl_context.cache_clear()
    yield
    transport.ssl_context.cache_clear()


def read_bytes(url: str) -> bytes:
    resp = HttpTransport().open(url, {}, timeout=5)
    buffer = memoryview(bytearray(100))
    n = resp.readinto(buffer)
    resp.finish()
    return bytes(buffer[:n])


async def read_api(url: str) -> bytes:
    async with api_client(5, 5) as client:
        return (await client.get(url)).content


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_both_paths_go_through_the_proxy_the_environment_names(
        monkeypatch: pytest.MonkeyPatch, origin: str, proxy: str, variable: str) -> None:
    monkeypatch.setenv(variable, proxy)
    assert await read_api(origin + "/api") == BODY
    assert await trio.to_thread.run_sync(read_bytes, origin + "/bytes") == BODY
    assert [urllib.parse.urlsplit(url).path for url in Proxy.seen] == ["/api", "/bytes"]


async def test_no_proxy_exempts_a_host_on_both_paths(monkeypatch: pytest.MonkeyPatch, origin: str, proxy: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert await read_api(origin + "/api") == BODY
    assert await trio.to_thread.run_sync(read_bytes, origin + "/bytes") == BODY
    assert Proxy.seen == []


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
async def test_a_private_ca_from_the_environment_is_trusted_on_both_paths(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ca: trustme.CA, tls_origin: str, variable: str) -> None:
    with pytest.raises(httpx.ConnectError):
        await read_api(tls_origin + "/api")
    with pytest.raises(TransportError):
        await trio.to_thread.run_sync(read_bytes, tls_origin + "/bytes")
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv(variable, str(bundle))
    transport.ssl_context.cache_clear()
    assert await read_api(tls_origin + "/api") == BODY
    assert await trio.to_thread.run_sync(read_bytes, tls_origin + "/bytes") == BODY


def test_a_body_read_whole_comes_as_one_object_ending_at_the_body_end(origin: str) -> None:
    resp = HttpTransport().open(origin + "/bytes", {}, timeout=5)
    assert resp.read(len(BODY) + 100) == BODY
    assert resp.read(10) == b""
    resp.finish()


def test_connections_are_kept_and_one_the_server_closed_is_replaced_quietly() -> None:
    Counting.peers = []
    for base in serve(Counting):
        byte_transport = HttpTransport()

        def read(path: str) -> bytes:
            resp = byte_transport.open(base + path, {"Range": "bytes=0-"}, timeout=5)
            try:
                return resp.read(100)
            finally:
                resp.finish()

        assert read("/a") == read("/then-close") == BODY
        time.sleep(0.2)  # the server closes the kept connection meanwhile
        assert read("/b") == BODY
    first, second, third = Counting.peers
    assert first == second != third
