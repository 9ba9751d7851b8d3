"""pyfuse3.Operations: translate kernel requests to namespace/reader calls, nothing more.

Every handler is wrapped so that an unexpected exception logs once and becomes EIO
(pyfuse3 only understands FUSEError); every write-type request answers EROFS.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from typing import Any, Awaitable, Callable, TypeVar

import pyfuse3
import trio

from .errors import FsError
from .model import Kind
from .namespace import Namespace, Node
from .reader import ContentId, LocalFile, OpenFile, Reader

log = logging.getLogger("artifactfs.fuse")

T = TypeVar("T")
BLOCK_SIZE = 512
XATTR_PREFIX = "user.artifactfs."


def translated(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """FsError → its errno; anything else → EIO with one log line (never a hung request)."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODATA):
                log.info("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            log.exception("%s failed unexpectedly", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


async def read_only(*_: Any, **__: Any) -> None:
    """Any write-type request: the tree is read-only."""
    raise pyfuse3.FUSEError(errno.EROFS)


class ArtifactOperations(pyfuse3.Operations):
    """The kernel's view of the namespace. ``enable_writeback_cache`` stays off."""

    supports_dot_lookup = True
    enable_acl = False

    reader: Reader  # set once the trio nursery its fetches run in exists

    def __init__(self, namespace: Namespace, *, allow_other: bool) -> None:
        super().__init__()
        self.ns = namespace
        self._file_mode = 0o444 if allow_other else 0o400
        self._dir_mode = 0o555 if allow_other else 0o500
        self._uid, self._gid = os.getuid(), os.getgid()
        self._started = time.time()
        self._handles: dict[int, OpenFile] = {}
        self._dirs: dict[int, list[Node]] = {}
        self._next_fh = 1

    def attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = node.entry
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.inode
        attr.generation = 0
        ttl = self.ns.ttl(node)
        attr.entry_timeout = attr.attr_timeout = ttl
        if entry.kind is Kind.DIR:
            attr.st_mode = stat.S_IFDIR | self._dir_mode
            attr.st_nlink = 2
            attr.st_size = 0
        elif entry.kind is Kind.LINK:
            attr.st_mode = stat.S_IFLNK | 0o777
            attr.st_nlink = 1
            attr.st_size = len((entry.target or "").encode())
        else:
            attr.st_mode = stat.S_IFREG | self._file_mode
            attr.st_nlink = 1
            attr.st_size = entry.size or 0
        attr.st_blksize = 1 << 20
        attr.st_blocks = (attr.st_size + BLOCK_SIZE - 1) // BLOCK_SIZE
        mtime_ns = int((entry.mtime or self._started) * 1e9)
        attr.st_mtime_ns = attr.st_ctime_ns = attr.st_atime_ns = mtime_ns
        attr.st_uid, attr.st_gid = self._uid, self._gid
        return attr

    @translated
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(name)
        if text in (".", ".."):
            parent = self.ns.node(parent_inode)
            node = parent if text == "." else (parent.parent or parent)
            self.ns.remember(node)
        else:
            node = await self.ns.lookup(parent_inode, text)
        return self.attributes(node)

    @translated
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self.attributes(await self.ns.refresh_attributes(inode))

    def forget(self, inode_list: Any) -> None:
        for inode, count in inode_list:
            self.ns.forget(inode, count)

    @translated
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        node = self.ns.node(inode)
        if node.entry.kind is not Kind.LINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.entry.target or "")

    @translated
    async def opendir(self, inode: int, ctx: Any) -> int:
        children = await self.ns.listing(inode)
        fh = self._new_fh()
        self._dirs[fh] = children
        return fh

    @translated
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        """Offsets index the snapshot taken at opendir: stable while the listing refreshes."""
        children = self._dirs.get(fh, [])
        for position in range(start_id, len(children)):
            node = children[position]
            if not pyfuse3.readdir_reply(token, os.fsencode(node.name), self.attributes(node),
                                         position + 1):
                return
            self.ns.remember(node)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @translated
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.ns.node(inode)
        if node.entry.kind is not Kind.FILE or node.provider is None:
            raise pyfuse3.FUSEError(errno.EISDIR if node.is_dir else errno.EINVAL)
        entry, provider = node.entry, node.provider
        handle: OpenFile
        if entry.local_path is not None:
            handle = LocalFile(entry.local_path)
        else:
            cid = ContentId(provider.name, entry.key, entry.fingerprint)
            handle = self.reader.open(cid, entry.size, provider.http,
                                      lambda: provider.resolve(entry.ref),
                                      lambda size: self.ns.learned_size(node, size))
        fh = self._new_fh()
        self._handles[fh] = handle
        info = pyfuse3.FileInfo(fh=fh)
        info.keep_cache = node.page_cache_fingerprint == entry.fingerprint and entry.size is not None
        info.direct_io = entry.size is None
        node.page_cache_fingerprint = entry.fingerprint
        return info

    @translated
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self._handles[fh].read(off, size)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is not None:
            handle.close()

    @translated
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        """Only ``user.*`` names exist; ``ls -l`` asks for ACL and SELinux names of every
        file, so those are answered before any work."""
        if not name.startswith(b"user."):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        value = self._xattrs(self.ns.node(inode)).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value.encode()

    @translated
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [name.encode() for name in self._xattrs(self.ns.node(inode))]

    def _xattrs(self, node: Node) -> dict[str, str]:
        """``user.mime_type`` and ``user.artifactfs.*``: what the provider said, never a secret."""
        if node.provider is None:
            return {}
        values = {XATTR_PREFIX + "provider": node.provider.name}
        if node.entry.mime_type:
            values["user.mime_type"] = node.entry.mime_type
        values.update((XATTR_PREFIX + key, value) for key, value in node.entry.xattrs.items())
        return values

    @translated
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_blocks = data.f_bfree = data.f_bavail = 0
        data.f_files = len(self.ns.nodes)
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    def _new_fh(self) -> int:
        self._next_fh += 1
        return self._next_fh

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
    """Tells the kernel to drop cached pages/attributes and names, off the request path.

    Calls go through a thread, as pyfuse3 warns that notifying from inside a handler
    can deadlock; failures (ENOENT for an inode the kernel already forgot) are harmless.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery

    def inode(self, inode: int) -> None:
        self.nursery.start_soon(self._run, pyfuse3.invalidate_inode, inode)

    def entry(self, parent_inode: int, name: str) -> None:
        pyfuse3.invalidate_entry_async(parent_inode, os.fsencode(name), ignore_enoent=True)

    async def _run(self, func: Callable[..., None], *args: Any) -> None:
        try:
            await trio.to_thread.run_sync(func, *args)
        except OSError:
            pass
