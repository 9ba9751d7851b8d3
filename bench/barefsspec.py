"""Bare fsspec file systems over nginx: the floors of "a trio core on its own thread that the
caller asks once per read, the bytes fetched there", which is how ``artifactfs://`` reads.

``fsspec.filesystem("baretrio")`` (registered on import): each ``cat_file`` makes one trip to a
trio thread (``trio.from_thread.run``), which fetches exactly the bytes asked for with one GET,
on artifactfs's byte transport: the hand-offs of artifactfs's fsspec front end, without its
namespace, blocks or cache. Paths are nginx URLs.

``fsspec.filesystem("baretriocache", cache_dir=DIR)`` is the same, and also keeps what it read,
as artifactfs does: one thread writes each body to a file of its own in ``DIR``, through the
page cache (where fsspec's re-reads find artifactfs's cache), after the caller has its bytes.

``fsspec.filesystem("baretriowork", cache_dir=DIR, api=URL)`` is the floor of the work
artifactfs's fsspec reads cannot skip, and nothing more. Paths are ``<agent>/<filename>``: the
agent's files are first listed through the Gumloop API (fsspec http is given its URLs;
artifactfs has to ask), page by page with a plain ``urllib`` loop in the first caller's thread.
Then, on the trio thread, each body goes into a buffer of artifactfs's pool and is queued for
artifactfs's own disk cache (``BlockCache``: checksums, index, writes around the page cache,
a bounded queue), and the caller copies its bytes out of the buffer, as artifactfs's callers do.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import Any

import fsspec
import trio
from fsspec.spec import AbstractFileSystem

from artifactfs.blockcache import BlockCache, content_hash
from artifactfs.buffers import BufferPool, Piece
from artifactfs.config import DEFAULT_CACHE_SIZE, parse_size
from artifactfs.engine import BLOCK_SIZE, SEGMENT_MAX
from artifactfs.transport import HttpTransport

from .bodyget import get_into
from .gumloopapi import GumloopApi

PROTOCOL = "baretrio"
CACHED_PROTOCOL = "baretriocache"
WORK_PROTOCOL = "baretriowork"
LIST_TIMEOUT = 30.0


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


class BareTrioWorkFileSystem(BareTrioFileSystem):
    """``<agent>/<filename>``: listed through the API once, read into artifactfs's buffers and
    kept in artifactfs's disk cache."""

    protocol = WORK_PROTOCOL

    def __init__(self, cache_dir: str, api: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._api = GumloopApi.from_env(api)
        self._sources: dict[str, dict[str, tuple[str, int]]] = {}
        self._listing = threading.Lock()
        self._buffers = BufferPool(BLOCK_SIZE, SEGMENT_MAX, shared=True)
        self._cache = BlockCache(Path(cache_dir), parse_size(DEFAULT_CACHE_SIZE), BLOCK_SIZE)

    def _source(self, path: str) -> tuple[str, int]:
        """The signed URL and size of ``<agent>/<filename>``; the agent is listed by its first reader."""
        agent, _, name = path.partition("/")
        with self._listing:
            if agent not in self._sources:
                self._sources[agent] = self._api.sources(agent, LIST_TIMEOUT)
        return self._sources[agent][name]

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        if start is not None or end is not None:
            raise NotImplementedError("whole files only")
        piece: Piece = trio.from_thread.run(self._get_kept, path, *self._source(path), trio_token=self._token)
        return piece.tobytes()

    async def _get_kept(self, path: str, url: str, size: int) -> Piece:
        """The whole body, one ranged GET read into a pooled buffer, queued for the disk cache
        (dropped when its queue is full, as artifactfs's ranged reads are)."""
        buf = self._buffers.take(size)
        status, body = await get_into(self._transport, url, 0, size, into=buf)
        if status != 206:
            raise OSError(f"{url}: HTTP {status}")
        self._cache.store(content_hash(WORK_PROTOCOL, path, ""), 0, [body[i:i + BLOCK_SIZE] for i in range(0, size, BLOCK_SIZE)], around=True)
        return self._buffers.piece(buf, 0, size)


fsspec.register_implementation(PROTOCOL, BareTrioFileSystem, clobber=True)
fsspec.register_implementation(CACHED_PROTOCOL, BareTrioCachedFileSystem, clobber=True)
fsspec.register_implementation(WORK_PROTOCOL, BareTrioWorkFileSystem, clobber=True)
