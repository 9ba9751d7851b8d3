"""Byte GETs on the trio thread: HTTP/1.1 over kept trio sockets, with no worker thread.

A ranged GET handed to a worker thread crosses threads twice and goes through
``http.client``, whose header parsing (the ``email`` package) and buffered reader cost more
than nginx takes to answer a small range: a 256 KiB range took ~380 µs that way here, and
~170 µs read on the trio thread itself (4 KiB: ~300 and ~105 µs). So a range a reader waits
for, up to a size (``HttpClient``), is fetched here, the body read in place into the caller's
buffers (``recv_into``) on plain HTTP, through ``trio.SSLStream`` on HTTPS.

What this module reads is only what a ranged GET needs: a status line, headers, and a body
framed by ``Content-Length`` (or ended by the close of the connection). A chunked body, or
anything through a proxy, is left to the threaded transport: ``open`` answers None.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import select
import socket
import ssl
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import trio

from .errors import TransportError

log = logging.getLogger("artifactfs.wire")

HEAD_MAX = 64 << 10  # a response head longer than this is refused
HEAD_READ = 16 << 10  # received at a time for a head: body bytes past it are copied once more
KEPT_PER_ORIGIN = 32
URLS_PARSED = 4096  # URLs whose parts are remembered: a content's URL is parsed once, not per read (~3 µs)
WATCH_TICK = 0.1  # the longest a wait that ran out goes on before the watchdog ends it
NO_BODY = frozenset({204, 304})
QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
FAILURES = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, ssl.SSLError,
            UnicodeError, ValueError)


class _Watchdog:
    """Ends the waits of a transport's sockets that run out of time, so a wait needs no
    cancel scope of its own (entering and leaving one cost ~11 µs here, about a tenth of a
    4 KiB GET). While any wait is watched, one system task looks at them when the first is
    due, at most ``WATCH_TICK`` apart, and wakes one that ran out as if its socket were being
    closed (``notify_closing``); the waiter then fails with ``TooSlowError``."""

    def __init__(self) -> None:
        self.waits: dict[_Connection, float] = {}
        self._looking = False

    def watch(self, conn: _Connection, until: float) -> None:
        self.waits[conn] = until
        if not self._looking:
            try:
                trio.lowlevel.spawn_system_task(self._look, name="artifactfs.wire watchdog")
            except RuntimeError:  # the run is ending: its cancellation ends the waits
                return
            self._looking = True

    def forget(self, conn: _Connection) -> None:
        self.waits.pop(conn, None)

    async def _look(self) -> None:
        try:
            while self.waits:
                now = trio.current_time()
                await trio.sleep_until(min(min(self.waits.values()), now + WATCH_TICK))
                now = trio.current_time()
                for conn, until in list(self.waits.items()):
                    if until <= now:
                        del self.waits[conn]
                        conn.expire()
        finally:
            self._looking = False


class _Connection:
    """One kept connection: a non-blocking socket read in place, or a TLS stream over one.
    A receive or send that can go at once does, without a trip through trio's scheduler;
    only a wait is a checkpoint, bounded by ``timeout`` (as a blocking socket's timeout) and
    by ``give_up`` (trio's clock: the end of the request's whole fetch)."""

    def __init__(self, stream: trio.SocketStream | trio.SSLStream, timeout: float, watchdog: _Watchdog) -> None:
        self.tls = stream if isinstance(stream, trio.SSLStream) else None
        raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        assert isinstance(raw, trio.SocketStream)
        self.trio_socket = raw.socket
        self.socket = socket.socket(fileno=raw.socket.detach()) if self.tls is None else None
        if self.socket is not None:
            self.socket.setblocking(False)
        self.head = bytearray(HEAD_MAX)  # where response heads are received (reused)
        self.timeout = timeout  # per wait: each request sets its own
        self.give_up = math.inf  # no wait goes past this: each request sets its own
        self.watchdog = watchdog
        self.expired = False  # the watchdog ended a wait: the connection is done for

    def _limit(self) -> float:
        return min(trio.current_time() + self.timeout, self.give_up)

    async def recv_into(self, view: memoryview) -> int:
        if self.tls is not None:
            with trio.fail_at(self._limit()):
                data = await self.tls.receive_some(len(view))
            view[:len(data)] = data
            return len(data)
        while True:
            try:
                return self.socket.recv_into(view)
            except BlockingIOError:
                await self._wait(trio.lowlevel.wait_readable)

    async def send_all(self, data: bytes) -> None:
        if self.tls is not None:
            with trio.fail_at(self._limit()):
                await self.tls.send_all(data)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[self.socket.send(view):]
            except BlockingIOError:
                await self._wait(trio.lowlevel.wait_writable)

    async def _wait(self, until: Callable[[socket.socket], Awaitable[None]]) -> None:
        """Wait for the socket, at most ``timeout`` and not past ``give_up`` (the watchdog
        ends it): TooSlowError then."""
        limit = self._limit()
        if self.expired or limit <= trio.current_time():
            raise trio.TooSlowError
        self.watchdog.watch(self, limit)
        try:
            await until(self.socket)
        except trio.ClosedResourceError:
            if self.expired:
                raise trio.TooSlowError from None
            raise
        finally:
            self.watchdog.forget(self)

    def expire(self) -> None:
        """A wait ran out (the watchdog): wake it, to fail; the connection is then closed."""
        self.expired = True
        trio.lowlevel.notify_closing(self.socket)

    def fileno(self) -> int:
        return self.socket.fileno() if self.socket is not None else self.trio_socket.fileno()

    def ack_promptly(self) -> None:
        ack_promptly(self.socket if self.socket is not None else self.trio_socket)

    def closed_while_idle(self) -> bool:
        return readable(self.fileno())

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
        else:
            self.trio_socket.close()


def ack_promptly(sock: Any) -> None:
    """Have the kernel acknowledge the answer at once, once per request (every byte path does).

    A server that writes a response's head and body apart without ``TCP_NODELAY`` (Python's
    ``http.server`` with keep-alive does) holds the body until the head is acknowledged, and
    Linux delays that ACK by 40 ms: each request on a kept connection took 44 ms instead of
    about 1. Against nginx, about one GET of 64–68 KiB in 250 stalled the same way on its last
    segment. Quick-ack mode is not permanent, so it is asked for each request; asked before
    each receive it cost a quarter of the 1 MiB GET rate."""
    if QUICKACK is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)


def readable(fd: int) -> bool:
    """Whether ``fd`` has something to read now: for an idle kept connection, the server closed
    it (its EOF)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Origin:
    """Kept connections to one scheme, host and port (trio thread only: no locks)."""

    def __init__(self, scheme: str, host: str, port: int, tls: Callable[[], ssl.SSLContext],
                 connect_timeout: float, watchdog: _Watchdog) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.tls, self.connect_timeout, self.watchdog = tls, connect_timeout, watchdog
        self.idle: list[_Connection] = []
        self.ahead: trio.Event | None = None  # set once a connection made ahead is kept (or failed)

    async def connection(self, timeout: float, give_up: float = math.inf) -> tuple[_Connection, bool]:
        """A connection, and whether it was kept from an earlier request or made ahead (a
        request that comes while one is made ahead waits for it rather than make another)."""
        if self.ahead is not None and not self.idle:
            await self.ahead.wait()  # within the connect's own limit
        conn = self.kept()
        if conn is not None:
            return conn, True
        return await self.connect(timeout, give_up), False

    def kept(self) -> _Connection | None:
        """A kept connection the server has not closed meanwhile, if there is one."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed_while_idle():
                return conn
            conn.close()
        return None

    async def connect(self, timeout: float, give_up: float = math.inf) -> _Connection:
        """A new connection (TLS too for https), made within ``timeout``, the connect timeout
        and ``give_up``."""
        with trio.fail_at(min(trio.current_time() + min(timeout, self.connect_timeout), give_up)):
            stream: trio.SocketStream | trio.SSLStream = await trio.open_tcp_stream(self.host, self.port)
            if self.scheme == "https":
                plain = stream
                stream = trio.SSLStream(plain, self.tls(), server_hostname=self.host, https_compatible=True)
                try:
                    await stream.do_handshake()
                except BaseException:
                    plain.socket.close()  # a refused certificate must not leave the server waiting
                    raise
        return _Connection(stream, timeout, self.watchdog)

    def keep(self, conn: _Connection) -> None:
        if len(self.idle) < KEPT_PER_ORIGIN:
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class Response:
    """A response whose body is read on the trio thread: ``readinto`` fills the caller's
    buffer (what came with the head first); ``finish`` keeps the connection only if the
    body was read to its end and the server keeps it open."""

    def __init__(self, origin: _Origin, conn: _Connection, status: int, headers: dict[str, str],
                 early: memoryview, length: int | None, reusable: bool) -> None:
        self.status, self.headers = status, headers
        self._origin, self._conn = origin, conn
        self._early = early  # body bytes that came with the head
        self._left = length  # None: the body ends when the connection closes
        self._reusable = reusable and length is not None

    async def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` as far as one receive goes; 0 at the body's end."""
        size = len(buffer) if self._left is None else min(len(buffer), self._left)
        if size <= 0:
            return 0
        if self._early:
            n = min(size, len(self._early))
            buffer[:n] = self._early[:n]
            self._early = self._early[n:]
        else:
            try:
                n = await self._conn.recv_into(buffer[:size])
            except FAILURES as exc:
                self._reusable = False
                raise TransportError(f"body broke off ({_why(exc)})") from None
            if not n and self._left is not None:
                self._reusable = False
                raise TransportError("body broke off (connection closed)")
        if self._left is not None:
            self._left -= n
        return n

    def finish(self) -> None:
        if self._reusable and self._left == 0 and not self._early:
            self._origin.keep(self._conn)
        else:
            self._conn.close()


class TrioTransport:
    """Ranged GETs from the trio thread of one run, with connections kept per origin."""

    def __init__(self, tls: Callable[[], ssl.SSLContext], user_agent: str, connect_timeout: float) -> None:
        self.tls, self.user_agent, self.connect_timeout = tls, user_agent, connect_timeout
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._watchdog = _Watchdog()

    def close(self) -> None:
        """Close the kept connections (the run ends)."""
        for origin in self._origins.values():
            origin.close()

    def _origin(self, url: str) -> tuple[_Origin, str, str]:
        """``url``'s origin (made on first use), request target and Host header."""
        (scheme, host, port), target, netloc = _parts(url)
        origin = self._origins.get((scheme, host, port))
        if origin is None:
            origin = self._origins[scheme, host, port] = _Origin(scheme, host, port, self.tls, self.connect_timeout, self._watchdog)
        return origin, target, netloc

    async def preconnect(self, url: str) -> None:
        """Have a live connection to ``url``'s origin kept (a kept one if it is still open, else
        a new one), so the next request finds it ready; one at a time per origin. A failure is
        only logged (at debug): that request will say what is wrong."""
        origin, _, _ = self._origin(url)
        if origin.ahead is not None:
            return
        origin.ahead = ahead = trio.Event()
        try:
            origin.keep(origin.kept() or await origin.connect(self.connect_timeout))
        except FAILURES as exc:
            log.debug("could not connect ahead to %s://%s:%d (%s)", origin.scheme, origin.host, origin.port, _why(exc))
        finally:
            origin.ahead = None
            ahead.set()

    async def open(self, url: str, headers: Mapping[str, str], timeout: float,
                   give_up: float = math.inf) -> Response | None:
        """GET ``url`` (http or https): the response once its head is in, or None for a body
        not framed by ``Content-Length`` (chunked), left to the threaded transport. A kept
        connection the server closed meanwhile (no answer, or a reset) is replaced once,
        quietly (a GET may be sent again). No wait, for the head or the body, lasts longer
        than ``timeout`` or past ``give_up`` (trio's clock)."""
        origin, target, netloc = self._origin(url)
        request = _request(target, {"Host": netloc, "User-Agent": self.user_agent, **headers})
        for _ in range(2):
            try:
                conn, kept = await origin.connection(timeout, give_up)
            except FAILURES as exc:
                raise TransportError(_why(exc)) from None
            conn.timeout, conn.give_up = timeout, give_up
            try:
                await conn.send_all(request)
                conn.ack_promptly()
                return await _response(origin, conn)
            except (_Stale, ConnectionError) as exc:
                conn.close()
                if kept:
                    continue
                raise TransportError(f"the server closed the connection ({_why(exc)})") from None
            except FAILURES as exc:
                conn.close()
                raise TransportError(_why(exc)) from None
            except BaseException:
                conn.close()
                raise
        raise TransportError("kept connections were closed")


@functools.lru_cache(maxsize=URLS_PARSED)
def _parts(url: str) -> tuple[tuple[str, str, int], str, str]:
    """A URL's origin (scheme, host, port), request target and Host header: parsed once per
    URL, as every range of a file is asked at the same URL."""
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, host, port), target, parts.netloc.rpartition("@")[2]


def _why(exc: BaseException) -> str:
    """A failure's name for a log line: a wait that ran out is a ``TimeoutError``, as a
    blocking socket's is (trio calls it ``TooSlowError``)."""
    return "TimeoutError" if isinstance(exc, trio.TooSlowError) else type(exc).__name__


class _Stale(Exception):
    """The connection ended before any byte of a response."""


def _request(target: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"GET {target} HTTP/1.1"] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _response(origin: _Origin, conn: _Connection) -> Response | None:
    """Read a response's head (skipping 1xx); None (the connection closed) if its body is chunked."""
    buffer, got, start = memoryview(conn.head), 0, 0
    while True:
        end = conn.head.find(b"\r\n\r\n", start, got)
        if end < 0:
            if got == len(buffer):
                raise TransportError("the response head is too long")
            n = await conn.recv_into(buffer[got:got + HEAD_READ])
            if not n:
                if got == 0:
                    raise _Stale()
                raise TransportError("the connection closed within a response head")
            got += n
            continue
        version, status, headers = _parse_head(bytes(buffer[start:end]))
        start = end + 4
        if 100 <= status < 200:
            continue
        break
    early = memoryview(bytes(buffer[start:got]))
    encoding = headers.get("transfer-encoding", "identity").lower()
    if encoding != "identity":
        conn.close()
        return None
    keep_alive = headers.get("connection", "").lower()
    reusable = "close" not in keep_alive and (version == "HTTP/1.1" or "keep-alive" in keep_alive)
    if status in NO_BODY:
        length: int | None = 0
    elif (declared := headers.get("content-length")) is not None:
        length = int(declared)
        if length < 0:
            raise ValueError(declared)
    else:
        length = None
    return Response(origin, conn, status, headers, early, length, reusable)


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """Version, status and headers (names in lower case; repeated ones joined with commas)."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, code, *_ = status_line.split(" ", 2)
    if not version.startswith("HTTP/1.") or len(code) != 3:
        raise ValueError(status_line)
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(line)
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return version, int(code), headers

