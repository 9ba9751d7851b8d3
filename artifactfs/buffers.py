"""Fetch buffers, reused once nothing points into them.

A fresh buffer costs the kernel a zeroed page per 4 KiB touched: measured here, 0.3 to 0.4 ms
per MiB, a fifth to a quarter of what a cold read spends per MiB. So buffers of ``BLOCK_SIZE``
to ``SEGMENT_MAX`` (in power-of-two classes) are anonymous maps that the pool keeps and hands
out again once every view of them is gone: readers, the memory window and the disk queue hold
memoryviews, and a map with a view exported refuses ``resize``, which is how the pool tells
(no reference counting of its own to get wrong). Each class is a ring: a map probed goes to
its back, so one still in use is probed again only after every other map of its class (a
scan from the front probed the same busy maps on every take: ~30 per random read, 25 µs).
The pool keeps at most ``POOL_BYTES``; beyond that the least recently taken map of the class
holding the most is let go, and freed by Python when its last view goes. Smaller buffers
come from the heap.

Once a fetch had to take a second new map of a size class, a background thread makes
``SPARE_BYTES`` more of that class and touches their pages, so the next fetches find them
ready: a fresh mount reading 200 files of 1 MiB took ~50 new maps, their pages faulted in by
the trio thread's ``recv`` (0.4 ms per MiB). A mount's very first read (``head -c``) starts
no thread and shares the machine with nothing.

For callers in other threads (fsspec's), a pool made ``shared`` backs its larger maps with
memfds, so a read's bytes are copied out by the caller with ``os.pread`` (``Piece``): the kernel
copies them, and faults in the new ``bytes``' pages, with the GIL let go, while the trio thread
goes on. ``bytes(view)`` did both holding the GIL, on eight caller threads at once: fsspec's
200 files of 1 MiB ran at ~887 against ~829 MB/s (lab, medians of eight interleaved runs).
Each such map holds two descriptors (``mmap`` keeps a copy), so at most ``SHARED_MAPS`` live.
"""

from __future__ import annotations

import collections
import mmap
import os
import threading
import weakref

POOL_BYTES = 64 << 20  # the memory window, readahead and the disk queue together, with room
SPARE_BYTES = 8 << 20  # made ahead of need, per size class, each time a fetch waited for a new map
SHARED_MIN = 1 << 20  # maps of this size and up are memfds in a shared pool (whole small files, readahead)
SHARED_MAPS = 64  # memfd maps alive at most: two descriptors each


def _new_map(size: int) -> mmap.mmap:
    """Pages come as bytes arrive: a first read waits for its block's pages, not the whole map's
    (``MAP_POPULATE`` of the first 1 MiB added 1.2 ms to ``head -c 4096`` on a fresh mount)."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _memfd_map(size: int) -> tuple[mmap.mmap, int] | None:
    """A shared map of a new memfd, and the memfd; None where there are none (macOS)."""
    try:
        fd = os.memfd_create("artifactfs-buffer", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return None
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size), fd
    except OSError:
        os.close(fd)
        return None


class Piece:
    """A read's bytes, in one or more buffers, for the thread that asked for them to copy out
    (``tobytes``, ``copy_into``): with ``os.preadv`` from a buffer's memfd where it has one,
    else by a copy of the view. The piece holds its views, so the pool hands a buffer out
    again only once the bytes are out."""

    __slots__ = ("_parts",)

    def __init__(self, view: memoryview | bytes, fd: int | None = None, offset: int = 0) -> None:
        self._parts: list[tuple[memoryview | bytes, int | None, int]] = [(view, fd, offset)]

    @classmethod
    def joined(cls, pieces: list[Piece]) -> Piece:
        """One piece of ``pieces``' bytes, in their order."""
        if not pieces:
            return cls(b"")
        whole = pieces[0]
        for piece in pieces[1:]:
            whole._parts += piece._parts
        return whole

    def __len__(self) -> int:
        return sum(len(view) for view, _, _ in self._parts)

    def tobytes(self) -> bytes:
        parts, self._parts = self._parts, []
        if len(parts) != 1:
            return b"".join(view for view, _, _ in parts)
        view, fd, offset = parts[0]
        if fd is not None and len(view):
            data = os.pread(fd, len(view), offset)
            if len(data) == len(view):
                return data
        return view if isinstance(view, bytes) else bytes(view)

    def copy_into(self, out: memoryview) -> int:
        """Copy the bytes to the start of ``out`` (at least as long); their count."""
        parts, self._parts = self._parts, []
        at = 0
        for view, fd, offset in parts:
            end = at + len(view)
            if fd is None or os.preadv(fd, [out[at:end]], offset) != len(view):
                out[at:end] = view
            at = end
        return at


def _touched(segment: mmap.mmap, zeros: int) -> mmap.mmap:
    """``segment`` with its pages in place, read from ``/dev/zero``: unlike ``MAP_POPULATE``,
    a read lets go of the GIL while the kernel zeroes them."""
    try:
        os.readv(zeros, [segment])
    except OSError:
        pass  # the pages then come on first use, as for any new map
    return segment


def _unused(segment: mmap.mmap) -> bool:
    """True if no view of ``segment`` is left (resizing to the same size is then a no-op)."""
    try:
        segment.resize(len(segment))
    except BufferError:
        return False
    return True


def _can_tell() -> bool:
    """Whether ``resize`` works on anonymous maps here (it needs ``mremap``: not on macOS,
    where fsspec users run too); without it every buffer is a new map."""
    probe = _new_map(mmap.PAGESIZE)
    try:
        return _unused(probe)
    except (OSError, SystemError, TypeError, ValueError):
        return False
    finally:
        probe.close()


class BufferPool:
    """Buffers for fetches, taken from worker threads."""

    def __init__(self, smallest: int, largest: int, limit: int = POOL_BYTES, spares: int = SPARE_BYTES,
                 *, shared: bool = False) -> None:
        self.smallest, self.largest = smallest, largest
        self.shared = shared
        self._fds: dict[int, int] = {}  # id of a memfd map -> its memfd, while the map lives
        self._fds_lock = threading.Lock()
        self.limit = limit if _can_tell() else 0
        self.spares = spares
        self._rings: dict[int, collections.deque[mmap.mmap]] = {}  # per size class, least recently taken first
        self._bytes = 0
        self._lock = threading.Lock()
        self._short = threading.Condition(self._lock)
        self._classes_short: set[int] = set()  # size classes to make spares of
        self._made: collections.Counter[int] = collections.Counter()  # new maps taken, per class
        self._maker: tuple[int, threading.Thread] | None = None  # its process, as a fork leaves it behind

    def _class_of(self, size: int) -> int:
        size_class = self.smallest
        while size_class < size:
            size_class *= 2
        return size_class

    def take(self, size: int) -> memoryview:
        """A writable view of ``size`` bytes (their content undefined). The buffer counts as
        in use while this view or any view made from it lives; the view is made under the
        lock, so two threads never get the same buffer."""
        if size < self.smallest or size > self.largest or not self.limit:
            return memoryview(bytearray(size) if size < self.smallest else self._new(size))
        wanted = self._class_of(size)
        with self._lock:
            ring = self._rings.setdefault(wanted, collections.deque())
            for _ in range(len(ring)):
                segment = ring[0]
                ring.rotate(-1)
                if _unused(segment):
                    return memoryview(segment)[:size]
            segment = self._new(wanted)
            self._keep(segment)
            self._want_spares(wanted)
            return memoryview(segment)[:size]

    def _new(self, size: int) -> mmap.mmap:
        """A new map: a memfd's in a shared pool, for sizes from ``SHARED_MIN``, up to ``SHARED_MAPS``."""
        if self.shared and size >= SHARED_MIN:
            with self._fds_lock:  # the spare maker makes maps too: the count and the new map at once
                made = _memfd_map(size) if len(self._fds) < SHARED_MAPS else None
                if made is not None:
                    segment, fd = made
                    self._fds[id(segment)] = fd
                    weakref.finalize(segment, self._forget, id(segment), fd)
                    return segment
        return _new_map(size)

    def _forget(self, key: int, fd: int) -> None:
        """A memfd map is gone (from whichever thread let go of it last): so is its memfd."""
        self._fds.pop(key, None)
        os.close(fd)

    def piece(self, base: memoryview | bytes, start: int, end: int) -> Piece:
        """Bytes ``base[start:end]`` as a ``Piece``; ``base`` is a view of a buffer taken here
        from its start, or any bytes."""
        view = base[start:end]
        fd = self._fds.get(id(base.obj)) if isinstance(base, memoryview) else None
        return Piece(view, fd, start)

    def maps(self, size_class: int) -> list[mmap.mmap]:
        """The maps of ``size_class`` the pool holds, least recently taken first."""
        with self._lock:
            return list(self._rings.get(size_class, ()))

    def _keep(self, segment: mmap.mmap) -> None:
        """The pool holds ``segment`` (as the most recently taken of its class); beyond the
        limit, the class holding the most lets its least recently taken map go."""
        self._rings.setdefault(len(segment), collections.deque()).append(segment)
        self._bytes += len(segment)
        while self._bytes > self.limit:
            size_class, ring = max(self._rings.items(), key=lambda item: item[0] * len(item[1]))
            ring.popleft()
            self._bytes -= size_class

    def _want_spares(self, size_class: int) -> None:
        """Under the lock: a fetch took a new map of ``size_class``; from the second on, have
        spares made."""
        self._made[size_class] += 1
        if not self.spares or self._made[size_class] < 2:
            return
        self._classes_short.add(size_class)
        if self._maker is None or self._maker[0] != os.getpid():
            maker = threading.Thread(target=self._make_spares, name="artifactfs-buffers", daemon=True)
            self._maker = (os.getpid(), maker)
            maker.start()
        else:
            self._short.notify()

    def _make_spares(self) -> None:
        """The spare maker's thread: spares for each class asked."""
        try:
            zeros = os.open("/dev/zero", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        while True:
            with self._lock:
                while not self._classes_short:
                    self._short.wait()
                size_class = self._classes_short.pop()
            self._spare(size_class, zeros)

    def _spare(self, size_class: int, zeros: int) -> None:
        """``SPARE_BYTES`` of touched maps of ``size_class``, as far as the pool has room: a
        spare must not push out a map that may be free (and still in the CPU's caches) soon."""
        for _ in range(max(1, self.spares // size_class)):
            if self._bytes + size_class > self.limit:
                return
            segment = _touched(self._new(size_class), zeros)
            with self._lock:
                self._keep(segment)
