"""The file system without FUSE: what every front end (the FUSE mount, fsspec) calls.

Async methods over plain data: lookup / getattr / readdir / open / read / release / xattrs /
statfs, by inode (for the kernel, with its lookup counts) and by path (for front ends without
them). The core owns the namespace, the byte engine, the disk cache and the providers, and is
the one boundary where a failure is logged: once per failed call, louder for worse errors.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sqlite3
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, NamedTuple, Protocol, TypeVar

import trio

from .blockcache import BlockCache
from .buffers import Piece
from .config import Config
from .engine import BLOCK_SIZE, Engine, Handle
from .errors import AccessDenied, FsError, Invalid, IsADirectory, NotADirectory, NotFound, ReadOnly, RemoteError
from .model import Kind
from .namespace import Invalidator, Namespace, Node
from .providers import make_provider
from .providers.base import Provider
from .workers import workers

log = logging.getLogger("artifactfs.core")

T = TypeVar("T")
XATTR_PREFIX = "user.artifactfs."
MAX_LINKS = 40
SETTLE_SECONDS = 2.0
WARM_WORKERS = 4  # threads waiting for the first reads of a fresh mount
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC | os.O_CREAT


M_ARENA_MAX = -8  # glibc's mallopt parameter


def fewer_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own arena; fetch threads allocating block
    buffers then grew the daemon past 200 MiB. Two arenas keep it near its real use. For the
    daemon only: a library must not change its host process's allocator."""
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


class CoreError(Exception):
    """The core cannot start (its message is one line for the user)."""


class Attributes(NamedTuple):
    """What ``stat`` shows of a node (a tuple: ``readdir`` makes one per entry, so it is cheap
    to build, and equal attributes compare equal)."""

    inode: int
    kind: Kind
    size: int
    mtime: float
    ttl: float
    target: str | None = None


class DirEntry(NamedTuple):
    name: str
    attributes: Attributes


NO_DIR: tuple[list[Node], tuple[DirEntry, ...]] = ([], ())  # a directory handle not (or no longer) open


@dataclass(frozen=True)
class Opened:
    """An open file: its handle, and how a page cache may treat it."""

    fh: int
    keep_cache: bool
    direct_io: bool


class OpenFile(Protocol):
    async def read(self, offset: int, size: int) -> Any: ...

    async def read_out(self, offset: int, size: int) -> Piece: ...

    def close(self) -> None: ...


class LocalFile:
    """A file complete on local disk (an unpacked archive member): preads in a worker thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def read(self, offset: int, size: int) -> bytes:
        return await workers().run(os.pread, self._fd, size, offset)

    async def read_out(self, offset: int, size: int) -> Piece:
        return Piece(await self.read(offset, size))

    def close(self) -> None:
        os.close(self._fd)


class RemoteFile:
    """A remote file read through the engine."""

    def __init__(self, engine: Engine, handle: Handle) -> None:
        self._engine, self._handle = engine, handle

    async def read(self, offset: int, size: int) -> Any:
        return await self._engine.read(self._handle, offset, size)

    async def read_out(self, offset: int, size: int) -> Piece:
        return await self._engine.read_out(self._handle, offset, size)

    def close(self) -> None:
        self._engine.release(self._handle)


def boundary(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """The one place a failed call is logged: ENOENT quietly, EACCES as a warning, the rest
    as errors; anything unexpected also with its traceback, and as EIO."""

    @functools.wraps(method)
    async def wrapper(self: Core, *args: Any) -> T:
        try:
            return await method(self, *args)
        except (NotFound, ReadOnly, IsADirectory, NotADirectory, Invalid):
            raise
        except AccessDenied as exc:
            log.warning("%s: %s", method.__name__, exc)
            raise
        except FsError as exc:
            log.error("%s: %s", method.__name__, exc)
            raise
        except Exception as exc:  # noqa: BLE001 - a front end must get an errno, never a hang
            log.exception("%s failed unexpectedly", method.__name__)
            raise RemoteError(f"{method.__name__}: {type(exc).__name__}") from None

    return wrapper


class Core:
    """One mount's file system. Use ``async with Core.running(config) as core``."""

    def __init__(self, config: Config, nursery: trio.Nursery, cache: BlockCache,
                 providers: list[Provider], *, clock: Callable[[], float] = time.monotonic,
                 shared_buffers: bool = False, writes_around: bool = True) -> None:
        self.config = config
        self.cache = cache
        self.providers = providers
        self.ns = Namespace(providers, negative_ttl=config.negative_ttl, clock=clock)
        self.engine = Engine(cache, nursery, clock=time.time, shared_buffers=shared_buffers,
                             writes_around=writes_around)
        for provider in providers:
            provider.engine = self.engine
        self._files: dict[int, tuple[OpenFile, Node]] = {}
        self._dirs: dict[int, tuple[list[Node], tuple[DirEntry, ...]]] = {}
        self._next_fh = 0
        self._started = time.time()

    @classmethod
    @asynccontextmanager
    async def running(cls, config: Config, *, shared_buffers: bool = False, writes_around: bool = True,
                      **transports: Any) -> AsyncIterator["Core"]:
        """The core with its background work (fetches, cache upkeep) running until the block ends.
        ``shared_buffers``: its callers copy bytes out in their own threads (``read_out``).
        ``writes_around``: every block is written to the disk around the page cache (``Engine``).
        ``transports`` (``api_transport``, ``byte_transport``) replace the network in tests."""
        try:
            cache = BlockCache(config.cache_dir, config.cache_max_size, BLOCK_SIZE)
        except (OSError, sqlite3.Error) as exc:
            raise CoreError(f"cache dir {config.cache_dir}: {exc} (choose another with --cache-dir)") from None
        providers = [make_provider(p, config.cache_dir, config.timeout, **transports) for p in config.providers]
        try:
            async with trio.open_nursery() as nursery:
                core = cls(config, nursery, cache, providers, shared_buffers=shared_buffers, writes_around=writes_around)
                workers().warm(WARM_WORKERS)
                nursery.start_soon(trio.to_thread.run_sync, cache.sweep_orphans)
                for provider in providers:
                    nursery.start_soon(provider.http.preconnect)
                    nursery.start_soon(provider.http.connect_ahead)
                try:
                    yield core
                    with trio.move_on_after(SETTLE_SECONDS):  # fetches finishing now still reach the disk
                        await core.engine.settled()
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                for provider in providers:
                    await provider.aclose()
                await trio.to_thread.run_sync(cache.close)

    @property
    def invalidator(self) -> Invalidator:
        return self.ns.invalidator

    @invalidator.setter
    def invalidator(self, value: Invalidator) -> None:
        self.ns.invalidator = value

    # ---- attributes -------------------------------------------------------------------------------

    def attributes(self, node: Node) -> Attributes:
        """What ``stat`` shows of ``node``, made again only when its entry changed or a size
        was learned (``readdir`` asks for thousands at a time)."""
        made = node.attributes
        if made is not None and made[0] is node.entry and made[1] == self.engine.sizes_learned:
            return made[2]
        attrs = self._attributes(node)
        node.attributes = (node.entry, self.engine.sizes_learned, attrs)
        return attrs

    def _attributes(self, node: Node) -> Attributes:
        entry = node.entry
        size = 0
        if entry.kind is Kind.FILE:
            learned = self.engine.size(node.provider.name, entry.key, entry.fingerprint) if node.provider else None
            size = learned if learned is not None else entry.size or 0
            if learned is None and entry.size is None:
                return Attributes(node.inode, entry.kind, 0, self._mtime(node), 0.0)  # asked again once known
        elif entry.kind is Kind.LINK:
            size = len((entry.target or "").encode())
        return Attributes(node.inode, entry.kind, size, self._mtime(node), self.ns.ttl(node), entry.target)

    def _mtime(self, node: Node) -> float:
        return node.entry.mtime if node.entry.mtime is not None else self._started

    def _size_learned(self, node: Node) -> Callable[[int], None]:
        """The engine learned a file's true size: where it is not what the listing said, the
        front end must ask for its attributes again."""
        def learned(size: int) -> None:
            if size != node.entry.size:
                self.ns.invalidator.inode(node.inode)
        return learned

    # ---- by inode (the kernel) ----------------------------------------------------------------------

    @boundary
    async def lookup(self, parent: int, name: str) -> Attributes:
        """The child ``name`` of ``parent``, counted as one kernel lookup (``.``/``..`` too)."""
        if name in (".", ".."):
            node = self.ns.node(parent)
            node = node if name == "." else (node.parent or node)
            self.ns.remember(node)
        else:
            node = await self.ns.lookup(parent, name)
        return self.attributes(node)

    def forget(self, inode: int, count: int) -> bool:
        """Whether the node is still known after the kernel dropped ``count`` references."""
        return self.ns.forget(inode, count)

    def remember_listed(self, fh: int, start: int, stop: int) -> None:
        """The kernel learned the entries ``[start, stop)`` of an opened directory."""
        children, _ = self._dirs.get(fh, NO_DIR)
        for node in children[start:stop]:
            self.ns.remember(node)

    @boundary
    async def getattr(self, inode: int) -> Attributes:
        return self.attributes(await self.ns.refresh_attributes(inode))

    @boundary
    async def readlink(self, inode: int) -> str:
        node = self.ns.node(inode)
        if node.entry.kind is not Kind.LINK:
            raise Invalid(f"{self.ns.path(node)} is not a symbolic link")
        return node.entry.target or ""

    @boundary
    async def opendir(self, inode: int) -> int:
        """A snapshot of the directory: readdir offsets stay stable while it refreshes."""
        children = await self.ns.listing(inode)
        fh = self._new_fh()
        self._dirs[fh] = (children, self._dir_entries(self.ns.node(inode), children))
        return fh

    def _dir_entries(self, directory: Node, children: list[Node]) -> tuple[DirEntry, ...]:
        """``children`` as entries, made again only when the listing changed or a size was
        learned: a warm ``ls -l`` of a big directory reuses them all."""
        made = directory.dir_entries
        if made is not None and made[0] is children and made[1] == self.engine.sizes_learned:
            return made[2]
        entries = tuple(DirEntry(child.name, self.attributes(child)) for child in children)
        directory.dir_entries = (children, self.engine.sizes_learned, entries)
        return entries

    def readdir(self, fh: int) -> tuple[DirEntry, ...]:
        """The entries of an opened directory (the same tuple while the listing is unchanged),
        for the front end to take from any offset."""
        return self._dirs.get(fh, NO_DIR)[1]

    def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @boundary
    async def open(self, inode: int, flags: int = os.O_RDONLY) -> Opened:
        if flags & WRITE_FLAGS:
            raise ReadOnly("the tree is read-only")
        node = self.ns.node(inode)
        if node.entry.kind is Kind.DIR:
            raise IsADirectory(self.ns.path(node))
        if node.entry.kind is not Kind.FILE or node.provider is None:
            raise NotFound(self.ns.path(node))
        entry, provider = node.entry, node.provider
        handle: OpenFile
        if entry.local:
            path = await provider.local_file(entry.ref)
            try:
                handle = LocalFile(await trio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_CLOEXEC))
            except FileNotFoundError:
                raise NotFound(self.ns.path(node)) from None
        else:
            remote = await self.engine.open(provider, entry.ref, entry.key, entry.fingerprint, entry.size)
            remote.content.listeners[node.inode] = self._size_learned(node)
            handle = RemoteFile(self.engine, remote)
        fh = self._new_fh()
        self._files[fh] = (handle, node)
        size_known = entry.size is not None or self.engine.size(provider.name, entry.key, entry.fingerprint) is not None
        opened = Opened(fh, keep_cache=node.served_fingerprint == entry.fingerprint and size_known,
                        direct_io=not size_known)
        node.served_fingerprint = entry.fingerprint
        return opened

    @boundary
    async def read(self, fh: int, offset: int, size: int) -> Any:
        return await self._open_file(fh).read(offset, size)

    @boundary
    async def read_out(self, fh: int, offset: int, size: int) -> Piece:
        """``read`` for a caller in another thread: it copies the bytes out (``Piece.tobytes``)."""
        return await self._open_file(fh).read_out(offset, size)

    def _open_file(self, fh: int) -> OpenFile:
        try:
            return self._files[fh][0]
        except KeyError:
            raise FsError(f"file handle {fh} is not open") from None

    def release(self, fh: int) -> None:
        handle, node = self._files.pop(fh, (None, None))
        if handle is not None:
            handle.close()

    def xattrs(self, inode: int) -> dict[str, str]:
        """``user.mime_type`` and ``user.artifactfs.*``: what the provider said, never a secret."""
        node = self.ns.node(inode)
        if node.provider is None:
            return {}
        values = {XATTR_PREFIX + "provider": node.provider.name}
        if node.entry.mime_type:
            values["user.mime_type"] = node.entry.mime_type
        values.update((XATTR_PREFIX + key, value) for key, value in node.entry.xattrs.items())
        return values

    def statfs(self) -> dict[str, int]:
        return {"files": len(self.ns.nodes), "namemax": 255, "bsize": 512}

    def _new_fh(self) -> int:
        self._next_fh += 1
        return self._next_fh

    # ---- by path (front ends without kernel lookups) ------------------------------------------------

    async def node_at(self, path: str, *, follow: bool = True) -> Node:
        """The node at ``path`` (``gumloop/agent/latest/x``), following symlinks on the way
        (and at the end, if ``follow``), at most ``MAX_LINKS`` of them."""
        parts = [p for p in path.strip("/").split("/") if p and p != "."]
        node, hops = self.ns.root, 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                node = node.parent or node
                continue
            child = await self.ns.lookup(node.inode, part, count=False)
            if child.entry.kind is Kind.LINK and (parts or follow):
                hops += 1
                if hops > MAX_LINKS:
                    raise FsError(f"{path}: too many levels of symbolic links")
                parts = [p for p in (child.entry.target or "").split("/") if p and p != "."] + parts
                if (child.entry.target or "").startswith("/"):
                    node = self.ns.root
                continue
            node = child
        return node

    @boundary
    async def stat_path(self, path: str) -> tuple[Attributes, dict[str, str]]:
        node = await self.node_at(path)
        return self.attributes(node), self.xattrs(node.inode)

    @boundary
    async def list_path(self, path: str) -> list[tuple[DirEntry, dict[str, str]]]:
        """A directory's entries with their attributes and xattrs (links shown as links)."""
        node = await self.node_at(path)
        children = await self.ns.listing(node.inode)
        return [(entry, self.xattrs(child.inode)) for child, entry in zip(children, self._dir_entries(node, children))]

    async def open_path(self, path: str) -> Opened:
        node = await self.node_at(path)
        return await self.open(node.inode)

