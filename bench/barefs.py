"""A bare pyfuse3 file system over nginx: the floor of "Python FUSE over HTTP".

    python -m bench.barefs MOUNTPOINT --base-url URL --dataset JSON [--getxattr enoattr|enosys]
        [--cache-dir DIR]

The dataset's tree (``<part>/<name>``) with every name and size known up front, so lookups,
``readdir`` and ``getattr`` never wait on the network. Each ``read`` is one ranged GET, read in
place on the trio thread with artifactfs's byte transport (as artifactfs reads a range up to
1 MiB); nothing is cached. Tuned as DESIGN.md measured:
``pyfuse3.main(min_tasks=4)`` and the mount's kernel readahead raised to 1 MiB. ``getxattr``
answers ENOATTR (a file system serving ``user.*`` attributes pays one round trip per name and
file, as artifactfs does) or, with ``--getxattr enosys``, ENOSYS (the kernel stops asking).

With ``--cache-dir`` it also keeps what it reads, as an artifactfs mount does: each read's bytes
are received into a page-aligned buffer, which one thread then writes at their place in a file
per file around the page cache (``O_DIRECT``), after the reply; the buffers are reused.
"""

from __future__ import annotations

import argparse
import errno
import mmap
import os
import queue
import signal
import stat
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyfuse3
import trio

from artifactfs.transport import HttpTransport, TransportError

from .bodyget import get_into
from .dataset import PARTS, Dataset

MIN_TASKS = 4
READ_AHEAD_KB = 1024
TTL = 3600.0
MTIME_NS = int(datetime.fromisoformat("2026-05-01T00:00:00+00:00").timestamp() * 1e9)
XATTR_ERRNO = {"enoattr": pyfuse3.ENOATTR, "enosys": errno.ENOSYS}
PAGE = mmap.PAGESIZE


@dataclass
class Node:
    """A directory (``size`` None) or a file at ``url``."""

    inode: int
    size: int | None = None
    url: str = ""
    children: dict[bytes, int] = field(default_factory=dict)


def build_tree(dataset: Dataset, base_url: str) -> dict[int, Node]:
    """Inode → node: the root, one directory per part, and every file."""
    nodes = {pyfuse3.ROOT_INODE: Node(pyfuse3.ROOT_INODE)}
    dirs: dict[str, Node] = {}
    for part in PARTS:
        dirs[part] = nodes[len(nodes) + 1] = Node(len(nodes) + 1)
        nodes[pyfuse3.ROOT_INODE].children[part.encode()] = dirs[part].inode
    for item, blob in dataset.files():
        node = nodes[len(nodes) + 1] = Node(len(nodes) + 1, blob.size, base_url + item.path)
        dirs[item.part].children[item.name.encode()] = node.inode
    return nodes


class BareFS(pyfuse3.Operations):
    """Read-only operations over a fixed tree; bytes straight from the origin."""

    def __init__(self, nodes: dict[int, Node], xattr_errno: int, cache: Cache | None = None) -> None:
        super().__init__()
        self.nodes = nodes
        self.xattr_errno = xattr_errno
        self.cache = cache
        self.transport = HttpTransport()
        self.listings = {inode: sorted(node.children.items()) for inode, node in nodes.items() if node.size is None}

    def attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        node = self.nodes[inode]
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.entry_timeout = attr.attr_timeout = TTL
        if node.size is None:
            attr.st_mode, attr.st_nlink = stat.S_IFDIR | 0o555, 2
        else:
            attr.st_mode, attr.st_nlink, attr.st_size = stat.S_IFREG | 0o444, 1, node.size
        attr.st_blksize = 1 << 20
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_mtime_ns = attr.st_ctime_ns = attr.st_atime_ns = MTIME_NS
        return attr

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        inode = self.nodes[parent_inode].children.get(name)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attributes(inode)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attributes(inode)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.listings[fh]
        for index in range(start_id, len(listing)):
            name, inode = listing[index]
            if not pyfuse3.readdir_reply(token, name, self.attributes(inode), index + 1):
                return

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode)

    async def read(self, fh: int, off: int, size: int) -> memoryview:
        node = self.nodes[fh]
        size = max(0, min(size, (node.size or 0) - off))
        if size == 0:
            return memoryview(b"")
        if self.cache is None:
            return await self.fetch(node.url, off, size)
        buffer = self.cache.take(size)
        try:
            data = await self.fetch(node.url, off, size, memoryview(buffer))
        except BaseException:
            self.cache.give_back(buffer)
            raise
        self.cache.keep(fh, off, buffer, size)
        return data

    async def fetch(self, url: str, off: int, size: int, into: memoryview | None = None) -> memoryview:
        """One ranged GET read straight into a buffer, on the trio thread; any failure is EIO."""
        try:
            status, buf = await get_into(self.transport, url, off, size, into)
        except (TransportError, OSError):
            raise pyfuse3.FUSEError(errno.EIO) from None
        if status != 206:
            raise pyfuse3.FUSEError(errno.EIO)
        return buf

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(self.xattr_errno)


class Cache:
    """What was read, written by one thread around the page cache to a file per inode."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._free: list[mmap.mmap] = []
        self._written: queue.SimpleQueue[tuple[int, int, mmap.mmap, int]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        threading.Thread(target=self._write, name="barefs-writer", daemon=True).start()

    def take(self, size: int) -> mmap.mmap:
        """A page-aligned buffer of at least ``size`` bytes, reused once written."""
        with self._lock:
            for i, buffer in enumerate(self._free):
                if len(buffer) >= size:
                    return self._free.pop(i)
        return mmap.mmap(-1, _in_pages(size))

    def give_back(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self._free.append(buffer)

    def keep(self, inode: int, offset: int, buffer: mmap.mmap, size: int) -> None:
        self._written.put((inode, offset, buffer, size))

    def _write(self) -> None:
        files: dict[int, int] = {}
        while True:
            inode, offset, buffer, size = self._written.get()
            if inode not in files:
                files[inode] = self._open(self.directory / str(inode))
            with memoryview(buffer) as view:
                os.pwrite(files[inode], view[:_in_pages(size)], offset)
            self.give_back(buffer)

    @staticmethod
    def _open(path: Path) -> int:
        """For writes around the page cache, or through it where the file system refuses (tmpfs)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        try:
            return os.open(path, flags | os.O_DIRECT, 0o600)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return os.open(path, flags, 0o600)


def _in_pages(size: int) -> int:
    """``size`` rounded up to whole pages, as ``O_DIRECT`` writes them."""
    return -(-size // PAGE) * PAGE


async def tune_read_ahead(mountpoint: Path) -> None:
    """Raise the mount's kernel readahead once the kernel's INIT is answered (it resets it)."""
    st = await trio.to_thread.run_sync(os.stat, mountpoint)
    Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb").write_text(str(READ_AHEAD_KB))


async def serve(mountpoint: Path) -> None:
    """``pyfuse3.main`` until SIGTERM or SIGINT."""
    async with trio.open_nursery() as nursery:
        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_signal)
        nursery.start_soon(tune_read_ahead, mountpoint)
        await pyfuse3.main(min_tasks=MIN_TASKS)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.barefs", description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--base-url", required=True, help="nginx's root URL (ends with /)")
    parser.add_argument("--dataset", required=True, help="Dataset as JSON")
    parser.add_argument("--getxattr", choices=sorted(XATTR_ERRNO), default="enoattr")
    parser.add_argument("--cache-dir", type=Path, help="keep what is read here (around the page cache)")
    args = parser.parse_args(argv)
    cache = Cache(args.cache_dir) if args.cache_dir else None
    ops = BareFS(build_tree(Dataset.from_json(args.dataset), args.base_url), XATTR_ERRNO[args.getxattr], cache)
    pyfuse3.init(ops, str(args.mountpoint), set(pyfuse3.default_options) | {"fsname=barefs", "ro"})
    try:
        trio.run(serve, args.mountpoint)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
