"""The one HTTP layer: provider API calls (httpx) and bulk byte ranges (urllib3 in threads).

Why two clients: httpx is trio-native and right for small JSON, but streams bytes at about a
tenth of what loopback allows; urllib3's ``readinto`` reaches machine speed (see DESIGN.md).
Both share the same timeouts, retry policy, errno mapping and token scoping, which live here
and nowhere else. The token is attached only to URLs on the provider's ``base_url`` origin.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping
from urllib.parse import urljoin, urlsplit

import httpx
import trio
import urllib3

from .errors import FsError, NotFound, RemoteError, SourceExpired, error_for_status
from .model import Source

log = logging.getLogger("artifactfs.http")

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.2
BACKOFF_CAP = 5.0
RETRY_AFTER_CAP = 30.0
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

Classifier = Callable[[int, Any], "type[FsError] | None"]


def origin_of(url: str) -> tuple[str, str, int]:
    """Scheme, host and port: two URLs may share a token only when these are equal."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def url_path(url: str) -> str:
    """The path of a URL, for log lines: never the query, which may hold a signature."""
    return urlsplit(url).path or "/"


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Exponential backoff with full jitter, or the server's Retry-After when it gives one."""
    if retry_after:
        seconds: float | None
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(retry_after).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None:
            return min(max(seconds, 0.0), RETRY_AFTER_CAP)
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


@dataclass
class RangeResult:
    """What a range fetch learned: bytes written into the buffer and the file's total size."""

    nread: int
    total: int | None


class HttpClient:
    """One per provider: knows its base URL, its auth headers and whom they may go to."""

    def __init__(self, provider: str, base_url: str, auth_headers: Mapping[str, str],
                 pool: urllib3.PoolManager | None = None) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._origin = origin_of(self.base_url)
        self._auth = dict(auth_headers)
        self._api = httpx.AsyncClient(
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
            headers={"User-Agent": "artifactfs", "Accept": "application/json"},
        )
        self._pool = pool or shared_pool()

    async def aclose(self) -> None:
        await self._api.aclose()

    def url(self, path: str) -> str:
        """An absolute URL for ``path`` below ``base_url`` (an absolute URL is kept as is)."""
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + "/" + path.lstrip("/")

    def headers_for(self, url: str) -> dict[str, str]:
        """Auth headers for ``url``: only when it is on the provider's own origin."""
        return dict(self._auth) if origin_of(url) == self._origin else {}

    def source(self, url: str, *, expires_at: float | None = None, size: int | None = None) -> Source:
        """A byte source; carries the token only if ``url`` is on the ``base_url`` origin."""
        url = self.url(url)
        return Source(url, tuple(self.headers_for(url).items()), expires_at, size)

    async def request(self, path: str, params: Mapping[str, Any] | None = None, *,
                      classify: Classifier | None = None, follow: bool = False) -> httpx.Response:
        """GET an API URL with retries; returns the response or raises the mapped FsError.

        ``classify(status, json_body)`` lets a provider map its own error bodies (a 200 with
        ``success: false``). With ``follow=False`` a 3xx is returned as is (vm0's 302).
        """
        url = self.url(path)
        last: str = ""
        for attempt in range(MAX_ATTEMPTS):
            started = time.monotonic()
            try:
                resp = await self._api.get(url, params=params, headers=self.headers_for(url))
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
                log.warning("%s: GET %s failed: %s (attempt %d/%d)", self.provider, url_path(url),
                            last, attempt + 1, MAX_ATTEMPTS)
                await trio.sleep(retry_delay(attempt, None))
                continue
            log.debug("%s: GET %s -> %d in %.0f ms", self.provider, url_path(url), resp.status_code,
                      (time.monotonic() - started) * 1000)
            if resp.status_code in TRANSIENT_STATUSES:
                last = f"HTTP {resp.status_code}"
                log.warning("%s: GET %s -> %s (attempt %d/%d)", self.provider, url_path(url), last,
                            attempt + 1, MAX_ATTEMPTS)
                await trio.sleep(retry_delay(attempt, resp.headers.get("retry-after")))
                continue
            body = _json_or_none(resp)
            error = classify(resp.status_code, body) if classify else None
            if error is None and resp.status_code >= 400:
                error = error_for_status(resp.status_code)
            if error is not None:
                log.log(logging.INFO if error is NotFound else logging.WARNING,
                        "%s: GET %s -> HTTP %d (%s)", self.provider, url_path(url),
                        resp.status_code, error.__name__)
                raise error(f"{self.provider}: {url_path(url)}: HTTP {resp.status_code}")
            if 300 <= resp.status_code < 400 and follow:
                url = urljoin(url, resp.headers.get("location", ""))
                continue
            return resp
        log.error("%s: GET %s gave up after %d attempts: %s", self.provider, url_path(url),
                  MAX_ATTEMPTS, last)
        raise RemoteError(f"{self.provider}: {url_path(url)}: {last}")

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None, *,
                       classify: Classifier | None = None) -> Any:
        """GET and parse JSON; a body that is not JSON is an EIO with a log line."""
        resp = await self.request(path, params, classify=classify)
        body = _json_or_none(resp)
        if body is None:
            log.error("%s: GET %s: response is not JSON", self.provider, url_path(str(resp.url)))
            raise RemoteError(f"{self.provider}: {url_path(str(resp.url))}: response is not JSON")
        return body

    def fetch_range(self, source: Source, start: int, buf: memoryview,
                    on_progress: Callable[[int], None] | None = None) -> RangeResult:
        """Read ``len(buf)`` bytes at ``start`` into ``buf`` (blocking: run it in a thread).

        Verifies the server's answer: a 206 must start where asked, a body must not end before
        the length it announced. A server that ignores Range (200) is read through to ``start``.
        Short reads are accepted only at the end of the file. Transient failures are retried
        from where the bytes stopped. ``on_progress(n)`` reports bytes landed so far, so that
        waiters on the first chunk of a long range need not wait for all of it.
        """
        done = 0
        last = ""
        attempt = 0
        while attempt < MAX_ATTEMPTS:
            try:
                result = self._fetch_once(source, start + done, buf[done:],
                                          (lambda n: on_progress(done + n)) if on_progress else None)
                done += result.nread
                at_end = result.total is not None and start + done >= result.total
                if done == len(buf) or at_end or result.nread == 0:
                    return RangeResult(done, result.total)
                continue  # the server sent a shorter range than asked: ask for the rest
            except _Partial as exc:
                done += exc.nread
                last, retry_after = exc.reason, exc.retry_after
            attempt += 1
            log.warning("%s: GET %s: %s (attempt %d/%d)", self.provider, url_path(source.url),
                        last, attempt, MAX_ATTEMPTS)
            time.sleep(retry_delay(attempt, retry_after))
        log.error("%s: GET %s gave up after %d attempts: %s", self.provider, url_path(source.url),
                  MAX_ATTEMPTS, last)
        raise RemoteError(f"{self.provider}: {url_path(source.url)}: {last}")

    def _fetch_once(self, source: Source, start: int, buf: memoryview,
                    on_progress: Callable[[int], None] | None) -> RangeResult:
        """One GET of a byte range; transient trouble raises ``_Partial`` with what arrived."""
        where = f"{self.provider}: {url_path(source.url)}"
        headers = dict(source.headers)
        headers["Range"] = f"bytes={start}-{start + len(buf) - 1}"
        headers["Accept-Encoding"] = "identity"
        try:
            resp = self._pool.request("GET", source.url, headers=headers, preload_content=False,
                                      decode_content=False, redirect=False, retries=False)
        except urllib3.exceptions.HTTPError as exc:
            raise _Partial(0, type(exc).__name__) from None
        nread = 0
        try:
            if resp.status in TRANSIENT_STATUSES:
                raise _Partial(0, f"HTTP {resp.status}", resp.headers.get("retry-after"))
            if resp.status == 416:
                return RangeResult(0, _total_from_content_range(resp.headers.get("content-range")))
            if resp.status in (400, 401, 403, 410) and not source.headers:
                raise SourceExpired(f"{where}: storage answered HTTP {resp.status}")
            if resp.status not in (200, 206):
                raise error_for_status(resp.status)(f"{where}: HTTP {resp.status}")
            if resp.status == 206:
                first, last_byte, total = _parse_content_range(resp.headers.get("content-range"))
                if first != start:
                    raise RemoteError(f"{where}: Content-Range starts at {first}, asked {start}")
                buf = buf[:last_byte - first + 1]
            else:
                total = _int_or_none(resp.headers.get("content-length"))
                if _skip(resp, start) < start:
                    return RangeResult(0, start if total is None else total)
            expected = len(buf) if total is None else max(0, min(len(buf), total - start))
            nread = _read_into(resp, buf[:expected], on_progress)
            if total is None and nread < expected:
                total = start + nread
            elif nread < expected:
                raise _Partial(nread, f"body ended after {nread} of {expected} bytes")
            return RangeResult(nread, total)
        except urllib3.exceptions.HTTPError as exc:
            raise _Partial(nread, type(exc).__name__) from None
        finally:
            if resp.length_remaining == 0:
                resp.release_conn()
            else:
                resp.close()


class _Partial(Exception):
    """A transient failure part-way through a range: how many bytes landed, and why."""

    def __init__(self, nread: int, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.nread, self.reason, self.retry_after = nread, reason, retry_after


def _read_into(resp: urllib3.BaseHTTPResponse, buf: memoryview,
               on_progress: Callable[[int], None] | None) -> int:
    """Fill ``buf`` from the body until it is full or the body ends; returns bytes read."""
    nread = 0
    step = 1 << 20
    while nread < len(buf):
        n = resp.readinto(buf[nread:nread + step])
        if not n:
            break
        nread += n
        if on_progress:
            on_progress(nread)
    return nread


def _skip(resp: urllib3.BaseHTTPResponse, count: int) -> int:
    """Discard up to ``count`` bytes of a body (a server that ignored Range); returns how many."""
    scratch = memoryview(bytearray(min(count, 1 << 20) or 1))
    skipped = 0
    while skipped < count:
        n = resp.readinto(scratch[:min(count - skipped, len(scratch))])
        if not n:
            break
        skipped += n
    return skipped


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _parse_content_range(value: str | None) -> tuple[int, int, int | None]:
    """``bytes a-b/total`` → (a, b, total or None); a malformed header is an EIO."""
    try:
        unit, _, rest = (value or "").partition(" ")
        span, _, total = rest.partition("/")
        first, _, last = span.partition("-")
        if unit.lower() != "bytes" or int(last) < int(first):
            raise ValueError(value)
        return int(first), int(last), (None if total.strip() == "*" else int(total))
    except (ValueError, IndexError):
        raise RemoteError(f"malformed Content-Range {value!r}") from None


def _total_from_content_range(value: str | None) -> int | None:
    try:
        return int((value or "").rpartition("/")[2])
    except ValueError:
        return None


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


_POOL: urllib3.PoolManager | None = None


def shared_pool() -> urllib3.PoolManager:
    """One connection pool for all byte fetches of the process (keep-alive across files)."""
    global _POOL
    if _POOL is None:
        _POOL = urllib3.PoolManager(
            num_pools=32, maxsize=32, block=False,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        )
    return _POOL
