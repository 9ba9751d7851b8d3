"""HTTP plumbing shared by both origins: parsing, replies, byte serving, request log.

Route handlers are plain functions ``Request -> Reply``; everything about the wire
(keep-alive, Range, chunked framing, HEAD, logging) happens here, once. So does acting
on a ``Fault`` (deciding which one applies is ``_Handler._decide``; the switches are in
``faults``).
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import hmac
import json
import logging
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .blobs import Blob

log = logging.getLogger(__name__)

LOG_CAPACITY = 100_000


@dataclass
class Request:
    """One parsed request, as route handlers see it."""

    origin: str
    method: str
    path: str  # raw (still percent-encoded), without the query
    query: str  # raw query string
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    @property
    def params(self) -> dict[str, str]:
        """Query parameters, first value of each, percent-decoded."""
        return {k: v[0] for k, v in urllib.parse.parse_qs(self.query, keep_blank_values=True).items()}

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Reply:
    """A complete small response."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class BlobReply:
    """A byte response; ``serve_blob`` turns it into 200/206/416 on the wire.

    ``ranges``/``length`` are the endpoint's own behaviour; the origin's
    ``ignore_range``/``chunked`` switches can only take them away.
    """

    blob: Blob
    content_type: str
    etag: str
    last_modified: float
    filename: str | None = None
    ranges: bool = True
    length: bool = True


@dataclass(frozen=True)
class Fault:
    """A misbehaviour decided for one request; ``_Handler`` acts on it (kinds: see ``faults``).

    ``refuse`` (close, no response) and ``hang`` (silence for ``seconds``) replace the
    response; a ``reply`` (``status``, ``throttle``) is sent instead of the route's; ``slow``
    (``rate`` bytes/s, or ``delay`` s before each 64 KiB piece) and ``cut`` (close after
    ``after`` body bytes; None: half) shape the route's body; ``bad_range`` (``shift``,
    ``total``) and ``ignore_range`` change how a Range is answered; ``expire_signatures``
    only marks the log entry (the signer itself refuses the URL).
    """

    kind: str
    reply: Reply | None = None
    seconds: float = 0.0
    rate: float | None = None
    delay: float | None = None
    after: int | None = None
    shift: int = 0
    total: int | None = None


FaultHook = Callable[[Request], "Reply | BlobReply | Fault | None"]
SLOW_PIECE = 64 * 1024


class _Stop(Exception):
    """Stop the response here and close the connection (a cut, or the emulator stopping)."""


@dataclass
class OriginSettings:
    """Per-origin switches, read at every request.

    Fault hooks are called first for every request (after it is logged): ``faults``, a
    custom hook a test may assign, then ``fault_switches`` (the origin's ``FaultSwitches``,
    ``World.faults(origin)``); the first non-None answer counts. A Reply/BlobReply is
    sent instead of the route's; a ``Fault`` is acted on by the handler.
    """

    ignore_range: bool = False
    chunked: bool = False
    faults: FaultHook | None = None
    fault_switches: FaultHook | None = None


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Reply(status, body, {"Content-Type": "application/json", **(headers or {})})


def xml_reply(status: int, xml: str) -> Reply:
    return Reply(status, xml.encode(), {"Content-Type": "application/xml; charset=UTF-8"})


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def content_disposition(filename: str) -> str:
    """``attachment; filename="..."``, plus RFC 6266 ``filename*`` when the name is not plain ASCII."""
    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    value = f'attachment; filename="{plain}"'
    if plain != filename:
        value += "; filename*=UTF-8''" + urllib.parse.quote(filename, safe="")
    return value


class AuthProblem(Enum):
    MISSING = "missing"
    INVALID = "invalid"


def bearer_problem(req: Request, token: str) -> AuthProblem | None:
    """The one bearer-token check every provider uses; providers word the error."""
    header = req.headers.get("authorization", "")
    if not header:
        return AuthProblem.MISSING
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        return AuthProblem.INVALID
    return None


def path_parts(path: str, prefix: str) -> list[str]:
    """Percent-decoded segments of ``path`` after ``prefix`` (split before decoding)."""
    rest = path[len(prefix) :].strip("/")
    return [urllib.parse.unquote(p) for p in rest.split("/")] if rest else []


class RangeNotSatisfiable(Exception):
    """The Range header asks only for bytes past the end (416)."""


def parse_range(header: str, total: int) -> tuple[int, int] | None:
    """``(first, last)`` of one satisfiable byte range, or None to ignore the header.

    Malformed and multi-range headers are ignored (a full 200), which RFC 9110 allows.
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash or not (first_s.isdigit() or last_s.isdigit()):
        return None
    if not first_s:  # suffix: the last n bytes
        n = int(last_s)
        if not n or not total:
            raise RangeNotSatisfiable
        return max(0, total - n), total - 1
    first = int(first_s)
    last = int(last_s) if last_s else total - 1
    if last_s and last < first:
        return None
    if first >= total:
        raise RangeNotSatisfiable
    return first, min(last, total - 1)


class RequestLog:
    """Thread-safe bounded record of every request to either origin."""

    def __init__(self, capacity: int = LOG_CAPACITY) -> None:
        self._entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self, origin: str | None = None, path_contains: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = list(self._entries)
        return [
            dict(e, headers=dict(e["headers"]))
            for e in found
            if (origin is None or e["origin"] == origin) and (path_contains is None or path_contains in e["path"])
        ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class Origin(ThreadingHTTPServer):
    """One listening origin: a router, its switches and the shared log."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(
        self,
        name: str,
        address: tuple[str, int],
        router: Callable[[Request], Reply | BlobReply],
        settings: OriginSettings,
        request_log: RequestLog,
    ) -> None:
        self.name = name
        self.router = router
        self.settings = settings
        self.request_log = request_log
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.closing = threading.Event()  # set by shutdown(): hangs and slow bodies end at once
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def shutdown(self) -> None:
        self.closing.set()
        super().shutdown()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal (no stderr traceback); anything else is logged."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        log.exception("emulator %s origin: error serving %s", self.name, client_address)

    def drop_connections(self) -> None:
        """Cut idle keep-alive connections so a stopped origin really stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # header and body go out as separate writes
    timeout = 300  # idle keep-alive connections are closed after this
    server: Origin

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the RequestLog records every request, and stderr must never carry tokens."""

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        raw_path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        req = Request(self.server.name, self.command, raw_path, query, headers, self.rfile.read(length))
        self.fault: Fault | None = None
        self._body_left: int | None = None  # cut: body bytes still to send
        self._body_start = 0.0  # slow: when the body began
        self._entry: dict[str, Any] = {
            "origin": req.origin,
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "headers": headers,
            "status": None,
            "time": time.time(),
            "bytes_sent": 0,
            "fault": None,  # the kind of fault injected into this request, if any
        }
        self.server.request_log.add(self._entry)
        reply: Reply | BlobReply | None = None
        try:
            answer = self._decide(req)
            if isinstance(answer, Fault):
                self.fault = answer
                self._entry["fault"] = answer.kind
                answer = answer.reply
            if answer is None and not (self.fault and self.fault.kind in ("refuse", "hang")):
                answer = self.server.router(req)
            reply = answer
        except Exception:
            log.exception("emulator route failed: %s %s", req.method, req.path)
            reply = json_reply(500, {"error": "internal emulator error"})
        try:
            if reply is None:  # refuse or hang
                self._withhold()
            elif isinstance(reply, BlobReply):
                serve_blob(self, req, reply, self.server.settings)
            else:
                self.begin(reply.status, reply.headers, len(reply.body))
                if req.method != "HEAD":
                    self.send_body(reply.body)
        except (ConnectionError, TimeoutError, _Stop):  # the client went away, or the body was cut
            self.close_connection = True

    def _decide(self, req: Request) -> Reply | BlobReply | Fault | None:
        """The one place a request's fault is decided: the custom hook, else the fault switches."""
        settings = self.server.settings
        for hook in (settings.faults, settings.fault_switches):
            answer = hook(req) if hook else None
            if answer is not None:
                return answer
        return None

    def _withhold(self) -> None:
        """``refuse``: close at once, with a reset where the OS allows; ``hang``: silence, then close."""
        assert self.fault is not None
        self.close_connection = True
        if self.fault.kind == "hang":
            self.server.closing.wait(self.fault.seconds)
            return
        # Linger 0: the final close sends RST, not FIN. Closing here only drops this
        # reference; the socket really closes when the handler's files let go of it.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def begin(self, status: int, headers: dict[str, str], length: int | None, size: int | None = None) -> None:
        """Status line and headers; ``length=None`` means chunked framing (then ``size`` is the body's)."""
        self._entry["status"] = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        size = length if size is None else size
        if self.fault is not None and self.fault.kind == "cut" and size is not None:
            self._body_left = min(size, size // 2 if self.fault.after is None else self.fault.after)
        self._body_start = time.monotonic()

    def send_body(self, data: bytes | memoryview) -> None:
        """Body bytes, as the fault (if any) allows: throttled for ``slow``, cut short for ``cut``."""
        fault = self.fault
        if fault is not None and fault.kind == "slow":
            self._send_slowly(memoryview(data), fault)
            return
        if self._body_left is not None:
            data = data[: self._body_left]
            self._body_left -= len(data)
            self._write_body(data)
            if not self._body_left:
                raise _Stop
            return
        self._write_body(data)

    def _write_body(self, data: bytes | memoryview) -> None:
        # Counted before the write so the log is final by the time the client has the bytes.
        self._entry["bytes_sent"] += len(data)
        self.wfile.write(data)

    def _send_slowly(self, view: memoryview, fault: Fault) -> None:
        """``rate``: no body byte goes out before ``start + offset / rate``; ``delay``: a pause before each piece."""
        piece = SLOW_PIECE if fault.rate is None else max(1, min(SLOW_PIECE, int(fault.rate / 20)))
        for pos in range(0, len(view), piece):
            part = view[pos : pos + piece]
            if fault.rate is not None:
                pause = self._body_start + (self._entry["bytes_sent"] + len(part)) / fault.rate - time.monotonic()
            else:
                pause = fault.delay or 0.0
            if pause > 0 and self.server.closing.wait(pause):
                raise _Stop
            self._write_body(part)

    def send_chunks(self, chunks: Iterable[memoryview], chunked: bool) -> None:
        for chunk in chunks:
            if chunked:
                self.wfile.write(b"%x\r\n" % len(chunk))
            self.send_body(chunk)
            if chunked:
                self.wfile.write(b"\r\n")
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


def serve_blob(handler: _Handler, req: Request, reply: BlobReply, settings: OriginSettings) -> None:
    """The one byte-serving path: Range (206/416), HEAD, ETag, Last-Modified, chunked or sized."""
    total = reply.blob.size
    fault = handler.fault
    ranges = reply.ranges and not settings.ignore_range and not (fault and fault.kind == "ignore_range")
    sized = reply.length and not settings.chunked
    headers = {
        "Content-Type": reply.content_type,
        "ETag": reply.etag,
        "Last-Modified": http_date(reply.last_modified),
    }
    if reply.filename is not None:
        headers["Content-Disposition"] = content_disposition(reply.filename)
    if ranges:
        headers["Accept-Ranges"] = "bytes"
    first, last, status = 0, total - 1, 200
    try:
        wanted = parse_range(req.headers["range"], total) if ranges and "range" in req.headers else None
    except RangeNotSatisfiable:
        headers["Content-Range"] = f"bytes */{total}"
        handler.begin(416, headers, 0)
        return
    if wanted is not None:
        first, last = wanted
        status = 206
        shown_total = total
        if fault is not None and fault.kind == "bad_range":  # other bytes than asked, labelled as such
            first = min(max(first + fault.shift, 0), total - 1)
            last = min(first + (wanted[1] - wanted[0]), total - 1)
            shown_total = total if fault.total is None else fault.total
        headers["Content-Range"] = f"bytes {first}-{last}/{shown_total}"
    count = last - first + 1
    handler.begin(status, headers, count if sized else None, size=count)
    if req.method != "HEAD":
        handler.send_chunks(reply.blob.chunks(first, count), chunked=not sized)
