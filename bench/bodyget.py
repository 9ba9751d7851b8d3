"""One GET read in place into one buffer, on the trio thread: the whole byte path of the bench's
bare file systems, on artifactfs's own transport (``wire`` on kept trio sockets, as artifactfs
reads a range), so a floor differs from artifactfs only in what artifactfs adds above it."""

from __future__ import annotations

from artifactfs.transport import HttpTransport

TIMEOUT = 30.0


async def get_into(transport: HttpTransport, url: str, start: int | None = None,
                   size: int | None = None, into: memoryview | None = None) -> tuple[int, memoryview]:
    """GET ``url`` (``size`` bytes from ``start``, or from ``start`` to the end, if ``start`` is
    given) into a buffer of ``size`` (else of the body's Content-Length; ``into``'s start where
    given): the status and the buffer. OSError if the body ends short or is not framed by a
    length; ``TransportError`` if the connection fails."""
    headers = {"Accept-Encoding": "identity"}
    if start is not None:
        headers["Range"] = f"bytes={start}-{'' if size is None else start + size - 1}"
    response = await transport.open_here(url, headers, TIMEOUT)
    if response is None:
        raise OSError(f"{url}: not an answer the trio thread reads")
    try:
        length = size if size is not None else int(response.headers["content-length"])
        buf = memoryview(bytearray(length)) if into is None else into[:length]
        got = 0
        while got < len(buf) and (n := await response.readinto(buf[got:])):
            got += n
    finally:
        response.finish()
    if got != len(buf):
        raise OSError(f"{url}: HTTP {response.status}, the body ended after {got} of {len(buf)} bytes")
    return response.status, buf
