"""The core and its byte engine in-process, against the emulator's routes without sockets.

Each scenario runs in milliseconds: resume after a cut, re-resolve on expiry, single-flight,
readahead growth, eviction during reads, unknown sizes, capped ranges, whole bodies of a known
size, a failing cache disk, damaged blocks, claims fetched in a caller's thread. A hypothesis
test reads random ranges with concurrent readers (async ones, and blocking ones fetching their
claims) and random failures, and compares every byte with the source.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

from artifactfs import blockcache, engine
from artifactfs.config import load_config
from artifactfs.core import Core
from artifactfs.emulator import Emulator, PatternBlob
from artifactfs.errors import RemoteError
from artifactfs.model import Source
from artifactfs.providers import SPECS
from tests.fakes import ApiTransport, ByteTransport, Failure, InProcessOrigin

MIB = 1 << 20
BLOCK = engine.BLOCK_SIZE
TASK = "task_big"
PATH = "data/file.bin"


def world_with(size: int, seed: int = 5) -> tuple[Emulator, PatternBlob]:
    world = Emulator()
    blob = PatternBlob(size, seed)
    world.put_sigmic_file(TASK, PATH, blob)
    return world, blob


@asynccontextmanager
async def running(world: Emulator, tmp_path: Path, transport: ByteTransport | None = None, *,
                  cache_size: str = "1GiB", timeout: float = 5,
                  shared_buffers: bool = False, writes_around: bool = True) -> AsyncIterator[tuple[Core, ByteTransport]]:
    """A core on ``world`` with its network in-process (and its cache under ``tmp_path``)."""
    origin = InProcessOrigin(world) if transport is None else transport.origin
    transport = transport or ByteTransport(origin)
    lines = ["[mount]", f"timeout = {timeout}", "[cache]", f'dir = "{tmp_path / "cache"}"', f'max_size = "{cache_size}"']
    info = world.ready_info()
    for kind, spec in SPECS.items():
        table = {"base_url": origin.base_urls()[kind], "token": world.tokens[kind], **spec.demo(info)}
        lines += [f"[providers.{kind}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_file = tmp_path / "config.toml"
    config_file.write_text("\n".join(lines) + "\n")
    config_file.chmod(0o600)
    config = load_config(config_file, environ={})
    async with Core.running(config, api_transport=ApiTransport(origin), byte_transport=transport,
                            shared_buffers=shared_buffers, writes_around=writes_around) as core:
        yield core, transport


async def read_range(core: Core, path: str, offset: int, size: int) -> bytes:
    opened = await core.open_path(path)
    try:
        return bytes(await core.read(opened.fh, offset, size))
    finally:
        core.release(opened.fh)


async def read_all(core: Core, path: str, step: int = 128 << 10) -> bytes:
    """Read sequentially in ``step`` pieces, as the kernel would."""
    opened = await core.open_path(path)
    out = bytearray()
    try:
        while chunk := bytes(await core.read(opened.fh, len(out), step)):
            out += chunk
    finally:
        core.release(opened.fh)
    return bytes(out)


async def read_range_of(core: Core, fh: int, offset: int, size: int) -> bytes:
    return bytes(await core.read(fh, offset, size))


FILE = f"sigmic/{TASK}/{PATH}"


async def test_a_directory_opened_again_hands_out_the_same_entries_until_its_listing_changes(
        tmp_path: Path) -> None:
    world, _ = world_with(BLOCK)
    async with running(world, tmp_path) as (core, _):
        directory = (await core.node_at(FILE.rpartition("/")[0])).inode
        first = await core.opendir(directory)
        entries = core.readdir(first)
        assert [item.name for item in entries] == ["file.bin"]
        assert core.readdir(await core.opendir(directory)) is entries  # a warm ls -l makes nothing again
        core.remember_listed(first, 0, len(entries))
        assert core.forget(entries[0].attributes.inode, 1) and not core.ns.nodes[entries[0].attributes.inode].lookups

        world.put_sigmic_file(TASK, "data/more.bin", PatternBlob(10, 1))
        later = core.ns.clock() + 3600
        core.ns.clock = lambda: later  # the listing's TTL ran out
        assert [item.name for item in core.readdir(await core.opendir(directory))] == ["file.bin", "more.bin"]
        assert core.readdir(first) is entries  # an open handle keeps its snapshot


async def test_a_read_after_a_seek_fetches_its_blocks_itself_and_others_wait_for_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k = engine.SEQUENTIAL_SLACK // BLOCK + 4  # far enough from the start to be a seek
    world, blob = world_with((k + 4) * BLOCK + 10)
    tasks: list[tuple[int, int]] = []
    start_task = engine.Engine._start
    monkeypatch.setattr(engine.Engine, "_start", lambda self, content, start, end, *args, **kwargs: (
        tasks.append((start, end)), start_task(self, content, start, end, *args, **kwargs))[1])
    async with running(world, tmp_path) as (core, transport):
        opened = await core.open_path(FILE)
        at = k * BLOCK + 5  # a seek: no readahead
        got: dict[int, bytes] = {}

        async def read(offset: int, size: int) -> None:
            got[size] = await read_range_of(core, opened.fh, offset, size)

        transport.gate = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, at, BLOCK)  # a claim: this read fetches blocks k, k + 1 itself
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read, at, 10)  # they are on their way: it waits for them
            await trio.testing.wait_all_tasks_blocked()
            assert not got
            transport.gate.set()
        assert got == {BLOCK: blob.read(at, BLOCK), 10: blob.read(at, 10)}
        assert transport.ranges("/download") == [f"bytes={k * BLOCK}-{(k + 2) * BLOCK - 1}"]
        assert tasks == []  # no fetch task: the claiming read fetched them
        again = await read_range_of(core, opened.fh, k * BLOCK, 2 * BLOCK)  # in memory (and readahead starts)
        assert again == blob.read(k * BLOCK, 2 * BLOCK)
        assert await read_range_of(core, opened.fh, (k + 4) * BLOCK, 100) == blob.read((k + 4) * BLOCK, 10)  # the end
        core.release(opened.fh)
        await core.engine.settled()
        assert not core.engine._working
        assert transport.ranges("/download") == [f"bytes={k * BLOCK}-{(k + 2) * BLOCK - 1}",
                                                 f"bytes={(k + 2) * BLOCK}-{(k + 4) * BLOCK + 9}"]


async def test_a_small_file_read_whole_is_one_request_and_a_cut_resumes_where_it_stopped(tmp_path: Path) -> None:
    world, blob = world_with(3 * BLOCK + 10)
    transport = ByteTransport(InProcessOrigin(world), failures={1: Failure("cut", after=BLOCK + 7)})
    async with running(world, tmp_path, transport) as (core, bytes_):
        opened = await core.open_path(FILE)
        assert await read_range_of(core, opened.fh, 0, 3 * BLOCK + 10) == blob.read_all()
        core.release(opened.fh)
    assert bytes_.ranges("/download") == [f"bytes=0-{4 * BLOCK - 1}", f"bytes={BLOCK + 7}-{4 * BLOCK - 1}"]


@pytest.mark.parametrize(("skip", "size", "cut"), [(0, BLOCK, 100_000), (5, 1000, 500)], ids=["claim", "exact"])
async def test_a_read_cut_short_or_refused_is_finished_by_the_http_layer(tmp_path: Path, skip: int, size: int,
                                                                         cut: int) -> None:
    """After a seek, a block read is a claim; a shorter one, the first in its block, asks exactly its bytes."""
    world = Emulator()
    blob = PatternBlob(8 * MIB, 9)
    world.put_gumloop_artifact("agent_x", "big.bin", blob)
    failures = {1: Failure("cut", after=cut), 2: Failure("status", status=403)}
    transport = ByteTransport(InProcessOrigin(world), failures=failures)
    async with running(world, tmp_path, transport) as (core, bytes_):
        opened = await core.open_path("gumloop/agent_x/latest/big.bin")
        at = 6 * MIB + skip
        assert await read_range_of(core, opened.fh, at, size) == blob.read(at, size)
        core.release(opened.fh)
    last = at + size - 1
    assert [rng for _, rng in bytes_.calls] == [f"bytes={at}-{last}", f"bytes={at + cut}-{last}",
                                                f"bytes={at + cut}-{last}"]
    downloads = [entry for entry in transport.origin.log.entries() if entry["path"].endswith("/download")]
    assert len(downloads) == 1  # a new URL after the refusal


async def test_a_claim_on_a_server_ignoring_range_hands_over_the_blocks_it_passes(tmp_path: Path) -> None:
    world = Emulator()
    k = engine.SEQUENTIAL_SLACK // BLOCK + 4  # far enough from the start to be a seek: a claim
    data = PatternBlob((k + 2) * BLOCK + 99, 4).read_all()
    world.put_plangrep_job("job_unsized", "completed", {"out/a.bin": data})  # no size, Range ignored
    async with running(world, tmp_path) as (core, transport):
        path = "plangrep/job_unsized/out/a.bin"
        opened = await core.open_path(path)
        assert await read_range_of(core, opened.fh, k * BLOCK, 100) == data[k * BLOCK:k * BLOCK + 100]
        assert await read_range_of(core, opened.fh, 2 * BLOCK, 1000) == data[2 * BLOCK:2 * BLOCK + 1000]
        assert await read_range_of(core, opened.fh, (k + 2) * BLOCK, 1000) == data[(k + 2) * BLOCK:]
        core.release(opened.fh)
        assert await read_all(core, path) == data
        # the first read asks exactly its bytes, on the trio thread, then (a whole body
        # comes) in a worker thread, which stops at once: the read takes blocks, a claim the
        # worker thread streams, handing over every block as it passes: nothing more is asked
        exact = f"bytes={k * BLOCK}-{k * BLOCK + 99}"
        assert transport.ranges("/artifact") == [exact, exact, f"bytes={k * BLOCK}-{(k + 1) * BLOCK - 1}"]


async def test_a_claim_queues_its_blocks_for_the_disk_in_one_run(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim's reader waits for all of its blocks, so they are handed over (and queued for
    the disk) together, however many receives brought them."""
    world, blob = world_with(MIB)
    runs: list[tuple[int, int]] = []
    store = blockcache.BlockCache.store

    def counted(self: blockcache.BlockCache, content: str, first: int, payloads: list, **how: bool) -> bool:
        runs.append((first, len(payloads)))
        return store(self, content, first, payloads, **how)

    monkeypatch.setattr(blockcache.BlockCache, "store", counted)
    transport = ByteTransport(InProcessOrigin(world), piece=50_000)
    async with running(world, tmp_path, transport) as (core, _):
        assert await read_range(core, FILE, 0, MIB) == blob.read_all()
    assert transport.ranges("/download") == [f"bytes=0-{MIB - 1}"]
    assert runs == [(0, MIB // BLOCK)]


@pytest.mark.parametrize("writes_around", [True, False])
async def test_a_claims_blocks_go_around_the_page_cache_and_readaheads_as_the_core_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes_around: bool) -> None:
    """A mount's core writes every block around the page cache; fsspec's only the blocks a
    read fetched for itself (a whole small file here), and readahead's through it."""
    world, big = world_with(4 * MIB)
    small = PatternBlob(MIB, 6)
    world.put_sigmic_file(TASK, "data/small.bin", small)
    around: dict[str, set[bool]] = {}
    store = blockcache.BlockCache.store

    def spying(self: blockcache.BlockCache, content: str, first: int, payloads: list, **how: bool) -> bool:
        around.setdefault(content, set()).add(how["around"])
        return store(self, content, first, payloads, **how)

    monkeypatch.setattr(blockcache.BlockCache, "store", spying)
    async with running(world, tmp_path, writes_around=writes_around) as (core, _):
        assert await read_range(core, f"sigmic/{TASK}/data/small.bin", 0, MIB) == small.read_all()
        assert around and set().union(*around.values()) == {True}
        around.clear()
        assert await read_all(core, FILE) == big.read_all()
    assert list(around.values()) == [{writes_around}]


async def test_a_file_read_whole_is_read_again_at_once_without_the_origin(tmp_path: Path) -> None:
    """A mount shows one content under several paths (``latest/``, ``sessions/``, ``search/``),
    each its own inode: the kernel's pages of one do not serve another. A claim's blocks that
    its read took whole leave memory (the window holds none of them), and a second handle
    reading the file at once, before the disk may have them, asks nothing of the origin: the
    disk queue serves what it has not written yet."""
    world, blob = world_with(MIB)
    async with running(world, tmp_path) as (core, transport):
        assert await read_range(core, FILE, 0, MIB) == blob.read_all()
        assert core.engine.window.bytes == 0
        assert await read_range(core, FILE, 0, MIB) == blob.read_all()
    assert transport.ranges("/download") == [f"bytes=0-{MIB - 1}"]


async def test_blocks_a_read_took_in_part_stay_in_memory(tmp_path: Path) -> None:
    """A claim's blocks that its read did not take whole (the rest of a small file, a block
    read 4 KiB at a time) stay in the window for the reads to come."""
    world, blob = world_with(MIB)
    async with running(world, tmp_path) as (core, transport):
        assert await read_range(core, FILE, 0, BLOCK) == blob.read(0, BLOCK)
        assert core.engine.window.bytes == MIB - BLOCK
        assert await read_range(core, FILE, BLOCK, MIB - BLOCK) == blob.read(BLOCK, MIB - BLOCK)
    assert transport.ranges("/download") == [f"bytes=0-{MIB - 1}"]


class _Resolver:
    """A provider whose resolve takes a while (``pause``), counting its calls."""

    name = "slow"

    def __init__(self, pause: float) -> None:
        self.pause, self.calls = pause, 0

    async def resolve(self, ref: object) -> Source:
        self.calls += 1
        if self.pause:
            await trio.sleep(self.pause)
        return Source(f"http://origin.test/{ref}")


async def test_a_url_is_resolved_once_for_readers_at_once_and_without_a_trip_when_nobody_waits(
        tmp_path: Path) -> None:
    cache = blockcache.BlockCache(tmp_path / "cache", 64 * MIB, BLOCK)
    try:
        async with trio.open_nursery() as nursery:
            eng = engine.Engine(cache, nursery, clock=lambda: 0.0)
            slow = _Resolver(0.01)
            shared = engine.Content(engine.ContentId("slow", "a", "f"), "aa", slow, "a")  # type: ignore[arg-type]
            got: list[Source] = []

            async def first_read() -> None:
                got.append(await eng._source(shared, False))

            for _ in range(3):
                nursery.start_soon(first_read)
            await trio.testing.wait_all_tasks_blocked()
            quick = engine.Content(engine.ContentId("slow", "b", "f"), "bb", _Resolver(0), "b")  # type: ignore[arg-type]
            with trio.testing.assert_no_checkpoints():
                assert (await eng._source(quick, False)).url == "http://origin.test/b"
        assert slow.calls == 1 and len(got) == 3 and got[0] is got[1] is got[2]
    finally:
        cache.close()


async def test_a_cut_body_resumes_where_it_stopped(tmp_path: Path) -> None:
    world, blob = world_with(3 * MIB + 77)
    transport = ByteTransport(InProcessOrigin(world), failures={1: Failure("cut", after=300_000)})
    async with running(world, tmp_path, transport) as (core, bytes_):
        assert await read_all(core, FILE) == blob.read_all()
    assert any(r.startswith("bytes=300000-") for r in bytes_.ranges("/download"))


async def test_a_refused_signed_url_is_resolved_again_and_the_read_continues(tmp_path: Path) -> None:
    world = Emulator()
    blob = PatternBlob(2 * MIB, 9)
    world.put_gumloop_artifact("agent_x", "big.bin", blob)
    transport = ByteTransport(InProcessOrigin(world), failures={1: Failure("status", status=403)})
    async with running(world, tmp_path, transport) as (core, bytes_):
        path = "gumloop/agent_x/latest/big.bin"
        assert await read_all(core, path, step=MIB) == blob.read_all()
        assert len(bytes_.calls) == 2
    downloads = [entry for entry in transport.origin.log.entries() if entry["path"].endswith("/download")]
    assert len(downloads) == 1  # the listed URL first, then one fresh one after the refusal


async def test_readers_of_one_block_share_one_fetch(tmp_path: Path) -> None:
    world, blob = world_with(BLOCK)
    async with running(world, tmp_path) as (core, transport):
        results: list[bytes] = []

        async def reader() -> None:
            results.append(await read_range(core, FILE, 1000, 2000))

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(reader)
        assert results == [blob.read(1000, 2000)] * 8
        assert len(transport.ranges("/download")) == 1


async def test_sequential_reads_grow_the_window_and_a_seek_fetches_one_block(tmp_path: Path) -> None:
    world, blob = world_with(40 * MIB)
    async with running(world, tmp_path) as (core, transport):
        opened = await core.open_path(FILE)
        for offset in (0, 4096):  # an opening read shorter than a block asks its bytes (``head -c``); the
            assert await core.read(opened.fh, offset, 4096) == blob.read(offset, 4096)  # next starts the window
        core.release(opened.fh)
        assert transport.ranges("/download") == ["bytes=0-4095", f"bytes=0-{engine.FIRST_WINDOW * BLOCK + BLOCK - 1}"]
        transport.calls.clear()
        assert await read_all(core, FILE) == blob.read_all()
        sizes = [int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) + 1 for r in transport.ranges("/download")]
        assert len(sizes) < 12 and engine.MAX_WINDOW * BLOCK // 2 <= max(sizes) <= engine.MAX_WINDOW * BLOCK
        transport.calls.clear()
    async with running(world, tmp_path / "other") as (core, transport):
        opened = await core.open_path(FILE)
        at = 30 * MIB + 5
        far = 10 * MIB
        farther = 20 * MIB
        for offset in (at, far, at + 1000, farther, at + 50, at + 9):  # a block's first two touches: their bytes
            assert await core.read(opened.fh, offset, 100) == blob.read(offset, 100)
        core.release(opened.fh)
        block = at // BLOCK * BLOCK  # the third: the block, kept (the fourth is served from memory)
        assert transport.ranges("/download") == [f"bytes={at}-{at + 99}", f"bytes={far}-{far + 99}",
                                                 f"bytes={at + 1000}-{at + 1099}", f"bytes={farther}-{farther + 99}",
                                                 f"bytes={block}-{block + BLOCK - 1}"]


async def test_blocks_read_exactly_are_remembered_up_to_a_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``TOUCHES_KEPT`` blocks the memory of exact reads starts again: a block read
    twice before then is read exactly again, not fetched whole."""
    monkeypatch.setattr(engine, "TOUCHES_KEPT", 3)
    world, blob = world_with(40 * MIB)
    async with running(world, tmp_path) as (core, transport):
        opened = await core.open_path(FILE)
        offsets = [10 * MIB, 20 * MIB, 10 * MIB + 300, 30 * MIB, 35 * MIB, 10 * MIB + 500]
        for offset in offsets:
            assert await core.read(opened.fh, offset, 100) == blob.read(offset, 100)
        core.release(opened.fh)
        assert transport.ranges("/download") == [f"bytes={o}-{o + 99}" for o in offsets]
    stats = blockcache.read_stats(tmp_path / "cache")
    assert (stats.hits, stats.misses, stats.blocks) == (0, 6, 0)  # misses, kept nowhere


async def test_blocks_evicted_from_memory_mid_read_come_back_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MEMORY_BYTES", 2 * BLOCK)
    world, blob = world_with(6 * MIB)
    async with running(world, tmp_path, cache_size="1MiB") as (core, _):
        results: dict[int, bytes] = {}

        async def reader(n: int) -> None:
            results[n] = await read_all(core, FILE, step=(n + 1) * 65536)

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(reader, n)
        assert all(data == blob.read_all() for data in results.values())


async def test_reopening_a_file_reuses_its_url_and_what_it_read(tmp_path: Path) -> None:
    world = Emulator()
    blob = PatternBlob(12 * BLOCK, 3)
    world.put_gumloop_artifact("agent_x", "big.bin", blob)
    async with running(world, tmp_path) as (core, transport):
        path = "gumloop/agent_x/latest/big.bin"
        for offset in (0, 10 * BLOCK, 0, 0, 0):
            assert await read_range(core, path, offset, 100) == blob.read(offset, 100)
            await core.engine.settled()  # nobody reads it now
        resolves = [entry for entry in transport.origin.log.entries() if entry["path"].endswith("/download")]
        assert resolves == []  # the listed URL served every open: no new one asked for
        # The opening read's bytes, blocks 10 on, the opening read's bytes again, the first
        # window once block 0 is read a third time; then memory.
        assert transport.ranges("/storage") == ["bytes=0-99", f"bytes={10 * BLOCK}-{12 * BLOCK - 1}", "bytes=0-99",
                                                f"bytes=0-{(engine.FIRST_WINDOW + 1) * BLOCK - 1}"]


async def test_an_open_file_reads_blocks_that_left_memory_from_the_disk(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MEMORY_BYTES", 2 * BLOCK)
    world, blob = world_with(8 * BLOCK)
    async with running(world, tmp_path) as (core, transport):
        opened = await core.open_path(FILE)
        assert bytes(await core.read(opened.fh, 0, 8 * BLOCK)) == blob.read_all()
        fetched = len(transport.ranges("/download"))
        assert await trio.to_thread.run_sync(core.engine.cache.wait_idle)
        assert bytes(await core.read(opened.fh, 0, 4 * BLOCK)) == blob.read(0, 4 * BLOCK)
        core.release(opened.fh)
        assert len(transport.ranges("/download")) == fetched


async def test_blocks_the_full_disk_queue_dropped_are_fetched_again_and_the_kept_ones_load_in_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-read loads what the disk kept, in runs of one buffer each, and fetches what the
    queue dropped without looking for it on disk first."""
    world, blob = world_with(40 * BLOCK)
    stores: list[range] = []
    dropped: set[int] = set()
    full = False  # from the re-read on, the queue takes nothing
    loads: list[tuple[int, int, int]] = []  # first, count, misses
    store, load = blockcache.BlockCache.store, blockcache.BlockCache.load

    def store_or_drop(self: blockcache.BlockCache, content: str, first: int, payloads: list, **kwargs: bool) -> bool:
        stores.append(range(first, first + len(payloads)))
        if full or len(stores) % 2 == 0:  # every other run finds the queue full
            dropped.update(stores[-1])
            return False
        return store(self, content, first, payloads, **kwargs)

    def counted_load(self: blockcache.BlockCache, content: str, first: int, count: int = 1,
                     into: memoryview | None = None) -> list[memoryview | None]:
        views = load(self, content, first, count, into)
        loads.append((first, count, views.count(None)))
        return views

    monkeypatch.setattr(blockcache.BlockCache, "store", store_or_drop)
    monkeypatch.setattr(blockcache.BlockCache, "load", counted_load)
    async with running(world, tmp_path) as (core, transport):
        assert await read_all(core, FILE) == blob.read_all()
        assert await trio.to_thread.run_sync(core.engine.cache.wait_idle)
        kept = set(range(40)) - dropped
        assert dropped and kept and not loads
        core.engine.window = engine.Window(2 * BLOCK)  # memory forgets them
        full = True
        fetched = len(transport.ranges("/download"))
        assert await read_all(core, FILE) == blob.read_all()
    loaded = {first + i for first, count, _ in loads for i in range(count)}
    assert loaded == kept and all(misses == 0 for _, _, misses in loads)  # nothing dropped looked for on disk
    assert max(count for _, count, _ in loads) <= engine.LOAD_BLOCKS
    assert len(transport.ranges("/download")) > fetched  # the dropped blocks came from the network again


async def test_blocks_on_disk_load_in_runs_of_one_pooled_buffer_each(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader waits for its run, not for the whole readahead, and no load takes a new buffer.
    A content's runs are read one after the other (a disk reads a file fastest in order)."""
    world, blob = world_with(40 * BLOCK)
    loads: list[tuple[int, bool]] = []  # blocks, into a buffer given
    under_way = [0, 0]  # loads now, most at once
    counting = threading.Lock()
    load = blockcache.BlockCache.load

    def counted_load(self: blockcache.BlockCache, content: str, first: int, count: int = 1,
                     into: memoryview | None = None) -> list[memoryview | None]:
        with counting:
            loads.append((count, into is not None))
            under_way[0] += 1
            under_way[1] = max(under_way)
        time.sleep(0.005)  # time for a second load to start, were it let
        try:
            return load(self, content, first, count, into)
        finally:
            with counting:
                under_way[0] -= 1

    monkeypatch.setattr(blockcache.BlockCache, "load", counted_load)
    async with running(world, tmp_path) as (core, _):
        assert await read_all(core, FILE) == blob.read_all()
        assert await trio.to_thread.run_sync(core.engine.cache.wait_idle)
        core.engine.window = engine.Window(2 * BLOCK)  # memory forgets them
        assert await read_all(core, FILE) == blob.read_all()
    run = engine.LOAD_BLOCKS
    assert sum(count for count, _ in loads) >= 40 and len(loads) >= 40 // run
    assert all(count <= run and into for count, into in loads)
    assert under_way == [0, 1]


async def test_an_unsized_chunked_body_that_ignores_range_is_read_once_exactly(tmp_path: Path) -> None:
    world = Emulator()
    data = PatternBlob(5 * MIB + 3, 4).read_all()
    world.put_plangrep_job("job_unsized", "completed", {"out/a.bin": data})
    async with running(world, tmp_path) as (core, transport):
        path = "plangrep/job_unsized/out/a.bin"
        attrs, _ = await core.stat_path(path)
        assert attrs.size == 0 and attrs.ttl == 0  # unknown until read
        assert await read_all(core, path) == data
        assert (await core.stat_path(path))[0].size == len(data)
        assert len(transport.ranges("/artifact")) == 1


async def test_a_known_size_served_whole_and_chunked_keeps_its_last_block(tmp_path: Path) -> None:
    """Decompressive transcoding: no length, Range ignored, yet the listing gave the size."""
    world, blob = world_with(BLOCK * 3 + 1234)
    world.set(api_chunked=True, api_ignore_range=True)
    async with running(world, tmp_path) as (core, transport):
        assert await read_all(core, FILE) == blob.read_all()
        assert await read_range(core, FILE, 3 * BLOCK, 2000) == blob.read(3 * BLOCK, 2000)
        first, *others = transport.ranges("/download")
        assert others == [first]  # the trio thread leaves a whole body to a worker thread, once
    async with running(world, tmp_path) as (core, transport):  # again, from the disk cache
        assert await read_range(core, FILE, 3 * BLOCK, 2000) == blob.read(3 * BLOCK, 2000)
        assert transport.ranges("/download") == []


async def test_a_server_capping_every_range_is_followed_to_the_end(tmp_path: Path) -> None:
    world, blob = world_with(6 * MIB + 11)
    transport = ByteTransport(InProcessOrigin(world), cap=1_000_000)
    async with running(world, tmp_path, transport) as (core, _):
        assert await read_all(core, FILE, step=MIB) == blob.read_all()


async def test_a_full_failing_cache_disk_never_fails_a_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []

    def full(fd: int, buffers: list, offset: int) -> int:
        writes.append(offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", full)
    world, blob = world_with(3 * MIB)
    async with running(world, tmp_path) as (core, _):
        assert await read_all(core, FILE) == blob.read_all()
        assert await read_all(core, FILE) == blob.read_all()
    assert writes  # the disk was tried, and refused


async def test_a_damaged_block_on_disk_is_fetched_again(tmp_path: Path) -> None:
    world, blob = world_with(2 * BLOCK)
    async with running(world, tmp_path) as (core, _):
        assert await read_all(core, FILE) == blob.read_all()
    files = sorted((tmp_path / "cache" / blockcache.DATA_DIR).rglob("*"))
    [data] = [f for f in files if f.is_file()]
    raw = bytearray(data.read_bytes())
    raw[-5] ^= 0xFF
    data.write_bytes(raw)
    async with running(world, tmp_path) as (core, transport):
        assert await read_all(core, FILE) == blob.read_all()
        assert len(transport.ranges("/download")) == 1


async def test_exhausted_retries_fail_the_read_and_the_next_one_works(tmp_path: Path) -> None:
    world, blob = world_with(BLOCK)
    failures = {k: Failure("refuse") for k in range(1, 5)}
    async with running(world, tmp_path, ByteTransport(InProcessOrigin(world), failures=failures)) as (core, _):
        with pytest.raises(RemoteError, match="attempts"):
            await read_range(core, FILE, 0, 100)
        assert await read_range(core, FILE, 0, 100) == blob.read(0, 100)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reads=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3 * MIB), st.integers(1, 700_000)),
                      min_size=1, max_size=24),
       failures=st.dictionaries(st.integers(1, 12), st.sampled_from(["refuse", "cut", "status"]), max_size=3),
       size=st.integers(1, 3 * MIB))
async def test_random_concurrent_reads_with_failures_are_exact(tmp_path_factory: pytest.TempPathFactory,
                                                               reads: list[tuple[int, int, int]],
                                                               failures: dict[int, str], size: int) -> None:
    world, blob = world_with(size, seed=size % 97)
    transport = ByteTransport(InProcessOrigin(world), failures={
        k: Failure(kind, after=(k * 7919) % BLOCK) for k, kind in failures.items()})
    got: dict[int, bytes] = {}
    async with running(world, tmp_path_factory.mktemp("prop"), transport, shared_buffers=True) as (core, _):
        handles = [await core.open_path(FILE) for _ in range(4)]

        async def reader(n: int, index: int, offset: int, length: int) -> None:
            """Half the reads as the mount's, half as fsspec's (copied out of memfds)."""
            if n % 2:
                got[n] = (await core.read_out(handles[index].fh, offset, length)).tobytes()
            else:
                got[n] = bytes(await core.read(handles[index].fh, offset, length))

        async with trio.open_nursery() as nursery:
            for n, (index, offset, length) in enumerate(reads):
                nursery.start_soon(reader, n, index, offset, length)
        for opened in handles:
            core.release(opened.fh)
    for n, (_, offset, length) in enumerate(reads):
        assert got[n] == blob.read(offset, length), (offset, length)


async def test_a_listing_with_signed_urls_has_the_core_connect_ahead_to_their_storage(tmp_path: Path) -> None:
    """The Gumloop sample lists signed URLs: once it is listed, the byte transport is asked to
    connect to their origin, and nothing is fetched."""
    world, _ = world_with(BLOCK)
    async with running(world, tmp_path) as (core, transport):
        agent = (await core.list_path("gumloop"))[0][0].name
        await core.list_path(f"gumloop/{agent}/latest")
        with trio.fail_after(5):
            while not transport.preconnects:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert len(transport.preconnects) == 1 and transport.calls == []
        assert transport.preconnects[0].startswith("http://storage.test/")
