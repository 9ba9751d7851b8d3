"""The disk cache without a mount: verified blocks, restarts, LRU, shared dirs, live clear, disk errors."""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

import pytest

from artifactfs import blockcache
from artifactfs.blockcache import BlockCache, block_path, content_hash, read_stats

BLOCK = 4096
MIB = 1 << 20


def payload(seed: int, size: int = BLOCK) -> memoryview:
    return memoryview(bytes((seed * 31 + i) % 251 for i in range(size)))


def cache(directory: Path, max_size: int = 64 * MIB, block_size: int = BLOCK) -> BlockCache:
    return BlockCache(directory, max_size, block_size)


def stored(c: BlockCache, content: str, *indexes: int, size: int = BLOCK) -> None:
    for index in indexes:
        assert c.store(content, index, payload(index, size))
    assert c.wait_idle()


C1 = content_hash("sigmic", ("file", "t", "a"), "v1")
C2 = content_hash("sigmic", ("file", "t", "b"), "v1")


def test_blocks_survive_a_restart_verified(tmp_path: Path) -> None:
    first = cache(tmp_path)
    stored(first, C1, 0, 1)
    first.learned_total(C1, 2 * BLOCK - 10)
    first.close()
    again = cache(tmp_path)
    try:
        assert bytes(again.load(C1, 0)) == bytes(payload(0))
        assert again.snapshot(C1) == ({0, 1}, 2 * BLOCK - 10)
        assert again.load(C1, 7) is None and again.load(C2, 0) is None
        assert read_stats(tmp_path).blocks == 2
    finally:
        again.close()


@pytest.mark.parametrize("damage", ["flip a payload byte", "flip a header byte", "truncate", "swap blocks"])
def test_a_damaged_block_is_a_miss_dropped_once(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    c = cache(tmp_path)
    try:
        stored(c, C1, 0, 1)
        path = block_path(tmp_path, C1, 0)
        raw = bytearray(path.read_bytes())
        if damage == "flip a payload byte":
            raw[-1] ^= 1
        elif damage == "flip a header byte":
            raw[20] ^= 1
        elif damage == "truncate":
            raw = raw[:100]
        else:
            raw = bytearray(block_path(tmp_path, C1, 1).read_bytes())
        path.write_bytes(raw)
        with caplog.at_level(logging.WARNING, "artifactfs.cache"):
            assert c.load(C1, 0) is None
            assert c.wait_idle()
            assert c.load(C1, 0) is None  # gone: not reported twice
        assert len([r for r in caplog.records if "damaged" in r.message]) == 1
        assert not path.exists() and c.snapshot(C1)[0] == {1}
    finally:
        c.close()


def test_a_new_block_size_or_format_never_serves_old_blocks(tmp_path: Path) -> None:
    c = cache(tmp_path)
    stored(c, C1, 0)
    c.close()
    other = cache(tmp_path, block_size=2 * BLOCK)
    try:
        assert other.load(C1, 0) is None and other.snapshot(C1) == (set(), None)
        assert read_stats(tmp_path).bytes == 0
    finally:
        other.close()


def test_least_recently_used_blocks_go_beyond_max_size(tmp_path: Path) -> None:
    c = cache(tmp_path, max_size=10 * BLOCK)
    try:
        stored(c, C1, *range(8))
        time.sleep(0.01)
        assert c.load(C1, 0) is not None  # used: newer than 1..7
        c._flush()
        stored(c, C2, *range(6))
        kept = c.snapshot(C1)[0]
        assert 0 in kept and 1 not in kept
        assert read_stats(tmp_path).bytes <= 10 * BLOCK
    finally:
        c.close()


def test_two_caches_on_one_dir_share_the_budget_and_their_temporary_files(tmp_path: Path) -> None:
    a, b = cache(tmp_path, max_size=12 * BLOCK), cache(tmp_path, max_size=12 * BLOCK)
    try:
        tmp_dirs = sorted(p for p in (tmp_path / "tmp").iterdir() if p.is_dir())
        assert len(tmp_dirs) == 2
        stored(a, C1, *range(8))
        stored(b, C2, *range(8))
        assert read_stats(tmp_path).bytes <= 12 * BLOCK
        assert bytes(b.load(C1, 7)) == bytes(payload(7))  # what one wrote, the other reads
        third = cache(tmp_path)  # a new process sweeps only dead processes' temporary dirs
        third.close()
        assert all(p.exists() for p in tmp_dirs)
    finally:
        a.close()
        b.close()


def test_temporary_dirs_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / "tmp" / "999999-dead"
    dead.mkdir(parents=True)
    (dead / "half-written").write_bytes(b"x")
    dead.with_suffix(".lock").write_bytes(b"")
    c = cache(tmp_path)
    try:
        assert not dead.exists() and not dead.with_suffix(".lock").exists()
    finally:
        c.close()


def test_orphans_are_swept_and_counted_nowhere(tmp_path: Path) -> None:
    c = cache(tmp_path)
    try:
        stored(c, C1, 0)
        orphan = block_path(tmp_path, C2, 0)
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(b"renamed into place but never indexed")
        fresh = block_path(tmp_path, C2, 1)
        fresh.write_bytes(b"another process's block, about to be indexed")
        old = time.time() - 3600
        os.utime(orphan, (old, old))
        assert c.sweep_orphans() == 1
        assert not orphan.exists() and fresh.exists() and block_path(tmp_path, C1, 0).exists()
        assert read_stats(tmp_path).blocks == 1
    finally:
        c.close()


def test_clear_under_a_live_cache_then_it_keeps_working(tmp_path: Path) -> None:
    c = cache(tmp_path)
    try:
        stored(c, C1, 0, 1)
        assert blockcache.clear(tmp_path) == 2 * BLOCK
        assert c.load(C1, 0) is None and read_stats(tmp_path).bytes == 0
        stored(c, C1, 0)
        assert bytes(c.load(C1, 0)) == bytes(payload(0))
        assert read_stats(tmp_path).blocks == 1
    finally:
        c.close()


def test_a_full_queue_drops_instead_of_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blockcache, "QUEUE_BYTES", 2 * BLOCK)
    c = cache(tmp_path)
    try:
        with c._cond:  # the writer cannot take anything while this is held
            c._queue.append(("total", C1, 1))
            c._queued = 2 * BLOCK
            assert c.store(C1, 0, payload(0)) is False
            c._queued = 0
    finally:
        c.close()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS])
def test_disk_errors_never_raise_and_are_logged_once(tmp_path: Path, code: int, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    c = cache(tmp_path)
    real = os.writev

    def failing(fd: int, buffers: list) -> int:
        raise OSError(code, os.strerror(code))

    try:
        with caplog.at_level(logging.WARNING, "artifactfs.cache"):
            monkeypatch.setattr(os, "writev", failing)
            for index in range(5):
                assert c.store(C1, index, payload(index)) in (True, False)
            assert c.wait_idle()
            monkeypatch.setattr(os, "writev", real)
            monkeypatch.setattr(blockcache, "RETRY_AFTER_FAILURE", 0.0)
            stored(c, C1, 9)
        assert bytes(c.load(C1, 9)) == bytes(payload(9))
        assert len([r for r in caplog.records if "cannot write" in r.message]) == 1
        assert not any((tmp_path / "blocks").rglob("*.tmp*"))
    finally:
        c.close()
