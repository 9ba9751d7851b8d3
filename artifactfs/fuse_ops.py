"""pyfuse3.Operations: convert kernel requests to core calls and core answers to pyfuse3 types.

Nothing else happens here: no provider, HTTP or cache object is reached from this module.
Every handler turns an ``FsError`` into its errno and anything unexpected into EIO (pyfuse3
only understands FUSEError; the core already logged why). Every write-type request answers
EROFS. With ``xattrs = false`` getxattr/listxattr answer ENOSYS, so the kernel stops asking
(``ls -l`` then makes no per-file round trip).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import functools
import logging
import os
import stat
import struct
import sys
import time
from typing import Any, Awaitable, Callable, TypeVar

import pyfuse3
import trio

from .core import Attributes, Core, DirEntry
from .errors import FsError
from .model import Kind

log = logging.getLogger("artifactfs.fuse")

T = TypeVar("T")
BLOCK_SIZE = 512
IO_BLOCK = 1 << 20
ENTRIES_KEPT = 65_536
LISTINGS_KEPT = 16  # directories whose kernel entries are kept ready
FS_ENCODING = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())  # os.fsencode, without its call per name


def translated(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """FsError → its errno; anything else → EIO (never a hung request)."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            log.exception("%s failed unexpectedly", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


async def read_only(*_: Any, **__: Any) -> None:
    """Any write-type request: the tree is read-only."""
    raise pyfuse3.FUSEError(errno.EROFS)


def _node_id_offset() -> int | None:
    """Where an ``EntryAttributes`` keeps the node id it gives the kernel (libfuse's
    ``fuse_entry_param.ino``, followed by ``generation`` and the ``stat`` whose ``st_ino`` is
    set with it), found by probing; None where the layout is not that one."""
    probe = pyfuse3.EntryAttributes()
    probe.st_ino, probe.generation = 0x5EED_0001_CAFE_0002, 0x0BAD_F00D_0000_0003
    words = struct.unpack_from(f"{sys.getsizeof(probe) // 8}Q", ctypes.string_at(id(probe), sys.getsizeof(probe)))
    for i in range(len(words) - 3):
        if words[i] == words[i + 3] == probe.st_ino and words[i + 1] == probe.generation:
            return i * 8
    return None


NODE_ID_OFFSET = _node_id_offset()


def anonymous(entry: pyfuse3.EntryAttributes) -> pyfuse3.EntryAttributes:
    """``entry`` (made afresh) with node id 0: in a READDIRPLUS answer the kernel then lists
    the name and inode number and leaves its cached dentry and attributes as they are
    (``fuse_direntplus_link``), as for libfuse's high-level file systems. pyfuse3 sets the
    node id only with ``st_ino``, so it is cleared in the object's memory."""
    assert NODE_ID_OFFSET is not None
    ctypes.c_uint64.from_address(id(entry) + NODE_ID_OFFSET).value = 0
    return entry


class KernelListing:
    """A directory's entries in the kernel's form, made once per listing, and how much of it
    the kernel holds. A full READDIRPLUS entry makes the kernel find the dentry, count a
    lookup and store the attributes again; a warm ``ls -l`` of 10,000 files spent ~6 of its
    ~13 ms of ``getdents`` there (the bare file system, strace, medians of 20). Entries the
    kernel was given in full less than half their TTL ago, from this same listing (so with
    these attributes), are replayed with node id 0 (``anonymous``, made after the first full
    pass); the kernel's own copies are then still valid. One it dropped since is looked up
    again, as after any listing. An entry whose attributes the kernel must ask for again
    (TTL 0: its size is not known yet) expires there at once either way, so it does not
    shorten the listing's TTL."""

    __slots__ = ("anonymous", "entries", "given_at", "given_upto", "making", "ttl")

    def __init__(self, entries: list[tuple[bytes, pyfuse3.EntryAttributes]], ttl: float) -> None:
        self.entries, self.ttl = entries, ttl
        self.anonymous: list[tuple[bytes, pyfuse3.EntryAttributes]] | None = None
        self.given_at = -float("inf")
        self.given_upto = 0
        self.making = False

    def held(self, now: float) -> int:
        """The entries before this offset are the kernel's, with the attributes given."""
        if self.anonymous is None or now >= self.given_at + self.ttl / 2:
            return 0
        return self.given_upto

    def gave(self, start: int, stop: int, now: float) -> None:
        """Entries ``[start, stop)`` went to the kernel in full."""
        if start == 0:
            self.given_at, self.given_upto = now, stop
        elif start <= self.given_upto:
            self.given_upto = max(self.given_upto, stop)


class ArtifactOperations(pyfuse3.Operations):
    """The kernel's view of the core. ``enable_writeback_cache`` stays off."""

    supports_dot_lookup = True
    enable_acl = False

    def __init__(self, core: Core, nursery: trio.Nursery, *, allow_other: bool, xattrs: bool) -> None:
        super().__init__()
        self.core = core
        self.nursery = nursery  # makes the anonymous entries of listings, off the request path
        self._file_mode = 0o444 if allow_other else 0o400
        self._dir_mode = 0o555 if allow_other else 0o500
        self._uid, self._gid = os.getuid(), os.getgid()
        self._xattrs = xattrs
        self._entries: dict[int, tuple[Attributes, pyfuse3.EntryAttributes]] = {}
        self._listings: collections.OrderedDict[int, tuple[tuple[DirEntry, ...], KernelListing]] = (
            collections.OrderedDict())

    def entry(self, attrs: Attributes) -> pyfuse3.EntryAttributes:
        """The kernel's form of ``attrs``, made once per inode and reused while they are equal
        (``ls -l`` of a big directory asks for thousands at a time)."""
        made = self._entries.get(attrs.inode)
        if made is not None and (made[0] is attrs or made[0] == attrs):
            return made[1]
        entry = self._make_entry(attrs)
        if len(self._entries) >= ENTRIES_KEPT:
            self._entries.clear()  # nodes dropped without a forget (a refresh) leave theirs behind
        self._entries[attrs.inode] = (attrs, entry)
        return entry

    def _make_entry(self, attrs: Attributes) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attrs.inode
        entry.generation = 0
        entry.entry_timeout = entry.attr_timeout = attrs.ttl
        if attrs.kind is Kind.DIR:
            entry.st_mode = stat.S_IFDIR | self._dir_mode
            entry.st_nlink = 2
        elif attrs.kind is Kind.LINK:
            entry.st_mode = stat.S_IFLNK | 0o777
            entry.st_nlink = 1
        else:
            entry.st_mode = stat.S_IFREG | self._file_mode
            entry.st_nlink = 1
        entry.st_size = attrs.size
        entry.st_blksize = IO_BLOCK
        entry.st_blocks = (attrs.size + BLOCK_SIZE - 1) // BLOCK_SIZE
        entry.st_mtime_ns = entry.st_ctime_ns = entry.st_atime_ns = int(attrs.mtime * 1e9)
        entry.st_uid, entry.st_gid = self._uid, self._gid
        return entry

    @translated
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self.entry(await self.core.lookup(parent_inode, os.fsdecode(name)))

    @translated
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self.entry(await self.core.getattr(inode))

    def forget(self, inode_list: Any) -> None:
        for inode, count in inode_list:
            if not self.core.forget(inode, count):
                self._entries.pop(inode, None)

    @translated
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(await self.core.readlink(inode))

    @translated
    async def opendir(self, inode: int, ctx: Any) -> int:
        return await self.core.opendir(inode)

    @translated
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self.core.readdir(fh)
        listing = self._kernel_listing(entries)
        now = time.monotonic()
        held = listing.held(now)
        offset, full = start_id, max(start_id, held)  # entries from ``full`` on go in full
        try:
            if offset < held:
                assert listing.anonymous is not None
                anonymous = listing.anonymous
                while offset < held:
                    name, entry = anonymous[offset]
                    if not pyfuse3.readdir_reply(token, name, entry, offset + 1):
                        return
                    offset += 1
                log.debug("readdir: entries %d-%d without attributes (the kernel holds them)", start_id, offset - 1)
            kernel = listing.entries
            while offset < len(kernel):
                name, entry = kernel[offset]
                if not pyfuse3.readdir_reply(token, name, entry, offset + 1):
                    break
                offset += 1
        finally:
            if offset > full:
                self.core.remember_listed(fh, full, offset)
                listing.gave(full, offset, now)
                if listing.anonymous is None and not listing.making and NODE_ID_OFFSET is not None:
                    listing.making = True
                    self.nursery.start_soon(self._make_anonymous, listing, entries)

    async def _make_anonymous(self, listing: KernelListing, entries: tuple[DirEntry, ...]) -> None:
        """The listing's entries with node id 0, made a thousand at a time between requests
        (10,000 took ~12 ms), so the pass that gave them in full did not wait for them."""
        made: list[tuple[bytes, pyfuse3.EntryAttributes]] = []
        try:
            for start in range(0, len(entries), 1000):
                await trio.lowlevel.checkpoint()
                made.extend((name, anonymous(self._make_entry(item.attributes))) for (name, _), item
                            in zip(listing.entries[start:start + 1000], entries[start:start + 1000]))
        except Exception:  # the listing then goes in full, as it did
            log.exception("cannot make a listing's entries without attributes")
            return
        listing.anonymous = made

    def _kernel_listing(self, entries: tuple[DirEntry, ...]) -> KernelListing:
        """``entries`` in the kernel's form, made once per listing: the core hands out the same
        tuple while a directory is unchanged, so a warm ``ls -l`` only replays them."""
        made = self._listings.get(id(entries))
        if made is not None and made[0] is entries:
            self._listings.move_to_end(id(entries))
            return made[1]
        encoding, errors = FS_ENCODING
        kernel = [(item.name.encode(encoding, errors), self.entry(item.attributes)) for item in entries]
        ttls = (item.attributes.ttl for item in entries)
        listing = KernelListing(kernel, min((ttl for ttl in ttls if ttl > 0), default=0.0))
        self._listings[id(entries)] = (entries, listing)
        while len(self._listings) > LISTINGS_KEPT:
            self._listings.popitem(last=False)
        return listing

    async def releasedir(self, fh: int) -> None:
        self.core.releasedir(fh)

    @translated
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        opened = await self.core.open(inode, flags)
        info = pyfuse3.FileInfo(fh=opened.fh)
        info.keep_cache = opened.keep_cache
        info.direct_io = opened.direct_io
        return info

    @translated
    async def read(self, fh: int, off: int, size: int) -> Any:
        return await self.core.read(fh, off, size)

    async def release(self, fh: int) -> None:
        self.core.release(fh)

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        """Only ``user.*`` names exist; ``ls -l`` asks for ACL and SELinux names of every file,
        so those are answered before any work, and without ``translated`` around them: 0.7
        against 1.2 µs a call, and a warm ``ls -l`` of 10,000 files makes 20,000."""
        if not self._xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if not name.startswith(b"user."):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return await self._user_xattr(inode, name)

    @translated
    async def _user_xattr(self, inode: int, name: bytes) -> bytes:
        value = self.core.xattrs(inode).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value.encode("utf-8", "surrogateescape")

    @translated
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        if not self._xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return [name.encode() for name in self.core.xattrs(inode)]

    @translated
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        numbers = self.core.statfs()
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = numbers["bsize"]
        data.f_blocks = data.f_bfree = data.f_bavail = 0
        data.f_files = numbers["files"]
        data.f_ffree = data.f_favail = 0
        data.f_namemax = numbers["namemax"]
        return data

    setattr = read_only  # type: ignore[assignment]
    setxattr = read_only  # type: ignore[assignment]
    removexattr = read_only  # type: ignore[assignment]
    mknod = read_only  # type: ignore[assignment]
    mkdir = read_only  # type: ignore[assignment]
    unlink = read_only  # type: ignore[assignment]
    rmdir = read_only  # type: ignore[assignment]
    symlink = read_only  # type: ignore[assignment]
    rename = read_only  # type: ignore[assignment]
    link = read_only  # type: ignore[assignment]
    write = read_only  # type: ignore[assignment]
    create = read_only  # type: ignore[assignment]


class KernelInvalidator:
    """Tells the kernel to drop cached attributes and names, off the request path.

    Only attributes, never pages: dropping pages waits for the page locks of reads in flight,
    which can wedge the mount. A changed file's pages go when it is next opened (the core
    answers ``keep_cache`` only while its fingerprint is unchanged). Calls go through a thread,
    as pyfuse3 warns that notifying from inside a handler can deadlock; failures (ENOENT for an
    inode the kernel already forgot) are harmless.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery

    def inode(self, inode: int) -> None:
        self.nursery.start_soon(self._run, functools.partial(pyfuse3.invalidate_inode, attr_only=True), inode)

    def entry(self, parent_inode: int, name: str) -> None:
        pyfuse3.invalidate_entry_async(parent_inode, os.fsencode(name), ignore_enoent=True)

    async def _run(self, func: Callable[..., None], *args: Any) -> None:
        try:
            await trio.to_thread.run_sync(func, *args)
        except OSError:
            pass
