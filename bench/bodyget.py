"""One GET read in place into one buffer: the whole byte path of the bench's bare file systems."""

from __future__ import annotations

import urllib3


def get_into(pool: urllib3.PoolManager, url: str, start: int | None = None,
             size: int | None = None) -> tuple[int, memoryview]:
    """GET ``url`` (``size`` bytes from ``start``, or from ``start`` to the end, if ``start`` is
    given) into a buffer of ``size`` (else of the body's Content-Length): the status and the
    buffer. OSError if the body ends short; urllib3's errors as they come."""
    headers = {} if start is None else {"Range": f"bytes={start}-{'' if size is None else start + size - 1}"}
    response = pool.request("GET", url, headers=headers, preload_content=False)
    try:
        buf = memoryview(bytearray(size if size is not None else int(response.headers["content-length"])))
        got = 0
        while got < len(buf) and (n := response.readinto(buf[got:])):
            got += n
    finally:
        response.release_conn()
    if got != len(buf):
        raise OSError(f"{url}: HTTP {response.status}, the body ended after {got} of {len(buf)} bytes")
    return response.status, buf
