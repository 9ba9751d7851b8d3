"""The disk cache without a mount: persistence, verification, eviction, statistics."""

from __future__ import annotations

from pathlib import Path

from artifactfs.blockcache import BlockCache, clear, content_hash, read_stats


def test_chunks_survive_a_restart_and_damaged_ones_are_misses(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, 1 << 30)
    key = content_hash("p", ("f", "a"), "v1")
    cache.put(key, 0, b"a" * 100)
    cache.put(key, 1, b"b" * 50)
    cache.set_total(key, 150)
    cache.close()
    again = BlockCache(tmp_path, 1 << 30)
    assert again.read(key, 0, 10, 5) == b"aaaaa"
    assert again.total(key) == 150
    path = next((tmp_path / "blocks").rglob(f"{key}.1"))
    path.write_bytes(b"short")
    assert again.read(key, 1, 0, 50) is None
    assert again.length(key, 1) is None
    again.close()


def test_a_new_fingerprint_is_a_new_content() -> None:
    assert content_hash("p", ("f", "a"), "v1") != content_hash("p", ("f", "a"), "v2")


def test_least_recently_used_chunks_are_evicted_beyond_max_size(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, 300)
    for index in range(3):
        cache.put("c", index, bytes(100))
    assert cache.read("c", 0, 0, 1) is not None  # chunk 0 is now the most recent
    cache.put("c", 3, bytes(100))
    assert cache.length("c", 1) is None
    assert all(cache.length("c", i) == 100 for i in (0, 2, 3))
    assert cache.bytes == 300
    cache.close()
    assert read_stats(tmp_path).bytes == 300


def test_leftover_temporary_files_are_swept_and_clear_empties(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path, 1 << 20)
    cache.put("c", 0, b"x")
    cache.count(hit=True)
    cache.count(hit=False)
    cache.close()
    leftover = tmp_path / "blocks" / "c" / "c.5.tmp123"
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"half")
    BlockCache(tmp_path, 1 << 20).close()
    assert not leftover.exists()
    stats = read_stats(tmp_path)
    assert (stats.chunks, stats.hits, stats.misses) == (1, 1, 1)
    assert clear(tmp_path) == 1
    assert read_stats(tmp_path).bytes == 0
