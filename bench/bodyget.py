"""One GET read in place into one buffer: the whole byte path of the bench's bare file systems,
on artifactfs's own transport (kept ``http.client`` connections), so a floor differs from
artifactfs only in what artifactfs adds above it."""

from __future__ import annotations

from artifactfs.transport import HttpTransport

TIMEOUT = 30.0


def get_into(transport: HttpTransport, url: str, start: int | None = None,
             size: int | None = None) -> tuple[int, memoryview]:
    """GET ``url`` (``size`` bytes from ``start``, or from ``start`` to the end, if ``start`` is
    given) into a buffer of ``size`` (else of the body's Content-Length): the status and the
    buffer. OSError if the body ends short; ``TransportError`` if the connection fails."""
    headers = {"Accept-Encoding": "identity"}
    if start is not None:
        headers["Range"] = f"bytes={start}-{'' if size is None else start + size - 1}"
    response = transport.open(url, headers, TIMEOUT)
    try:
        buf = memoryview(bytearray(size if size is not None else int(response.headers["content-length"])))
        got = 0
        while got < len(buf) and (n := response.readinto(buf[got:])):
            got += n
    finally:
        response.finish()
    if got != len(buf):
        raise OSError(f"{url}: HTTP {response.status}, the body ended after {got} of {len(buf)} bytes")
    return response.status, buf
