"""The fetch buffer pool: a buffer is handed out again only once no view of it is left."""

from __future__ import annotations

import os
import threading
import time

import pytest

from artifactfs import buffers
from artifactfs.buffers import BufferPool

K = 1024


def test_a_buffer_with_a_view_left_is_never_handed_out_again() -> None:
    pool = BufferPool(256 * K, 2048 * K, spares=0)
    first = pool.take(1000 * K)
    assert len(first) == 1000 * K and not first.readonly
    first_map = first.obj
    reader = first.toreadonly()[10:20]  # a reader still holds a block of it
    del first
    second = pool.take(1000 * K)
    assert second.obj is not first_map
    del second
    reader.release()
    assert pool.take(1000 * K).obj is first_map  # the oldest free one first


def test_a_buffer_is_reused_once_its_views_are_gone() -> None:
    pool = BufferPool(256 * K, 2048 * K, spares=0)
    first = pool.take(300 * K)
    first_map = first.obj
    first[:3] = b"abc"
    del first
    again = pool.take(512 * K)
    assert again.obj is first_map and len(again) == 512 * K


def test_size_classes_and_small_buffers() -> None:
    pool = BufferPool(256 * K, 2048 * K, spares=0)
    assert len(pool.take(257 * K).obj) == 512 * K
    assert isinstance(pool.take(100).obj, bytearray) and len(pool.take(100)) == 100
    assert len(pool.take(4096 * K)) == 4096 * K  # beyond the largest class: a map of its own


def test_the_pool_keeps_at_most_its_limit() -> None:
    pool = BufferPool(256 * K, 2048 * K, limit=1024 * K, spares=0)
    held = [pool.take(256 * K) for _ in range(8)]  # all in use: new ones, the oldest let go
    maps = [view.obj for view in held]
    assert len({id(m) for m in maps}) == 8
    tracked = {id(m) for m in maps[-4:]}
    del held
    assert {id(pool.take(256 * K).obj) for _ in range(8)} == tracked


def test_threads_taking_at_once_never_share_a_buffer() -> None:
    pool = BufferPool(256 * K, 2048 * K, limit=4096 * K, spares=0)
    taken: list[memoryview] = []
    shared: list[int] = []
    lock = threading.Lock()

    def take_many() -> None:
        for _ in range(50):
            view = pool.take(256 * K)
            with lock:
                taken.append(view)
                if len(taken) > 12:
                    taken.pop(0)
                if len({id(v.obj) for v in taken}) != len(taken):
                    shared.append(len(taken))

    threads = [threading.Thread(target=take_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 12 and not shared


def test_without_resize_every_buffer_is_new(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where anonymous maps cannot be resized (no mremap: macOS), nothing is reused."""

    def no_mremap(segment: object) -> bool:
        raise SystemError("mmap: resizing not available--no mremap()")

    monkeypatch.setattr(buffers, "_unused", no_mremap)
    pool = buffers.BufferPool(256 * K, 2048 * K, spares=0)
    first = pool.take(256 * K)
    first_map = first.obj
    del first
    again = pool.take(256 * K)
    assert again.obj is not first_map and len(again) == 256 * K


def test_a_second_new_map_has_spares_made_in_the_background() -> None:
    """Spares of a class come once fetches took two new maps of it, and the next takes get
    them instead of new maps."""
    pool = BufferPool(256 * K, 2048 * K, spares=1024 * K)
    first = pool.take(256 * K)
    assert pool._maker is None  # one new map: no spares, no thread
    second = pool.take(256 * K)
    for _ in range(500):  # bounded: 5 s at most
        with pool._lock:
            if len(pool._rings.get(256 * K, ())) == 6:
                break
        time.sleep(0.01)
    spares = [segment for segment in pool.maps(256 * K) if segment not in (first.obj, second.obj)]
    assert len(spares) == 4 and all(len(segment) == 256 * K for segment in spares)
    assert {id(pool.take(256 * K).obj) for _ in range(4)} == {id(segment) for segment in spares}


def test_spares_are_made_only_where_the_pool_has_room() -> None:
    """A spare never pushes a map out of the pool (it may be free again soon, its pages warm)."""
    pool = BufferPool(256 * K, 2048 * K, limit=768 * K, spares=1024 * K)
    first = pool.take(256 * K)
    zeros = os.open("/dev/zero", os.O_RDONLY)
    try:
        pool._spare(256 * K, zeros)
    finally:
        os.close(zeros)
    assert len(pool.maps(256 * K)) == 3 and first.obj in pool.maps(256 * K)


def test_a_busy_map_is_probed_again_only_after_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """A map a reader holds on to is not probed on every take (random reads keep hundreds)."""
    pool = BufferPool(256 * K, 2048 * K, spares=0)
    taken = [pool.take(256 * K) for _ in range(4)]
    busy = taken[0]
    del taken
    probes: list[object] = []
    unused = buffers._unused

    def counted(segment: object) -> bool:
        probes.append(segment)
        return unused(segment)  # type: ignore[arg-type]

    monkeypatch.setattr(buffers, "_unused", counted)
    for _ in range(6):
        assert pool.take(256 * K).obj is not busy.obj
    assert len(probes) == 8 and probes.count(busy.obj) == 2


def test_the_class_holding_most_gives_way_beyond_the_limit() -> None:
    pool = BufferPool(256 * K, 2048 * K, limit=1024 * K, spares=0)
    big = [pool.take(512 * K) for _ in range(2)]
    oldest = big[0].obj
    del big
    small = pool.take(256 * K)
    assert len(small) == 256 * K
    assert oldest not in pool.maps(512 * K) and len(pool.maps(512 * K)) == 1 and len(pool.maps(256 * K)) == 1


def test_a_shared_pool_copies_bytes_out_of_memfd_maps() -> None:
    """In a shared pool, maps from ``SHARED_MIN`` up are memfds: a piece of one is copied out
    with ``pread`` at its offset, the same bytes as the view holds."""
    pool = BufferPool(256 * K, 2048 * K, spares=0, shared=True)
    view = pool.take(buffers.SHARED_MIN)
    view[:] = os.urandom(len(view))
    base = view.toreadonly()
    piece = pool.piece(base, 1000, 300 * K)
    assert piece._parts[0][1] is not None and len(piece) == 300 * K - 1000
    assert piece.tobytes() == bytes(base[1000:300 * K])
    small = pool.take(256 * K)  # below SHARED_MIN: an anonymous map
    small[:4] = b"abcd"
    assert pool.piece(small.toreadonly(), 0, 4)._parts[0][1] is None and pool.piece(small, 0, 4).tobytes() == b"abcd"
    assert buffers.Piece(b"plain").tobytes() == b"plain"


def test_a_piece_of_several_buffers_copies_out_in_order() -> None:
    """A read spanning buffers is one piece: ``tobytes`` joins its parts, ``copy_into`` copies
    each (memfd or not) to its place in the caller's buffer."""
    pool = BufferPool(256 * K, 2048 * K, spares=0, shared=True)
    views = [pool.take(buffers.SHARED_MIN), pool.take(256 * K)]
    for view in views:
        view[:] = os.urandom(len(view))
    expected = bytes(views[0][5:800 * K]) + bytes(views[1][:100]) + b"tail"

    def piece() -> buffers.Piece:
        return buffers.Piece.joined([pool.piece(views[0], 5, 800 * K), pool.piece(views[1], 0, 100),
                                     buffers.Piece(b"tail")])

    assert len(piece()) == len(expected) and piece().tobytes() == expected
    out = bytearray(len(expected) + 10)
    assert piece().copy_into(memoryview(out)) == len(expected)
    assert bytes(out[:len(expected)]) == expected and out[len(expected):] == bytes(10)
    assert buffers.Piece.joined([]).tobytes() == b""


def test_a_memfd_goes_with_its_map_and_at_most_shared_maps_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buffers, "SHARED_MAPS", 2)
    pool = BufferPool(256 * K, 2048 * K, limit=0, spares=0, shared=True)  # nothing kept: every take is new
    views = [pool.take(1024 * K) for _ in range(3)]
    fds = [pool._fds.get(id(view.obj)) for view in views]
    assert fds[0] is not None and fds[1] is not None and fds[2] is None  # the third is anonymous
    os.fstat(fds[0])
    del views
    assert not pool._fds
    with pytest.raises(OSError):
        os.fstat(fds[0])  # closed with its map


def test_a_pool_not_shared_makes_no_memfds() -> None:
    pool = BufferPool(256 * K, 2048 * K, spares=0)
    view = pool.take(2048 * K)
    assert pool.piece(view, 0, 10)._parts[0][1] is None and not pool._fds
