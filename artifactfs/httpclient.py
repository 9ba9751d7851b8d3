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
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import httpx
import trio
import urllib3

from .errors import FsError, NotFound, RemoteError, SourceExpired, error_for_status
from .model import Source

log = logging.getLogger("artifactfs.http")

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # per attempt; [mount] timeout
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.2
BACKOFF_CAP = 5.0
RETRY_AFTER_CAP = 30.0
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

Classifier = Callable[[int, Any], "type[FsError] | None"]


def deadline_for(timeout: float) -> float:
    """How long one request may take in all, retries and backoff included."""
    return 2 * timeout + min(timeout, 2 * BACKOFF_CAP)


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


class HttpClient:
    """One per provider: knows its base URL, its auth headers and whom they may go to."""

    def __init__(self, provider: str, base_url: str, auth_headers: Mapping[str, str], *,
                 timeout: float = READ_TIMEOUT, pool: urllib3.PoolManager | None = None) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._origin = origin_of(self.base_url)
        self._auth = dict(auth_headers)
        connect = min(timeout, CONNECT_TIMEOUT)
        self._api = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect),
            follow_redirects=False,
            headers={"User-Agent": "artifactfs", "Accept": "application/json"},
        )
        self._byte_timeout = urllib3.Timeout(connect=connect, read=timeout)
        self._pool = pool or shared_pool()
        self.deadline = deadline_for(timeout)

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
                      classify: Classifier | None = None) -> httpx.Response:
        """GET an API URL with retries; returns the response or raises the mapped FsError.

        ``classify(status, json_body)`` lets a provider map its own error bodies (a 200 with
        ``success: false``). Redirects are not followed: a 3xx is returned as is (vm0's 302),
        so the caller decides where the token may go.
        """
        return (await self._checked(path, params, classify))[0]

    async def _checked(self, path: str, params: Mapping[str, Any] | None,
                       classify: Classifier | None) -> tuple[httpx.Response, Any]:
        """The response, and its JSON body when ``classify`` needed it (else None)."""
        url = self.url(path)
        with trio.move_on_after(self.deadline):
            return await self._request(url, params, classify)
        log.error("%s: GET %s: no answer within %.0f s", self.provider, url_path(url), self.deadline)
        raise RemoteError(f"{self.provider}: {url_path(url)}: no answer within {self.deadline:.0f} s")

    async def _request(self, url: str, params: Mapping[str, Any] | None,
                       classify: Classifier | None) -> tuple[httpx.Response, Any]:
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
            body = _json_or_none(resp) if classify else None
            error = classify(resp.status_code, body) if classify else None
            if error is None and resp.status_code >= 400:
                error = error_for_status(resp.status_code)
            if error is not None:
                log.log(logging.INFO if error is NotFound else logging.WARNING,
                        "%s: GET %s -> HTTP %d (%s)", self.provider, url_path(url),
                        resp.status_code, error.__name__)
                raise error(f"{self.provider}: {url_path(url)}: HTTP {resp.status_code}")
            return resp, body
        log.error("%s: GET %s gave up after %d attempts: %s", self.provider, url_path(url),
                  MAX_ATTEMPTS, last)
        raise RemoteError(f"{self.provider}: {url_path(url)}: {last}")

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None, *,
                       classify: Classifier | None = None) -> Any:
        """GET and parse JSON; a body that is not JSON is an EIO with a log line."""
        resp, body = await self._checked(path, params, classify)
        if body is None:
            body = _json_or_none(resp)
        if body is None:
            log.error("%s: GET %s: response is not JSON", self.provider, url_path(str(resp.url)))
            raise RemoteError(f"{self.provider}: {url_path(str(resp.url))}: response is not JSON")
        return body

    def open_bytes(self, source: Source, start: int, end: int | None) -> "ByteStream":
        """Open a byte response for ``[start, end]`` (blocking: run it in a thread).

        Transient failures before the body (connection errors, 5xx, 429) are retried with
        backoff; a refused signed URL raises ``SourceExpired`` so the caller resolves it again.
        A 206 must start where asked; a server that ignores Range answers 200 and the stream
        says so (``first == 0``), so the caller can cache the whole body as it passes.
        """
        headers = dict(source.headers)
        headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        headers["Accept-Encoding"] = "identity"
        where = f"{self.provider}: {url_path(source.url)}"
        last = ""
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                log.warning("%s: %s (attempt %d/%d)", where, last, attempt, MAX_ATTEMPTS)
            try:
                resp = self._pool.request("GET", source.url, headers=headers, preload_content=False,
                                          decode_content=False, redirect=False, retries=False,
                                          timeout=self._byte_timeout)
            except urllib3.exceptions.HTTPError as exc:
                last = type(exc).__name__
                time.sleep(retry_delay(attempt, None))
                continue
            if resp.status in TRANSIENT_STATUSES:
                last = f"HTTP {resp.status}"
                resp.close()
                time.sleep(retry_delay(attempt, resp.headers.get("retry-after")))
                continue
            return self._stream(resp, source, start, where)
        log.error("%s: gave up after %d attempts: %s", where, MAX_ATTEMPTS, last)
        raise RemoteError(f"{where}: {last}")

    def _stream(self, resp: urllib3.BaseHTTPResponse, source: Source, start: int,
                where: str) -> "ByteStream":
        status = resp.status
        if status == 416:
            resp.close()
            return ByteStream(None, start, _total_from_content_range(resp.headers.get("content-range")),
                              where, ranged=True)
        if status in (200, 206):
            if status == 200:
                return ByteStream(resp, 0, _int_or_none(resp.headers.get("content-length")), where,
                                  ranged=False)
            try:
                first, last, total = _parse_content_range(resp.headers.get("content-range"))
                length = _int_or_none(resp.headers.get("content-length"))
                if first != start:
                    raise RemoteError(f"Content-Range starts at {first}, asked {start}")
                if (total is not None and last >= total) or (length is not None and length != last - first + 1):
                    raise RemoteError(f"Content-Range {first}-{last}/{total} disagrees with its length")
            except RemoteError as exc:
                resp.close()
                log.warning("%s: %s", where, exc)
                raise RemoteError(f"{where}: {exc}") from None
            return ByteStream(resp, first, total, where, ranged=True)
        resp.close()
        if status in (400, 401, 403, 410) and not source.headers:
            raise SourceExpired(f"{where}: storage answered HTTP {status}")
        log.warning("%s: HTTP %d", where, status)
        raise error_for_status(status)(f"{where}: HTTP {status}")


class ByteStream:
    """An open byte response: where its body starts in the file, the file's size if known,
    and whether the server honoured Range (``ranged``) or is sending the whole file."""

    def __init__(self, resp: urllib3.BaseHTTPResponse | None, first: int, total: int | None,
                 where: str, *, ranged: bool) -> None:
        self._resp, self.first, self.total, self.where = resp, first, total, where
        self.ranged = ranged

    def readinto(self, buf: memoryview) -> int:
        """Fill ``buf`` until full or the body ends; a broken body raises RemoteError."""
        if self._resp is None:
            return 0
        try:
            return _read_into(self._resp, buf)
        except urllib3.exceptions.HTTPError as exc:
            raise RemoteError(f"{self.where}: body broke off ({type(exc).__name__})") from None

    def close(self) -> None:
        """Keep the connection for reuse only when the body was read to its end."""
        if self._resp is None:
            return
        if self._resp.length_remaining == 0:
            self._resp.release_conn()
        else:
            self._resp.close()


def _read_into(resp: urllib3.BaseHTTPResponse, buf: memoryview) -> int:
    """Fill ``buf`` from the body until it is full or the body ends; returns bytes read."""
    nread = 0
    while nread < len(buf):
        n = resp.readinto(buf[nread:])
        if not n:
            break
        nread += n
    return nread


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
        )
    return _POOL
