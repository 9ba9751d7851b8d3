"""The one HTTP layer: provider API calls (httpx) and byte ranges (``transport``: a range a
reader waits for, up to ``HERE_MAX``, on the trio thread with ``wire``; readahead, larger
ranges and whole bodies in worker threads).

Why two clients: httpx is trio-native and right for small JSON, but streams bytes at about a
tenth of what loopback allows; ``http.client``'s ``readinto`` reaches machine speed (DESIGN.md),
and so does ``wire``'s, without a thread hop or ``http.client``'s header parsing.
This module is the one owner of retries, backoff, deadlines, errno mapping and token scoping:
nothing above it retries. Log levels rise with the attempts (INFO, then WARNING); giving up
raises an ``FsError`` whose message says why, and the layer that answers the reader logs it
once. The token (and any auth query parameter) goes only to the ``base_url`` origin.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Coroutine, Mapping, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import trio

from .errors import FsError, RemoteError, error_for_status
from .model import Source
from .transport import (ApiTransport, ByteResponse, ByteTransport, HereResponse, TransportError, WireError,
                        api_client, default_transport)
from .wire import URLS_PARSED
from .workers import workers

log = logging.getLogger("artifactfs.http")
T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
ORIGINS_AHEAD = 4  # byte origins per provider that listings have connected to ahead
READ_TIMEOUT = 30.0  # per attempt; [mount] timeout
MAX_ATTEMPTS = 4
MAX_RESOLVES = 3
MAX_REDIRECTS = 5
BACKOFF_BASE = 0.2
BACKOFF_CAP = 5.0
RETRY_AFTER_CAP = 30.0
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REFUSED_BY_STORAGE = frozenset({400, 401, 403, 410})
FETCH_THREADS = 16
HERE_MAX = 1 << 20  # ranges up to this are read on the trio thread (``wire``)

Classifier = Callable[[int, Any], "type[FsError] | None"]
"""``classify(status, json_body)``: a provider's own error bodies (a 200 with ``success: false``)."""


def deadline_for(timeout: float) -> float:
    """How long one request may take in all, retries and backoff included."""
    return 2 * timeout + min(timeout, 2 * BACKOFF_CAP)


@functools.lru_cache(maxsize=URLS_PARSED)
def origin_of(url: str) -> tuple[str, str, int]:
    """Scheme, host and port: two URLs may share a token only when these are equal."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or (443 if parts.scheme == "https" else 80)


@functools.lru_cache(maxsize=URLS_PARSED)
def url_path(url: str) -> str:
    """The path of a URL, for log lines: never the query, which may hold a signature."""
    return urlsplit(url).path or "/"


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Exponential backoff with full jitter, or the server's Retry-After (seconds or an HTTP
    date, capped) when it gives a usable one."""
    if retry_after:
        seconds: float | None
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(retry_after).timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
        if seconds is not None and math.isfinite(seconds):
            return min(max(seconds, 0.0), RETRY_AFTER_CAP)
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def _log_attempt(where: str, reason: str, attempt: int) -> None:
    """One line per failed attempt; louder as they add up."""
    level = logging.WARNING if attempt >= 2 else logging.INFO
    log.log(level, "%s: %s (attempt %d/%d, retrying)", where, reason, attempt, MAX_ATTEMPTS)


class Sink(Protocol):
    """Where ``HttpClient.fetch`` puts bytes (its methods run in a worker thread, or on the trio
    thread for a range read there)."""

    def begin(self, first: int, total: int | None, ranged: bool) -> None:
        """The body starts at byte ``first`` of the file; ``ranged`` is False when the server
        ignored Range and sends the whole file; ``total`` is the file's size if given."""

    def window(self, pos: int) -> memoryview | None:
        """A writable buffer for the bytes at ``pos``, or None to stop reading."""

    def wrote(self, pos: int, n: int) -> None:
        """``n`` bytes were written at ``pos`` into the last window."""

    def eof(self, pos: int) -> None:
        """The file ends at ``pos`` (a whole body read to its clean end, or a 416)."""


class _Retry(Exception):
    """This attempt failed but another may work; ``pos`` is where to resume."""

    def __init__(self, reason: str, pos: int, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.pos, self.retry_after = pos, retry_after


class _OutOfTime(Exception):
    """The deadline passed while a worker thread's attempt ran: it is left behind."""


class _Refused(Exception):
    """Storage refused a signed or redirected URL: resolve it again, resume at ``pos``."""

    def __init__(self, reason: str, pos: int) -> None:
        super().__init__(reason)
        self.pos = pos


Opener = Callable[[str, Mapping[str, str], float], Awaitable[HereResponse | None]]
"""``await opener(url, headers, timeout)``: a byte response, or None where it declines (``open_here``)."""

SourceFn = Callable[[bool], Awaitable[Source]]
"""``await source(refresh)``: where the bytes are; ``refresh=True`` after storage refused it."""


class HttpClient:
    """One per provider: knows its base URL, its credentials and whom they may go to."""

    def __init__(self, provider: str, base_url: str, headers: Mapping[str, str], *,
                 params: Mapping[str, str] | None = None, timeout: float = READ_TIMEOUT,
                 classify: Classifier | None = None, api_transport: httpx.AsyncBaseTransport | None = None,
                 byte_transport: ByteTransport | None = None) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._origin = origin_of(self.base_url)
        self._headers = dict(headers)
        self._params = dict(params or {})
        self._classify = classify
        self.timeout = timeout
        self.deadline = deadline_for(timeout)
        connect = min(timeout, CONNECT_TIMEOUT)
        self._own_api = None if api_transport is not None else ApiTransport(connect)
        self._api = api_client(timeout, connect, api_transport or self._own_api)
        self._bytes = byte_transport or default_transport()
        self._threads = trio.CapacityLimiter(FETCH_THREADS)
        self._threaded: set[tuple[str, str, int]] = set()  # origins read only in worker threads
        self._listed_origins: set[tuple[str, str, int]] = set()
        self._to_connect, self._connect_ahead = trio.open_memory_channel[str](ORIGINS_AHEAD)

    async def preconnect(self) -> None:
        """Open a connection to the API's origin before the first call needs it: a fresh
        mount's first lookup waits for its listing, and so for the connect (and, on a real
        API, the TLS handshake). Nothing is sent; a failure is left to that first call."""
        if self._own_api is not None:
            await self._own_api.preconnect(self.base_url)

    async def connect_ahead(self) -> None:
        """While the core runs: connect to the byte origins that listings name (``listed``)."""
        async for url in self._connect_ahead:
            await self._bytes.preconnect_here(url)

    def listed(self, url: str) -> None:
        """A listing gave ``url`` to read a file from: its origin is connected to ahead (once,
        for the first ``ORIGINS_AHEAD`` origins), so a first read after a listing finds the
        connection made: a fresh core's first 16 KiB read took 1.26 ms, 0.61 with it; against
        a real store, it saves the TLS handshake of a file read after ``ls``. Nothing is
        sent, so nothing is resolved."""
        origin = origin_of(url)
        if origin in self._listed_origins or len(self._listed_origins) >= ORIGINS_AHEAD:
            return
        self._listed_origins.add(origin)
        try:
            self._to_connect.send_nowait(url)
        except trio.WouldBlock:  # nobody connects ahead (no core runs): the read will connect
            pass

    async def aclose(self) -> None:
        await self._api.aclose()
        self._bytes.close_here()

    def url(self, path: str) -> str:
        """An absolute URL for ``path`` below ``base_url`` (an absolute URL is kept as is)."""
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + "/" + path.lstrip("/")

    def own_origin(self, url: str) -> bool:
        return origin_of(url) == self._origin

    def source(self, url: str, *, expires_at: float | None = None, size: int | None = None) -> Source:
        """A byte source; carries the credentials only if ``url`` is on the ``base_url`` origin."""
        url = self.url(url)
        if not self.own_origin(url):
            return Source(url, (), expires_at, size)
        if self._params:
            url += ("&" if urlsplit(url).query else "?") + urlencode(self._params)
        return Source(url, tuple(self._headers.items()), expires_at, size)

    # ---- API calls ---------------------------------------------------------------------------

    async def request(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """GET an API URL with retries; the response, or the mapped FsError.

        Redirects are not followed: a 3xx is returned as is (vm0's 302), so the caller decides
        where the token may go.
        """
        return (await self._checked(path, params))[0]

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET and parse JSON; a body that is not JSON is an EIO."""
        resp, body = await self._checked(path, params)
        if body is None:
            raise RemoteError(f"{self.provider}: {url_path(str(resp.url))}: the answer is not JSON")
        return body

    async def _checked(self, path: str, params: Mapping[str, Any] | None) -> tuple[httpx.Response, Any]:
        url = self.url(path)
        with trio.move_on_after(self.deadline):
            return await self._request(url, params)
        raise RemoteError(f"{self.provider}: {url_path(url)}: no answer within {self.deadline:.0f} s")

    async def _request(self, url: str, params: Mapping[str, Any] | None) -> tuple[httpx.Response, Any]:
        where = f"{self.provider}: GET {url_path(url)}"
        own = self.own_origin(url)
        query = {**(params or {}), **(self._params if own else {})}
        headers = self._headers if own else {}
        reason = ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            started = time.monotonic()
            try:
                resp = await self._api.get(url, params=query, headers=headers)
            except httpx.TransportError as exc:
                reason = str(exc) if isinstance(exc, WireError) else type(exc).__name__
                retry_after = None
            else:
                log.debug("%s -> %d in %.0f ms", where, resp.status_code, (time.monotonic() - started) * 1000)
                if resp.status_code not in TRANSIENT_STATUSES:
                    return resp, self._judge(where, resp)
                reason, retry_after = f"HTTP {resp.status_code}", resp.headers.get("retry-after")
            if attempt == MAX_ATTEMPTS:
                break
            _log_attempt(where, reason, attempt)
            await trio.sleep(retry_delay(attempt, retry_after))
        raise RemoteError(f"{where}: {reason}, {MAX_ATTEMPTS} attempts")

    def _judge(self, where: str, resp: httpx.Response) -> Any:
        """The JSON body of a final answer (None if it has none), or the FsError it means."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        error = self._classify(resp.status_code, body) if self._classify else None
        if error is not None:
            raise error(f"{where}: HTTP {resp.status_code}, the answer says it failed")
        if resp.status_code >= 400:
            raise error_for_status(resp.status_code)(f"{where}: HTTP {resp.status_code}")
        return body

    # ---- bytes -------------------------------------------------------------------------------

    async def fetch(self, source: SourceFn, start: int, end: int | None, sink: Sink, *,
                    known: Source | None = None, deadline: float | None = None, here: bool = False) -> None:
        """Stream bytes ``[start, end)`` (to the end of the file if ``end`` is None) into ``sink``.

        Transient failures (connection errors, 408/429/5xx, a body cut short, a 206 that is not
        what was asked) are retried with backoff and the download resumes where it stopped; an
        attempt that made progress resets the count. A refused signed URL is resolved again
        (``source(True)``), at most ``MAX_RESOLVES`` times. A 206 shorter than asked (servers
        may cap ranges) is followed by a request for the rest. Everything is bounded by one
        deadline (default: the client's). ``known``: a source valid now, so the first attempt
        asks nobody. ``here``: a reader waits for exactly this fetch, so a range up to
        ``HERE_MAX`` is read on the trio thread (no thread to hop to and back); readahead goes
        to worker threads, which receive beside the trio thread's other work.

        The deadline costs no cancel scope where nothing waits but the trio thread's own
        sockets (each scope entered and left cost ~11 µs here, ~10% of a random 4 KiB read):
        ``wire`` ends those waits at ``give_up`` itself; asking for a source, a worker thread's
        attempt and a pause between attempts each run within it as well.
        """
        reason = "no answer"
        current: Source | None = None
        pos, failures, resolves, refresh = start, 0, 0, False

        def where() -> str:  # made only for a message: a URL parsed per fetch cost ~3 µs
            return self.provider if current is None else f"{self.provider}: {url_path(current.url)}"

        limit = self.deadline if deadline is None else deadline
        give_up = trio.current_time() + limit
        while trio.current_time() < give_up:
            if known is None or refresh:
                with trio.CancelScope(deadline=give_up) as scope:
                    known = await source(refresh)
                if scope.cancelled_caught:
                    break
            current, known, refresh = known, None, False
            try:
                pos, done = await self._attempt(current, pos, end, sink, here, give_up)
                if done:
                    return
                failures = 0
            except _Retry as exc:
                failures = 1 if exc.pos > pos else failures + 1  # progress starts the count again
                pos, reason = exc.pos, str(exc)
                if trio.current_time() >= give_up:
                    break
                if failures >= MAX_ATTEMPTS:
                    raise RemoteError(f"{where()}: {reason}, {MAX_ATTEMPTS} attempts") from None
                _log_attempt(where(), reason, failures)
                await trio.sleep_until(min(trio.current_time() + retry_delay(failures, exc.retry_after), give_up))
            except _Refused as exc:
                pos, resolves, reason = exc.pos, resolves + 1, str(exc)
                if resolves > MAX_RESOLVES:
                    raise RemoteError(f"{where()}: {exc}; gave up after {MAX_RESOLVES} new URLs") from None
                log.info("%s: %s; resolving the URL again", where(), exc)
                refresh = True
            except _OutOfTime:
                break
        raise RemoteError(f"{where()}: gave up after {limit:.0f} s ({reason}, at byte {pos})")

    async def _attempt(self, source: Source, pos: int, end: int | None, sink: Sink, here: bool,
                       give_up: float) -> tuple[int, bool]:
        """One attempt: on the trio thread (``here``) for a range up to ``HERE_MAX``, else (or
        where the trio thread cannot) in a worker thread, which is left behind at ``give_up``."""
        if here and end is not None and end - pos <= HERE_MAX and (origin := origin_of(source.url)) not in self._threaded:
            done = await self.attempt_here(source, pos, end, sink, give_up)
            if done is not None:
                return done
            self._threaded.add(origin)
        with trio.CancelScope(deadline=give_up):
            async with self._threads:
                return await workers().run(self.attempt, source, pos, end, sink, abandon_on_cancel=True)
        raise _OutOfTime()

    def attempt(self, source: Source, pos: int, end: int | None, sink: Sink) -> tuple[int, bool]:
        """One request for ``[pos, end)``, blocking (in a worker thread): (next position,
        finished). A failure worth another attempt raises ``_Retry`` or ``_Refused``, for
        ``fetch`` to handle."""
        done = _blocking(self._attempt_with(self._open_blocking, source, pos, end, sink, whole=True))
        assert done is not None  # a blocking open never declines
        return done

    async def attempt_here(self, source: Source, pos: int, end: int | None, sink: Sink,
                           give_up: float = math.inf) -> tuple[int, bool] | None:
        """``attempt`` on the trio thread, for ranges small enough to read there (no thread to
        hop to and back); None, having read nothing, where a worker thread must: through a
        proxy, a chunked body, or a whole body (the server ignored Range: the disk queue may
        make its sink wait). ``fetch`` then asks that origin in worker threads from then on.
        No wait on its sockets lasts past ``give_up`` (trio's clock)."""
        return await self._attempt_with(functools.partial(self._bytes.open_here, give_up=give_up), source, pos, end,
                                        sink, whole=False)

    async def _open_blocking(self, url: str, headers: Mapping[str, str], timeout: float) -> HereResponse:
        return _Blocking(self._bytes.open(url, headers, timeout))

    async def _attempt_with(self, opener: Opener, source: Source, pos: int, end: int | None, sink: Sink, *,
                            whole: bool) -> tuple[int, bool] | None:
        """One request for ``[pos, end)`` through ``opener``, the code of both ``attempt`` and
        ``attempt_here``; None, having read nothing, where ``opener`` declines or a whole body
        comes that is not ``whole``'s to read."""
        headers = {**dict(source.headers), "Range": f"bytes={pos}-{'' if end is None else end - 1}",
                   "Accept-Encoding": "identity"}
        opened = await self._open(opener, source, headers, pos)
        if opened is None:
            return None
        resp, url = opened
        where = f"{self.provider}: {url_path(url)}"
        try:
            status = resp.status
            if status == 416:
                total = _total_of(resp.headers.get("content-range"))
                sink.begin(pos, total, True)
                sink.eof(pos if total is None else min(pos, total))
                return pos, True
            if status == 206:
                try:
                    first, last, total = _parse_content_range(resp.headers.get("content-range"))
                except ValueError:
                    raise _Retry(f"malformed Content-Range {resp.headers.get('content-range')!r}", pos) from None
                length = _int_or_none(resp.headers.get("content-length"))
                if first != pos or (total is not None and last >= total) or (
                        length is not None and length != last - first + 1):
                    raise _Retry(f"the answer holds bytes {first}-{last}/{total}, not {pos}-", pos)
                sink.begin(first, total, True)
                stop = last + 1 if end is None else min(last + 1, end)
                pos, how = await self._copy(resp, sink, pos, stop)
                finished = how == "stopped" or (end is not None and pos >= end) or (total is not None and pos >= total)
                return pos, finished
            if status == 200:
                if not whole:
                    return None
                total = _int_or_none(resp.headers.get("content-length"))
                sink.begin(0, total, False)
                reached, how = await self._copy(resp, sink, 0, total)
                if how != "stopped":
                    sink.eof(reached)
                return max(reached, pos), True
            if status in REFUSED_BY_STORAGE and not source.headers:
                raise _Refused(f"storage answered HTTP {status}", pos)
            if status in TRANSIENT_STATUSES:
                raise _Retry(f"HTTP {status}", pos, resp.headers.get("retry-after"))
            raise error_for_status(status)(f"{where}: HTTP {status}")
        finally:
            resp.finish()

    async def _open(self, opener: Opener, source: Source, headers: dict[str, str],
                    pos: int) -> tuple[HereResponse, str] | None:
        """The response for ``source``, following redirects (credentials only to our origin);
        None where ``opener`` declines."""
        url = source.url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = await opener(url, headers, self.timeout)
            except TransportError as exc:
                raise _Retry(str(exc), pos) from None
            if resp is None:
                return None
            location = resp.headers.get("location")
            if resp.status not in (301, 302, 303, 307, 308) or not location:
                return resp, url
            resp.finish()
            url = str(httpx.URL(url).join(location))
            headers = {k: v for k, v in headers.items() if k in ("Range", "Accept-Encoding") or self.own_origin(url)}
        raise RemoteError(f"{self.provider}: {url_path(url)}: too many redirects")

    @staticmethod
    async def _copy(resp: HereResponse, sink: Sink, pos: int, stop: int | None) -> tuple[int, str]:
        """Body bytes from ``pos`` until ``stop`` (or the body's end) into the sink: the position
        reached, and how: ``"stopped"`` (the sink wanted no more), else the body's end. A body
        that ends before ``stop`` is cut short: retried from where it ended."""
        while stop is None or pos < stop:
            view = sink.window(pos)
            if view is None:
                return pos, "stopped"
            if stop is not None:
                view = view[:stop - pos]
            try:
                n = await resp.readinto(view)
            except TransportError as exc:
                raise _Retry(str(exc), pos) from None
            if not n:
                if stop is not None:
                    raise _Retry(f"the body ended {stop - pos} bytes short", pos)
                return pos, "ended"
            sink.wrote(pos, n)
            pos += n
        return pos, "ended"


class _Blocking:
    """A blocking response seen as one read on the trio thread: its ``readinto`` is awaitable
    but never suspends, so one attempt's code serves both paths (``_blocking`` runs it)."""

    def __init__(self, resp: ByteResponse) -> None:
        self._resp, self.status, self.headers = resp, resp.status, resp.headers

    async def readinto(self, buffer: memoryview) -> int:
        return self._resp.readinto(buffer)

    def finish(self) -> None:
        self._resp.finish()


def _blocking(coro: Coroutine[Any, Any, T]) -> T:
    """The result of ``coro``, run to its end in this thread: it awaits only ``_Blocking``
    responses, so it never suspends."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a blocking attempt suspended")


def _int_or_none(text: str | None) -> int | None:
    try:
        value = int(text) if text is not None else None
    except ValueError:
        return None
    return value if value is None or value >= 0 else None


def _parse_content_range(value: str | None) -> tuple[int, int, int | None]:
    """``bytes a-b/total`` → (a, b, total or None); ValueError if malformed."""
    unit, _, rest = (value or "").strip().partition(" ")
    span, _, total = rest.partition("/")
    first, _, last = span.partition("-")
    if unit.lower() != "bytes" or int(last) < int(first) or int(first) < 0:
        raise ValueError(value)
    return int(first), int(last), (None if total.strip() == "*" else int(total))


def _total_of(value: str | None) -> int | None:
    return _int_or_none((value or "").rpartition("/")[2] or None)
