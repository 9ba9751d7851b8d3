"""HTTP plumbing shared by both origins: parsing, replies, byte serving, request log.

Route handlers are plain functions ``Request -> Reply``; everything about the wire
(keep-alive, Range, chunked framing, HEAD, logging) happens here, once.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import hmac
import json
import logging
import socket
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


FaultHook = Callable[[Request], "Reply | BlobReply | None"]


@dataclass
class OriginSettings:
    """Per-origin switches, read at every request.

    ``faults`` is the single fault-injection hook: called first for every request
    (after it is logged); a reply it returns is sent instead of the route's.
    """

    ignore_range: bool = False
    chunked: bool = False
    faults: FaultHook | None = None


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
        self._entry: dict[str, Any] = {
            "origin": req.origin,
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "headers": headers,
            "status": None,
            "time": time.time(),
            "bytes_sent": 0,
        }
        self.server.request_log.add(self._entry)
        try:
            hook = self.server.settings.faults
            reply = (hook(req) if hook else None) or self.server.router(req)
        except Exception:
            log.exception("emulator route failed: %s %s", req.method, req.path)
            reply = json_reply(500, {"error": "internal emulator error"})
        try:
            if isinstance(reply, BlobReply):
                serve_blob(self, req, reply, self.server.settings)
            else:
                self.begin(reply.status, reply.headers, len(reply.body))
                if req.method != "HEAD":
                    self.send_body(reply.body)
        except (ConnectionError, TimeoutError):  # the client went away mid-response
            self.close_connection = True

    def begin(self, status: int, headers: dict[str, str], length: int | None) -> None:
        """Status line and headers; ``length=None`` means chunked framing."""
        self._entry["status"] = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def send_body(self, data: bytes | memoryview) -> None:
        # Counted before the write so the log is final by the time the client has the bytes.
        self._entry["bytes_sent"] += len(data)
        self.wfile.write(data)

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
    ranges = reply.ranges and not settings.ignore_range
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
        headers["Content-Range"] = f"bytes {first}-{last}/{total}"
    count = last - first + 1
    handler.begin(status, headers, count if sized else None)
    if req.method != "HEAD":
        handler.send_chunks(reply.blob.chunks(first, count), chunked=not sized)
