"""open/read: chunk plan, adaptive readahead, single-flight fetches, lazy URL resolution.

A file's bytes are cut into fixed chunks kept in the disk cache. A read waits only for
the chunks it touches; sequential reads grow a readahead window (one chunk, doubling up
to a cap) fetched as one range request in the background; random reads fetch only the
chunks they touch. Concurrent readers of one chunk share one fetch. A chunk enters the
cache only once it holds every byte the server announced for it. URLs are resolved on
the first read, remembered until shortly before they expire, and resolved again when
storage refuses them mid-read; the fetch then continues from the next missing chunk.
A server that ignores Range streams the whole file once, each chunk cached as it passes.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Hashable, Protocol

import trio

from .blockcache import BlockCache, content_hash
from .errors import FsError, RemoteError, SourceExpired
from .httpclient import MAX_ATTEMPTS, ByteStream, HttpClient, retry_delay
from .model import Source

log = logging.getLogger("artifactfs.reader")

CHUNK_SIZE = 1 << 20
MAX_WINDOW_CHUNKS = 32
URL_EXPIRY_MARGIN = 30.0
MAX_RESOLVES = 3
FETCH_THREADS = 16


@dataclass(frozen=True)
class ContentId:
    """What a chunk belongs to: a change of fingerprint makes old chunks unreachable."""

    provider: str
    key: Hashable
    fingerprint: str


class OpenFile(Protocol):
    """What the FUSE layer holds per open file."""

    async def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class _Pending:
    """A chunk being fetched: readers wait on ``done``, then find it cached or see ``error``."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: FsError | None = None


@dataclass
class Content:
    """One file content as readers share it: its source URL, its size once known, fetches."""

    id: ContentId
    hash: str
    resolve: Callable[[], Awaitable[Source]]
    http: HttpClient
    total: int | None
    on_size: Callable[[int], None]
    source: Source | None = None
    pending: dict[int, _Pending] = field(default_factory=dict)
    resolve_lock: trio.Lock = field(default_factory=trio.Lock)
    handles: int = 0
    whole_body_streams: int = 0
    arrivals: trio.Event = field(default_factory=trio.Event)


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
    """Serves reads of every open remote file; background fetches run in ``nursery``."""

    def __init__(self, cache: BlockCache, nursery: trio.Nursery, *, clock: Callable[[], float],
                 chunk_size: int = CHUNK_SIZE, max_window: int = MAX_WINDOW_CHUNKS) -> None:
        self.cache = cache
        self.nursery = nursery
        self.clock = clock
        self.chunk_size = chunk_size
        self.max_window = max_window
        self._contents: dict[ContentId, Content] = {}
        self._limiter = trio.CapacityLimiter(FETCH_THREADS)
        self._scratch = threading.local()

    def open(self, cid: ContentId, size: int | None, http: HttpClient,
             resolve: Callable[[], Awaitable[Source]], on_size: Callable[[int], None]) -> Handle:
        """A handle on ``cid``; ``on_size`` hears the true size when a fetch learns it."""
        content = self._contents.get(cid)
        if content is None:
            digest = content_hash(cid.provider, cid.key, cid.fingerprint)
            known = self.cache.total(digest)
            content = Content(cid, digest, resolve, http, size if known is None else known, on_size)
            self._contents[cid] = content
            if known is not None and known != size:
                on_size(known)
        content.handles += 1
        return Handle(self, content)

    def release(self, handle: Handle) -> None:
        handle.content.handles -= 1
        self._drop_if_idle(handle.content)

    def _drop_if_idle(self, content: Content) -> None:
        if content.handles <= 0 and not content.pending:
            self._contents.pop(content.id, None)

    async def read(self, handle: Handle, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``, fewer only at the end of the file."""
        content = handle.content
        if size <= 0 or (content.total is not None and offset >= content.total):
            return b""
        cs = self.chunk_size
        first, last = offset // cs, (offset + size - 1) // cs
        self._adapt_window(handle, offset)
        self._schedule(content, first, last, handle.window)
        parts: list[bytes] = []
        end = offset + size
        for index in range(first, last + 1):
            lo = max(offset, index * cs) - index * cs
            want = min(end, (index + 1) * cs) - index * cs - lo
            data = await self._read_chunk(content, index, lo, want)
            parts.append(data)
            if len(data) < want:
                break
        result = b"".join(parts)
        handle.next_offset = max(handle.next_offset, offset + len(result))
        return result

    def _adapt_window(self, handle: Handle, offset: int) -> None:
        """Double the readahead on sequential reads, tolerating the kernel's reordering of
        its parallel readahead requests; no readahead after a seek (random access)."""
        slack = self.chunk_size * 2
        if offset == 0 and handle.next_offset == 0:
            handle.window = max(handle.window, 1)
        elif handle.next_offset - slack <= offset <= handle.next_offset + slack:
            handle.window = min(max(handle.window, 1) * 2, self.max_window)
        else:
            handle.window = 0

    def _beyond_end(self, content: Content, index: int) -> bool:
        return content.total is not None and index * self.chunk_size >= content.total

    def _present(self, content: Content, index: int) -> bool:
        return index in content.pending or self.cache.length(content.hash, index) is not None

    def _schedule(self, content: Content, first: int, last: int, window: int) -> None:
        """Fetch what [first, last] lacks, plus up to ``window`` chunks ahead.

        Readahead is topped up only when less than half a window is left in flight, and
        then by a whole window in one request, so a sequential reader keeps a few large
        requests going instead of one small request per read.
        """
        if content.whole_body_streams:
            return  # the origin ignores Range and is already sending every chunk
        limit = -(-content.total // self.chunk_size) if content.total is not None else None
        index = first
        horizon = last + window
        while index <= horizon and (limit is None or index < limit) and self._present(content, index):
            index += 1
        if index > horizon or (limit is not None and index >= limit):
            return
        if index > last and index - last - 1 >= max(1, window // 2):
            return
        stop = max(index, last + 1) + window
        if limit is not None:
            stop = min(stop, limit)
        run_end = index
        while run_end < stop and not self._present(content, run_end):
            run_end += 1
        self._start_fetch(content, index, run_end)

    def _start_fetch(self, content: Content, start: int, end: int) -> None:
        mine = {index: _Pending() for index in range(start, end)}
        content.pending.update(mine)
        self.nursery.start_soon(self._fetch, content, start, end, mine)

    async def _read_chunk(self, content: Content, index: int, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of chunk ``index``, fetching it if needed.

        While an origin that ignores Range streams the whole body, a missing chunk is
        awaited from that stream rather than fetched again from the start.
        """
        attempt = 0
        while attempt < MAX_ATTEMPTS:
            data = self.cache.read(content.hash, index, offset, length)
            if data is not None:
                self.cache.count(hit=attempt == 0)
                return data
            attempt += not content.whole_body_streams
            if self._beyond_end(content, index):
                return b""
            pending = content.pending.get(index)
            if pending is None and content.whole_body_streams:
                await content.arrivals.wait()
                continue
            if pending is None:
                self._start_fetch(content, index, index + 1)
                pending = content.pending[index]
            with trio.move_on_after(content.http.deadline):
                await pending.done.wait()
            if not pending.done.is_set():
                log.error("%s: chunk %d did not arrive in time", content.id.provider, index)
                raise RemoteError(f"{content.id.provider}: chunk {index} did not arrive in time")
            if pending.error is not None:
                raise pending.error
        raise RemoteError(f"{content.id.provider}: chunk {index} vanished from the cache repeatedly")

    async def _fetch(self, content: Content, start: int, end: int, mine: dict[int, _Pending]) -> None:
        """Fetch chunks [start, end), resuming after broken bodies and refused URLs.

        ``mine`` are this fetch's waiters: at the end it settles those still waiting, and
        never a later fetch's waiter for a chunk that was evicted and asked for again.
        """
        progress = [start]
        error: FsError | None = None
        failures = resolves = 0
        token = trio.lowlevel.current_trio_token()
        try:
            while progress[0] < end and not self._beyond_end(content, progress[0]):
                source = await self._source(content)
                try:
                    await trio.to_thread.run_sync(self._stream_chunks, content, source, progress, end,
                                                  token, limiter=self._limiter, abandon_on_cancel=True)
                    break
                except SourceExpired as exc:
                    resolves += 1
                    content.source = None
                    log.info("%s (%d/%d); resolving the URL again", exc, resolves, MAX_RESOLVES)
                    if resolves >= MAX_RESOLVES:
                        raise RemoteError(f"{exc}; gave up after {resolves} new URLs") from None
                except RemoteError as exc:
                    failures += 1
                    if failures >= MAX_ATTEMPTS:
                        raise
                    log.warning("%s; resuming at chunk %d (attempt %d/%d)", exc, progress[0],
                                failures, MAX_ATTEMPTS)
                    await trio.sleep(retry_delay(failures, None))
        except FsError as exc:
            error = exc
            if not isinstance(exc, RemoteError) or failures < MAX_ATTEMPTS:
                log.warning("%s: read failed: %s", content.id.provider, exc)
            else:
                log.error("%s: read failed: %s", content.id.provider, exc)
        except Exception as exc:  # noqa: BLE001 - a reader must get EIO, never a hang
            log.exception("%s: unexpected error while fetching", content.id.provider)
            error = RemoteError(str(exc))
        finally:
            for index, pending in mine.items():
                if pending.done.is_set():
                    continue
                if content.pending.get(index) is pending:
                    del content.pending[index]
                if error is None and not self._beyond_end(content, index):
                    error = RemoteError(f"{content.id.provider}: chunk {index} never arrived")
                pending.error = None if self._beyond_end(content, index) else error
                pending.done.set()
            self._drop_if_idle(content)

    def _stream_chunks(self, content: Content, source: Source, progress: list[int], end: int,
                       token: trio.lowlevel.TrioToken) -> None:
        """Worker thread: read a range chunk by chunk straight into the cache.

        ``progress[0]`` is the next chunk still wanted, so a caller can resume after a failure.
        """
        cs = self.chunk_size
        stream = content.http.open_bytes(source, progress[0] * cs, end * cs - 1)
        if not stream.ranged:
            self._report(token, self._whole_body, content, 1)
        try:
            total = stream.total
            if total is not None:
                self._report(token, self._learned_total, content, total)
            index = stream.first // cs
            while True:
                expected = cs if total is None else min(cs, total - index * cs)
                if expected <= 0:
                    return
                n = self._receive_chunk(content, index, expected, stream)
                if n < expected:
                    if total is not None:
                        raise RemoteError(f"{stream.where}: body ended {expected - n} bytes short "
                                          f"in chunk {index}")
                    total = index * cs + n
                    self._report(token, self._learned_total, content, total)
                    if n == 0:
                        return
                if index >= progress[0]:
                    progress[0] = index + 1
                    self._report(token, self._arrived, content, index)
                index += 1
                if n < cs or (stream.ranged and index >= end):
                    return
        finally:
            stream.close()
            if not stream.ranged:
                self._report(token, self._whole_body, content, -1)

    def _receive_chunk(self, content: Content, index: int, expected: int, stream: ByteStream) -> int:
        """Read one chunk from ``stream`` into this thread's reused buffer (no fresh memory is
        faulted in per chunk) and cache it only if complete: ``expected`` bytes, or the
        clean end of an unsized body."""
        scratch: bytearray | None = getattr(self._scratch, "buffer", None)
        if scratch is None or len(scratch) < expected:
            scratch = self._scratch.buffer = bytearray(expected)
        buffer = memoryview(scratch)[:expected]
        n = stream.readinto(buffer)
        if n == expected or (content.total is None and n > 0 and stream.total is None):
            self.cache.put(content.hash, index, buffer[:n])
        return n

    @staticmethod
    def _report(token: trio.lowlevel.TrioToken, func: Callable[..., None], *args: object) -> None:
        """Tell the trio thread without waiting for it: the fetch thread keeps reading."""
        try:
            token.run_sync_soon(func, *args)
        except trio.RunFinishedError:
            pass

    def _arrived(self, content: Content, index: int) -> None:
        pending = content.pending.pop(index, None)
        if pending is not None:
            pending.done.set()
        content.arrivals.set()
        content.arrivals = trio.Event()

    def _whole_body(self, content: Content, change: int) -> None:
        """Count streams sending the whole file; wake waiters when one ends."""
        content.whole_body_streams += change
        content.arrivals.set()
        content.arrivals = trio.Event()

    def _learned_total(self, content: Content, total: int) -> None:
        self.cache.set_total(content.hash, total)
        if content.total != total:
            content.total = total
            content.on_size(total)

    async def _source(self, content: Content) -> Source:
        """The remembered URL, or a new one if none yet or it is about to expire."""
        async with content.resolve_lock:
            source = content.source
            if source is None or (source.expires_at is not None
                                  and source.expires_at - URL_EXPIRY_MARGIN <= self.clock()):
                source = content.source = await content.resolve()
                if content.total is None and source.size is not None:
                    self._learned_total(content, source.size)
            return source
