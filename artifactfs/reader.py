"""open/read: chunk plan, adaptive readahead, single-flight fetches, lazy URL resolution.

A file's bytes are cut into fixed chunks. A read waits only for the chunks it touches;
sequential reads grow a readahead window (one chunk, doubling up to a cap) fetched as one
range request in the background, random reads fetch only what they touch. Concurrent
readers of the same chunk share one fetch. A chunk is handed out only once it holds every
byte the server announced for it. URLs are resolved on the first read, remembered until
shortly before they expire, and resolved again when storage refuses them mid-read.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Hashable, Protocol

import cachetools
import trio

from .errors import FsError, RemoteError, SourceExpired
from .httpclient import HttpClient
from .model import Source

log = logging.getLogger("artifactfs.reader")

CHUNK_SIZE = 1 << 20
MAX_WINDOW_CHUNKS = 16
URL_EXPIRY_MARGIN = 30.0
MAX_RESOLVES = 3
FETCH_THREADS = 16


@dataclass(frozen=True)
class ContentId:
    """What a chunk belongs to: a change of fingerprint makes old chunks unreachable."""

    provider: str
    key: Hashable
    fingerprint: str


class ChunkStore(Protocol):
    """Where complete chunks are kept between reads."""

    def get(self, content: ContentId, index: int) -> bytes | None: ...

    def put(self, content: ContentId, index: int, data: bytes) -> None: ...


class MemoryChunkStore:
    """Least-recently-used chunks in memory, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._chunks: cachetools.LRUCache = cachetools.LRUCache(max_bytes, getsizeof=len)

    def get(self, content: ContentId, index: int) -> bytes | None:
        return self._chunks.get((content, index))

    def put(self, content: ContentId, index: int, data: bytes) -> None:
        if len(data) <= self._chunks.maxsize:
            self._chunks[(content, index)] = data


class _Pending:
    """A chunk being fetched: readers wait on ``done``, then take ``data`` or ``error``."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: FsError | None = None


@dataclass
class Content:
    """One file content as readers share it: its source URL, its size once known, fetches."""

    id: ContentId
    resolve: Callable[[], Awaitable[Source]]
    http: HttpClient
    total: int | None
    on_size: Callable[[int], None]
    source: Source | None = None
    pending: dict[int, _Pending] = field(default_factory=dict)
    resolve_lock: trio.Lock = field(default_factory=trio.Lock)
    handles: int = 0


class OpenFile(Protocol):
    """What the FUSE layer holds per open file."""

    async def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass
class Handle:
    """One open remote file: where its last read ended and how far ahead it reads."""

    reader: "Reader"
    content: Content
    next_offset: int = 0
    window: int = 1

    async def read(self, offset: int, size: int) -> bytes:
        return await self.reader.read(self, offset, size)

    def close(self) -> None:
        self.reader.release(self)


class LocalFile:
    """A file already complete on local disk (an extracted archive member): plain preads."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    async def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        os.close(self._fd)


class Reader:
    """Serves reads of every open file; background fetches run in ``nursery``."""

    def __init__(self, store: ChunkStore, nursery: trio.Nursery, *, clock: Callable[[], float],
                 chunk_size: int = CHUNK_SIZE, max_window: int = MAX_WINDOW_CHUNKS) -> None:
        self.store = store
        self.nursery = nursery
        self.clock = clock
        self.chunk_size = chunk_size
        self.max_window = max_window
        self._contents: dict[ContentId, Content] = {}
        self._limiter = trio.CapacityLimiter(FETCH_THREADS)

    def open(self, cid: ContentId, size: int | None, http: HttpClient,
             resolve: Callable[[], Awaitable[Source]], on_size: Callable[[int], None]) -> Handle:
        """A handle on ``cid``; ``on_size`` hears the true size when a fetch learns it."""
        content = self._contents.get(cid)
        if content is None:
            content = self._contents[cid] = Content(cid, resolve, http, size, on_size)
        content.handles += 1
        return Handle(self, content)

    def release(self, handle: Handle) -> None:
        content = handle.content
        content.handles -= 1
        if content.handles <= 0 and not content.pending:
            self._contents.pop(content.id, None)

    async def read(self, handle: Handle, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``, fewer only at the end of the file."""
        content = handle.content
        if size <= 0 or (content.total is not None and offset >= content.total):
            return b""
        cs = self.chunk_size
        first, last = offset // cs, (offset + size - 1) // cs
        if offset == handle.next_offset and offset > 0:
            handle.window = min(handle.window * 2, self.max_window)
        elif offset != handle.next_offset:
            handle.window = 1
        self._schedule(content, first, last + handle.window)
        parts: list[bytes] = []
        for index in range(first, last + 1):
            chunk = await self._chunk(content, index)
            parts.append(chunk)
            if len(chunk) < cs:
                break
        data = b"".join(parts)[offset - first * cs: offset - first * cs + size]
        handle.next_offset = offset + len(data)
        return data

    def _last_index(self, content: Content) -> float:
        if content.total is None:
            return math.inf
        return (content.total - 1) // self.chunk_size if content.total else -1

    def _schedule(self, content: Content, first: int, end: int) -> None:
        """Start background fetches for the missing chunks in [first, end), one per run."""
        end = int(min(end, self._last_index(content) + 1))
        run_start: int | None = None
        for index in range(first, end + 1):
            missing = (index < end and index not in content.pending
                       and self.store.get(content.id, index) is None)
            if missing and run_start is None:
                run_start = index
            elif not missing and run_start is not None:
                self._start_fetch(content, run_start, index)
                run_start = None

    def _start_fetch(self, content: Content, start: int, end: int) -> None:
        for index in range(start, end):
            content.pending[index] = _Pending()
        self.nursery.start_soon(self._fetch, content, start, end)

    async def _chunk(self, content: Content, index: int) -> bytes:
        while True:
            data = self.store.get(content.id, index)
            if data is not None:
                return data
            pending = content.pending.get(index)
            if pending is None:
                if index > self._last_index(content):
                    return b""
                self._start_fetch(content, index, index + 1)
                continue
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.data is not None
            return pending.data

    async def _fetch(self, content: Content, start: int, end: int) -> None:
        """Fetch chunks [start, end) with one range request, handing out each as it lands."""
        cs = self.chunk_size
        buf = memoryview(bytearray((end - start) * cs))
        delivered = start
        token = trio.lowlevel.current_trio_token()

        def deliver_upto(nread: int, total: int | None) -> None:
            nonlocal delivered
            while delivered < end:
                lo = (delivered - start) * cs
                length = cs if total is None else min(cs, total - delivered * cs)
                if length <= 0 or nread < lo + length:
                    break
                self._complete(content, delivered, bytes(buf[lo:lo + length]))
                delivered += 1

        def progress(nread: int) -> None:
            if nread - (delivered - start) * cs >= cs:
                try:
                    trio.from_thread.run_sync(deliver_upto, nread, content.total, trio_token=token)
                except trio.RunFinishedError:
                    pass

        try:
            for attempt in range(MAX_RESOLVES):
                source = await self._source(content)
                offset = (delivered - start) * cs
                try:
                    result = await trio.to_thread.run_sync(
                        content.http.fetch_range, source, delivered * cs, buf[offset:],
                        lambda n: progress(offset + n), limiter=self._limiter, abandon_on_cancel=True)
                except SourceExpired as exc:
                    log.info("%s: source refused (%s); resolving again", content.id.provider, exc)
                    content.source = None
                    continue
                if result.total is not None and result.total != content.total:
                    content.total = result.total
                    content.on_size(result.total)
                deliver_upto(offset + result.nread, content.total)
                for index in range(delivered, end):
                    self._complete(content, index, b"")
                return
            raise RemoteError(f"{content.id.provider}: source refused {MAX_RESOLVES} times")
        except FsError as exc:
            self._fail(content, start, end, exc)
        except Exception as exc:  # noqa: BLE001 - a reader must get EIO, never a hang
            log.exception("%s: unexpected error while fetching", content.id.provider)
            self._fail(content, start, end, RemoteError(str(exc)))

    def _complete(self, content: Content, index: int, data: bytes) -> None:
        expected = self._expected_length(content, index)
        if expected is not None and len(data) != expected:
            self._fail(content, index, index + 1,
                       RemoteError(f"chunk {index}: {len(data)} bytes, expected {expected}"))
            return
        self.store.put(content.id, index, data)
        pending = content.pending.pop(index, None)
        if pending is not None:
            pending.data = data
            pending.done.set()

    def _expected_length(self, content: Content, index: int) -> int | None:
        if content.total is None:
            return None
        return max(0, min(self.chunk_size, content.total - index * self.chunk_size))

    def _fail(self, content: Content, start: int, end: int, error: FsError) -> None:
        for index in range(start, end):
            pending = content.pending.pop(index, None)
            if pending is not None:
                pending.error = error
                pending.done.set()

    async def _source(self, content: Content) -> Source:
        """The remembered URL, or a new one if none yet or it is about to expire."""
        async with content.resolve_lock:
            source = content.source
            if source is None or (source.expires_at is not None
                                  and source.expires_at - URL_EXPIRY_MARGIN <= self.clock()):
                source = content.source = await content.resolve()
                if content.total is None and source.size is not None:
                    content.total = source.size
            return source
