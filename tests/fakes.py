"""The network without sockets: the emulator's routes answered in-process, for engine tests.

``InProcessOrigin`` serves a ``World`` (the emulator's data and routes) on two made-up
origins; ``ApiTransport`` (httpx) and ``ByteTransport`` (the engine's urllib3 seam) call it
directly, so a core runs against the documented APIs in milliseconds. ``ByteTransport`` can
fail the k-th call (mountpoint-s3's habit): refuse it, answer a status, or cut its body.
"""

from __future__ import annotations

import math
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Mapping

import httpx
import trio

from artifactfs.emulator import routes, storage
from artifactfs.emulator.server import (BlobReply, OriginSettings, RangeNotSatisfiable, Reply, Request, RequestLog,
                                       parse_range)
from artifactfs.emulator.world import World
from artifactfs.transport import TransportError

API = "http://api.test"
STORAGE = "http://storage.test"


class InProcessOrigin:
    """The API and storage origins of ``world``, answering parsed requests directly."""

    def __init__(self, world: World) -> None:
        self.world = world
        world.api_url, world.storage_url = API, STORAGE
        self.log = RequestLog()
        self._api = routes.api_router(world, self.log)

    def base_urls(self) -> dict[str, str]:
        return {kind: API + declared.base_path for kind, declared in self.world.types.items()}

    def settings(self, url: str) -> OriginSettings:
        """The switches of the origin ``url`` is on (``World.set(api_ignore_range=...)``)."""
        return self.world.origins["storage" if url.startswith(STORAGE) else "api"]

    def answer(self, url: str, headers: Mapping[str, str]) -> Reply | BlobReply:
        parts = urllib.parse.urlsplit(url)
        req = Request("storage" if url.startswith(STORAGE) else "api", "GET", parts.path, parts.query,
                      {k.lower(): v for k, v in headers.items()})
        self.log.add({"origin": req.origin, "method": "GET", "path": req.path, "query": req.query,
                      "headers": req.headers, "status": None, "fault": None, "bytes_sent": 0})
        return storage.route(self.world, req) if req.origin == "storage" else self._api(req)


class ApiTransport(httpx.AsyncBaseTransport):
    """httpx requests answered by the origin (JSON replies and redirects)."""

    def __init__(self, origin: InProcessOrigin) -> None:
        self.origin = origin

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        reply = self.origin.answer(str(request.url), dict(request.headers))
        if isinstance(reply, BlobReply):
            return httpx.Response(200, content=reply.blob.read_all(), headers={"Content-Type": reply.content_type})
        return httpx.Response(reply.status, content=reply.body, headers=reply.headers)


@dataclass
class Failure:
    """What happens to one byte request: ``refuse`` (no connection), ``status`` (answer it),
    ``cut`` (the body breaks off after ``after`` bytes)."""

    kind: str
    status: int = 503
    after: int = 0


class _Body:
    def __init__(self, status: int, headers: dict[str, str], data: memoryview, cut: int | None,
                 piece: int | None = None) -> None:
        self.status, self.headers = status, headers
        self._data, self._pos, self._cut, self._piece = data, 0, cut, piece

    def readinto(self, buffer: memoryview) -> int:
        if self._cut is not None and self._pos >= self._cut:
            raise TransportError("body broke off (injected)")
        end = len(self._data) if self._cut is None else min(len(self._data), self._cut)
        n = min(len(buffer), end - self._pos, self._piece or len(buffer))
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n

    def finish(self) -> None:
        pass


class _HereBody:
    """``_Body`` read as on the trio thread (``wire.Response``)."""

    def __init__(self, body: _Body) -> None:
        self.body, self.status, self.headers = body, body.status, body.headers

    async def readinto(self, buffer: memoryview) -> int:
        await trio.lowlevel.checkpoint()
        return self.body.readinto(buffer)

    def finish(self) -> None:
        self.body.finish()


@dataclass
class ByteTransport:
    """Byte requests answered by the origin as a server would: Range → 206/416, or the whole
    body when the route ignores Range, without a length when it is chunked. ``failures`` maps a
    call number (1-based) to what goes wrong with it; ``cap`` limits every 206 (servers may);
    ``piece`` limits what one receive brings (a socket's bring what has arrived); ``gate``
    holds answers on the trio thread until it is set."""

    origin: InProcessOrigin
    failures: dict[int, Failure] = field(default_factory=dict)
    cap: int | None = None
    piece: int | None = None
    gate: trio.Event | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    preconnects: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, url: str, headers: Mapping[str, str], timeout: float) -> _Body:
        with self._lock:
            self.calls.append((url, headers.get("Range", "")))
            failure = self.failures.get(len(self.calls))
        if failure is not None and failure.kind == "refuse":
            raise TransportError("connection refused (injected)")
        if failure is not None and failure.kind == "status":
            return _Body(failure.status, {}, memoryview(b""), None)
        reply = self.origin.answer(url, headers)
        if isinstance(reply, Reply):
            return _Body(reply.status, {k.lower(): v for k, v in reply.headers.items()}, memoryview(reply.body), None)
        return self._blob(reply, self.origin.settings(url), headers.get("Range"), failure.after if failure else None)

    async def open_here(self, url: str, headers: Mapping[str, str], timeout: float,
                        give_up: float = math.inf) -> _HereBody | None:
        """As ``wire`` answers: a body without a length (chunked) is left to ``open``. With a
        ``gate``, the answer waits until it is set (a request held in flight)."""
        if self.gate is not None:
            with trio.move_on_at(give_up):
                await self.gate.wait()
            if not self.gate.is_set():
                raise TransportError("TimeoutError")
        body = self.open(url, headers, timeout)
        if body.status in (200, 206) and "content-length" not in body.headers:
            return None
        return _HereBody(body)

    def close_here(self) -> None:
        pass

    async def preconnect_here(self, url: str) -> None:
        self.preconnects.append(url)

    def _blob(self, reply: BlobReply, settings: OriginSettings, wanted: str | None, cut: int | None) -> _Body:
        """As ``serve_blob`` answers: the origin's switches only take Range and lengths away."""
        total = reply.blob.size
        headers = {} if not reply.length or settings.chunked else {"content-length": str(total)}
        try:
            span = parse_range(wanted, total) if wanted and reply.ranges and not settings.ignore_range else None
        except RangeNotSatisfiable:
            return _Body(416, {"content-range": f"bytes */{total}"}, memoryview(b""), None)
        if span is None:
            return _Body(200, headers, memoryview(reply.blob.read_all()), cut)
        first, last = span
        if self.cap is not None:
            last = min(last, first + self.cap - 1)
        data = memoryview(reply.blob.read(first, last - first + 1))
        return _Body(206, {"content-range": f"bytes {first}-{last}/{total}", "content-length": str(len(data))},
                     data, cut, self.piece)

    def ranges(self, path_contains: str) -> list[str]:
        """The Range headers of the byte requests whose URL contains ``path_contains``."""
        return [rng for url, rng in self.calls if path_contains in url]
