"""Where requests go on the wire: the byte transport (``http.client`` in threads, ``wire`` on
the trio thread, urllib3 through a proxy) and the API client (httpx), all honouring the same
environment.

httpx and urllib3 read proxies and CA bundles differently; a listing that works behind a
proxy while every read fails is the worst of both. So both take one SSL context (from
``SSL_CERT_FILE``, ``SSL_CERT_DIR`` or ``REQUESTS_CA_BUNDLE``, else the system store) and the
same proxy rules (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, any case).

Tests replace ``ByteTransport`` and httpx's transport with in-memory fakes (``tests/fakes.py``).
"""

from __future__ import annotations

import encodings.idna  # noqa: F401 - loaded now, not by the first request (its import took ~1 ms of a first read)
import functools
import http.client
import io
import math
import os
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from typing import Callable, Mapping, Protocol
from urllib.parse import urlsplit

import httpx
import trio
import urllib3

from . import wire
from .errors import TransportError

POOL_SIZE = 32
CONNECT_TIMEOUT = 10.0
USER_AGENT = "artifactfs"
API_READ = 64 << 10  # an API body is received this much at a time


class ByteResponse(Protocol):
    """An open byte response: status, headers (lower-case names), and a body read in place."""

    status: int
    headers: Mapping[str, str]

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` as far as the body goes; 0 at its end; TransportError if it breaks."""

    def finish(self) -> None:
        """Done with it: keep the connection for reuse only if the body was read to its end."""


class HereResponse(Protocol):
    """A byte response read on the trio thread (``wire.Response``)."""

    status: int
    headers: Mapping[str, str]

    async def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` as far as one receive goes; 0 at the body's end; TransportError if it breaks."""

    def finish(self) -> None:
        """Done with it: keep the connection for reuse only if the body was read to its end."""


class ByteTransport(Protocol):
    """Opens GET requests for bytes: blocking (from worker threads), or on the trio thread."""

    def open(self, url: str, headers: Mapping[str, str], timeout: float) -> ByteResponse: ...

    async def open_here(self, url: str, headers: Mapping[str, str], timeout: float,
                        give_up: float = math.inf) -> HereResponse | None:
        """The response, read on the trio thread; None where only ``open`` can (a proxy, a chunked
        body). No wait lasts longer than ``timeout``, nor past ``give_up`` (trio's clock)."""

    def close_here(self) -> None:
        """Close what ``open_here`` kept for this trio run."""

    async def preconnect_here(self, url: str) -> None:
        """Have a connection to ``url``'s origin ready for ``open_here`` (nothing is sent)."""


@functools.lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    """The one TLS configuration of the process (built once: loading a CA bundle takes ms)."""
    env = os.environ
    cafile = env.get("SSL_CERT_FILE") or env.get("REQUESTS_CA_BUNDLE") or None
    capath = env.get("SSL_CERT_DIR") or None
    if cafile and not os.path.isfile(cafile):
        cafile = None
    if capath and not os.path.isdir(capath):
        capath = None
    return ssl.create_default_context(cafile=cafile, capath=capath)


def proxy_for(url: str, proxies: Mapping[str, str]) -> str | None:
    """The proxy ``proxies`` (the environment's) name for ``url``, unless ``NO_PROXY`` exempts its host."""
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.netloc, dict(proxies)):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class RunWire:
    """A ``wire`` transport per trio run, made on first use: its sockets belong to the run."""

    def __init__(self, name: str, connect_timeout: float) -> None:
        self._var: trio.lowlevel.RunVar[wire.TrioTransport] = trio.lowlevel.RunVar(name)
        self._connect_timeout = connect_timeout

    def get(self) -> wire.TrioTransport:
        try:
            return self._var.get()
        except LookupError:
            here = wire.TrioTransport(ssl_context, USER_AGENT, self._connect_timeout)
            self._var.set(here)
            return here

    def close(self) -> None:
        """Close the connections this run kept, if it made any."""
        try:
            self._var.get().close()
        except LookupError:
            pass


def api_client(timeout: float, connect: float, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The async client for provider APIs: same TLS and proxies as the byte path
    (``transport`` replaces the network in tests)."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect), follow_redirects=False,
        transport=transport or ApiTransport(connect),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"}, trust_env=False,
        event_hooks={"response": [_ack_body_promptly]})
    _warm_up(client)
    return client


class WireError(httpx.NetworkError):
    """An API request failed on ``wire``'s connections; the message says how."""


class ApiTransport(httpx.AsyncBaseTransport):
    """httpx's network layer for provider APIs: a direct GET goes over the trio thread's own
    connections (``wire``): a request then costs about half the CPU. Measured here, a listing
    page took ~1.45 ms after a pause against ~1.95 ms through httpcore (~0.55 against ~0.8 ms
    back to back), and a process's first ~2.0 against ~2.9 ms: a fresh mount's first lookup
    waits for that one.

    httpx's own transport takes the rest: other methods and requests with a body, the
    environment's proxies (the byte path's rule, ``proxy_for``), and an origin once it
    answered with a chunked body, which ``wire`` does not read (that request is sent again)."""

    def __init__(self, connect_timeout: float) -> None:
        self._proxies = urllib.request.getproxies_environment()
        self._wire = RunWire("artifactfs.api-wire", connect_timeout)
        self._httpx: dict[str | None, httpx.AsyncHTTPTransport] = {}  # per proxy; None: direct
        self._elsewhere: set[tuple[str, str, int | None]] = set()  # origins that chunked

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        proxy = proxy_for(url, self._proxies)
        origin = (request.url.scheme, request.url.host, request.url.port)
        bodiless = "content-length" not in request.headers and "transfer-encoding" not in request.headers
        if proxy is None and request.method == "GET" and bodiless and origin not in self._elsewhere:
            response = await self._on_wire(request, url)
            if response is not None:
                return response
            self._elsewhere.add(origin)
        via = self._httpx.get(proxy)
        if via is None:
            via = self._httpx[proxy] = httpx.AsyncHTTPTransport(verify=ssl_context(), proxy=proxy, trust_env=False)
        return await via.handle_async_request(request)

    async def _on_wire(self, request: httpx.Request, url: str) -> httpx.Response | None:
        """The whole response read over ``wire``; None for a chunked body."""
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers.raw}
        timeout = request.extensions.get("timeout", {}).get("read") or CONNECT_TIMEOUT
        try:
            resp = await self._wire.get().open(url, headers, timeout)
            if resp is None:
                return None
            try:
                body = await _whole(resp)
            finally:
                resp.finish()
        except TransportError as exc:
            raise WireError(str(exc), request=request) from None
        return httpx.Response(resp.status, headers=list(resp.headers.items()), stream=httpx.ByteStream(body),
                              request=request)

    async def preconnect(self, url: str) -> None:
        """Connect ahead to ``url``'s origin if requests go there directly (``wire``)."""
        if proxy_for(url, self._proxies) is None:
            await self._wire.get().preconnect(url)

    async def aclose(self) -> None:
        self._wire.close()
        for via in self._httpx.values():
            await via.aclose()


async def _whole(resp: wire.Response) -> bytes:
    """A response's body, read to its end."""
    parts, buffer = [], memoryview(bytearray(API_READ))
    while n := await resp.readinto(buffer):
        parts.append(bytes(buffer[:n]))
    return b"".join(parts)


_warmed_up = threading.Event()


def _warm_up(client: httpx.AsyncClient) -> None:
    """Pay at start, once per process, what the first listing and the first read would:
    regexes compiled and tables built on first use by httpx (building a request, its cookie
    handling), by ``urllib.parse.unquote`` (a signed URL's query) and by ``http.client``'s
    header parser, and the C library's resolver set-up: ~0.8 ms of CPU here. ``head -c 4096``
    on a fresh mount took 8.5 ms against 9.1 without (medians of 13, interleaved). Nothing is
    sent."""
    if _warmed_up.is_set():
        return
    _warmed_up.set()
    request = client.build_request("GET", "http://localhost/")
    client.cookies.extract_cookies(httpx.Response(200, request=request))
    urllib.parse.unquote("%41")
    http.client.parse_headers(io.BytesIO(b"Content-Length: 0\r\n\r\n"))
    socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)  # the resolver's set-up: no lookup for an address


async def _ack_body_promptly(response: httpx.Response) -> None:
    """The head is in, the body not yet read: acknowledge at once (``wire.ack_promptly``)."""
    stream = response.extensions.get("network_stream")
    if stream is not None:
        wire.ack_promptly(stream.get_extra_info("socket"))


class _Response:
    """A byte response read in place from ``http.client``'s response, which fills the caller's
    buffer directly (identity encoding is asked for, so nothing needs decoding). ``done`` gets
    the connection back once the body was read to its end, for the next request."""

    def __init__(self, resp: http.client.HTTPResponse, done: Callable[[bool], None]) -> None:
        self._resp, self._done = resp, done
        self.status = resp.status
        self.headers = resp.headers

    def readinto(self, buffer: memoryview) -> int:
        try:
            return self._resp.readinto(buffer) or 0
        except (http.client.HTTPException, OSError) as exc:
            raise TransportError(f"body broke off ({type(exc).__name__})") from None

    def finish(self) -> None:
        """Keep the connection for the next request only if the body was read to its end."""
        self._done(self._resp.isclosed() and not self._resp.will_close)


class _Origin:
    """Kept-alive ``http.client`` connections to one origin (scheme, host, port), any thread's."""

    def __init__(self, scheme: str, host: str, port: int | None) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """A connection, and whether it was kept from an earlier request (it may have gone stale)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if conn.sock is not None and not wire.readable(conn.sock.fileno()):
                conn.sock.settimeout(timeout)
                return conn, True
            conn.close()  # the server closed it (readable while idle means EOF)
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=min(timeout, CONNECT_TIMEOUT),
                                               context=ssl_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=min(timeout, CONNECT_TIMEOUT))
        conn.connect()
        conn.sock.settimeout(timeout)
        return conn, False

    def keep(self, conn: http.client.HTTPConnection, reusable: bool) -> None:
        with self._lock:
            if reusable and len(self._idle) < POOL_SIZE:
                self._idle.append(conn)
                return
        conn.close()


class HttpTransport:
    """Byte requests, shared by every provider of the process, with connections kept alive
    across files. A direct origin is asked with ``http.client`` on connections kept per
    origin: urllib3's pool re-encodes every request's URL (a signed URL's query has ``%``, so
    character by character) and builds its own response around ``http.client``'s, ~100–150 µs
    per request here (a fifth of a random 4 KiB read). Through a proxy, urllib3's
    ``ProxyManager`` does the tunnelling. The environment's proxies are read once."""

    def __init__(self) -> None:
        self._here = RunWire("artifactfs.wire", CONNECT_TIMEOUT)
        self._proxies = urllib.request.getproxies_environment()
        self._managers: dict[str, urllib3.ProxyManager] = {}
        self._origins: dict[tuple[str, str], _Origin | str] = {}
        self._timeouts: dict[float, urllib3.Timeout] = {}
        self._lock = threading.Lock()

    def _route(self, url: str) -> _Origin | str:
        """The origin's kept connections, or the proxy that reaches it."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        with self._lock:
            found = self._origins.get(key)
            if found is None:
                proxy = proxy_for(url, self._proxies)
                found = self._origins[key] = proxy or _Origin(parts.scheme, parts.hostname or "", parts.port)
                if proxy and proxy not in self._managers:
                    self._managers[proxy] = urllib3.ProxyManager(proxy, num_pools=32, maxsize=POOL_SIZE,
                                                                 ssl_context=ssl_context())
            return found

    def open(self, url: str, headers: Mapping[str, str], timeout: float) -> ByteResponse:
        route = self._route(url)
        try:
            if isinstance(route, str):
                return self._via_proxy(route, url, headers, timeout)
            parts = urlsplit(url)
            target = parts.path or "/" if not parts.query else f"{parts.path or '/'}?{parts.query}"
            return self._direct(route, target, headers, timeout)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}") from None

    async def open_here(self, url: str, headers: Mapping[str, str], timeout: float,
                        give_up: float = math.inf) -> wire.Response | None:
        """A direct origin's answer read on the trio thread (``wire``); None through a proxy."""
        if isinstance(self._route(url), str):
            return None
        return await self._here.get().open(url, headers, timeout, give_up)

    def close_here(self) -> None:
        self._here.close()

    async def preconnect_here(self, url: str) -> None:
        """Connect ahead to a direct origin (through a proxy, the request connects)."""
        if not isinstance(self._route(url), str):
            await self._here.get().preconnect(url)

    @staticmethod
    def _direct(origin: _Origin, target: str, headers: Mapping[str, str], timeout: float) -> ByteResponse:
        """GET on a kept connection; one that turns out stale is replaced once, quietly (a GET
        may be sent again)."""
        for _ in range(2):
            conn, kept = origin.connection(timeout)
            try:
                conn.request("GET", target, headers={"User-Agent": USER_AGENT, **headers})
                wire.ack_promptly(conn.sock)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if kept:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            return _Response(resp, lambda reusable: origin.keep(conn, reusable))
        raise http.client.RemoteDisconnected("kept connections were closed")

    def _via_proxy(self, proxy: str, url: str, headers: Mapping[str, str], timeout: float) -> ByteResponse:
        limits = self._timeouts.get(timeout)
        if limits is None:
            limits = self._timeouts[timeout] = urllib3.Timeout(connect=min(timeout, CONNECT_TIMEOUT), read=timeout)
        resp = self._managers[proxy].urlopen("GET", url, headers=dict(headers), preload_content=False,
                                             decode_content=False, redirect=False, retries=False, timeout=limits)
        body = getattr(resp, "_fp", None)
        if not isinstance(body, http.client.HTTPResponse):
            resp.close()
            raise TransportError("the proxy's answer cannot be read in place")
        return _Response(body, lambda reusable: resp.release_conn() if reusable else resp.close())


@functools.lru_cache(maxsize=1)
def default_transport() -> HttpTransport:
    return HttpTransport()
