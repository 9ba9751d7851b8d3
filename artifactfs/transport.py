"""Where requests go on the wire: the byte transport (urllib3) and the API client (httpx),
both honouring the same environment.

httpx and urllib3 read proxies and CA bundles differently; a listing that works behind a
proxy while every read fails is the worst of both. So both take one SSL context (from
``SSL_CERT_FILE``, ``SSL_CERT_DIR`` or ``REQUESTS_CA_BUNDLE``, else the system store) and the
same proxy rules (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, any case).

Tests replace ``ByteTransport`` and httpx's transport with in-memory fakes (``tests/fakes.py``).
"""

from __future__ import annotations

import functools
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


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url``, unless ``NO_PROXY`` exempts its host."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.netloc, proxies):
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
    def __init__(self, resp: urllib3.BaseHTTPResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    def readinto(self, buffer: memoryview) -> int:
        try:
            return self._resp.readinto(buffer)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransportError(f"body broke off ({type(exc).__name__})") from None

    def finish(self) -> None:
        if self._resp.length_remaining == 0:
            self._resp.release_conn()
        else:
            self._resp.close()


class Urllib3Transport:
    """urllib3 pools, one per proxy (or none), shared by every provider of the process:
    connections are kept alive across files."""

    def __init__(self) -> None:
        self._pools: dict[str | None, urllib3.PoolManager] = {}
        self._lock = threading.Lock()

    def _pool(self, proxy: str | None) -> urllib3.PoolManager:
        with self._lock:
            pool = self._pools.get(proxy)
            if pool is None:
                if proxy is None:
                    pool = urllib3.PoolManager(num_pools=32, maxsize=POOL_SIZE, ssl_context=ssl_context())
                else:
                    pool = urllib3.ProxyManager(proxy, num_pools=32, maxsize=POOL_SIZE, ssl_context=ssl_context())
                self._pools[proxy] = pool
            return pool

    def open(self, url: str, headers: Mapping[str, str], timeout: float) -> ByteResponse:
        try:
            resp = self._pool(proxy_for(url)).request(
                "GET", url, headers=dict(headers), preload_content=False, decode_content=False,
                redirect=False, retries=False, timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}") from None
        return _Urllib3Response(resp)


@functools.lru_cache(maxsize=1)
def default_transport() -> Urllib3Transport:
    return Urllib3Transport()
