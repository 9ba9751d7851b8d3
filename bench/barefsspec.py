"""Bare fsspec file systems over nginx: the floors of "a trio core on its own thread that the
caller asks once per read, the bytes fetched there", which is how ``artifactfs://`` reads.

``fsspec.filesystem("baretrio")`` (registered on import): each ``cat_file`` makes one trip to a
trio thread (``trio.from_thread.run``), which fetches exactly the bytes asked for with one GET,
on artifactfs's byte transport: the hand-offs of artifactfs's fsspec front end, without its
namespace, blocks or cache. Paths are nginx URLs.

``fsspec.filesystem("baretriocache", cache_dir=DIR)`` is the same, and also keeps what it read,
as artifactfs does: one thread writes each body to a file of its own in ``DIR``, through the
page cache (where fsspec's re-reads find artifactfs's cache), after the caller has its bytes.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from typing import Any

import fsspec
import trio
from fsspec.spec import AbstractFileSystem

from artifactfs.transport import HttpTransport

from .bodyget import get_into

PROTOCOL = "baretrio"
CACHED_PROTOCOL = "baretriocache"


class BareTrioFileSystem(AbstractFileSystem):
    """Reads nginx URLs after a trip to a trio thread; nothing else."""

    protocol = PROTOCOL

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transport = HttpTransport()
        started = threading.Event()
        threading.Thread(target=trio.run, args=(self._serve, started), name="baretrio", daemon=True).start()
        started.wait()

    async def _serve(self, started: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        started.set()
        await trio.sleep_forever()

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return path  # the paths are URLs

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        return bytes(trio.from_thread.run(self._get, path, start, end, trio_token=self._token))

    async def _get(self, url: str, start: int | None, end: int | None) -> memoryview:
        """One GET (ranged if asked), its body read into one buffer."""
        status, buf = await get_into(self._transport, url, start, None if start is None or end is None else end - start)
        if status not in (200, 206):
            raise OSError(f"{url}: HTTP {status}")
        return buf


class BareTrioCachedFileSystem(BareTrioFileSystem):
    """``baretrio``, each body also written to ``cache_dir`` by one writer thread."""

    protocol = CACHED_PROTOCOL

    def __init__(self, cache_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cache_dir = cache_dir
        self._bodies: queue.SimpleQueue[tuple[str, memoryview]] = queue.SimpleQueue()
        threading.Thread(target=self._write, name="baretrio-writer", daemon=True).start()

    async def _get(self, url: str, start: int | None, end: int | None) -> memoryview:
        buf = await super()._get(url, start, end)
        self._bodies.put((url if start is None else f"{url} {start}-{end}", buf))
        return buf

    def _write(self) -> None:
        while True:
            key, buf = self._bodies.get()
            path = os.path.join(self._cache_dir, hashlib.sha1(key.encode()).hexdigest())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.pwrite(fd, buf, 0)
            finally:
                os.close(fd)


fsspec.register_implementation(PROTOCOL, BareTrioFileSystem, clobber=True)
fsspec.register_implementation(CACHED_PROTOCOL, BareTrioCachedFileSystem, clobber=True)
