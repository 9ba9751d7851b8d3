"""Where requests go on the wire: the byte transport (urllib3) and the API client (httpx),
both honouring the same environment.

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
import os
import ssl
import threading
import urllib.request
from typing import Mapping, Protocol
from urllib.parse import urlsplit

import httpx
import urllib3

POOL_SIZE = 32


class TransportError(Exception):
    """The connection failed or the body broke off: worth another attempt."""


class ByteResponse(Protocol):
    """An open byte response: status, headers (lower-case names), and a body read in place."""

    status: int
    headers: Mapping[str, str]

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` as far as the body goes; 0 at its end; TransportError if it breaks."""

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes of the body as one new object (fewer only at its end);
        TransportError if it breaks."""

    def finish(self) -> None:
        """Done with it: keep the connection for reuse only if the body was read to its end."""


class ByteTransport(Protocol):
    """Opens GET requests for bytes, blocking (called from worker threads)."""

    def open(self, url: str, headers: Mapping[str, str], timeout: float) -> ByteResponse: ...


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


def api_client(timeout: float, connect: float, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The async client for provider APIs: same TLS and proxies as the byte path
    (``transport`` replaces the network in tests)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect), follow_redirects=False,
        verify=ssl_context(), transport=transport,
        headers={"User-Agent": "artifactfs", "Accept": "application/json"}, trust_env=transport is None)


class _Urllib3Response:
    """A urllib3 response read in place: its ``readinto`` copies through a temporary bytes
    object, so bodies are read from the underlying ``http.client`` response, which fills the
    caller's buffer directly (identity encoding is asked for, so nothing needs decoding)."""

    def __init__(self, resp: urllib3.BaseHTTPResponse) -> None:
        self._resp = resp
        self._body = getattr(resp, "_fp", None)
        self.status = resp.status
        self.headers = resp.headers

    def readinto(self, buffer: memoryview) -> int:
        try:
            if self._body is None:
                return self._resp.readinto(buffer)
            return self._body.readinto(buffer) or 0
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise TransportError(f"body broke off ({type(exc).__name__})") from None

    def read(self, size: int) -> bytes:
        """One object, filled by the socket directly: its pages are first touched while the
        GIL is released (a copy made afterwards would touch them holding it)."""
        try:
            return self._body.read(size) if self._body is not None else self._resp.read(size)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise TransportError(f"body broke off ({type(exc).__name__})") from None

    def finish(self) -> None:
        """Keep the connection for the next request only if the body was read to its end."""
        done = self._body.isclosed() if self._body is not None else self._resp.length_remaining == 0
        if done:
            self._resp.release_conn()
        else:
            self._resp.close()


class Urllib3Transport:
    """urllib3 pools, one per proxy (or none), shared by every provider of the process:
    connections are kept alive across files. The environment's proxies are read once; each
    origin's connection pool is found once and then asked directly (urllib3's URL and
    field encoding per request cost more than a small range takes to arrive)."""

    def __init__(self) -> None:
        self._proxies = urllib.request.getproxies_environment()
        self._managers: dict[str | None, urllib3.PoolManager] = {}
        self._origins: dict[tuple[str, str], tuple[urllib3.HTTPConnectionPool | None, str | None]] = {}
        self._timeouts: dict[float, urllib3.Timeout] = {}
        self._lock = threading.Lock()

    def _manager(self, proxy: str | None) -> urllib3.PoolManager:
        manager = self._managers.get(proxy)
        if manager is None:
            if proxy is None:
                manager = urllib3.PoolManager(num_pools=32, maxsize=POOL_SIZE, ssl_context=ssl_context())
            else:
                manager = urllib3.ProxyManager(proxy, num_pools=32, maxsize=POOL_SIZE, ssl_context=ssl_context())
            self._managers[proxy] = manager
        return manager

    def _origin(self, url: str) -> tuple[urllib3.HTTPConnectionPool | None, str | None]:
        """The connection pool to ask directly (None through a proxy) and the proxy, per origin."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        with self._lock:
            found = self._origins.get(key)
            if found is None:
                proxy = proxy_for(url, self._proxies)
                pool = None if proxy else self._manager(None).connection_from_url(url)
                found = self._origins[key] = (pool, proxy)
                self._manager(proxy)
            return found

    def open(self, url: str, headers: Mapping[str, str], timeout: float) -> ByteResponse:
        pool, proxy = self._origin(url)
        limits = self._timeouts.get(timeout)
        if limits is None:
            limits = self._timeouts[timeout] = urllib3.Timeout(connect=min(timeout, 10.0), read=timeout)
        options = {"headers": dict(headers), "preload_content": False, "decode_content": False,
                   "redirect": False, "retries": False, "timeout": limits}
        try:
            if pool is not None:
                parts = urlsplit(url)
                target = parts.path or "/" if not parts.query else f"{parts.path or '/'}?{parts.query}"
                resp = pool.urlopen("GET", target, assert_same_host=False, **options)
            else:
                resp = self._managers[proxy].urlopen("GET", url, **options)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}") from None
        return _Urllib3Response(resp)


@functools.lru_cache(maxsize=1)
def default_transport() -> Urllib3Transport:
    return Urllib3Transport()
