"""Every HTTP path (httpx for the API; for bytes, http.client/urllib3 in threads and ``wire``
on the trio thread) honours the same proxy and CA environment, and the byte paths keep their
connections.

Behind a proxy or a private CA, listings that work while every read fails is the worst case:
here a real forward proxy and a real TLS server on 127.0.0.1 check each path.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import trio
import trio.testing
import trustme

from artifactfs import transport, wire
from artifactfs.errors import RemoteError
from artifactfs.httpclient import HttpClient
from artifactfs.model import Source
from artifactfs.transport import TransportError, HttpTransport, api_client

BODY = b"artifact bytes\n"
GZIPPED = gzip.compress(BODY)


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
    return read_bytes_with(HttpTransport(), url)


def read_bytes_with(byte_transport: HttpTransport, url: str) -> bytes:
    resp = byte_transport.open(url, {}, timeout=5)
    buffer = memoryview(bytearray(100))
    n = resp.readinto(buffer)
    resp.finish()
    return bytes(buffer[:n])


async def read_here(url: str, byte_transport: HttpTransport | None = None) -> bytes | None:
    """The body as ``wire`` reads it on the trio thread; None where it leaves it to a thread."""
    resp = await (byte_transport or HttpTransport()).open_here(url, {}, timeout=5)
    return None if resp is None else await read_body(resp)


async def read_body(resp: wire.Response) -> bytes:
    """A response's body (up to 100 bytes), read in place; the response then finished."""
    got, buffer = 0, memoryview(bytearray(100))
    try:
        while n := await resp.readinto(buffer[got:]):
            got += n
    finally:
        resp.finish()
    return bytes(buffer[:got])


async def read_api(url: str) -> bytes:
    async with api_client(5, 5) as client:
        return (await client.get(url)).content


async def test_a_new_api_client_has_sent_nothing_and_holds_no_cookie() -> None:
    """Its warm-up (the first-use costs paid at start) builds a request and a response
    without sending either, and leaves the client as new."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    async with api_client(5, 5, httpx.MockTransport(answer)) as client:
        assert not seen and not client.cookies
        assert (await client.get("http://api.test/x")).json() == {}
    assert [str(request.url) for request in seen] == ["http://api.test/x"]


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_both_paths_go_through_the_proxy_the_environment_names(
        monkeypatch: pytest.MonkeyPatch, origin: str, proxy: str, variable: str) -> None:
    monkeypatch.setenv(variable, proxy)
    assert await read_api(origin + "/api") == BODY
    assert await trio.to_thread.run_sync(read_bytes, origin + "/bytes") == BODY
    assert await read_here(origin + "/here") is None  # a tunnel is the threaded path's
    assert [urllib.parse.urlsplit(url).path for url in Proxy.seen] == ["/api", "/bytes"]


async def test_no_proxy_exempts_a_host_on_both_paths(monkeypatch: pytest.MonkeyPatch, origin: str, proxy: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert await read_api(origin + "/api") == BODY
    assert await trio.to_thread.run_sync(read_bytes, origin + "/bytes") == BODY
    assert await read_here(origin + "/here") == BODY
    assert Proxy.seen == []


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
async def test_a_private_ca_from_the_environment_is_trusted_on_both_paths(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ca: trustme.CA, tls_origin: str, variable: str) -> None:
    with pytest.raises(httpx.TransportError):
        await read_api(tls_origin + "/api")
    with pytest.raises(TransportError):
        await trio.to_thread.run_sync(read_bytes, tls_origin + "/bytes")
    with pytest.raises(TransportError):
        await read_here(tls_origin + "/here")
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv(variable, str(bundle))
    transport.ssl_context.cache_clear()
    assert await read_api(tls_origin + "/api") == BODY
    assert await trio.to_thread.run_sync(read_bytes, tls_origin + "/bytes") == BODY
    assert await read_here(tls_origin + "/here") == BODY


def test_connections_are_kept_and_one_the_server_closed_is_replaced_quietly() -> None:
    Counting.peers = []
    for base in serve(Counting):
        byte_transport = HttpTransport()

        def read(path: str) -> bytes:
            resp = byte_transport.open(base + path, {"Range": "bytes=0-"}, timeout=5)
            buffer = memoryview(bytearray(100))
            try:
                return bytes(buffer[:resp.readinto(buffer)])
            finally:
                resp.finish()

        assert read("/a") == read("/then-close") == BODY
        time.sleep(0.2)  # the server closes the kept connection meanwhile
        assert read("/b") == BODY
    first, second, third = Counting.peers
    assert first == second != third


async def test_the_trio_path_keeps_connections_and_replaces_one_the_server_closed() -> None:
    Counting.peers = []
    for base in serve(Counting):
        byte_transport = HttpTransport()
        assert await read_here(base + "/a", byte_transport) == BODY
        assert await read_here(base + "/then-close", byte_transport) == BODY
        await trio.sleep(0.2)  # the server closes the kept connection meanwhile
        assert await read_here(base + "/b", byte_transport) == BODY
        byte_transport.close_here()
    first, second, third = Counting.peers
    assert first == second != third


class Accepting(Counting):
    """Also records each connection as the server takes it, before any request on it."""

    accepted: ClassVar[list[int]] = []

    def setup(self) -> None:
        Accepting.accepted.append(self.client_address[1])
        super().setup()


async def test_an_api_client_connects_ahead_and_its_first_call_goes_over_that_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    """A fresh mount's first lookup waits for the agent's listing: ``preconnect`` opens the
    API's connection before that, and the first call uses it. To a port nobody listens on,
    it only logs at debug level (the call will say what is wrong)."""
    Counting.peers, Accepting.accepted = [], []
    for base in serve(Accepting):
        client = HttpClient("test", base + "/api", {})
        try:
            await client.preconnect()
            await client.preconnect()  # the connection is kept: no second one
            with trio.fail_after(5):
                while not Accepting.accepted:
                    await trio.sleep(0.01)
            assert Counting.peers == []  # nothing was asked yet
            assert (await client.request("items")).content == BODY
        finally:
            await client.aclose()
    assert Accepting.accepted == Counting.peers and len(Counting.peers) == 1
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    client = HttpClient("test", closed + "/api", {})
    try:
        with caplog.at_level(logging.DEBUG, "artifactfs"):
            await client.preconnect()
    finally:
        await client.aclose()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "could not connect ahead" in caplog.records[0].message


async def read_into(got: list[bytes | None], url: str, byte_transport: HttpTransport) -> None:
    got.append(await read_here(url, byte_transport))


async def test_a_listed_byte_origin_is_connected_ahead_once_and_a_read_meanwhile_waits_for_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``listed`` hands a listing's byte URL to the task that connects ahead (once per origin);
    a read that comes while that connection is being made (held here until ``gate`` opens)
    waits for it and goes over it, rather than making a second one."""
    Counting.peers, Accepting.accepted = [], []
    gate = trio.Event()
    connect = wire._Origin.connect

    async def slow_connect(self: wire._Origin, timeout: float) -> wire._Connection:
        await gate.wait()
        return await connect(self, timeout)

    monkeypatch.setattr(wire._Origin, "connect", slow_connect)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        no_api = f"http://127.0.0.1:{probe.getsockname()[1]}/api"
    got: list[bytes | None] = []
    for base in serve(Accepting):
        byte_transport = HttpTransport()
        client = HttpClient("test", no_api, {}, byte_transport=byte_transport)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.connect_ahead)
                client.listed(base + "/a?signature=1")
                client.listed(base + "/b?signature=2")  # the same origin: not again
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(read_into, got, base + "/b", byte_transport)
                await trio.testing.wait_all_tasks_blocked()
                assert Accepting.accepted == []
                gate.set()
                with trio.fail_after(5):
                    while not got:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        finally:
            byte_transport.close_here()
            await client.aclose()
    assert got == [BODY]
    assert Accepting.accepted == Counting.peers and len(Counting.peers) == 1


class Raw(BaseHTTPRequestHandler):
    """Answers written byte for byte, as servers the docs leave room for may send them."""

    answers = {
        "/lower": b"HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 0-14/15\r\nx-a: 1\r\nX-A: 2\r\n"
                  b"content-length: 15\r\n\r\n" + BODY,
        "/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + BODY,
        "/http10": b"HTTP/1.0 200 OK\r\n\r\n" + BODY,
        "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nf\r\n" + BODY + b"\r\n0\r\n\r\n",
        "/short": b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nConnection: close\r\n\r\n" + BODY,
        "/garbage": b"not http at all\r\n\r\n",
        "/gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(GZIPPED), GZIPPED),
    }
    seen: list[str] = []

    def do_GET(self) -> None:
        Raw.seen.append(self.path)
        self.wfile.write(self.answers[self.path])
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


async def test_the_trio_path_reads_what_servers_send_and_leaves_chunked_bodies_to_threads() -> None:
    for base in serve(Raw):
        resp = await HttpTransport().open_here(base + "/lower", {}, timeout=5)
        assert resp is not None and resp.status == 206
        assert resp.headers["content-range"] == "bytes 0-14/15" and resp.headers["x-a"] == "1, 2"
        resp.finish()
        assert await read_here(base + "/continue") == BODY
        assert await read_here(base + "/http10") == BODY  # no length: the body ends with the connection
        assert await read_here(base + "/chunked") is None
        with pytest.raises(TransportError, match="broke off"):
            await read_here(base + "/short")
        with pytest.raises(TransportError):
            await read_here(base + "/garbage")


async def test_the_api_path_reads_what_servers_send_and_sends_chunked_origins_to_httpx() -> None:
    """API GETs go over ``wire``; an origin that answers with a chunked body is asked again
    through httpx's own transport, and from then on only there."""
    for base in serve(Raw):
        Raw.seen = []
        async with api_client(5, 5) as client:
            resp = await client.get(base + "/lower")
            assert resp.status_code == 206 and resp.headers["x-a"] == "1, 2" and resp.content == BODY
            assert (await client.get(base + "/continue")).content == BODY
            assert (await client.get(base + "/http10")).content == BODY
            assert (await client.get(base + "/gzip")).content == BODY  # httpx decodes what wire read
            with pytest.raises(httpx.TransportError, match="broke off"):
                await client.get(base + "/short")
            with pytest.raises(httpx.TransportError) as through_httpx:  # a GET with a body is httpx's
                await client.request("GET", base + "/short", content=b"x")
            assert "broke off" not in str(through_httpx.value)
            with pytest.raises(httpx.TransportError):
                await client.get(base + "/garbage")
            assert Raw.seen.count("/chunked") == 0
            assert (await client.get(base + "/chunked")).content == BODY
            assert Raw.seen.count("/chunked") == 2
            assert (await client.get(base + "/chunked")).content == BODY
            assert (await client.get(base + "/lower")).content == BODY
        assert Raw.seen.count("/chunked") == 3


DELAYED_ACK = 0.04  # Linux's delayed-ACK timer: what a stalled answer waits for


async def test_every_path_acknowledges_an_answer_at_once() -> None:
    """``Origin`` writes the head and the body apart with Nagle's algorithm on (``http.server``'s
    defaults): its body waits for the head's ACK. Each path asks for quick ACKs, so requests on a
    kept connection take about a millisecond; without that, nearly all of them waited 44 ms."""
    for base in serve(Origin):
        byte_transport = HttpTransport()

        def threaded() -> bytes:
            return read_bytes_with(byte_transport, base + "/threads")

        async def timed(read: Callable[[], Awaitable[object]]) -> list[float]:
            times = []
            for _ in range(6):
                start = time.perf_counter()
                await read()
                times.append(time.perf_counter() - start)
            return times[1:]  # the first, on a new connection, is quick anyway

        async with api_client(5, 5) as client:
            paths = {
                "threads": await timed(lambda: trio.to_thread.run_sync(threaded)),
                "trio": await timed(lambda: read_here(base + "/here", byte_transport)),
                "api": await timed(lambda: client.get(base + "/api")),
            }
        byte_transport.close_here()
    stalled = {path: sum(t >= DELAYED_ACK for t in times) for path, times in paths.items()}
    assert all(count <= 1 for count in stalled.values()), stalled


class Slow(Counting):
    """``/silent`` takes the request and never answers; ``/trickle`` sends a head for 100 bytes
    (a 206 for ``Range: bytes=0-99``), then one byte every 50 ms. Each wait is short; only a
    deadline on the whole ends it."""

    def do_GET(self) -> None:
        Counting.peers.append(self.client_address[1])
        if self.path == "/silent":
            time.sleep(3)
            self.close_connection = True
            return
        if self.path != "/trickle":
            return Origin.do_GET(self)
        if self.headers.get("Range") == "bytes=0-99":
            self.send_response(206)
            self.send_header("Content-Range", "bytes 0-99/100")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.flush()
        try:
            for _ in range(100):
                time.sleep(0.05)
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:
            pass  # the client gave up
        self.close_connection = True


async def test_the_trio_path_ends_a_silent_wait_after_its_timeout_and_keeps_no_connection() -> None:
    Counting.peers = []
    for base in serve(Slow):
        byte_transport = HttpTransport()
        started = trio.current_time()
        with pytest.raises(TransportError, match="TimeoutError"):
            await byte_transport.open_here(base + "/silent", {}, timeout=0.3)
        assert 0.25 <= trio.current_time() - started < 1.5
        assert await read_here(base + "/after", byte_transport) == BODY
        byte_transport.close_here()
    silent, after = Counting.peers
    assert silent != after  # the connection that ran out was closed, not kept


async def test_the_trio_path_gives_up_at_the_deadline_however_often_a_trickle_comes() -> None:
    for base in serve(Slow):
        byte_transport = HttpTransport()
        started = trio.current_time()
        resp = await byte_transport.open_here(base + "/trickle", {}, timeout=1, give_up=started + 0.5)
        assert resp is not None and resp.status == 200
        with pytest.raises(TransportError, match="TimeoutError"):
            await read_body(resp)
        assert 0.45 <= trio.current_time() - started < 1.5
        byte_transport.close_here()


async def test_a_fetch_on_the_trio_thread_gives_up_at_its_deadline(caplog: pytest.LogCaptureFixture) -> None:
    """No cancel scope bounds it: its socket waits end at the deadline, and it says so once."""

    class Sink:
        def __init__(self) -> None:
            self.buffer = memoryview(bytearray(100))

        def begin(self, first: int, total: int | None, ranged: bool) -> None:
            pass

        def window(self, pos: int) -> memoryview:
            return self.buffer[pos:]

        def wrote(self, pos: int, n: int) -> None:
            pass

        def eof(self, pos: int) -> None:
            pass

    for base in serve(Slow):
        client = HttpClient("test", base, {}, timeout=1)
        trickle = client.source(base + "/trickle")

        async def source(refresh: bool, trickle: Source = trickle) -> Source:
            return trickle

        started = trio.current_time()
        with caplog.at_level(logging.INFO, "artifactfs.http"), pytest.raises(RemoteError, match="gave up after 1 s"):
            await client.fetch(source, 0, 100, Sink(), deadline=1.0, here=True)
        assert 0.95 <= trio.current_time() - started < 2.5
        await client.aclose()
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
