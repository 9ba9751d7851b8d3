"""The persistent, verified block store under ``cache.dir``, shared by every process using it.

Layout: ``blocks/<hh>/<content>.<index>`` files, each a 64-byte header (format, block size,
content identity, index, length, xxh3 checksum) and the payload; ``trees/<name>/``, archives
unpacked by providers; ``index.sqlite3``, the one index of what is stored, its sizes and use
times (WAL, so several processes share it); ``tmp/``, each process's temporary files.

- Verified: a block is served only if its header matches what is asked (format, block size,
  content, index, length) and its payload its checksum; anything else is a miss, the block is
  dropped and the log says so. Changing the format or block size never serves old blocks.
- Write-behind: ``store`` queues a block and returns; one writer thread writes files and
  index rows in batches. A full queue (a slow disk) drops blocks rather than slowing a read,
  unless the caller asks to wait (a server that ignores Range). ENOSPC, EIO, EROFS or a
  broken index never fail a read: the block is not kept, room is made where eviction can,
  and the log says so once per condition.
- Shared: every size is in the index, kept exact by triggers, so two mounts on one dir stay
  together within ``max_size``; each process's temporary files live in its own directory,
  locked while it runs, so no process sweeps another's. Blocks renamed into place but never
  indexed (a crash) are swept at start and counted nowhere.
- Durability: no fsync. A crash may lose the last blocks or leave a torn one; the header and
  checksum turn either into a miss. ``cache clear`` (``clear``) empties the index and the
  files while mounts run: they find their blocks gone and fetch again.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Iterator

import xxhash

log = logging.getLogger("artifactfs.cache")

FORMAT_VERSION = 2
INDEX_NAME = "index.sqlite3"
BLOCKS_DIR = "blocks"
TREES_DIR = "trees"
TMP_DIR = "tmp"
HEADER = struct.Struct("<4sHHIQI20sQ16x")  # magic, format, flags, block size, index, length, content, checksum
MAGIC = b"AFSB"
QUEUE_BYTES = 32 << 20
BATCH_BLOCKS = 64
FLUSH_INTERVAL = 2.0
ORPHAN_AGE = 60.0
ENOSPC_EVICT = 64 << 20
RETRY_AFTER_FAILURE = 5.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (content TEXT, idx INTEGER, size INTEGER, atime REAL,
                                   PRIMARY KEY (content, idx)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_atime ON blocks (atime);
CREATE TABLE IF NOT EXISTS contents (content TEXT PRIMARY KEY, total INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trees (name TEXT PRIMARY KEY, size INTEGER, atime REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT OR IGNORE INTO counters VALUES ('used', 0), ('hits', 0), ('misses', 0);
CREATE TRIGGER IF NOT EXISTS blocks_added AFTER INSERT ON blocks
  BEGIN UPDATE counters SET value = value + NEW.size WHERE name = 'used'; END;
CREATE TRIGGER IF NOT EXISTS blocks_resized AFTER UPDATE OF size ON blocks
  BEGIN UPDATE counters SET value = value - OLD.size + NEW.size WHERE name = 'used'; END;
CREATE TRIGGER IF NOT EXISTS blocks_removed AFTER DELETE ON blocks
  BEGIN UPDATE counters SET value = value - OLD.size WHERE name = 'used'; END;
CREATE TRIGGER IF NOT EXISTS trees_added AFTER INSERT ON trees
  BEGIN UPDATE counters SET value = value + NEW.size WHERE name = 'used'; END;
CREATE TRIGGER IF NOT EXISTS trees_resized AFTER UPDATE OF size ON trees
  BEGIN UPDATE counters SET value = value - OLD.size + NEW.size WHERE name = 'used'; END;
CREATE TRIGGER IF NOT EXISTS trees_removed AFTER DELETE ON trees
  BEGIN UPDATE counters SET value = value - OLD.size WHERE name = 'used'; END;
"""
OLDEST = """
SELECT 'b', content, idx, size, atime FROM blocks
UNION ALL SELECT 't', name, 0, size, atime FROM trees
ORDER BY 5 LIMIT 256
"""


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
            db.execute("BEGIN IMMEDIATE")
            for table in ("blocks", "contents", "trees", "meta"):
                db.execute(f"DELETE FROM {table}")
            db.executemany("INSERT INTO meta VALUES (?, ?)", wanted.items())
            db.execute("UPDATE counters SET value = 0 WHERE name = 'used'")
            db.execute("COMMIT")
            for sub in (BLOCKS_DIR, TREES_DIR):
                shutil.rmtree(directory / sub, ignore_errors=True)
    return db


class _locked:
    """An exclusive ``flock`` held for a ``with`` block (released when the process dies)."""

    def __init__(self, path: Path, blocking: bool = True) -> None:
        self.path, self.blocking, self.fd = path, blocking, -1

    def __enter__(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def block_path(directory: Path, content: str, index: int) -> Path:
    return directory / BLOCKS_DIR / content[:2] / f"{content}.{index}"


def encode_header(content: str, index: int, payload: memoryview, block_size: int) -> bytes:
    return HEADER.pack(MAGIC, FORMAT_VERSION, 0, block_size, index, len(payload), bytes.fromhex(content),
                       xxhash.xxh3_64_intdigest(payload))


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
        directory.mkdir(parents=True, exist_ok=True)
        self._db = _open_index(directory, block_size)
        self._db_lock = threading.Lock()
        self._once = _Once()
        self._tmp = self._claim_tmp_dir()
        self._queue: collections.deque[tuple] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._touched: set[tuple[str, int]] = set()
        self._hits = self._misses = 0
        self._failed_at = 0.0
        self._stopping = False
        self._busy = False
        self._writer = threading.Thread(target=self._write_loop, name="cache-writer", daemon=True)
        self._writer.start()

    # ---- reads (worker threads) ----------------------------------------------------------------

    def snapshot(self, content: str) -> tuple[set[int], int | None]:
        """Which blocks of ``content`` the index holds, and its size if ever learned."""
        try:
            with self._db_lock:
                indexes = {row[0] for row in self._db.execute("SELECT idx FROM blocks WHERE content = ?", (content,))}
                row = self._db.execute("SELECT total FROM contents WHERE content = ?", (content,)).fetchone()
        except sqlite3.Error as exc:
            self._once.warn("index-read", "cache index %s cannot be read (%s); reading from the network",
                            self.directory, exc)
            return set(), None
        return indexes, (row[0] if row else None)

    def load(self, content: str, index: int) -> memoryview | None:
        """The payload of a stored block, verified; None (a miss) if absent or damaged."""
        path = block_path(self.directory, content, index)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size < HEADER.size:
                    raise ValueError("shorter than its header")
                raw = bytearray(size)
                if f.readinto(raw) != size:
                    raise ValueError("changed while read")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._damaged(content, index, str(exc))
            return None
        view = memoryview(raw)
        magic, version, _, block_size, idx, length, ident, checksum = HEADER.unpack_from(view)
        payload = view[HEADER.size:]
        problem = ("not a block" if magic != MAGIC else "another format" if version != FORMAT_VERSION
                   else "another block size" if block_size != self.block_size
                   else "another block" if idx != index or ident != bytes.fromhex(content)
                   else "wrong length" if length != len(payload)
                   else "wrong checksum" if xxhash.xxh3_64_intdigest(payload) != checksum else None)
        if problem:
            self._damaged(content, index, problem)
            return None
        with self._cond:
            self._touched.add((content, index))
        return payload.toreadonly()

    def _damaged(self, content: str, index: int, why: str) -> None:
        log.warning("cache block %s.%d is damaged (%s); dropped, fetching it again", content, index, why)
        with self._cond:
            self._queue.append(("drop", content, index))
            self._cond.notify()

    # ---- writes (queued) -----------------------------------------------------------------------

    def store(self, content: str, index: int, payload: memoryview, *, wait: bool = False) -> bool:
        """Queue a verified block for the disk; False if dropped (queue full and not waiting)."""
        size = len(payload)
        with self._cond:
            while self._queued + size > QUEUE_BYTES and not self._stopping:
                if not wait:
                    return False
                self._cond.wait(1.0)
            if self._stopping:
                return False
            self._queue.append(("block", content, index, payload))
            self._queued += size
            self._cond.notify()
        return True

    def learned_total(self, content: str, total: int) -> None:
        self._enqueue(("total", content, total))

    def count(self, hit: bool) -> None:
        if hit:
            self._hits += 1
        else:
            self._misses += 1

    def _enqueue(self, item: tuple) -> None:
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    # ---- unpacked trees ------------------------------------------------------------------------

    def tree_path(self, name: str) -> Path:
        return self.directory / TREES_DIR / name

    def add_tree(self, name: str, size: int) -> None:
        self._enqueue(("tree", name, size))

    def touch_tree(self, name: str) -> None:
        self._enqueue(("touch-tree", name))

    # ---- the writer thread ---------------------------------------------------------------------

    def _claim_tmp_dir(self) -> Path:
        """This process's own temporary directory, locked while it lives; dirs of dead processes go."""
        root = self.directory / TMP_DIR
        root.mkdir(exist_ok=True)
        for lock in root.glob("*.lock"):
            with _locked(lock, blocking=False) as free:
                if free:
                    shutil.rmtree(lock.with_suffix(""), ignore_errors=True)
                    lock.unlink(missing_ok=True)
        mine = root / f"{os.getpid()}-{os.urandom(4).hex()}"
        self._tmp_lock = _locked(mine.with_suffix(".lock"))
        self._tmp_lock.__enter__()
        mine.mkdir()
        return mine

    def _write_loop(self) -> None:
        flushed = time.monotonic()
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    if not self._cond.wait(FLUSH_INTERVAL):
                        break
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH_BLOCKS))]
                stopping = self._stopping and not self._queue
                self._busy = True
            try:
                self._write_batch(batch)
                if stopping or time.monotonic() - flushed > FLUSH_INTERVAL:
                    self._flush()
                    flushed = time.monotonic()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if stopping:
                return

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is on disk and indexed; whether it is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._cond.wait(0.05)
            return not self._queue and not self._busy

    def _write_batch(self, batch: list[tuple]) -> None:
        rows, totals, drops, trees, touched_trees = [], [], [], [], []
        now = time.time()
        for item in batch:
            kind = item[0]
            if kind == "block":
                _, content, index, payload = item
                if self._write_file(content, index, payload):
                    rows.append((content, index, len(payload), now))
                with self._cond:
                    self._queued -= len(payload)
                    self._cond.notify_all()
            elif kind == "total":
                totals.append(item[1:])
            elif kind == "drop":
                drops.append(item[1:])
            elif kind == "tree":
                trees.append((item[1], item[2], now))
            else:
                touched_trees.append((now, item[1]))
        if rows or totals or drops or trees or touched_trees:
            self._index(rows, totals, drops, trees, touched_trees)
        for content, index in drops:
            block_path(self.directory, content, index).unlink(missing_ok=True)

    def _write_file(self, content: str, index: int, payload: memoryview) -> bool:
        """Write one block (temporary file, renamed into place); False if the disk refused."""
        if time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE:
            return False
        final = block_path(self.directory, content, index)
        tmp = self._tmp / f"{content}.{index}"
        for attempt in range(2):
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    header = encode_header(content, index, payload, self.block_size)
                    if os.writev(fd, [header, payload]) != len(header) + len(payload):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                finally:
                    os.close(fd)
                try:
                    os.replace(tmp, final)
                except FileNotFoundError:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, final)
                self._once.clear("disk")
                return True
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                if exc.errno == errno.ENOENT and not self._tmp.exists():
                    self._tmp.mkdir(parents=True, exist_ok=True)  # cleared under us
                    continue
                if exc.errno == errno.ENOSPC and attempt == 0 and self._evict(ENOSPC_EVICT):
                    continue
                self._once.warn("disk", "cache %s: cannot write (%s); serving from memory and the network",
                                self.directory, exc.strerror or exc)
                self._failed_at = time.monotonic()
                return False
        return False

    def _index(self, rows: list, totals: list, drops: list, trees: list, touched_trees: list) -> None:
        try:
            with self._db_lock:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO blocks VALUES (?, ?, ?, ?) ON CONFLICT (content, idx) "
                    "DO UPDATE SET size = excluded.size, atime = excluded.atime", rows)
                self._db.executemany("INSERT OR REPLACE INTO contents VALUES (?, ?)", totals)
                self._db.executemany("DELETE FROM blocks WHERE content = ? AND idx = ?", drops)
                self._db.executemany(
                    "INSERT INTO trees VALUES (?, ?, ?) ON CONFLICT (name) "
                    "DO UPDATE SET size = excluded.size, atime = excluded.atime", trees)
                self._db.executemany("UPDATE trees SET atime = ? WHERE name = ?", touched_trees)
                self._db.execute("COMMIT")
            self._once.clear("index")
        except sqlite3.Error as exc:
            self._rollback()
            self._once.warn("index", "cache index %s cannot be written (%s); those blocks are not kept",
                            self.directory, exc)
            for content, index, _, _ in rows:
                block_path(self.directory, content, index).unlink(missing_ok=True)
            return
        if self.used() > self.max_size:
            self._evict(0)

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
                return int(self._db.execute("SELECT value FROM counters WHERE name = 'used'").fetchone()[0])
        except sqlite3.Error:
            return 0

    def _evict(self, extra: int) -> bool:
        """Drop least-recently-used blocks and trees until ``max_size - extra`` is respected;
        whether anything was dropped."""
        target = max(0, self.max_size - extra)
        dropped = False
        try:
            while self.used() > target:
                with self._db_lock:
                    victims = self._db.execute(OLDEST).fetchall()
                    if not victims:
                        break
                    self._db.execute("BEGIN IMMEDIATE")
                    excess = int(self._db.execute("SELECT value FROM counters WHERE name = 'used'").fetchone()[0]) - target
                    chosen = []
                    for victim in victims:
                        if excess <= 0:
                            break
                        chosen.append(victim)
                        excess -= victim[3]
                    self._db.executemany("DELETE FROM blocks WHERE content = ? AND idx = ?",
                                         [(v[1], v[2]) for v in chosen if v[0] == "b"])
                    self._db.executemany("DELETE FROM trees WHERE name = ?", [(v[1],) for v in chosen if v[0] == "t"])
                    self._db.execute("COMMIT")
                for kind, name, index, _, _ in chosen:
                    if kind == "b":
                        block_path(self.directory, name, index).unlink(missing_ok=True)
                    else:
                        shutil.rmtree(self.tree_path(name), ignore_errors=True)
                dropped = dropped or bool(chosen)
        except sqlite3.Error as exc:
            self._rollback()
            self._once.warn("index", "cache index %s cannot be written (%s)", self.directory, exc)
        return dropped

    def _flush(self) -> None:
        """Persist use times and hit counters (often enough for LRU and stats, rarely enough to be cheap)."""
        with self._cond:
            touched, self._touched = self._touched, set()
        hits, misses, self._hits, self._misses = self._hits, self._misses, 0, 0
        now = time.time()
        try:
            with self._db_lock:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("UPDATE blocks SET atime = ? WHERE content = ? AND idx = ?",
                                     [(now, c, i) for c, i in touched])
                self._db.executemany("UPDATE counters SET value = value + ? WHERE name = ?",
                                     [(hits, "hits"), (misses, "misses")])
                self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()

    def sweep_orphans(self) -> int:
        """Remove block files the index does not know (renamed but never indexed: a crash),
        older than a minute so that another process's block in flight is left alone."""
        try:
            with self._db_lock:
                known = {f"{c}.{i}" for c, i in self._db.execute("SELECT content, idx FROM blocks")}
        except sqlite3.Error:
            return 0
        removed = 0
        cutoff = time.time() - ORPHAN_AGE
        for path in _block_files(self.directory / BLOCKS_DIR):
            try:
                if path.name not in known and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("cache %s: removed %d blocks the index did not know", self.directory, removed)
        return removed

    def close(self) -> None:
        """Write what is queued, persist counters, release the temporary dir."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._writer.join(30)
        with self._db_lock:
            self._db.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp_lock.__exit__()
        self._tmp.with_suffix(".lock").unlink(missing_ok=True)


def _block_files(root: Path) -> Iterator[Path]:
    try:
        subs = list(os.scandir(root))
    except OSError:
        return
    for sub in subs:
        if sub.is_dir(follow_symlinks=False):
            try:
                yield from (Path(entry.path) for entry in os.scandir(sub.path))
            except OSError:
                continue


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
        db.execute("BEGIN IMMEDIATE")
        freed = int(db.execute("SELECT value FROM counters WHERE name = 'used'").fetchone()[0])
        for table in ("blocks", "contents", "trees"):
            db.execute(f"DELETE FROM {table}")
        db.execute("COMMIT")
    finally:
        db.close()
    for sub in (BLOCKS_DIR, TREES_DIR):
        root = directory / sub
        for child in (list(root.iterdir()) if root.is_dir() else []):
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
    return freed
