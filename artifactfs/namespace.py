"""The tree the kernel sees: inodes, listings with a TTL, names, lookups and forgets.

Plain trio code with no FUSE import, so it is tested without a mount. A refresh reuses
the inodes of entries whose ``key`` it already knows (rclone's habit), tells the FUSE layer
which inodes changed content and which names went away, and keeps the last good listing
when the provider fails (stale-if-error).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import cachetools
import trio

from .errors import FsError, NotFound
from .model import Entry, Kind
from .names import assign_names, clean
from .providers.base import Provider

log = logging.getLogger("artifactfs.namespace")

ROOT_INODE = 1


class Invalidator(Protocol):
    """How the namespace tells the kernel to forget what it cached."""

    def inode(self, inode: int) -> None: ...

    def entry(self, parent_inode: int, name: str) -> None: ...


class _NoInvalidator:
    def inode(self, inode: int) -> None:
        pass

    def entry(self, parent_inode: int, name: str) -> None:
        pass


@dataclass(eq=False)
class Node:
    """One inode. ``owner`` is the directory whose listing fills this one (itself when the
    provider can list it directly, an ancestor when its contents came embedded).
    ``listed`` is False for a name that opened on lookup and that the provider does not list
    (``search/<text>``): readdir does not show it, and a refresh keeps it while the kernel
    still knows it."""

    inode: int
    name: str
    entry: Entry
    provider: Provider | None
    parent: "Node | None" = None
    owner: "Node | None" = None
    children: dict[str, "Node"] | None = None
    listed_at: float = -math.inf
    lookups: int = 0
    attached: bool = True
    listed: bool = True
    page_cache_fingerprint: str | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def is_dir(self) -> bool:
        return self.entry.kind is Kind.DIR


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
        self.root = Node(ROOT_INODE, "", Entry("", Kind.DIR, None, ("/",), immutable=True), None)
        self.root.owner, self.root.lookups = self.root, 1
        self.nodes[ROOT_INODE] = self.root
        self.root.children = {}
        for provider in providers:
            node = self._new_node(provider.name, provider.root(), provider, self.root)
            self.root.children[provider.name] = node
        self.root.listed_at = math.inf

    def node(self, inode: int) -> Node:
        try:
            return self.nodes[inode]
        except KeyError:
            raise NotFound(f"inode {inode} is not known") from None

    async def lookup(self, parent_inode: int, name: str) -> Node:
        """The child ``name`` of a directory, asking the provider for names not listed."""
        parent = self.node(parent_inode)
        await self.ensure_listed(parent)
        assert parent.children is not None
        child = parent.children.get(name)
        if child is None:
            child = await self._lookup_unlisted(parent, name)
        child.lookups += 1
        return child

    async def listing(self, inode: int) -> list[Node]:
        """A directory's children, fresh per the TTL, in name order."""
        node = self.node(inode)
        if not node.is_dir:
            raise FsError(f"{node.name} is not a directory")
        await self.ensure_listed(node)
        assert node.children is not None
        return [node.children[name] for name in sorted(node.children) if node.children[name].listed]

    async def refresh_attributes(self, inode: int) -> Node:
        """The node, after refreshing its directory's listing if the TTL ran out."""
        node = self.node(inode)
        if node.parent is not None and node.attached:
            await self.ensure_listed(node.parent)
        return node

    def remember(self, node: Node) -> None:
        """The kernel learned ``node`` without a namespace lookup (readdir, ``.``, ``..``):
        one more lookup to forget later."""
        node.lookups += 1

    def forget(self, inode: int, count: int) -> None:
        node = self.nodes.get(inode)
        if node is None or node is self.root:
            return
        node.lookups -= count
        if node.lookups <= 0 and not node.attached:
            del self.nodes[inode]

    def learned_size(self, node: Node, size: int) -> None:
        """A read found the true size of a file the provider did not size (or sized wrong)."""
        node.entry.size = size

    def ttl(self, node: Node) -> float:
        """Seconds the kernel may cache this node's entry and attributes."""
        if node.provider is None or (node.entry.immutable and node.entry.size is not None):
            return 86400.0
        if node.entry.kind is Kind.FILE and node.entry.size is None:
            return 0.0
        return node.provider.listing_ttl

    def _expired(self, owner: Node) -> bool:
        if owner.children is None:
            return True
        if owner.entry.immutable or owner.provider is None:
            return False
        return self.clock() - owner.listed_at >= owner.provider.listing_ttl

    async def ensure_listed(self, node: Node) -> None:
        """List ``node`` if never listed, or its owner's listing if the TTL ran out."""
        owner = node.owner or node
        if node.children is not None and not self._expired(owner):
            return
        async with owner.lock:
            if node.children is not None and not self._expired(owner):
                return
            assert owner.provider is not None
            try:
                entries = await owner.provider.list_dir(owner.entry.ref)
            except NotFound:
                if owner.children is None:
                    raise
                entries = []
            except FsError as exc:
                if owner.children is None:
                    raise
                log.warning("%s: listing failed (%s); serving the last good listing",
                            self.path(owner), exc)
                owner.listed_at = self.clock()
                return
            self._apply(owner, entries, self.clock())
        if node.children is None:
            node.children = {}

    async def _lookup_unlisted(self, parent: Node, name: str) -> Node:
        if parent.provider is None or parent.entry.ref is None or clean(name) != name:
            raise NotFound(name)
        if (parent.inode, name) in self._missing:
            raise NotFound(name)
        async with parent.lock:
            assert parent.children is not None
            if name in parent.children:
                return parent.children[name]
            entry = await parent.provider.lookup(parent.entry.ref, name)
            if entry is None:
                self._missing[(parent.inode, name)] = True
                raise NotFound(name)
            child = self._new_node(name, entry, parent.provider, parent)
            child.listed = entry.listed
            parent.children[name] = child
            if entry.children is not None:
                self._apply(child, entry.children, self.clock())
            return child

    def _new_node(self, name: str, entry: Entry, provider: Provider | None, parent: Node) -> Node:
        node = Node(self._next_inode, name, entry, provider, parent)
        node.owner = node if entry.ref is not None else (parent.owner or parent)
        self._next_inode += 1
        self.nodes[node.inode] = node
        return node

    def _apply(self, directory: Node, entries: list[Entry], now: float) -> None:
        """Install a listing into ``directory``, reusing nodes whose key is known."""
        old = directory.children or {}
        by_key = {child.entry.key: child for child in old.values()}
        fresh: dict[str, Node] = {}
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
            if entry.children is not None:
                self._apply(child, entry.children, now)
        for gone in by_key.values():
            if not gone.listed and gone.lookups > 0 and gone.name not in fresh:
                fresh[gone.name] = gone  # opened by name, not listed: kept while the kernel knows it
            else:
                self._detach(gone)
        directory.children = fresh
        directory.listed_at = now

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
        if changed and entry.kind is Kind.FILE:
            log.info("%s changed; serving it anew", self.path(child))
            self.invalidator.inode(child.inode)

    def _detach(self, node: Node) -> None:
        """``node`` left its directory: drop it once the kernel forgets it."""
        if node.parent is not None:
            self.invalidator.entry(node.parent.inode, node.name)
        for child in (node.children or {}).values():
            self._detach(child)
        node.attached = False
        if node.lookups <= 0:
            self.nodes.pop(node.inode, None)

    def path(self, node: Node) -> str:
        """The node's path below the mount point, for log lines."""
        parts: list[str] = []
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts)) or "/"
