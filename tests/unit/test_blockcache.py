"""The disk cache without a mount: verified blocks, restarts, LRU, shared dirs, live clear, disk errors."""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from artifactfs import blockcache
from artifactfs.blockcache import SLOT, BlockCache, checksum, content_hash, data_path, header_into, read_stats

BLOCK = 4096
STRIDE = SLOT + BLOCK
MIB = 1 << 20
C1 = content_hash("sigmic", ("file", "t", "a"), "v1")
C2 = content_hash("sigmic", ("file", "t", "b"), "v1")


def payload(seed: int, size: int = BLOCK) -> memoryview:
    return memoryview(bytes((seed * 31 + i) % 251 for i in range(size)))


def cache(directory: Path, max_size: int = 64 * MIB, block_size: int = BLOCK) -> BlockCache:
    return BlockCache(directory, max_size, block_size)


def load(c: BlockCache, content: str, index: int) -> memoryview | None:
    return c.load(content, index)[0]


def page_aligned(seed: int, size: int = BLOCK) -> memoryview:
    """A payload in an anonymous map, as fetch buffers are: page-aligned."""
    buffer = mmap.mmap(-1, size)
    buffer.write(bytes(payload(seed, size)))
    return memoryview(buffer).toreadonly()


def stored(c: BlockCache, content: str, *indexes: int, size: int = BLOCK,
           make: Callable[[int, int], memoryview] = payload) -> None:
    for index in indexes:
        assert c.store(content, index, [make(index, size)])
    assert c.wait_idle()


def encode_header(content: str, index: int, data: memoryview) -> bytes:
    """A block's header padded to its slot, as the writer writes it."""
    slot = bytearray(SLOT)
    header_into(memoryview(slot), content, index, data, BLOCK, checksum(data))
    return bytes(slot)


def test_blocks_survive_a_restart_verified(tmp_path: Path) -> None:
    first = cache(tmp_path)
    stored(first, C1, 0, 1)
    first.learned_total(C1, 2 * BLOCK - 10)
    first.close()
    again = cache(tmp_path)
    try:
        assert bytes(load(again, C1, 0)) == bytes(payload(0))
        assert again.snapshot(C1) == ({0, 1}, 2 * BLOCK - 10)
        assert load(again, C1, 7) is None and load(again, C2, 0) is None
        assert read_stats(tmp_path).blocks == 2
    finally:
        again.close()


def test_many_blocks_of_one_file_load_in_one_read(tmp_path: Path) -> None:
    c = cache(tmp_path)
    try:
        stored(c, C1, 0, 1, 3)
        views = c.load(C1, 0, 5)
        assert [bytes(v) if v is not None else None for v in views] == [
            bytes(payload(0)), bytes(payload(1)), None, bytes(payload(3)), None]
    finally:
        c.close()


@pytest.mark.parametrize("damage", ["flip a payload byte", "flip a header byte", "swap blocks", "truncate"])
def test_a_damaged_block_is_a_miss_dropped_once(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    c = cache(tmp_path)
    try:
        stored(c, C1, 0, 1)
        path = data_path(tmp_path, C1)
        raw = bytearray(path.read_bytes())
        if damage == "flip a payload byte":
            raw[STRIDE - 1] ^= 1
        elif damage == "flip a header byte":
            raw[20] ^= 1
        elif damage == "swap blocks":
            raw = raw[STRIDE:] + raw[:STRIDE]
        else:
            raw = raw[:100]
        path.write_bytes(raw)
        with caplog.at_level(logging.WARNING, "artifactfs.cache"):
            assert load(c, C1, 0) is None
            assert c.wait_idle()
            assert load(c, C1, 0) is None  # a hole now: not reported twice
        assert len([r for r in caplog.records if "damaged" in r.message]) == 1
        assert 0 not in c.snapshot(C1)[0]
    finally:
        c.close()


def test_a_new_block_size_or_format_never_serves_old_blocks(tmp_path: Path) -> None:
    c = cache(tmp_path)
    stored(c, C1, 0)
    c.close()
    other = cache(tmp_path, block_size=2 * BLOCK)
    try:
        assert load(other, C1, 0) is None and other.snapshot(C1) == (set(), None)
        assert read_stats(tmp_path).bytes == 0
    finally:
        other.close()


def test_least_recently_used_blocks_go_beyond_max_size(tmp_path: Path) -> None:
    c = cache(tmp_path, max_size=10 * BLOCK)
    try:
        stored(c, C1, *range(8))
        time.sleep(0.01)
        assert load(c, C1, 0) is not None  # used: newer than 1..7
        c._flush()
        stored(c, C2, *range(6))
        kept = c.snapshot(C1)[0]
        assert 0 in kept and 1 not in kept
        assert read_stats(tmp_path).bytes <= 10 * BLOCK
    finally:
        c.close()


def test_index_rows_use_times_and_evictions_go_in_chunks_of_statements(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blockcache, "STATEMENT_ROWS", 7)
    c = cache(tmp_path)
    try:
        assert c.store(C1, 0, [payload(i) for i in range(20)])
        assert c.wait_idle()
        assert sorted(c.snapshot(C1)[0]) == list(range(20))
        time.sleep(0.01)
        assert all(load(c, C1, i) is not None for i in range(10))
        c._flush()  # their use times, in two statements
        c.max_size = 10 * BLOCK
        assert c._evict(0)  # the ten not used since, in two statements
        assert sorted(c.snapshot(C1)[0]) == list(range(10))
        assert read_stats(tmp_path).bytes == 10 * BLOCK
    finally:
        c.close()


def test_evicted_blocks_free_their_space_and_empty_files_go(tmp_path: Path) -> None:
    c = cache(tmp_path, max_size=4 * BLOCK)
    try:
        stored(c, C1, 0, 1, 2, 3)
        used = os.stat(data_path(tmp_path, C1)).st_blocks
        stored(c, C2, 0, 1)
        assert os.stat(data_path(tmp_path, C1)).st_blocks < used
        stored(c, C2, 2, 3)
        assert not data_path(tmp_path, C1).exists()
    finally:
        c.close()


def test_two_caches_on_one_dir_share_the_budget_and_the_files(tmp_path: Path) -> None:
    a, b = cache(tmp_path, max_size=12 * BLOCK), cache(tmp_path, max_size=12 * BLOCK)
    try:
        stored(a, C1, 0, 2, 4)
        stored(b, C1, 1, 3, 5)  # one file, written by both
        assert [bytes(v) for v in a.load(C1, 0, 6)] == [bytes(payload(i)) for i in range(6)]
        stored(b, C2, *range(8))
        assert read_stats(tmp_path).bytes <= 12 * BLOCK
    finally:
        a.close()
        b.close()


def test_no_commit_leaves_the_cache_over_its_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that adds blocks makes room in the same transaction: a mount sharing the dir,
    or ``cache stats``, never sees the cache over its size, even between a batch and its
    eviction (``_free`` runs once the batch is committed)."""
    seen: list[int] = []
    free = BlockCache._free

    def watched(self: BlockCache, victims: list[tuple[str, str, int]]) -> None:
        seen.append(read_stats(tmp_path).bytes)
        free(self, victims)

    monkeypatch.setattr(BlockCache, "_free", watched)
    c = cache(tmp_path, max_size=6 * BLOCK)
    try:
        stored(c, C1, *range(4))
        stored(c, C2, *range(5))
        assert seen and max(seen) <= 6 * BLOCK
        assert sorted(c.snapshot(C2)[0]) == list(range(5))
    finally:
        c.close()


def test_orphans_are_swept_and_counted_nowhere(tmp_path: Path) -> None:
    c = cache(tmp_path)
    stored(c, C1, 0)
    c.close()
    header = encode_header(C1, 3, payload(3))
    with open(data_path(tmp_path, C1), "r+b") as f:  # written, never indexed: a crash
        f.seek(3 * STRIDE)
        f.write(header + bytes(payload(3)))
    orphan = data_path(tmp_path, C2)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(encode_header(C2, 0, payload(0)) + bytes(payload(0)))
    fresh = data_path(tmp_path, content_hash("p", "k", "f"))
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"another process's block, about to be indexed")
    old = time.time() - 3600
    for path in (orphan, data_path(tmp_path, C1)):
        os.utime(path, (old, old))
    c = cache(tmp_path)
    try:
        assert c.sweep_orphans() == 2
        assert not orphan.exists() and fresh.exists() and bytes(load(c, C1, 0)) == bytes(payload(0))
        assert os.stat(data_path(tmp_path, C1)).st_blocks * 512 <= STRIDE  # block 3's space is free again
        assert read_stats(tmp_path).blocks == 1
    finally:
        c.close()


@pytest.mark.parametrize("make", [payload, page_aligned], ids=["through the page cache", "around it"])
def test_clear_under_a_live_cache_then_it_keeps_working(tmp_path: Path, make: Callable[[int, int], memoryview]) -> None:
    c = cache(tmp_path)
    try:
        stored(c, C1, 0, 1, make=make)
        assert blockcache.clear(tmp_path) == 2 * BLOCK
        assert load(c, C1, 0) is None and read_stats(tmp_path).bytes == 0
        stored(c, C1, 0, make=make)
        assert bytes(load(c, C1, 0)) == bytes(payload(0))
        assert read_stats(tmp_path).blocks == 1
    finally:
        c.close()


def test_a_full_queue_drops_instead_of_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blockcache, "QUEUE_BYTES", 2 * BLOCK)
    c = cache(tmp_path)
    try:
        with c._cond:  # the writer cannot take anything while this is held
            c._queued = 2 * BLOCK
            assert c.store(C1, 0, [payload(0)]) is False
            c._queued = 0
    finally:
        c.close()


def test_a_block_is_loaded_from_the_queue_until_the_disk_has_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A block queued and not written yet (its file does not even exist) loads from the queue;
    once written, from its file; a write the disk refused leaves a miss, never stale bytes."""
    c = cache(tmp_path)
    release = threading.Event()
    real_write = c._write_run

    def held(*args: object) -> bool:
        assert release.wait(10)
        return real_write(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(c, "_write_run", held)
    try:
        assert c.store(C1, 0, [payload(0), payload(1, 1000)])
        assert not data_path(tmp_path, C1).exists()
        assert [bytes(view) for view in c.load(C1, 0, 2)] == [bytes(payload(0)), bytes(payload(1, 1000))]
        release.set()
        assert c.wait_idle()
        assert data_path(tmp_path, C1).exists() and not c._unwritten
        assert bytes(load(c, C1, 1)) == bytes(payload(1, 1000))
        monkeypatch.setattr(c, "_write_run", lambda *args: False)  # the disk refuses the next one
        assert c.store(C1, 2, [payload(2)])
        assert c.wait_idle()
        assert load(c, C1, 2) is None and not c._unwritten
    finally:
        c.close()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS])
def test_disk_errors_never_raise_and_are_logged_once(tmp_path: Path, code: int, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    c = cache(tmp_path)
    real = os.pwritev

    def failing(fd: int, buffers: list, offset: int) -> int:
        raise OSError(code, os.strerror(code))

    try:
        with caplog.at_level(logging.WARNING, "artifactfs.cache"):
            monkeypatch.setattr(os, "pwritev", failing)
            for index in range(5):
                assert c.store(C1, index, [payload(index)]) in (True, False)
            assert c.wait_idle()
            monkeypatch.setattr(os, "pwritev", real)
            monkeypatch.setattr(blockcache, "RETRY_AFTER_FAILURE", 0.0)
            stored(c, C1, 9)
        assert bytes(load(c, C1, 9)) == bytes(payload(9))
        assert len([r for r in caplog.records if "cannot write" in r.message]) == 1
    finally:
        c.close()


@pytest.mark.parametrize("around", [True, False])
def test_full_blocks_stored_around_the_page_cache_are_written_with_o_direct(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, around: bool) -> None:
    """Runs of full blocks stored ``around`` go out with O_DIRECT, the rest through the page
    cache; a run is never half of each."""
    direct: dict[int, bool] = {}  # block -> written with O_DIRECT
    write = os.pwritev

    def spying(fd: int, buffers: list, offset: int) -> int:
        first = offset // STRIDE
        for index in range(first, first + len(buffers) // 2):  # a header and a payload each
            direct[index] = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        return write(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", spying)
    c = cache(tmp_path)
    try:
        assert c.store(C1, 0, [page_aligned(0)], around=around) and c.store(C1, 1, [page_aligned(1)], around=around)
        assert c.store(C1, 2, [page_aligned(2)], around=not around)
        assert c.wait_idle()
        assert c.store(C1, 3, [page_aligned(3, BLOCK - 10)], around=around)  # the file's short last block
        assert c.wait_idle()
        assert [bytes(view) for view in c.load(C1, 0, 4)] == [
            bytes(payload(0)), bytes(payload(1)), bytes(payload(2)), bytes(payload(3, BLOCK - 10))]
    finally:
        c.close()
    assert direct == {0: around, 1: around, 2: not around, 3: False}


def test_where_the_file_system_refuses_o_direct_blocks_go_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_direct(path: object, flags: int, *args: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_direct)
    c = cache(tmp_path)
    try:
        assert c.store(C1, 0, [page_aligned(0)]) and c.store(C1, 1, [payload(1)])
        assert c.wait_idle()
        assert [bytes(view) for view in c.load(C1, 0, 2)] == [bytes(payload(0)), bytes(payload(1))]
    finally:
        c.close()

