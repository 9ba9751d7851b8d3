"""The namespace without a mount: TTL, refresh reusing inodes, stale-if-error, lookups."""

from __future__ import annotations

from typing import Hashable

import pytest

from artifactfs.errors import NotFound, RemoteError
from artifactfs.model import Entry, Kind, Source
from artifactfs.namespace import Namespace
from artifactfs.providers.base import Provider


class FakeProvider(Provider):
    """A provider whose listing the test sets; counts its calls."""

    def __init__(self) -> None:
        self.name = "fake"
        self.listing_ttl = 10.0
        self.files: dict[str, tuple[int, str]] = {"a.txt": (1, "v1")}
        self.fail: Exception | None = None
        self.calls = 0
        self.extra = {"opened"}

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        self.calls += 1
        if self.fail:
            raise self.fail
        return [Entry(name, Kind.FILE, ("f", name), ("f", name), size=size, fingerprint=fp)
                for name, (size, fp) in self.files.items()]

    async def lookup(self, ref: Hashable, name: str) -> Entry | None:
        if name in self.extra:
            return Entry(name, Kind.DIR, ("d", name), ("d", name), children=[])
        return None

    async def resolve(self, ref: Hashable) -> Source:
        raise NotImplementedError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.inodes: list[int] = []
        self.entries: list[tuple[int, str]] = []

    def inode(self, inode: int) -> None:
        self.inodes.append(inode)

    def entry(self, parent: int, name: str) -> None:
        self.entries.append((parent, name))


def make() -> tuple[Namespace, FakeProvider, Clock, Recorder]:
    provider, clock, recorder = FakeProvider(), Clock(), Recorder()
    ns = Namespace([provider], clock=clock, invalidator=recorder, negative_ttl=5)
    return ns, provider, clock, recorder


async def test_listing_is_trusted_for_the_ttl_then_refreshed_reusing_inodes() -> None:
    ns, provider, clock, recorder = make()
    top = await ns.lookup(1, "fake")
    first = await ns.lookup(top.inode, "a.txt")
    assert provider.calls == 1
    provider.files["a.txt"] = (2, "v2")
    await ns.listing(top.inode)
    assert provider.calls == 1 and first.entry.size == 1
    clock.now += 10
    again = await ns.lookup(top.inode, "a.txt")
    assert provider.calls == 2
    assert again is first and again.entry.size == 2
    assert recorder.inodes == [first.inode]


async def test_stale_if_error_keeps_the_last_listing() -> None:
    ns, provider, clock, _ = make()
    top = await ns.lookup(1, "fake")
    await ns.listing(top.inode)
    provider.fail = RemoteError("down")
    clock.now += 11
    assert [n.name for n in await ns.listing(top.inode)] == ["a.txt"]
    provider.fail = None
    clock.now += 11
    provider.files = {}
    assert await ns.listing(top.inode) == []


async def test_first_listing_failure_is_raised() -> None:
    ns, provider, _, _ = make()
    provider.fail = RemoteError("down")
    top = await ns.lookup(1, "fake")
    with pytest.raises(RemoteError):
        await ns.listing(top.inode)


async def test_unlisted_names_open_on_lookup_and_misses_are_remembered() -> None:
    ns, provider, clock, _ = make()
    top = await ns.lookup(1, "fake")
    opened = await ns.lookup(top.inode, "opened")
    assert opened.is_dir
    with pytest.raises(NotFound):
        await ns.lookup(top.inode, "missing")
    provider.extra.add("missing")
    with pytest.raises(NotFound):
        await ns.lookup(top.inode, "missing")
    clock.now += 6
    assert (await ns.lookup(top.inode, "missing")).is_dir


async def test_removed_entries_are_dropped_once_forgotten() -> None:
    ns, provider, clock, recorder = make()
    top = await ns.lookup(1, "fake")
    gone = await ns.lookup(top.inode, "a.txt")
    provider.files = {}
    clock.now += 11
    await ns.listing(top.inode)
    assert (top.inode, "a.txt") in recorder.entries
    assert gone.inode in ns.nodes
    ns.forget(gone.inode, 1)
    assert gone.inode not in ns.nodes


async def test_unlisted_lookups_are_hidden_from_readdir_and_survive_refresh() -> None:
    ns, provider, clock, _ = make()
    top = await ns.lookup(1, "fake")
    original = provider.lookup

    async def hidden(ref: Hashable, name: str) -> Entry | None:
        entry = await original(ref, name)
        if entry is not None:
            entry.listed = False
        return entry

    provider.lookup = hidden  # type: ignore[method-assign]
    opened = await ns.lookup(top.inode, "opened")
    assert [n.name for n in await ns.listing(top.inode)] == ["a.txt"]
    clock.now += 11
    await ns.listing(top.inode)
    assert await ns.lookup(top.inode, "opened") is opened


class ScriptedProvider(FakeProvider):
    """A provider whose whole listing the test sets (entries, or an exception to raise)."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[Entry] | Exception = []

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        self.calls += 1
        if isinstance(self.entries, Exception):
            raise self.entries
        return list(self.entries)


def scripted() -> tuple[Namespace, ScriptedProvider, Clock]:
    provider, clock = ScriptedProvider(), Clock()
    return Namespace([provider], clock=clock, negative_ttl=5), provider, clock


def deep(depth: int) -> Entry:
    leaf = Entry("leaf.txt", Kind.FILE, ("f",), ("f",), size=1)
    for level in range(depth):
        leaf = Entry(f"d{level}", Kind.DIR, None, ("d", level), children=[leaf])
    return leaf


async def test_a_listing_nested_a_thousand_deep_installs_and_refreshes() -> None:
    ns, provider, clock = scripted()
    provider.entries = [deep(1000)]
    top = await ns.lookup(1, "fake")
    node = top
    for level in reversed(range(1000)):
        node = await ns.lookup(node.inode, f"d{level}")
    assert (await ns.lookup(node.inode, "leaf.txt")).entry.size == 1
    clock.now += 11
    provider.entries = []
    await ns.listing(top.inode)  # detaching the old tree is iterative too
    assert [n.name for n in await ns.listing(top.inode)] == []


async def test_a_key_repeated_in_a_listing_leaks_no_node_per_refresh() -> None:
    ns, provider, clock = scripted()
    provider.entries = [Entry("a", Kind.FILE, ("f", 1), ("same",)), Entry("b", Kind.FILE, ("f", 2), ("same",))]
    top = await ns.lookup(1, "fake")
    await ns.listing(top.inode)
    before = len(ns.nodes)
    for _ in range(5):
        clock.now += 11
        assert [n.name for n in await ns.listing(top.inode)] == ["a"]
    assert len(ns.nodes) == before


async def test_a_provider_tripping_on_its_data_is_a_remote_error_and_the_last_listing_stays(
        caplog: pytest.LogCaptureFixture) -> None:
    ns, provider, clock = scripted()
    provider.entries = [Entry("a", Kind.FILE, ("f",), ("f",))]
    top = await ns.lookup(1, "fake")
    await ns.listing(top.inode)
    clock.now += 11
    provider.entries = OverflowError("int too large")
    assert [n.name for n in await ns.listing(top.inode)] == ["a"]
    assert any("the provider failed on its data: OverflowError" in r.message for r in caplog.records)
    fresh, broken, _ = scripted()
    broken.entries = KeyError("id")
    with pytest.raises(RemoteError, match="unexpected answer"):
        await fresh.listing((await fresh.lookup(1, "fake")).inode)


async def test_a_name_that_is_not_utf8_is_missing_and_never_reaches_the_provider() -> None:
    ns, provider, _ = scripted()
    top = await ns.lookup(1, "fake")
    with pytest.raises(NotFound):
        await ns.lookup(top.inode, b"\xff\xfe".decode("utf-8", "surrogateescape"))
    assert provider.calls == 1  # the listing only
