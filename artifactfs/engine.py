"""The byte path: memory-first reads of remote files, with the disk cache on the side.

A file's content is cut into fixed blocks (``BLOCK_SIZE``). A read takes each block it
touches from the memory window (recent blocks, bounded; not those a claim's read took whole),
from a fetch in flight (waiting for it), from the disk cache (its queue, or loaded and verified
in a worker thread), or starts a fetch. Bytes
arriving from the network are handed to waiting readers straight from the fetch's buffers
and queued for the disk on the side (``BlockCache.store``, write-behind): the disk is never
the delivery buffer, and a slow or failing disk never slows or fails a read.

Fetch sizes adapt: a first read at the start of a file fetches a small window (a small file
whole), each sequential read doubles the window up to ``MAX_WINDOW`` blocks, and a read after a
seek fetches only the block it needs. A block is worth its fetch once it is touched a third
time: a read after a seek that is shorter than a block and touches one nothing holds or
fetches yet, for the first or second time, fetches exactly its bytes and keeps nothing
(``_exact``), and so does an opening read (at offset 0, shorter than a block, of a file bigger
than the first window: ``head -c``, ``file``), on the trio thread as the bare file system's;
its reader reading on starts the window (``head -c 4096`` on a fresh mount: 8.25 -> 7.16 ms,
medians of 15, interleaved). One-off random reads so cost their bytes, not a block each (2,000
random 4 KiB reads of 1 GiB: 2,288 -> 3,655 reads/s on the mount, ~2,000 -> ~2,700 through
fsspec, 231 -> 38 MiB from the origin); a block read a third time is fetched whole and cached
from then on. On the second, ~12% of 2,000 uniformly random reads fetched their block whole,
and in-process the engine spent ~200 µs of CPU a read against ~150 µs on the third. Readahead
is topped up a whole window at a time, and all readahead of the process is bounded by
``READAHEAD_BYTES``. One fetch per block at a time (single-flight). URLs are resolved on the
first fetch, remembered until shortly before they expire, and resolved again when storage
refuses them (the HTTP layer resumes where it stopped). A server that ignores Range sends the
whole file once, each block kept as it passes.

Threads: this module's state lives on the trio thread; fetch sinks run in worker threads and
report back with ``run_sync_soon`` (never waiting for the trio thread); disk loads run in
worker threads. No disk, sqlite or lock wait happens on the trio thread.
"""

from __future__ import annotations

import collections
import io
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Hashable, NamedTuple

import trio

from . import archive
from .blockcache import BlockCache, content_hash
from .buffers import BufferPool, Piece
from .errors import FsError, RemoteError
from .model import Source
from .workers import workers

if TYPE_CHECKING:
    from .providers.base import Provider

log = logging.getLogger("artifactfs.engine")

BLOCK_SIZE = 128 << 10
FIRST_WINDOW = (1 << 20) // BLOCK_SIZE  # blocks a first read at offset 0 fetches (head -c stays small)
MAX_WINDOW = (16 << 20) // BLOCK_SIZE  # per sequential reader
MEMORY_BYTES = 24 << 20  # the window of recent blocks
READAHEAD_BYTES = 16 << 20  # blocks fetched ahead of every reader together
SEQUENTIAL_SLACK = 2 << 20  # the kernel issues readahead in parallel: reads arrive a little out of order
WAIT_MARGIN = 2.0
SEGMENT_MAX = 2 << 20  # one buffer per fetch, up to this; a whole body gets several
LOAD_BLOCKS = SEGMENT_MAX // BLOCK_SIZE  # blocks one load reads, into one such buffer
SIZES_KEPT = 100_000  # learned sizes outlive their contents' last reader (stat shows them)
IDLE_KEPT = 256  # contents nobody has open, with what is known of them (no cache index query on reopening)
SOURCES_KEPT = 10_000  # so do resolved URLs: reopening a file asks the API again only once they expire
EXACT_TOUCHES = 2  # reads of a block that fetch exactly their bytes; the next fetches the block
TOUCHES_KEPT = 4096  # blocks per content remembered as read exactly (then forgotten all at once)


class Span(NamedTuple):
    """A block's bytes: ``base[start:end]``. Blocks of one fetch share one buffer, so a read
    spanning several of them is one slice of it, not a copy."""

    base: memoryview
    start: int
    end: int

    def __len__(self) -> int:  # type: ignore[override]
        return self.end - self.start


EMPTY = Span(memoryview(b""), 0, 0)


class ContentId(NamedTuple):
    """What blocks belong to: a new fingerprint makes old blocks unreachable."""

    provider: str
    key: Hashable
    fingerprint: str


class _Pending:
    """A block being fetched or loaded: readers ``wait``, then take ``span`` or ``error``. The
    event is made for a reader that waits: a claim's blocks are mostly waited for by nobody."""

    __slots__ = ("arrived", "span", "error", "_event")

    def __init__(self) -> None:
        self.arrived = False
        self.span: Span | None = None
        self.error: FsError | None = None
        self._event: trio.Event | None = None

    async def wait(self) -> None:
        if not self.arrived:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()

    def settle(self) -> None:
        """Its ``span`` or ``error`` is set: the readers waiting go on."""
        self.arrived = True
        if self._event is not None:
            self._event.set()


@dataclass(eq=False)
class Content:
    """One file content as readers share it: where its bytes are, its size once verified,
    its blocks in flight and on disk."""

    id: ContentId
    hash: str
    provider: "Provider"
    ref: Hashable
    total: int | None = None
    claimed: int | None = None
    on_disk: set[int] = field(default_factory=set)
    pending: dict[int, _Pending] = field(default_factory=dict)
    source: Source | None = None
    resolve_lock: trio.Lock = field(default_factory=trio.Lock)
    disk_lock: trio.Lock = field(default_factory=trio.Lock)  # its loads run one after the other
    handles: int = 0
    streams: int = 0  # fetches of the whole body (the server ignores Range)
    streamed_to: int = 0  # blocks below this were passed by a whole-body stream
    ranges_honoured: bool = True  # False once the server answered a range with the whole body
    touched: dict[int, int] = field(default_factory=dict)  # block -> reads that fetched a part of it exactly
    arrivals: trio.Event | None = None  # made by a reader waiting for a stream's next blocks
    listeners: dict[Hashable, Callable[[int], None]] = field(default_factory=dict)

    def blocks(self) -> int | None:
        return None if self.total is None else -(-self.total // BLOCK_SIZE)

    def expected_size(self) -> int | None:
        """The verified size, else the listing's: where readahead and claims stop."""
        return self.total if self.total is not None else self.claimed

    def expected_blocks(self) -> int | None:
        size = self.expected_size()
        return None if size is None else -(-size // BLOCK_SIZE)

    def read_end(self, offset: int, size: int) -> int:
        """Where a read of ``size`` bytes at ``offset`` ends: within the file, if its size is known."""
        return offset + size if self.total is None else min(offset + size, self.total)


@dataclass(eq=False)
class Handle:
    """One open remote file: where its last read ended and how far ahead it reads."""

    content: Content
    next_offset: int = 0
    window: int = 0


def _at_start(handle: Handle, offset: int) -> bool:
    """Whether a read at ``offset`` is the handle's first, at the start of the file."""
    return offset == 0 and handle.next_offset == 0


def _opening(handle: Handle, offset: int) -> bool:
    """Whether a read at ``offset`` opens a file bigger than the first window (``head -c``)."""
    return _at_start(handle, offset) and (handle.content.expected_blocks() or 0) > FIRST_WINDOW


def _sequential(handle: Handle, offset: int) -> bool:
    """Whether a read at ``offset`` goes on from the handle's last one (or starts the file)."""
    if _at_start(handle, offset):
        return True
    return handle.next_offset - SEQUENTIAL_SLACK <= offset <= handle.next_offset + SEQUENTIAL_SLACK


def _remember(memory: collections.OrderedDict, key: Hashable, value: Any, limit: int) -> None:
    """Keep ``value`` as the newest of at most ``limit`` remembered ones."""
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > limit:
        memory.popitem(last=False)


class Window:
    """The memory window: recent blocks, least recently used dropped beyond ``budget`` bytes.
    Readers holding a block keep its buffer alive; the window only stops pointing at it."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.bytes = 0
        self._blocks: collections.OrderedDict[tuple[str, int], Span] = collections.OrderedDict()

    def get(self, key: tuple[str, int]) -> Span | None:
        span = self._blocks.get(key)
        if span is not None:
            self._blocks.move_to_end(key)
        return span

    def put(self, key: tuple[str, int], span: Span) -> None:
        old = self._blocks.pop(key, None)
        self.bytes += len(span) - (len(old) if old is not None else 0)
        self._blocks[key] = span
        while self.bytes > self.budget and len(self._blocks) > 1:
            _, dropped = self._blocks.popitem(last=False)
            self.bytes -= len(dropped)


class _Reply:
    """A read's bytes gathered block by block: one slice of a fetch's buffer where they lie
    within one fetch, else the pieces joined."""

    def __init__(self, offset: int, size: int) -> None:
        self.offset, self.end = offset, offset + size
        self.parts: list[Span] = []
        self.length = 0

    @classmethod
    def of(cls, offset: int, size: int, spans: dict[int, Span]) -> _Reply:
        reply = cls(offset, size)
        for index in sorted(spans):
            if not reply.add(index, spans[index]):
                break
        return reply

    def add(self, index: int, span: Span) -> bool:
        """Take block ``index``'s share of the read; False once the file ended."""
        base = index * BLOCK_SIZE
        lo, hi = max(self.offset, base) - base, min(self.end - base, len(span))
        if hi > lo:
            piece = Span(span.base, span.start + lo, span.start + hi)
            parts = self.parts
            if parts and parts[-1].base is piece.base and parts[-1].end == piece.start:
                parts[-1] = Span(piece.base, parts[-1].start, piece.end)
            else:
                parts.append(piece)
            self.length += hi - lo
        return len(span) >= BLOCK_SIZE and hi >= lo

    def data(self) -> memoryview | bytes:
        """The bytes: a slice of one buffer where they lie in one, else the pieces joined."""
        if len(self.parts) == 1:
            part = self.parts[0]
            return part.base[part.start:part.end]
        return b"".join(p.base[p.start:p.end] for p in self.parts)


class Engine:
    """Serves reads of every open remote file; fetches run in ``nursery``.

    ``writes_around``: every block goes to the disk around the page cache, as for a mount,
    whose kernel keeps the pages its readers read. Else only a claim's blocks do (fsspec's: a
    whole small file, a read after a seek): the memory window serves them again soon after, and
    the page cache's copy cost more than it saved (fsspec's 200 files of 1 MiB in ``make bench``,
    six runs of five each: 615 -> 683 MB/s, 0.77 -> 0.83x fsspec http, medians). Blocks
    fetched ahead of a sequential reader go through it, so a re-read of a big file comes from
    memory."""

    def __init__(self, cache: BlockCache, nursery: trio.Nursery, *, clock: Callable[[], float],
                 shared_buffers: bool = False, writes_around: bool = True) -> None:
        self.cache = cache
        self.writes_around = writes_around
        self.nursery = nursery
        self.clock = clock
        self.window = Window(MEMORY_BYTES)
        self.buffers = BufferPool(BLOCK_SIZE, SEGMENT_MAX, shared=shared_buffers)
        self.readahead_budget = min(READAHEAD_BYTES, max(cache.max_size // 4, BLOCK_SIZE))
        self.readahead_pending = 0
        self._contents: dict[ContentId, Content] = {}
        self._sizes: collections.OrderedDict[ContentId, int] = collections.OrderedDict()
        self.sizes_learned = 0  # counts learned sizes: attributes made before a change are stale
        self._sources: collections.OrderedDict[ContentId, Source] = collections.OrderedDict()
        self._idle: collections.OrderedDict[ContentId, Content] = collections.OrderedDict()
        self._working = 0
        self._quiet = trio.Event()

    # ---- open / size / release -------------------------------------------------------------------

    async def open(self, provider: "Provider", ref: Hashable, key: Hashable, fingerprint: str,
                   claimed: int | None) -> Handle:
        """A handle on a content; the first open learns what the disk cache holds of it."""
        cid = ContentId(provider.name, key, fingerprint)
        content = self._contents.get(cid) or self._idle.pop(cid, None)
        if content is not None:
            self._contents[cid] = content
        else:
            content = Content(cid, content_hash(*cid), provider, ref, total=self._sizes.get(cid), claimed=claimed,
                              source=self._sources.get(cid))
            self._contents[cid] = content
            if self.cache.may_hold(content.hash):
                on_disk, total = await workers().run(self.cache.snapshot, content.hash)
                content.on_disk |= on_disk
                if content.total is None and total is not None:
                    self._learned_total(content, total)
        content.handles += 1
        return Handle(content, window=0)

    def release(self, handle: Handle) -> None:
        handle.content.handles -= 1
        self._drop_if_idle(handle.content)

    def size(self, provider: str, key: Hashable, fingerprint: str) -> int | None:
        """The verified size of a content, once a fetch (or the cache) has told it."""
        return self._sizes.get((provider, key, fingerprint))  # type: ignore[call-overload]

    def _drop_if_idle(self, content: Content) -> None:
        """A content nobody reads is kept a while (what is on disk, its URL), for the next open."""
        if content.handles <= 0 and not content.pending and not content.streams:
            if self._contents.pop(content.id, None) is content:
                _remember(self._idle, content.id, content, IDLE_KEPT)

    # ---- reads -----------------------------------------------------------------------------------

    async def read(self, handle: Handle, offset: int, size: int) -> memoryview | bytes:
        """Exactly ``size`` bytes at ``offset``, fewer only at the end of the file: one slice of
        a fetch's buffer where the read lies within one fetch, else the pieces joined."""
        got = await self._read(handle, offset, size)
        return got.data() if isinstance(got, _Reply) else got

    async def read_out(self, handle: Handle, offset: int, size: int) -> Piece:
        """``read`` for a caller in another thread, which copies the bytes out itself
        (``Piece.tobytes``, ``Piece.copy_into``) from the buffers they lie in."""
        got = await self._read(handle, offset, size)
        if not isinstance(got, _Reply):
            return Piece(got)
        return Piece.joined([self.buffers.piece(part.base, part.start, part.end) for part in got.parts])

    async def _read(self, handle: Handle, offset: int, size: int) -> _Reply | memoryview:
        """A read's blocks gathered (or its bytes, where fetched for it alone).

        A read that can be a ``claim`` fetches its blocks itself; the rest waits for blocks on
        their way, loads them from disk, or fetches them with readahead."""
        if self._exact(handle, offset, size):
            data = await self._fetch_exact(handle.content, offset, size)
            if data is not None:  # a reader that goes on from an opening read ramps up as from a first one
                handle.next_offset, handle.window = offset + len(data), 0 if offset else FIRST_WINDOW // 2
                return data
        got = await self.claim(handle, offset, size)
        if isinstance(got, Claim):
            await self.finish(got)
            return got.reply()
        if got is not None:
            return got  # also an empty read, or one past the end of the file
        content = handle.content
        first, last = offset // BLOCK_SIZE, (offset + size - 1) // BLOCK_SIZE
        self._adapt(handle, offset)
        self._plan(content, first, last, handle.window)
        reply = _Reply(offset, size)
        for index in range(first, last + 1):
            if not reply.add(index, await self._block(content, index)):
                break
        handle.next_offset = offset + reply.length
        return reply

    async def claim(self, handle: Handle, offset: int, size: int) -> _Reply | Claim | None:
        """A read that needs no waiting for others: its blocks if memory holds them all; a
        ``Claim`` on the blocks missing (one run nobody fetches or loads yet) for the reader
        to fetch itself (``finish``); None if the read must wait (blocks in flight or on
        disk, the whole body streaming), or readahead would fetch more than the rest of the
        file with them. A claim reaches to the end of the file where readahead would, so
        reads after a seek and small files are claims, and sequential reads of big files go
        on with readahead. Only a URL not resolved yet is waited for, and only when a block
        must come from the network."""
        content = handle.content
        if size <= 0 or (content.total is not None and offset >= content.total):
            return _Reply(offset, 0)
        found = self._in_memory(content, offset, size)
        if found is not None and found[1] and self._current_source(content) is None:
            await self._source(content, False)
            found = self._in_memory(content, offset, size)  # the wait let other reads move on
        if found is None or content.source is None:
            return None
        known, missing = found
        was = handle.next_offset, handle.window
        self._adapt(handle, offset)
        end = content.read_end(offset, size)
        first, last = offset // BLOCK_SIZE, (end - 1) // BLOCK_SIZE
        stop = self._claim_stop(content, last, handle.window) if missing else last + 1
        if stop is None or (missing and missing[-1] != last):
            handle.next_offset, handle.window = was  # readahead too: one request for both, by ``read``
            return None
        handle.next_offset = end
        self.cache.count(hit=True, blocks=len(known))
        if not missing:
            self._plan(content, first, last, handle.window)
            return _Reply.of(offset, size, known)
        mine, _ = self._register(content, missing[0], stop, from_disk=False, readahead=False)
        return Claim(self, content, missing[0], stop, mine, _Reply(offset, size), known)

    def _claim_stop(self, content: Content, last: int, window: int) -> int | None:
        """Where a claim ending at block ``last`` stops: there, or at the end of the file if
        readahead would fetch up to it and none of those blocks is under way; None if
        readahead would fetch beyond."""
        if not window:
            return last + 1
        limit = content.expected_blocks()  # where readahead stops too
        if limit is None or limit > last + 1 + window:
            return None
        if any(self._available(content, index) or index in content.on_disk for index in range(last + 1, limit)):
            return None
        return max(limit, last + 1)

    def _in_memory(self, content: Content, offset: int, size: int) -> tuple[dict[int, Span], list[int]] | None:
        """The blocks of a read that memory holds, and the rest if they are one run that nobody
        fetches or loads; None if some are on their way or on disk (or a whole body streams)."""
        if content.streams:
            return None
        end = content.read_end(offset, size)
        known: dict[int, Span] = {}
        missing: list[int] = []
        for index in range(offset // BLOCK_SIZE, (end - 1) // BLOCK_SIZE + 1):
            span = self.window.get((content.hash, index))
            if span is not None:
                known[index] = span
            elif index in content.pending or index in content.on_disk:
                return None
            else:
                missing.append(index)
        if missing and missing[-1] - missing[0] + 1 != len(missing):
            return None  # not one run: a request each is for the worker threads
        return known, missing

    def _adapt(self, handle: Handle, offset: int) -> None:
        """The handle's readahead window: a small one at the start, doubled on sequential reads,
        none after a seek."""
        if _at_start(handle, offset):
            handle.window = max(handle.window, FIRST_WINDOW)
        elif _sequential(handle, offset):
            handle.window = min(max(handle.window, 1) * 2, MAX_WINDOW)
        else:
            handle.window = 0

    def _exact(self, handle: Handle, offset: int, size: int) -> bool:
        """Whether a read fetches exactly its bytes, keeping nothing: it comes after a seek or
        opens a file bigger than the first window, is shorter than a block, and is among the
        first ``EXACT_TOUCHES`` to touch its block, which nothing holds or fetches (the block's
        next reader fetches it whole). Not where the server sends whole bodies (they stream
        once, every block kept)."""
        content = handle.content
        index = offset // BLOCK_SIZE
        if (not 0 < size < BLOCK_SIZE or (offset + size - 1) // BLOCK_SIZE != index
                or (_sequential(handle, offset) and not _opening(handle, offset))
                or not content.ranges_honoured or content.streams or content.touched.get(index, 0) >= EXACT_TOUCHES
                or (content.total is not None and offset >= content.total)
                or self._available(content, index) or index in content.on_disk):
            return False
        if len(content.touched) >= TOUCHES_KEPT:
            content.touched.clear()
        content.touched[index] = content.touched.get(index, 0) + 1
        self.cache.count(hit=False)
        return True

    async def _fetch_exact(self, content: Content, offset: int, size: int) -> memoryview | None:
        """Bytes ``[offset, offset + size)`` (fewer at the end of the file), fetched for one
        reader and kept nowhere; None if the server ignored Range (the read then takes blocks)."""
        sink = _ExactSink(self, content, offset, size, trio.lowlevel.current_trio_token())
        error = await self._get(content, offset, offset + size, sink, here=True)
        sink.closed = True  # as for a block fetch: a worker thread left behind reports nothing more
        if error is not None:
            raise error
        return None if sink.whole else sink.buffer[:sink.got]

    def _available(self, content: Content, index: int) -> bool:
        return index in content.pending or self.window.get((content.hash, index)) is not None

    def _plan(self, content: Content, first: int, last: int, window: int) -> None:
        """Start what ``[first, last]`` lacks, plus readahead up to ``window`` blocks beyond it.

        Readahead is topped up only when less than half a window is left in flight, and then by
        a whole window, so a sequential reader keeps a few large requests going. While the
        whole body streams (Range ignored) nothing is fetched: every block is on its way.
        """
        if content.streams:
            return
        limit = content.blocks()
        index = first
        horizon = last + window
        while index <= horizon and (limit is None or index < limit) and self._available(content, index):
            index += 1
        if index > horizon or (limit is not None and index >= limit):
            return
        if index > last and index - last - 1 >= max(1, window // 2):
            return
        stop = max(index, last + 1) + window
        if limit is not None:
            stop = min(stop, limit)
        elif (expected := content.expected_blocks()) is not None:
            stop = min(stop, max(last + 1, expected))
        ahead = self.readahead_budget - self.readahead_pending
        stop = min(stop, max(last + 1, index + ahead // BLOCK_SIZE))
        run_start = index
        while index < stop:
            from_disk = index in content.on_disk
            run_start = index
            while index < stop and not self._available(content, index) and (index in content.on_disk) == from_disk:
                index += 1
            if index > run_start:
                self._start(content, run_start, index, from_disk, readahead=run_start > last)
            while index < stop and self._available(content, index):
                index += 1

    async def settled(self) -> None:
        """Return once no fetch or load is under way (their blocks are then queued for the disk)."""
        while self._working:
            await self._quiet.wait()

    def _start(self, content: Content, start: int, end: int, from_disk: bool, *, readahead: bool) -> None:
        """Fetch blocks ``[start, end)``; or load them in runs that each fill one pooled buffer,
        a reader waiting for its run only. A content's runs are read one after the other: this
        machine's disk read a file at 1.4 GB/s in order, and at 180 MB/s as eight runs side
        by side."""
        if not from_disk:
            mine, held = self._register(content, start, end, from_disk=False, readahead=readahead)
            self.nursery.start_soon(self._fetch, content, start, end, mine, held)
            return
        runs = []
        for first in range(start, end, LOAD_BLOCKS):
            last = min(first + LOAD_BLOCKS, end)
            runs.append((first, last, *self._register(content, first, last, from_disk=True, readahead=readahead)))
        self.nursery.start_soon(self._load_in_order, content, runs)

    def _register(self, content: Content, start: int, end: int, *, from_disk: bool,
                  readahead: bool) -> tuple[dict[int, _Pending], int]:
        """Blocks ``[start, end)`` are on their way: readers wait for them, ``settled`` too.
        Their waiters (``mine``), and the readahead bytes they hold."""
        self.cache.count(hit=from_disk, blocks=end - start)
        mine = {index: _Pending() for index in range(start, end)}
        content.pending.update(mine)
        held = (end - start) * BLOCK_SIZE if readahead else 0
        self.readahead_pending += held
        self._working += 1
        self._quiet = trio.Event() if self._quiet.is_set() else self._quiet
        return mine, held

    async def _block(self, content: Content, index: int) -> Span:
        """Block ``index`` (shorter at the end of the file; empty past it). A reader waits a
        little longer than a fetch may take, so that the fetch's own error (naming the URL
        path and why) is what it gets."""
        deadline = trio.current_time() + content.provider.http.deadline + WAIT_MARGIN
        while True:
            span = self.window.get((content.hash, index))
            if span is not None:
                self.cache.count(hit=True)
                return span
            pending = content.pending.get(index)
            if pending is not None:
                with trio.move_on_at(deadline):
                    await pending.wait()
                if not pending.arrived:
                    raise RemoteError(f"{content.id.provider}: block {index} did not arrive in time")
                if pending.error is not None:
                    raise pending.error
                assert pending.span is not None
                return pending.span
            limit = content.blocks()
            if limit is not None and index >= limit:
                return EMPTY
            if content.streams and index >= content.streamed_to:
                with trio.move_on_at(deadline):
                    if content.arrivals is None:
                        content.arrivals = trio.Event()
                    await content.arrivals.wait()
                if trio.current_time() >= deadline:
                    raise RemoteError(f"{content.id.provider}: block {index} did not arrive in time")
                continue
            passed = content.streams > 0  # the stream passed it, and it left memory: the disk has it
            self._start(content, index, index + 1, passed or index in content.on_disk, readahead=False)

    # ---- arrivals (trio thread) ------------------------------------------------------------------

    def _arrived(self, content: Content, spans: dict[int, Span], dropped: Collection[int] = (),
                 taken: Collection[int] = ()) -> None:
        """Blocks are here, and queued for the disk but those the full queue ``dropped``: once
        one leaves memory it is loaded from there (from the queue until it is written; fetched
        again if the disk did not keep it after all), or fetched again if it was dropped. Those
        a claim's read ``taken`` whole skip the memory window (``_fetched``). One call for all
        the blocks a fetch handed over at once, and one wake-up."""
        for index, span in spans.items():
            if index not in taken:
                self.window.put((content.hash, index), span)
            if index not in dropped:
                content.on_disk.add(index)
            if content.streams:
                content.streamed_to = max(content.streamed_to, index + 1)
            pending = content.pending.pop(index, None)
            if pending is not None:
                pending.span = span
                pending.settle()
        self._wake(content)

    def _wake(self, content: Content) -> None:
        if content.arrivals is not None:
            content.arrivals.set()
            content.arrivals = None

    def _learned_total(self, content: Content, total: int) -> None:
        """A fetch (or the cache) told the content's true size: the one place it is kept."""
        if content.total == total:
            return
        content.total = total
        _remember(self._sizes, content.id, total, SIZES_KEPT)
        self.sizes_learned += 1
        for listener in content.listeners.values():
            listener(total)

    def _settle(self, content: Content, mine: dict[int, _Pending], error: FsError | None, held: int) -> None:
        """A fetch or load ended: its waiters still waiting get the error (or, past the end of
        the file, an empty block); nobody waits forever, and nothing failed is remembered."""
        self.readahead_pending -= held
        self._working -= 1
        if not self._working:
            self._quiet.set()
        limit = content.blocks()
        for index, pending in mine.items():
            if pending.arrived:
                continue
            if content.pending.get(index) is pending:
                del content.pending[index]
            if limit is not None and index >= limit:
                pending.span = EMPTY
            else:
                pending.error = error or RemoteError(f"{content.id.provider}: block {index} never arrived")
            pending.settle()
        self._wake(content)
        self._drop_if_idle(content)

    # ---- loads from disk -------------------------------------------------------------------------

    async def _load_in_order(self, content: Content, runs: list[tuple[int, int, dict[int, _Pending], int]]) -> None:
        async with content.disk_lock:
            for run in runs:
                await self._load(content, *run)

    async def _load(self, content: Content, start: int, end: int, mine: dict[int, _Pending], held: int) -> None:
        """Blocks from the disk cache; a missing or damaged one is fetched instead."""
        missing: list[int] = []
        try:
            buffer = self.buffers.take(BLOCK_SIZE * (end - start))
            views = await workers().run(self.cache.load, content.hash, start, end - start, buffer,
                                        abandon_on_cancel=True)
            base = buffer.toreadonly()  # spans of the whole buffer: a caller copies them out by offset
            loaded: dict[int, Span] = {}
            for i, (index, view) in enumerate(zip(range(start, end), views)):
                if view is None:
                    content.on_disk.discard(index)
                    missing.append(index)
                else:
                    loaded[index] = Span(base, i * BLOCK_SIZE, i * BLOCK_SIZE + len(view))
            self._arrived(content, loaded)
        finally:
            if missing:
                refetch = {i: mine.pop(i) for i in missing}
                self._working += 1
                self.nursery.start_soon(self._fetch, content, missing[0], missing[-1] + 1, refetch, 0)
            self._settle(content, mine, None, held)

    # ---- fetches ---------------------------------------------------------------------------------

    async def _fetch(self, content: Content, start: int, end: int, mine: dict[int, _Pending], held: int, *,
                     sink: _BlockSink | None = None) -> FsError | None:
        """Fetch blocks ``[start, end)`` (the HTTP layer retries, resumes and re-resolves); the
        error its waiters got, if it failed. A claim's (its ``sink``) is read where it can be
        on the trio thread: its reader waits for exactly it."""
        sink = sink or _BlockSink(self, content, start, end, trio.lowlevel.current_trio_token())
        error: FsError | None = None
        try:
            error = await self._get(content, start * BLOCK_SIZE, self._fetch_end(content, end), sink, here=sink.keep)
        finally:
            self._fetched(sink, mine, error, held)
        return error

    async def _get(self, content: Content, start: int, end: int, sink: _BlockSink | _ExactSink, *,
                   here: bool) -> FsError | None:
        """Bytes ``[start, end)`` into ``sink`` (the HTTP layer retries, resumes and
        re-resolves); the error a reader gets, if it failed."""
        try:
            await content.provider.http.fetch(lambda refresh: self._source(content, refresh), start, end, sink,
                                              known=self._current_source(content), here=here)
        except FsError as exc:
            log.debug("%s: fetch of bytes %d-%d failed: %s", content.id.provider, start, end - 1, exc)
            return exc
        except Exception as exc:  # noqa: BLE001 - a reader must get EIO, never a hang
            log.exception("%s: unexpected error while fetching", content.id.provider)
            return RemoteError(f"{content.id.provider}: {type(exc).__name__}")
        return None

    def _fetched(self, sink: _BlockSink, mine: dict[int, _Pending], error: FsError | None, held: int) -> None:
        """A fetch is over: the blocks its sink kept arrive, it takes nothing more, and its
        waiters still waiting get ``error``.

        A block the claim's read takes whole stays out of the memory window: that reader has
        it, and a read to come finds it in the disk queue until the disk has it (another path
        to the same content, which the kernel's pages of the first do not serve), or fetches
        it again if the full queue dropped it. The window held the last 24 MiB of them, so the
        pool made new buffers for the fetches that followed: fsspec's 200 files of 1 MiB ran at
        751 against 654 MB/s without them there (lab, twenty processes each, interleaved)."""
        start, end = sink.taken
        taken = {i for i, span in sink.kept.items() if start <= i * BLOCK_SIZE and i * BLOCK_SIZE + len(span) <= end}
        self._arrived(sink.content, sink.kept, sink.dropped, taken)
        sink.closed = True
        self._count_stream(sink, -1)
        self._settle(sink.content, mine, error, held)

    async def finish(self, claim: Claim) -> None:
        """Fetch a claim's blocks in this task (no fetch task); raises the error their waiters got."""
        error = await self._fetch(claim.content, claim.start, claim.end, claim.mine, 0, sink=claim.sink)
        if error is not None:
            raise error

    @staticmethod
    def _fetch_end(content: Content, end: int) -> int:
        """The byte to stop before: the blocks asked for, within the verified size if known."""
        stop = end * BLOCK_SIZE
        return stop if content.total is None else min(stop, content.total)

    def _count_stream(self, sink: "_BlockSink", change: int) -> None:
        """A whole-body stream began (+1) or ended (-1); a fetch that ended counts no more."""
        if change > 0 and not sink.closed and not sink.counted:
            sink.counted = True
            sink.content.streams += 1
        elif change < 0 and sink.counted:
            sink.counted = False
            sink.content.streams -= 1
            self._drop_if_idle(sink.content)
        self._wake(sink.content)

    def _current_source(self, content: Content) -> Source | None:
        """The content's remembered URL, unless it is about to expire."""
        source = content.source
        return None if source is None or source.expiring(self.clock()) else source

    async def _source(self, content: Content, refresh: bool) -> Source:
        """The remembered URL, or a new one if none yet, about to expire, or refused (one
        resolve at a time per content: the others wait for it and take its URL)."""
        if not refresh and (source := self._current_source(content)) is not None:
            return source
        lock = content.resolve_lock
        try:
            lock.acquire_nowait()  # nobody resolves it: no trip through trio's scheduler
        except trio.WouldBlock:
            await lock.acquire()
        try:
            source = self._current_source(content)
            if refresh or source is None:
                try:
                    source = await content.provider.resolve(content.ref)
                except FsError:
                    raise
                except Exception as exc:  # noqa: BLE001 - provider data must not break a read
                    raise RemoteError(f"{content.id.provider}: cannot resolve ({type(exc).__name__})") from None
                content.source = source
                _remember(self._sources, content.id, source, SOURCES_KEPT)
            return source
        finally:
            lock.release()

    # ---- whole contents for providers (vm0 archives) ---------------------------------------------

    async def unpacked(self, name: str, provider: "Provider", ref: Hashable, key: Hashable,
                       fingerprint: str) -> Path:
        """The archive of ``ref`` unpacked into the cache's tree ``name`` (done once, reused,
        done again if the cache dropped it). Its bytes come through this engine, so the archive
        is downloaded once whether it is read as a file, unpacked, or both."""
        final = self.cache.tree_path(name)
        if await trio.to_thread.run_sync(final.is_dir):
            self.cache.touch_tree(name)
            return final
        handle = await self.open(provider, ref, key, fingerprint, None)
        try:
            stream = ThreadReader(self, handle, trio.lowlevel.current_trio_token())
            size = await trio.to_thread.run_sync(archive.unpack_once, final, stream, abandon_on_cancel=True)
        finally:
            self.release(handle)
        self.cache.add_tree(name, size)
        return final


class _Sink:
    """What a fetch's sink shares: telling the trio thread (from a worker thread or from it)
    what the fetch learned."""

    def __init__(self, engine: Engine, content: Content, token: trio.lowlevel.TrioToken) -> None:
        self.engine, self.content, self.token = engine, content, token
        self.thread = threading.get_ident()  # the trio thread's
        self.total: int | None = content.total
        self.closed = False  # set on the trio thread when the fetch is over

    def report(self, func: Callable[..., None], *args: Any) -> None:
        """``func(*args)`` on the trio thread, unless this fetch is over (never waiting): at
        once when called there (a fetch read on the trio thread), so it comes before the
        fetch's end, as it does from a worker thread."""
        if self.closed:
            return
        if threading.get_ident() == self.thread:
            func(*args)
            return
        try:
            self.token.run_sync_soon(func, *args)
        except trio.RunFinishedError:
            self.closed = True

    def _learned(self, total: int) -> None:
        if total != self.total:
            self.total = total
            self.report(self.engine._learned_total, self.content, total)
            self.engine.cache.learned_total(self.content.hash, total)


class _ExactSink(_Sink):
    """Receives an exact read's bytes into one buffer of its size; stops at once (``whole``)
    if the server sends the whole body instead."""

    def __init__(self, engine: Engine, content: Content, offset: int, size: int,
                 token: trio.lowlevel.TrioToken) -> None:
        super().__init__(engine, content, token)
        self.offset = offset
        self.buffer = memoryview(bytearray(size))
        self.got = 0
        self.whole = False

    def begin(self, first: int, total: int | None, ranged: bool) -> None:
        if total is not None:
            self._learned(total)
        if not ranged:
            self.whole = True
            self.report(setattr, self.content, "ranges_honoured", False)

    def window(self, pos: int) -> memoryview | None:
        return None if self.whole else self.buffer[pos - self.offset:]

    def wrote(self, pos: int, n: int) -> None:
        self.got = pos + n - self.offset

    def eof(self, pos: int) -> None:
        self._learned(pos)


class _BlockSink(_Sink):
    """Receives one fetch's bytes (in a worker thread, or on the trio thread for a range read
    there), in place (``readinto``) into one buffer
    for the range asked (a whole body: buffers of ``SEGMENT_MAX``); each complete block is
    handed to the trio thread as a span of it, and queued for the disk. A whole body (the
    server ignored Range) is taken to its end, every block kept, and the disk queue then
    waits rather than drops, so the file is not sent again."""

    def __init__(self, engine: Engine, content: Content, start: int, end: int,
                 token: trio.lowlevel.TrioToken, *, keep: bool = False, taken: tuple[int, int] = (0, 0)) -> None:
        super().__init__(engine, content, token)
        self.kept: dict[int, Span] = {}  # with ``keep``: the blocks asked for (a claim's reader takes them)
        self.taken = taken  # a claim's: the bytes its read takes
        self.dropped: set[int] = set()  # blocks the full disk queue did not take
        self.keep = keep
        self.wanted_start, self.wanted_end = start * BLOCK_SIZE, end * BLOCK_SIZE
        self.ranged = True
        self.pos = start * BLOCK_SIZE  # the next byte to arrive
        self.handed = self.pos  # where the first block not handed over yet starts
        self.first_end = self.pos + BLOCK_SIZE  # a reader may be waiting for this block: hand it over alone
        self.segment: memoryview | None = None
        self.base = EMPTY.base
        self.segment_start = self.segment_end = self.pos
        self.counted = False  # trio thread: counted as a whole-body stream

    def begin(self, first: int, total: int | None, ranged: bool) -> None:
        """A response starts at ``first``: where this fetch stopped (a resume, maybe within a
        block), or a block boundary (0 for a whole body)."""
        self.ranged = ranged
        if total is not None:
            self._learned(total)
        if first != self.pos:
            if first % BLOCK_SIZE:
                raise RemoteError(f"{self.content.id.provider}: an answer starting at byte {first}")
            self._hand_over()  # what the buffer holds complete, before it is left
            self.pos = self.handed = first
            self.segment = None
        if not ranged:
            self.report(self.engine._count_stream, self, 1)

    def _stop(self) -> int:
        """Where bytes stop being wanted: the range asked (a whole body: the file's end)."""
        stop = self.wanted_end if self.ranged else (1 << 62)
        return stop if self.total is None else min(stop, self.total)

    def window(self, pos: int) -> memoryview | None:
        """Where the bytes at ``pos`` go: the rest of the segment, except that the fetch's first
        block is read alone, so the reader waiting for it is not held up by the readahead (a
        claim's reader waits for all of its blocks: they are read at once)."""
        if self.closed or pos >= self._stop():
            return None
        if self.segment is None or pos >= self.segment_end:
            start = pos - pos % BLOCK_SIZE
            size = min(self._stop() - start, SEGMENT_MAX)
            self.segment = self.engine.buffers.take(size)
            self.base = self.segment.toreadonly()
            self.segment_start, self.segment_end = start, start + size
        end = self.first_end if pos < self.first_end and not self.keep else self.segment_end
        return self.segment[pos - self.segment_start:min(end, self.segment_end) - self.segment_start]

    def wrote(self, pos: int, n: int) -> None:
        """``n`` bytes arrived at ``pos``: the blocks they complete are handed over, in one trip;
        a claim's all at once, when its buffer is full (its reader waits for all of them)."""
        self.pos = pos + n
        if not (self.keep and self.ranged) or self.pos >= min(self.segment_end, self._stop()):
            self._hand_over()

    def _hand_over(self) -> None:
        """The blocks complete since the last hand-over go to the disk queue (one run), then to
        the trio thread in one trip (or, for a claim, to ``kept``: they arrive with the fetch's
        end). Queued for the disk before they count as arrived (and as on disk): a reader that
        then loads one back finds it written, or a hole if the queue dropped it, never half written."""
        stop, start = self._stop(), self.handed
        spans: dict[int, Span] = {}
        payloads: list[memoryview] = []
        while self.pos - start >= min(BLOCK_SIZE, stop - start) > 0:
            span = Span(self.base, start - self.segment_start, min(start + BLOCK_SIZE, stop) - self.segment_start)
            payloads.append(span.base[span.start:span.end])
            if self.keep and self.wanted_start <= start < self.wanted_end:
                self.kept[start // BLOCK_SIZE] = span
            else:
                spans[start // BLOCK_SIZE] = span
            start += BLOCK_SIZE
        if not payloads:
            return
        stored = self.engine.cache.store(self.content.hash, self.handed // BLOCK_SIZE, payloads, wait=not self.ranged,
                                         around=self.engine.writes_around or (self.keep and self.ranged))
        if not stored:
            self.dropped.update(range(self.handed // BLOCK_SIZE, start // BLOCK_SIZE))
        self.handed = start
        if spans:
            self.report(self.engine._arrived, self.content, spans, self.dropped)

    def eof(self, pos: int) -> None:
        self._learned(pos)  # first: a reader given the last bytes must find the size known
        self._hand_over()
        if not self.ranged:
            self.report(self.engine._count_stream, self, -1)


class Claim:
    """Blocks ``[start, end)`` that one read fetches itself (``Engine.finish``), with no fetch
    task and no hand-off per block; other readers wait for them as for any fetch, and they
    arrive with the fetch's end. Made by ``Engine.claim``; fetched once."""

    def __init__(self, engine: Engine, content: Content, start: int, end: int, mine: dict[int, _Pending],
                 reply: _Reply, known: dict[int, Span]) -> None:
        self.content, self.start, self.end, self.mine = content, start, end, mine
        self.sink = _BlockSink(engine, content, start, end, trio.lowlevel.current_trio_token(), keep=True,
                               taken=(reply.offset, reply.end))
        self.gathered, self.known = reply, known

    def reply(self) -> _Reply:
        """The read's blocks, from those memory had and the claim's."""
        spans = {**self.known, **self.sink.kept}
        for index in range(self.gathered.offset // BLOCK_SIZE, (self.gathered.end - 1) // BLOCK_SIZE + 1):
            span = spans.get(index)
            if span is None and self.sink.total is not None and index * BLOCK_SIZE >= self.sink.total:
                break  # the file ends before the read did
            if span is None:
                raise RemoteError(f"{self.content.id.provider}: block {index} never arrived")
            if not self.gathered.add(index, span):
                break
        return self.gathered


class ThreadReader(io.RawIOBase):
    """A content read sequentially from a worker thread, as a raw file (for ``tarfile``)."""

    def __init__(self, engine: Engine, handle: Handle, token: trio.lowlevel.TrioToken) -> None:
        super().__init__()
        self.engine, self.handle, self.token = engine, handle, token
        self.position = 0

    @property
    def size(self) -> int | None:
        """The content's size once a read has learned it."""
        return self.handle.content.total

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = trio.from_thread.run(self.engine.read, self.handle, self.position, len(buffer),
                                    trio_token=self.token)
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        self.position += n
        return n
