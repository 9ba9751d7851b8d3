"""The tree: inodes, listings with a TTL, names, lookups and forgets.

Plain trio code with no FUSE import, so it is tested without a mount. A refresh reuses the
inodes of entries whose ``key`` it already knows (rclone's habit), tells the invalidator which
inodes changed content and which names went away, and keeps the last good listing when the
provider fails (stale-if-error). Whatever a provider raises or returns, a listing either
installs or fails as one ``FsError``; every walk over provider data is iterative.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Awaitable, Callable, Iterator, Protocol, TypeVar

import cachetools
import trio

from .errors import FsError, NotADirectory, NotFound, RemoteError
from .model import Entry, Kind
from .names import assign_names, clean
from .providers.base import Provider

log = logging.getLogger("artifactfs.namespace")

ROOT_INODE = 1
IMMUTABLE_TTL = 86400.0
T = TypeVar("T")


class Invalidator(Protocol):
    """How the namespace tells a front end (the kernel) to forget what it cached."""

    def inode(self, inode: int) -> None: ...

    def entry(self, parent_inode: int, name: str) -> None: ...


class _NoInvalidator:
    def inode(self, inode: int) -> None:
        pass

    def entry(self, parent_inode: int, name: str) -> None:
        pass


class Node:
    """One inode. ``owner`` is the directory whose listing fills this one (itself when the
    provider can list it directly, an ancestor when its contents came embedded); ``build``
    makes embedded contents on first use. ``listed`` is False for a name that opened on lookup
    and that the provider does not list (``search/<text>``): readdir does not show it, and a
    refresh keeps it while the kernel still knows it."""

    __slots__ = ("inode", "name", "entry", "provider", "parent", "owner", "children", "build",
                 "listed_at", "lookups", "attached", "listed", "served_fingerprint", "_lock", "_sorted",
                 "attributes", "dir_entries")

    def __init__(self, inode: int, name: str, entry: Entry, provider: Provider | None,
                 parent: Node | None) -> None:
        self.inode, self.name, self.entry, self.provider, self.parent = inode, name, entry, provider, parent
        self.owner: Node = self
        self.children: dict[str, Node] | None = None
        self.build: Callable[[], list[Entry]] | None = None
        self.listed_at = -math.inf
        self.lookups = 0
        self.attached = True
        self.listed = True
        self.served_fingerprint: str | None = None
        self._lock: trio.Lock | None = None
        self._sorted: tuple[dict[str, Node], int, list[Node]] | None = None
        self.attributes: tuple | None = None  # the core's, made from ``entry``: (entry, stamp, attributes)
        self.dir_entries: tuple | None = None  # the core's, made from the children: (children, stamp, entries)

    @property
    def is_dir(self) -> bool:
        return self.entry.kind is Kind.DIR

    def sorted_children(self) -> list[Node]:
        """The listed children in name order, sorted again only when they changed (a warm
        ``ls -l`` of 10,000 files spent a tenth of its time sorting)."""
        children = self.children or {}
        cached = self._sorted
        if cached is None or cached[0] is not children or cached[1] != len(children):
            cached = self._sorted = (children, len(children),
                                     [children[name] for name in sorted(children) if children[name].listed])
        return cached[2]

    @property
    def lock(self) -> trio.Lock:
        """Made on first use: only directories that get listed need one."""
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock


class Namespace:
    def __init__(self, providers: list[Provider], *, negative_ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 invalidator: Invalidator | None = None) -> None:
        self.clock = clock
        self.invalidator: Invalidator = invalidator or _NoInvalidator()
        self._next_inode = ROOT_INODE + 1
        self.nodes: dict[int, Node] = {}
        self._missing: cachetools.TTLCache = cachetools.TTLCache(
            maxsize=10_000, ttl=max(negative_ttl, 1e-3), timer=clock)
        self.root = Node(ROOT_INODE, "", Entry("", Kind.DIR, None, ("/",), immutable=True), None, None)
        self.root.lookups = 1
        self.nodes[ROOT_INODE] = self.root
        self.root.children = {}
        for provider in providers:
            self.root.children[provider.name] = self._new_node(provider.name, provider.root(), provider, self.root)
        self.root.listed_at = math.inf

    def node(self, inode: int) -> Node:
        try:
            return self.nodes[inode]
        except KeyError:
            raise NotFound(f"inode {inode} is not known") from None

    async def lookup(self, parent_inode: int, name: str, *, count: bool = True) -> Node:
        """The child ``name`` of a directory, asking the provider for names not listed.
        ``count`` adds a kernel lookup reference (a front end without them passes False)."""
        parent = self.node(parent_inode)
        if not parent.is_dir:
            raise NotADirectory(f"{self.path(parent)} is not a directory")
        await self.ensure_listed(parent)
        assert parent.children is not None
        child = parent.children.get(name)
        if child is None:
            child = await self._lookup_unlisted(parent, name)
        if count:
            child.lookups += 1
        return child

    async def listing(self, inode: int) -> list[Node]:
        """A directory's children, fresh per the TTL, in name order."""
        node = self.node(inode)
        if not node.is_dir:
            raise NotADirectory(f"{self.path(node)} is not a directory")
        await self.ensure_listed(node)
        return node.sorted_children()

    async def refresh_attributes(self, inode: int) -> Node:
        """The node, after refreshing its directory's listing if the TTL ran out."""
        node = self.node(inode)
        if node.parent is not None and node.attached:
            await self.ensure_listed(node.parent)
        return node

    def remember(self, node: Node) -> None:
        """The kernel learned ``node`` without a namespace lookup (readdir, ``.``, ``..``)."""
        node.lookups += 1

    def forget(self, inode: int, count: int) -> bool:
        """Drop ``count`` kernel references; whether the node is still known afterwards."""
        node = self.nodes.get(inode)
        if node is None or node is self.root:
            return node is not None
        node.lookups -= count
        if node.lookups <= 0 and not node.attached:
            del self.nodes[inode]
            return False
        return True

    def ttl(self, node: Node) -> float:
        """Seconds a front end may cache this node's entry and attributes."""
        if node.provider is None or node.entry.immutable:
            return IMMUTABLE_TTL
        return node.provider.listing_ttl

    def _expired(self, owner: Node) -> bool:
        if owner.children is None:
            return True
        if owner.entry.immutable or owner.provider is None:
            return False
        return self.clock() - owner.listed_at >= owner.provider.listing_ttl

    async def ensure_listed(self, node: Node) -> None:
        """List ``node`` if never listed, or its owner's listing if the TTL ran out."""
        owner = node.owner
        if node.children is not None and not self._expired(owner):
            return
        async with owner.lock:
            if node.children is not None and not self._expired(owner):
                return
            if owner.children is None or self._expired(owner):
                await self._relist(owner)
        if node.children is None and node.build is not None:
            self._apply(node, self._built(node), self.clock())
        if node.children is None:
            node.children = {}

    async def _relist(self, owner: Node) -> None:
        """Ask the provider for ``owner``'s listing and install it; the last good one if it fails."""
        assert owner.provider is not None
        try:
            entries = await self._provider_call(owner, owner.provider.list_dir(owner.entry.ref))
        except NotFound:
            if owner.children is None:
                raise
            entries = []
        except FsError as exc:
            if owner.children is None:
                raise
            log.warning("%s: listing failed (%s); serving the last good listing", self.path(owner), exc)
            owner.listed_at = self.clock()
            return
        self._apply(owner, entries, self.clock())

    async def _provider_call(self, node: Node, call: Awaitable[T]) -> T:
        """Await a provider call; anything but an FsError (a provider tripped on odd data)
        becomes one, logged once with its traceback."""
        try:
            return await call
        except FsError:
            raise
        except Exception as exc:  # noqa: BLE001 - provider data must never break the mount
            log.error("%s: the provider failed on its data: %s: %s", self.path(node), type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            raise RemoteError(f"{self.path(node)}: unexpected answer ({type(exc).__name__})") from None

    def _built(self, node: Node) -> list[Entry]:
        assert node.build is not None
        try:
            return node.build()
        except Exception as exc:  # noqa: BLE001 - as _provider_call
            log.error("%s: building the directory failed: %s: %s", self.path(node), type(exc).__name__, exc)
            raise RemoteError(f"{self.path(node)}: unexpected answer ({type(exc).__name__})") from None

    async def _lookup_unlisted(self, parent: Node, name: str) -> Node:
        if parent.provider is None or parent.entry.ref is None or clean(name) != name:
            raise NotFound(name)
        if (parent.inode, name) in self._missing:
            raise NotFound(name)
        async with parent.lock:
            assert parent.children is not None
            if name in parent.children:
                return parent.children[name]
            entry = await self._provider_call(parent, parent.provider.lookup(parent.entry.ref, name))
            if entry is None:
                self._missing[(parent.inode, name)] = True
                raise NotFound(name)
            child = self._new_node(name, entry, parent.provider, parent)
            child.listed = entry.listed
            parent.children[name] = child
            embedded = self._embedded(child, entry)
            if embedded is not None:
                self._apply(child, embedded, self.clock())
            return child

    def _new_node(self, name: str, entry: Entry, provider: Provider | None, parent: Node) -> Node:
        node = Node(self._next_inode, name, entry, provider, parent)
        node.owner = node if entry.ref is not None else parent.owner
        self._next_inode += 1
        self.nodes[node.inode] = node
        return node

    def _embedded(self, node: Node, entry: Entry) -> list[Entry] | None:
        """The listing ``entry`` embeds for ``node`` to install now, if any: a builder is kept
        for the directory's first use, or run now if the directory is already in use."""
        children = entry.children
        if callable(children):
            node.build = children
            return self._built(node) if node.children is not None else None
        return children

    def _apply(self, directory: Node, entries: list[Entry], now: float) -> None:
        """Install a listing into ``directory`` (and the subtrees it embeds), reusing nodes
        whose key is known. Iterative: a listing may nest as deep as a path allows."""
        work = [(directory, entries)]
        while work:
            folder, listing = work.pop()
            for child, entry in self._install(folder, listing, now):
                embedded = self._embedded(child, entry)
                if embedded is not None:
                    work.append((child, embedded))

    def _install(self, directory: Node, entries: list[Entry], now: float) -> Iterator[tuple[Node, Entry]]:
        """One directory's listing; yields each child with its entry (for the caller to descend)."""
        old = directory.children or {}
        by_key = {child.entry.key: child for child in old.values()}
        fresh: dict[str, Node] = {}
        installed: list[tuple[Node, Entry]] = []
        for name, entry in assign_names(entries):
            child = by_key.pop(entry.key, None)
            if child is not None and child.entry.kind is entry.kind:
                self._update(directory, child, name, entry)
            else:
                if child is not None:
                    self._detach(child)
                child = self._new_node(name, entry, directory.provider, directory)
            child.listed = True
            fresh[name] = child
            installed.append((child, entry))
        for gone in by_key.values():
            if not gone.listed and gone.lookups > 0 and gone.name not in fresh:
                fresh[gone.name] = gone  # opened by name, not listed: kept while the kernel knows it
            else:
                self._detach(gone)
        directory.children = fresh
        directory.listed_at = now
        return iter(installed)

    def _update(self, directory: Node, child: Node, name: str, entry: Entry) -> None:
        before = child.entry
        if child.name != name:
            self.invalidator.entry(directory.inode, child.name)
            child.name = name
        changed = (before.fingerprint != entry.fingerprint or before.mtime != entry.mtime
                   or (entry.size is not None and before.size != entry.size))
        if entry.size is None and not changed:
            entry.size = before.size
        child.entry = entry
        if (before.ref is None) != (entry.ref is None):  # now listed by its own call, or embedded
            for grandchild in (child.children or {}).values():
                self._detach(grandchild)
            child.children, child.build = None, None
            child.owner = child if entry.ref is not None else directory.owner
        if changed and entry.kind is Kind.FILE:
            log.info("%s changed; serving it anew", self.path(child))
            self.invalidator.inode(child.inode)

    def _detach(self, node: Node) -> None:
        """``node`` (and all below it) left the tree: each is dropped once the kernel forgets it."""
        if node.parent is not None:
            self.invalidator.entry(node.parent.inode, node.name)
        stack = [node]
        while stack:
            current = stack.pop()
            stack.extend((current.children or {}).values())
            current.attached = False
            if current.lookups <= 0:
                self.nodes.pop(current.inode, None)

    def path(self, node: Node) -> str:
        """The node's path below the mount point, for log lines."""
        parts: list[str] = []
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts)) or "/"
