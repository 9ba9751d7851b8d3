"""The persistent, verified chunk store under ``cache.dir``.

Layout: ``blocks/<hh>/<content hash>.<index>`` data files and an sqlite3 index
(``index.sqlite3``) of which chunks exist, their lengths and when they were last used.
A chunk is written to a temporary file and renamed into place before its index row is
committed, so a crash (even ``kill -9``) leaves either a complete chunk or none; leftover
temporary files are swept at start. A chunk whose file is missing or has the wrong length
is a miss, never an error. Least-recently-used chunks are evicted beyond ``max_size``.
The in-memory index mirrors sqlite so the read path never touches the database.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable

log = logging.getLogger("artifactfs.cache")

INDEX_NAME = "index.sqlite3"
BLOCKS_DIR = "blocks"
FLUSH_INTERVAL = 5.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (content TEXT, idx INTEGER, size INTEGER, atime REAL,
                                   PRIMARY KEY (content, idx));
CREATE TABLE IF NOT EXISTS contents (content TEXT PRIMARY KEY, total INTEGER);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER);
"""


@dataclass(frozen=True)
class CacheStats:
    bytes: int
    chunks: int
    files: int
    hits: int
    misses: int

    @property
    def hit_ratio(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0


def content_hash(provider: str, key: Hashable, fingerprint: str) -> str:
    """The name of a file content in the cache: a new fingerprint is a new name."""
    return hashlib.sha256(f"{provider}\0{key!r}\0{fingerprint}".encode()).hexdigest()[:40]


def _connect(directory: Path) -> sqlite3.Connection:
    db = sqlite3.connect(directory / INDEX_NAME, check_same_thread=False, isolation_level=None,
                         timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


class BlockCache:
    """Thread-safe: chunks are written from fetch threads and read from the trio thread."""

    def __init__(self, directory: Path, max_size: int) -> None:
        self.directory = directory
        self.max_size = max_size
        self._blocks = directory / BLOCKS_DIR
        self._blocks.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = _connect(directory)
        self._sweep_temporary()
        self._chunks: OrderedDict[tuple[str, int], int] = OrderedDict(
            ((c, i), s) for c, i, s in self._db.execute(
                "SELECT content, idx, size FROM chunks ORDER BY atime"))
        self._totals: dict[str, int] = dict(self._db.execute("SELECT content, total FROM contents"))
        self.bytes = sum(self._chunks.values())
        self._touched: set[tuple[str, int]] = set()
        self._hits = self._misses = 0
        self._flushed_at = time.monotonic()
        self._evict()

    def _path(self, content: str, index: int) -> Path:
        return self._blocks / content[:2] / f"{content}.{index}"

    def _sweep_temporary(self) -> None:
        """Remove what a crash left half-written: it was never in the index."""
        for sub in self._blocks.iterdir():
            if sub.is_dir():
                for leftover in sub.glob("*.tmp*"):
                    leftover.unlink(missing_ok=True)

    def length(self, content: str, index: int) -> int | None:
        """The stored length of a chunk, or None when it is not cached."""
        return self._chunks.get((content, index))

    def read(self, content: str, index: int, offset: int, length: int) -> bytes | None:
        """Bytes of a cached chunk, or None (a miss) if it is absent or damaged."""
        size = self._chunks.get((content, index))
        if size is None:
            return None
        try:
            fd = os.open(self._path(content, index), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._forget(content, index)
            return None
        try:
            if os.fstat(fd).st_size != size:
                self._forget(content, index)
                return None
            data = os.pread(fd, min(length, max(0, size - offset)), offset)
        finally:
            os.close(fd)
        with self._lock:
            if (content, index) in self._chunks:
                self._chunks.move_to_end((content, index))
                self._touched.add((content, index))
        return data

    def put(self, content: str, index: int, data: bytes | memoryview) -> None:
        """Store a complete, verified chunk durably: a temporary file renamed into place,
        then the index row. ``data`` is copied out, so the caller may reuse its buffer."""
        size = len(data)
        path = self._path(content, index)
        tmp = path.with_name(f"{path.name}.tmp{threading.get_ident()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            path.parent.mkdir(exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)
        self._committed(content, index, size)

    def _committed(self, content: str, index: int, length: int) -> None:
        with self._lock:
            old = self._chunks.pop((content, index), 0)
            self._chunks[(content, index)] = length
            self.bytes += length - old
            self._db.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)",
                             (content, index, length, time.time()))
            self._evict(keep=(content, index))
            if time.monotonic() - self._flushed_at > FLUSH_INTERVAL:
                self._flush_locked()

    def total(self, content: str) -> int | None:
        """The content's full size, once a fetch has learned it."""
        return self._totals.get(content)

    def set_total(self, content: str, total: int) -> None:
        with self._lock:
            if self._totals.get(content) != total:
                self._totals[content] = total
                self._db.execute("INSERT OR REPLACE INTO contents VALUES (?, ?)", (content, total))

    def count(self, hit: bool) -> None:
        """Record a chunk lookup for the hit ratio (persisted every few seconds)."""
        if hit:
            self._hits += 1
        else:
            self._misses += 1
        if time.monotonic() - self._flushed_at > FLUSH_INTERVAL:
            self.flush()

    def _evict(self, keep: tuple[str, int] | None = None) -> None:
        while self.bytes > self.max_size and self._chunks:
            victim, size = next(iter(self._chunks.items()))
            if victim == keep:
                if len(self._chunks) == 1:
                    return
                self._chunks.move_to_end(victim)
                continue
            self._drop_locked(*victim)

    def _forget(self, content: str, index: int) -> None:
        with self._lock:
            if (content, index) in self._chunks:
                log.warning("cache chunk %s.%d is damaged or missing; fetching it again", content, index)
                self._drop_locked(content, index)

    def _drop_locked(self, content: str, index: int) -> None:
        self.bytes -= self._chunks.pop((content, index), 0)
        self._touched.discard((content, index))
        self._db.execute("DELETE FROM chunks WHERE content = ? AND idx = ?", (content, index))
        self._path(content, index).unlink(missing_ok=True)

    def _flush_locked(self) -> None:
        now = time.time()
        self._db.execute("BEGIN")
        self._db.executemany("UPDATE chunks SET atime = ? WHERE content = ? AND idx = ?",
                             [(now, c, i) for c, i in self._touched])
        for name, value in (("hits", self._hits), ("misses", self._misses)):
            self._db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) "
                             "DO UPDATE SET value = value + excluded.value", (name, value))
        self._db.execute("COMMIT")
        self._touched.clear()
        self._hits = self._misses = 0
        self._flushed_at = time.monotonic()

    def flush(self) -> None:
        """Persist counters and use times."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            self._db.close()


def read_stats(directory: Path) -> CacheStats:
    """Statistics of the cache in ``directory`` (also while a mount uses it)."""
    if not (directory / INDEX_NAME).exists():
        return CacheStats(0, 0, 0, 0, 0)
    db = _connect(directory)
    try:
        size, chunks, files = db.execute(
            "SELECT COALESCE(SUM(size), 0), COUNT(*), COUNT(DISTINCT content) FROM chunks").fetchone()
        counters = dict(db.execute("SELECT name, value FROM counters"))
    finally:
        db.close()
    return CacheStats(size, chunks, files, counters.get("hits", 0), counters.get("misses", 0))


def clear(directory: Path) -> int:
    """Empty the cache in ``directory``; returns the bytes freed. Running mounts fetch again."""
    freed = read_stats(directory).bytes
    shutil.rmtree(directory / BLOCKS_DIR, ignore_errors=True)
    for name in (INDEX_NAME, INDEX_NAME + "-wal", INDEX_NAME + "-shm"):
        (directory / name).unlink(missing_ok=True)
    return freed
