"""The persistent, verified block store under ``cache.dir``, shared by every process using it.

Layout: ``data/<content>``, one sparse file per file content (one flat directory), block ``i`` at offset
``i × (4 KiB + block size)`` as a header (format, block size, content identity, index,
length, xxh3 checksum) padded to 4 KiB, then the payload: page-aligned, so writing a block
touches whole pages and evicting one frees whole file-system blocks; ``trees/<name>/``, archives unpacked by
providers; ``index.sqlite3``, the one index of what is stored, its sizes and use times (WAL,
so several processes share it).

- Verified: a block is served only if its header matches what is asked (format, block size,
  content, index, length) and its payload its checksum; a hole, a torn write or anything else
  is a miss, the block is dropped and the log says so. Changing the format or block size
  never serves old blocks.
- Write-behind: ``store`` checksums a block and queues it (``load`` serves it from there until
  it is written); one writer thread writes consecutive
  blocks with one ``pwritev`` into files it keeps open (runs of full blocks stored ``around``
  the page cache with O_DIRECT, where the file system allows), and index rows in batches. A full queue (a
  slow disk) drops blocks rather than slowing a read, unless the caller asks to wait (a server
  that ignores Range). ENOSPC, EIO, EROFS or a broken index never fail a read: the block is
  not kept, room is made where eviction can, and the log says so once per condition.
- Shared: every size is in the index, kept exact by triggers, so two mounts on one dir stay
  together within ``max_size`` (a batch of index rows makes room in its own transaction, so no
  commit leaves the cache over it); they write whole blocks at fixed offsets, so neither disturbs
  the other. Evicted blocks are punched out of their file (the space is freed); a file with no
  block left is removed. Blocks written but never indexed (a crash) are swept at start and
  counted nowhere.
- Durability: no fsync. A crash may lose the last blocks or leave a torn one; the header and
  checksum turn either into a miss. ``clear`` empties the index and the files while mounts
  run: their writers see their open files unlinked and start new ones; reads fetch again.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import hashlib
import itertools
import logging
import mmap
import os
import shutil
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterator, Sequence

import xxhash

log = logging.getLogger("artifactfs.cache")

FORMAT_VERSION = 4
INDEX_NAME = "index.sqlite3"
DATA_DIR = "data"
TREES_DIR = "trees"
HEADER = struct.Struct("<4sHHIQI20sQ16x")  # magic, format, flags, block size, index, length, content, checksum
MAGIC = b"AFSB"
SLOT = 4096  # the header's room before each payload
QUEUE_BYTES = 16 << 20
BATCH_BYTES = 16 << 20  # the writer takes this much at a time: one transaction, few wake-ups
IOV_BLOCKS = 256  # blocks per write call: two buffers each, within the system's IOV_MAX (1024)
DIRECT = hasattr(os, "O_DIRECT")
BATCH_WAIT = 0.05  # the writer gathers blocks this long: one transaction for many, few wake-ups
OPEN_FILES = 64
FLUSH_INTERVAL = 2.0
ORPHAN_AGE = 60.0
ENOSPC_EVICT = 64 << 20
RETRY_AFTER_FAILURE = 5.0
STATEMENT_ROWS = 200  # rows bound in one statement: their parameters stay under SQLite's oldest limit, 999
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (content TEXT, idx INTEGER, size INTEGER, atime REAL,
                                   PRIMARY KEY (content, idx)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_atime ON blocks (atime);
CREATE TABLE IF NOT EXISTS contents (content TEXT PRIMARY KEY, total INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trees (name TEXT PRIMARY KEY, size INTEGER, atime REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT OR IGNORE INTO counters VALUES ('used', 0), ('hits', 0), ('misses', 0);
-- the one count of bytes used: every insert, resize and delete of blocks and trees moves it
""" + "".join(f"""
CREATE TRIGGER IF NOT EXISTS {table}_{event} AFTER {when} ON {table}
  BEGIN UPDATE counters SET value = value {change} WHERE name = 'used'; END;""" for table in ("blocks", "trees")
    for event, when, change in (("added", "INSERT", "+ NEW.size"), ("resized", "UPDATE OF size", "- OLD.size + NEW.size"),
                                ("removed", "DELETE", "- OLD.size")))
DELETE_BLOCKS = "DELETE FROM blocks WHERE {rows}"
OLDEST = """
SELECT 'b', content, idx, size, atime FROM blocks
UNION ALL SELECT 't', name, 0, size, atime FROM trees
ORDER BY 5 LIMIT 256
"""
_libc = ctypes.CDLL(None, use_errno=True)


def content_hash(provider: str, key: Hashable, fingerprint: str) -> str:
    """The name of a file content in the cache: a new fingerprint is a new name."""
    return hashlib.sha256(f"{provider}\0{key!r}\0{fingerprint}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class CacheStats:
    bytes: int
    blocks: int
    files: int
    trees: int
    hits: int
    misses: int

    @property
    def hit_ratio(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0


def _connect(directory: Path) -> sqlite3.Connection:
    db = sqlite3.connect(directory / INDEX_NAME, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _many(db: sqlite3.Connection, template: str, rows: Sequence[Sequence[Any]], *lead: Any,
          row: str | None = None, sep: str = ", ") -> None:
    """Run ``template`` for all ``rows`` in a few statements: ``{rows}`` in it becomes up to
    ``STATEMENT_ROWS`` copies of ``row`` (a VALUES tuple by default) joined by ``sep``, bound
    after the parameters ``lead``.

    ``executemany`` runs one step per row, and Python's sqlite3 lets go of the GIL for each
    step and takes it back after, each time perhaps from the event loop. A writer's batch
    (~90 block rows and their files' totals, each batch a new length) took 0.25 ms of CPU
    this way against 0.38 ms (200 batches, WAL, measured here), with two GIL round trips
    instead of ~100."""
    if not rows:
        return
    row = row or "(" + ", ".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), STATEMENT_ROWS):
        chunk = rows[start:start + STATEMENT_ROWS]
        db.execute(template.format(rows=sep.join([row] * len(chunk))), [*lead, *itertools.chain.from_iterable(chunk)])


def _blocks_where(db: sqlite3.Connection, template: str, keys: Sequence[tuple[str, int]], *lead: Any) -> None:
    """``template`` with ``{rows}`` as a condition matching the blocks ``keys`` (content,
    index): terms joined by OR, each found through the primary key (a row-value ``IN`` list
    scanned the whole table)."""
    _many(db, template, keys, *lead, row="(content = ? AND idx = ?)", sep=" OR ")


def _counter(db: sqlite3.Connection, name: str) -> int:
    return int(db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])


def _open_index(directory: Path, block_size: int) -> sqlite3.Connection:
    """The index, created or upgraded: a different format or block size starts it empty."""
    db = _connect(directory)
    with _locked(directory / ".format.lock"):
        db.executescript(SCHEMA)
        found = dict(db.execute("SELECT key, value FROM meta"))
        wanted = {"format": FORMAT_VERSION, "block_size": block_size}
        if found != wanted:
            if found:
                log.info("cache %s: format or block size changed; starting it empty", directory)
            _empty(db, directory)
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", wanted.items())
    return db


def _empty(db: sqlite3.Connection, directory: Path) -> int:
    """Every row and file gone (a writer still holding a file sees it unlinked); bytes freed."""
    db.execute("BEGIN IMMEDIATE")
    freed = _counter(db, "used")
    for table in ("blocks", "contents", "trees"):
        db.execute(f"DELETE FROM {table}")
    db.execute("COMMIT")
    for sub in (DATA_DIR, TREES_DIR, "blocks", "tmp"):  # blocks/ and tmp/ are an older format's
        root = directory / sub
        for child in (list(root.iterdir()) if root.is_dir() else []):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    return freed


class _locked:
    """An exclusive ``flock`` held for a ``with`` block (released when the process dies)."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def data_path(directory: Path, content: str) -> Path:
    return directory / DATA_DIR / content


def checksum(payload: memoryview) -> int:
    return xxhash.xxh3_64_intdigest(payload)


def header_into(slot: memoryview, content: str, index: int, payload: memoryview, block_size: int,
                payload_checksum: int) -> None:
    """Write a block's header at the start of ``slot`` (the rest of the slot stays as it is: zeros)."""
    HEADER.pack_into(slot, 0, MAGIC, FORMAT_VERSION, 0, block_size, index, len(payload), bytes.fromhex(content),
                     payload_checksum)


class _Descriptors:
    """The writer's descriptors of content files opened with ``flags``, a few dozen at most
    (least recently used closed first)."""

    def __init__(self, directory: Path, flags: int) -> None:
        self.directory, self.flags = directory, flags
        self._fds: collections.OrderedDict[str, int] = collections.OrderedDict()

    def get(self, content: str) -> int:
        fd = self._fds.pop(content, None)
        if fd is None:
            path = data_path(self.directory, content)
            try:
                fd = os.open(path, self.flags, 0o600)
            except FileNotFoundError:  # a fresh cache (no data/ yet), or one removed under us
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, self.flags, 0o600)
            while len(self._fds) >= OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
        self._fds[content] = fd
        return fd

    def peek(self, content: str) -> int | None:
        return self._fds.get(content)

    def held(self) -> set[str]:
        return set(self._fds)

    def forget(self, content: str) -> None:
        fd = self._fds.pop(content, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])


def punch(fd: int, offset: int, length: int) -> bool:
    """Free a byte range of a file (a hole); False where the file system cannot."""
    return _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           ctypes.c_long(offset), ctypes.c_long(length)) == 0


class _Once:
    """Logs a condition the first time it happens (and again only after it cleared)."""

    def __init__(self) -> None:
        self._active: set[str] = set()

    def warn(self, condition: str, message: str, *args: object) -> None:
        if condition not in self._active:
            self._active.add(condition)
            log.warning(message, *args)

    def clear(self, condition: str) -> None:
        self._active.discard(condition)


class BlockCache:
    """Thread-safe: ``load``/``snapshot`` run in worker threads, ``store`` anywhere."""

    def __init__(self, directory: Path, max_size: int, block_size: int) -> None:
        self.directory = directory
        self.max_size = max_size
        self.block_size = block_size
        self.stride = SLOT + block_size
        self._batch = max(1, BATCH_BYTES // block_size)  # blocks the writer takes at a time
        directory.mkdir(parents=True, exist_ok=True)
        self._db = _open_index(directory, block_size)
        self._db_lock = threading.Lock()
        self._reader = _connect(directory)
        self._reader_lock = threading.Lock()
        self._held = self._contents_held()
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        self._once = _Once()
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self._files = _Descriptors(directory, flags)
        # Runs of full blocks stored ``around`` go around the page cache (O_DIRECT: headers and
        # fetch buffers are page-aligned): ~40 ms of CPU per GiB here against ~250 ms through it.
        self._direct: _Descriptors | None = _Descriptors(directory, flags | os.O_DIRECT) if DIRECT else None
        self._slots = mmap.mmap(-1, IOV_BLOCKS * SLOT)  # headers, page-aligned as O_DIRECT wants
        self._queue: collections.deque[tuple] = collections.deque()
        self._queued = 0
        self._unwritten: dict[tuple[str, int], memoryview] = {}  # blocks queued or being written
        self._cond = threading.Condition()
        self._touched: set[tuple[str, int]] = set()
        self._hits = self._misses = 0
        self._failed_at = 0.0
        self._stopping = False
        self._busy = False
        self._writer = threading.Thread(target=self._write_loop, name="cache-writer", daemon=True)
        self._writer.start()

    # ---- reads (worker threads) ----------------------------------------------------------------

    def _contents_held(self) -> set[str]:
        with self._reader_lock:
            return {row[0] for row in self._reader.execute("SELECT DISTINCT content FROM blocks")}

    def may_hold(self, content: str) -> bool:
        """Whether the index may hold blocks of ``content`` (cheap, no sqlite): False means
        a first read need not ask the index. Kept up to date with other processes' writes."""
        return content in self._held

    def snapshot(self, content: str) -> tuple[set[int], int | None]:
        """Which blocks of ``content`` the index holds, and its size if ever learned."""
        try:
            with self._reader_lock:
                indexes = {row[0] for row in self._reader.execute("SELECT idx FROM blocks WHERE content = ?",
                                                                  (content,))}
                row = self._reader.execute("SELECT total FROM contents WHERE content = ?", (content,)).fetchone()
        except sqlite3.Error as exc:
            self._once.warn("index-read", "cache index %s cannot be read (%s); reading from the network",
                            self.directory, exc)
            return set(), None
        return indexes, (row[0] if row else None)

    def load(self, content: str, first: int, count: int = 1, into: memoryview | None = None) -> list[memoryview | None]:
        """The payloads of blocks ``first`` … ``first + count - 1``, each verified, or None
        for a block that is absent or damaged (a miss). One ``preadv`` puts the payloads back
        to back, block ``i`` at ``i × block size`` of ``into`` where given (at least ``count``
        blocks long), and the headers in a buffer of their own: a read spanning several blocks
        of a run is then one slice of it. A new buffer's pages are zeroed first, about half of
        what reading them from the disk costs here (0.5 against 1 ms per MiB). A block still
        queued for the disk (or being written) is copied from the queue: its file does not hold
        it yet."""
        with self._cond:
            unwritten = [self._unwritten.get((content, first + i)) for i in range(count)]
        size = self.block_size
        payloads = memoryview(bytearray(size * count) if into is None else into[:size * count])
        if any(view is None for view in unwritten):
            found = self._read_blocks(content, first, count, payloads, unwritten)
        else:
            found = [None] * count
        for i, view in enumerate(unwritten):
            if view is not None:
                payloads[i * size:i * size + len(view)] = view
                found[i] = payloads[i * size:i * size + len(view)].toreadonly()
        with self._cond:
            self._touched.update((content, first + i) for i, view in enumerate(found) if view is not None)
        return found

    def _read_blocks(self, content: str, first: int, count: int, payloads: memoryview,
                     unwritten: list[memoryview | None]) -> list[memoryview | None]:
        """``load``'s read of the file: the blocks not ``unwritten``, each verified (a block
        being written may be torn: it is not looked at)."""
        try:
            fd = os.open(data_path(self.directory, content), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return [None] * count
        size = self.block_size
        headers = memoryview(bytearray(SLOT * count))
        slices = [(headers[i * SLOT:(i + 1) * SLOT], payloads[i * size:(i + 1) * size]) for i in range(count)]
        try:
            got = os.preadv(fd, [part for pair in slices for part in pair], first * self.stride)
        except OSError as exc:
            got = 0
            log.debug("cache %s: reading %s failed: %s", self.directory, content, exc)
        finally:
            os.close(fd)
        return [None if unwritten[i] is not None else
                self._verified(content, first + i, header[:max(0, got - i * self.stride)],
                               payload[:max(0, got - i * self.stride - SLOT)])
                for i, (header, payload) in enumerate(slices)]

    def _verified(self, content: str, index: int, header: memoryview, payload: memoryview) -> memoryview | None:
        """The block's payload if its header and checksum say it is the one asked for."""
        if not len(header) or header[:4] == b"\0\0\0\0":
            return None  # a hole: never written, or punched out (or the file ends before it)
        fields = HEADER.unpack_from(bytes(header[:HEADER.size]).ljust(HEADER.size, b"\0"))
        magic, version, _, block_size, idx, length, ident, stored_checksum = fields
        problem = ("not a block" if magic != MAGIC else "another format" if version != FORMAT_VERSION
                   else "another block size" if block_size != self.block_size
                   else "another block" if idx != index or ident != bytes.fromhex(content)
                   else "wrong length" if length > len(payload) or length > block_size
                   else "wrong checksum" if checksum(payload[:length]) != stored_checksum else None)
        if problem:
            log.warning("cache block %s.%d is damaged (%s); dropped, fetching it again", content, index, problem)
            self._enqueue(("drop", content, index))
            return None
        return payload[:length].toreadonly()

    # ---- writes (queued) -----------------------------------------------------------------------

    def store(self, content: str, first: int, payloads: Sequence[memoryview], *, wait: bool = False,
              around: bool = False) -> bool:
        """Queue verified blocks ``first``, ``first + 1`` … for the disk, all or none; False if
        dropped (queue full and not waiting). ``around``: full blocks are written around the
        page cache, which would hold them a second time, or for nobody (``Engine``).

        Their checksums are taken here, by the thread that just received them: in the CPU's
        cache a 128 KiB block hashes in ~2.7 µs, out of it in ~12 µs, while the writer, long
        after, took ~54 µs per block (23 ms for the 53 MiB it kept of fsspec's 200-file case).
        xxhash lets go of the GIL while it hashes, in either thread."""
        size = sum(len(payload) for payload in payloads)
        with self._cond:
            while self._queued + size > QUEUE_BYTES and not self._stopping:
                if not wait:
                    return False
                self._cond.wait(1.0)
            if self._stopping:
                return False
            self._queued += size  # their room, held while their checksums are taken
        blocks = [("block", content, first + i, payload, checksum(payload), around) for i, payload in enumerate(payloads)]
        with self._cond:
            was = len(self._queue)
            self._queue.extend(blocks)
            self._unwritten.update(((content, block[2]), block[3]) for block in blocks)
            if not was or was < self._batch <= len(self._queue):  # wake the writer: it gathers for BATCH_WAIT
                self._cond.notify()
        return True

    def learned_total(self, content: str, total: int) -> None:
        self._enqueue(("total", content, total))

    def count(self, hit: bool, blocks: int = 1) -> None:
        if hit:
            self._hits += blocks
        else:
            self._misses += blocks

    def _enqueue(self, item: tuple) -> None:
        with self._cond:
            self._queue.append(item)
            if len(self._queue) == 1:
                self._cond.notify()

    # ---- unpacked trees ------------------------------------------------------------------------

    def tree_path(self, name: str) -> Path:
        return self.directory / TREES_DIR / name

    def add_tree(self, name: str, size: int) -> None:
        self._enqueue(("tree", name, size))

    def touch_tree(self, name: str) -> None:
        self._enqueue(("touch-tree", name))

    # ---- the writer thread ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        flushed = time.monotonic()
        while True:
            with self._cond:
                if len(self._queue) < self._batch and not self._stopping:
                    self._cond.wait(BATCH_WAIT if self._queue else FLUSH_INTERVAL)
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._batch))]
                stopping = self._stopping and not self._queue
                self._busy = True
            try:
                self._write_batch(batch)
                self._notice_others()
                if stopping or time.monotonic() - flushed > FLUSH_INTERVAL:
                    self._flush()
                    flushed = time.monotonic()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if stopping:
                self._close_files()
                return

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is on disk and indexed; whether it is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._cond.wait(0.05)
            return not self._queue and not self._busy

    def _notice_others(self) -> None:
        """Another process (a second mount, fsspec, ``cache clear``) changed the index: reload
        which contents it holds blocks of."""
        try:
            with self._db_lock:
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:
                self._data_version = version
                self._held = self._contents_held()
        except sqlite3.Error:
            pass

    def _descriptors(self) -> list[_Descriptors]:
        """The writer's open files: through the page cache, and around it."""
        return [self._files] if self._direct is None else [self._files, self._direct]

    def _close_files(self) -> None:
        for descriptors in self._descriptors():
            descriptors.close()

    def _write_batch(self, batch: list[tuple]) -> None:
        rows, totals, drops, trees, touched_trees = [], [], [], [], []
        blocks: list[tuple[str, int, memoryview, int, bool]] = []
        now = time.time()
        writing = {item[1] for item in batch if item[0] == "block"}
        for descriptors in self._descriptors():
            for content in writing & descriptors.held():
                fd = descriptors.peek(content)
                if fd is not None and os.fstat(fd).st_nlink == 0:  # cleared under us: start a new file
                    self._forget_file(content)
        for item in batch:
            kind = item[0]
            if kind == "block":
                blocks.append(item[1:])
            elif kind == "total":
                totals.append(item[1:])
            elif kind == "drop":
                drops.append(item[1:])
            elif kind == "tree":
                trees.append((item[1], item[2], now))
            else:
                touched_trees.append((now, item[1]))
        for content, first, run, around in _runs(blocks, self.block_size):
            if self._write_run(content, first, run, around):
                rows += [(content, first + i, len(payload), now) for i, (payload, _) in enumerate(run)]
        if blocks:
            with self._cond:
                self._queued -= sum(len(block[2]) for block in blocks)
                for content, index, payload, _, _ in blocks:  # written, or lost: the file says which
                    if self._unwritten.get((content, index)) is payload:
                        del self._unwritten[(content, index)]
                self._cond.notify_all()
        if rows or totals or drops or trees or touched_trees:
            self._held.update(content for content, _, _, _ in rows)
            self._index(rows, totals, drops, trees, touched_trees)

    def _write_run(self, content: str, first: int, run: list[tuple[memoryview, int]], around: bool) -> bool:
        """Write consecutive blocks at their place in their content's file, in one call (full
        blocks ``around`` the page cache where the file system allows); False if the disk refused."""
        if time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE:
            return False
        parts: list[memoryview] = []
        slots = memoryview(self._slots)
        for i, (payload, payload_checksum) in enumerate(run):
            slot = slots[i * SLOT:(i + 1) * SLOT]
            header_into(slot, content, first + i, payload, self.block_size, payload_checksum)
            parts += [slot, payload]
        size = sum(len(part) for part in parts)
        direct = around and len(run[-1][0]) == self.block_size
        evicted = False
        while True:
            try:
                fd = self._direct_fd(content) if direct else None
                if os.pwritev(self._files.get(content) if fd is None else fd, parts, first * self.stride) != size:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self._once.clear("disk")
                return True
            except OSError as exc:
                if direct and exc.errno == errno.EINVAL:
                    direct = False  # a buffer not on a page: through the page cache
                    continue
                self._forget_file(content)
                if exc.errno == errno.ENOSPC and not evicted and self._evict(ENOSPC_EVICT):
                    evicted = True
                    continue
                self._once.warn("disk", "cache %s: cannot write (%s); serving from memory and the network",
                                self.directory, exc.strerror or exc)
                self._failed_at = time.monotonic()
                return False

    def _direct_fd(self, content: str) -> int | None:
        """The content's file opened for writes around the page cache; None where the file
        system refuses that (tmpfs), from then on."""
        if self._direct is None:
            return None
        try:
            return self._direct.get(content)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._direct.close()
            self._direct = None
            return None

    def _forget_file(self, content: str) -> None:
        for descriptors in self._descriptors():
            descriptors.forget(content)

    def _index(self, rows: list, totals: list, drops: list, trees: list, touched_trees: list) -> None:
        try:
            with self._db_lock:
                self._db.execute("BEGIN IMMEDIATE")
                _many(self._db, "INSERT INTO blocks VALUES {rows} ON CONFLICT (content, idx) "
                      "DO UPDATE SET size = excluded.size, atime = excluded.atime", rows)
                _many(self._db, "INSERT OR REPLACE INTO contents VALUES {rows}", totals)
                _blocks_where(self._db, DELETE_BLOCKS, drops)
                self._db.executemany(
                    "INSERT INTO trees VALUES (?, ?, ?) ON CONFLICT (name) "
                    "DO UPDATE SET size = excluded.size, atime = excluded.atime", trees)
                self._db.executemany("UPDATE trees SET atime = ? WHERE name = ?", touched_trees)
                evicted = self._drop_oldest(self.max_size)
                self._db.execute("COMMIT")
            self._once.clear("index")
        except sqlite3.Error as exc:
            self._rollback()
            self._once.warn("index", "cache index %s cannot be written (%s); those blocks are not kept",
                            self.directory, exc)
            drops = drops + [(content, index) for content, index, _, _ in rows]
            evicted = []
        self._free([("b", content, index) for content, index in drops] + evicted)

    def _rollback(self) -> None:
        try:
            with self._db_lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def used(self) -> int:
        try:
            with self._db_lock:
                return _counter(self._db, "used")
        except sqlite3.Error:
            return 0

    def _evict(self, extra: int) -> bool:
        """Drop least-recently-used blocks and trees until ``max_size - extra`` is respected;
        whether anything was dropped."""
        try:
            with self._db_lock:
                self._db.execute("BEGIN IMMEDIATE")
                victims = self._drop_oldest(max(0, self.max_size - extra))
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._once.warn("index", "cache index %s cannot be written (%s)", self.directory, exc)
            return False
        self._free(victims)
        return bool(victims)

    def _drop_oldest(self, target: int) -> list[tuple[str, str, int]]:
        """In the open transaction: delete the least recently used blocks and trees until at
        most ``target`` bytes are used; what went, for ``_free`` once committed. The index
        transaction that adds blocks makes room before it commits, so no commit, of this
        process or another on the same dir, ever leaves the cache over its size."""
        dropped: list[tuple[str, str, int]] = []
        excess = _counter(self._db, "used") - target
        while excess > 0:
            chosen = []
            for victim in self._db.execute(OLDEST).fetchall():
                if excess <= 0:
                    break
                chosen.append(victim)
                excess -= victim[3]
            if not chosen:
                break
            _blocks_where(self._db, DELETE_BLOCKS, [(v[1], v[2]) for v in chosen if v[0] == "b"])
            self._db.executemany("DELETE FROM trees WHERE name = ?", [(v[1],) for v in chosen if v[0] == "t"])
            dropped += [(kind, name, index) for kind, name, index, _, _ in chosen]
        return dropped

    def _free(self, victims: list[tuple[str, str, int]]) -> None:
        """Give the disk space of dropped blocks and trees back; a file left without blocks goes."""
        emptied: set[str] = set()
        for kind, name, index in victims:
            if kind == "t":
                shutil.rmtree(self.tree_path(name), ignore_errors=True)
                continue
            fd = self._files.peek(name)
            try:
                if fd is None:
                    with open(data_path(self.directory, name), "r+b") as f:
                        punch(f.fileno(), index * self.stride, self.stride)
                else:
                    punch(fd, index * self.stride, self.stride)
            except OSError:
                continue
            emptied.add(name)
        if not emptied:
            return
        try:
            with self._db_lock:
                held = {row[0] for row in self._db.execute(
                    f"SELECT DISTINCT content FROM blocks WHERE content IN ({','.join('?' * len(emptied))})",
                    tuple(emptied))}
        except sqlite3.Error:
            return
        for content in emptied - held:
            self._forget_file(content)
            data_path(self.directory, content).unlink(missing_ok=True)

    def _flush(self) -> None:
        """Persist use times and hit counters (often enough for LRU and stats, rarely enough to be cheap)."""
        with self._cond:
            touched, self._touched = self._touched, set()
        hits, misses, self._hits, self._misses = self._hits, self._misses, 0, 0
        now = time.time()
        try:
            with self._db_lock:
                self._db.execute("BEGIN IMMEDIATE")
                _blocks_where(self._db, "UPDATE blocks SET atime = ? WHERE {rows}", list(touched), now)
                self._db.executemany("UPDATE counters SET value = value + ? WHERE name = ?",
                                     [(hits, "hits"), (misses, "misses")])
                self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()

    def sweep_orphans(self) -> int:
        """Free blocks the index does not know (written but never indexed: a crash), in files
        untouched for a minute so that another process's blocks in flight are left alone."""
        try:
            with self._reader_lock:
                known: dict[str, set[int]] = collections.defaultdict(set)
                for content, index in self._reader.execute("SELECT content, idx FROM blocks"):
                    known[content].add(index)
        except sqlite3.Error:
            return 0
        removed = 0
        cutoff = time.time() - ORPHAN_AGE
        for path in _data_files(self.directory / DATA_DIR):
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                if path.name not in known:
                    removed += len(_data_blocks(path, self.stride))
                    path.unlink()
                    continue
                with open(path, "r+b") as f:
                    for index in _data_blocks(path, self.stride) - known[path.name]:
                        punch(f.fileno(), index * self.stride, self.stride)
                        removed += 1
            except OSError:
                continue
        if removed:
            log.info("cache %s: freed %d blocks the index did not know", self.directory, removed)
        return removed

    def close(self) -> None:
        """Write what is queued, persist counters, close the files."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._writer.join(30)
        with self._db_lock, self._reader_lock:
            self._db.close()
            self._reader.close()


def _runs(blocks: list[tuple[str, int, memoryview, int, bool]],
          block_size: int) -> Iterator[tuple[str, int, list[tuple[memoryview, int]], bool]]:
    """Queued blocks as runs of consecutive blocks of one content, all stored ``around`` the
    page cache or none: (content, first index, payloads with their checksums, around), each run
    written where its first block goes. Only a full block is followed by another in a run (the
    next block's slot starts where it ends)."""
    run: tuple[str, int, list[tuple[memoryview, int]], bool] | None = None
    for content, index, payload, payload_checksum, around in blocks:
        if (run is not None and run[0] == content and run[1] + len(run[2]) == index and run[3] == around
                and len(run[2][-1][0]) == block_size and len(run[2]) < IOV_BLOCKS):
            run[2].append((payload, payload_checksum))
            continue
        if run is not None:
            yield run
        run = (content, index, [(payload, payload_checksum)], around)
    if run is not None:
        yield run


def _data_files(root: Path) -> Iterator[Path]:
    try:
        yield from (Path(entry.path) for entry in os.scandir(root) if entry.is_file(follow_symlinks=False))
    except OSError:
        return


def _data_blocks(path: Path, stride: int) -> set[int]:
    """The blocks a sparse file holds: where SEEK_DATA finds data and a block header begins."""
    blocks: set[int] = set()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        end, offset = os.fstat(fd).st_size, 0
        while offset < end:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            blocks.update(i for i in range(start // stride, -(-stop // stride))
                          if os.pread(fd, len(MAGIC), i * stride) == MAGIC)
            offset = stop
    finally:
        os.close(fd)
    return blocks


def read_stats(directory: Path) -> CacheStats:
    """Statistics of the cache in ``directory`` (also while mounts use it)."""
    if not (directory / INDEX_NAME).exists():
        return CacheStats(0, 0, 0, 0, 0, 0)
    db = _connect(directory)
    try:
        db.executescript(SCHEMA)
        blocks, files = db.execute("SELECT COUNT(*), COUNT(DISTINCT content) FROM blocks").fetchone()
        trees = db.execute("SELECT COUNT(*) FROM trees").fetchone()[0]
        counters = dict(db.execute("SELECT name, value FROM counters"))
    finally:
        db.close()
    return CacheStats(counters.get("used", 0), blocks, files, trees, counters.get("hits", 0), counters.get("misses", 0))


def clear(directory: Path) -> int:
    """Empty the cache in ``directory``, also under running mounts; returns the bytes freed."""
    if not (directory / INDEX_NAME).exists():
        return 0
    db = _connect(directory)
    try:
        db.executescript(SCHEMA)
        return _empty(db, directory)
    finally:
        db.close()
