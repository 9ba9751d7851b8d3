"""What the fsspec front end asks of the core, on the trio thread: each call is one trip there.

Entries are fsspec's info dicts: ``name`` (the full path, no leading slash), ``size``, ``type``
(``file``/``directory``; a symbolic link shows its target's type, with ``islink`` and
``destination``; one whose target is missing is ``other``), ``mtime`` (seconds since the
epoch), and the extended attributes the mount shows, named without ``user.`` and
``user.artifactfs.``: all of them under ``metadata``, and each also at the top level where
fsspec does not use the key itself (vm0's ``size``, Plangrep's ``type`` are only in ``metadata``).
"""

from __future__ import annotations

from typing import Any

from .buffers import Piece
from .core import XATTR_PREFIX, Attributes, Core
from .errors import NotFound
from .model import Kind

TYPES = {Kind.FILE: "file", Kind.DIR: "directory"}
OWN_KEYS = frozenset({"name", "size", "type", "mtime", "islink", "destination", "metadata"})
SIZE_PROBE = 1 << 20


def join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def entry(path: str, attrs: Attributes, xattrs: dict[str, str], target: str | None = None) -> dict[str, Any]:
    """The info dict of ``path``: ``attrs`` and ``xattrs`` are its target's if it is a link."""
    metadata = {name.removeprefix(XATTR_PREFIX).removeprefix("user."): value for name, value in xattrs.items()}
    info: dict[str, Any] = {"name": path, "size": attrs.size, "type": TYPES.get(attrs.kind, "other"),
                            "mtime": attrs.mtime}
    if target is not None:
        info.update(islink=True, destination=target)
    info.update((key, value) for key, value in metadata.items() if key not in OWN_KEYS)
    info["metadata"] = metadata
    return info


async def describe(core: Core, path: str) -> dict[str, Any]:
    """``path``'s entry, links followed (a missing target is ENOENT, as for ``stat``)."""
    attrs, xattrs = await core.stat_path(path)
    own = core.attributes(await core.node_at(path, follow=False))
    return entry(path, attrs, xattrs, own.target if own.kind is Kind.LINK else None)


async def listing(core: Core, path: str) -> list[dict[str, Any]]:
    """A directory's entries in name order; a file lists itself, as fsspec expects."""
    base, _ = await core.stat_path(path)
    if base.kind is not Kind.DIR:
        return [await describe(core, path)]
    entries = []
    for item, xattrs in await core.list_path(path):
        child, attrs = join(path, item.name), item.attributes
        if attrs.kind is Kind.LINK:
            entries.append(await _followed(core, child, attrs))
        else:
            entries.append(entry(child, attrs, xattrs))
    return entries


async def _followed(core: Core, path: str, link: Attributes) -> dict[str, Any]:
    """A link in a listing: its target's entry, or ``other`` if the target is missing, so one
    dangling link never hides the rest of the directory."""
    try:
        attrs, xattrs = await core.stat_path(path)
    except NotFound:
        return entry(path, link, {}, link.target)
    return entry(path, attrs, xattrs, link.target)


async def open_file(core: Core, path: str) -> tuple[int, int]:
    """A handle on the file at ``path`` and its true size (learned by reading when the provider
    did not give it); the handle is released if that fails."""
    node = await core.node_at(path)
    opened = await core.open(node.inode)
    try:
        if not opened.direct_io:  # the core knows the size
            return opened.fh, core.attributes(node).size
        return opened.fh, await _learn_size(core, path, opened.fh)
    except BaseException:
        core.release(opened.fh)
        raise


async def _learn_size(core: Core, path: str, fh: int) -> int:
    """The first read tells the size (a ranged answer carries it); without it, read to the end."""
    if not await core.read(fh, 0, 1):
        return 0
    attrs, _ = await core.stat_path(path)
    if attrs.size:
        return attrs.size
    size = 1
    while chunk := await core.read(fh, size, SIZE_PROBE):
        size += len(chunk)
    return size


async def read_range(core: Core, path: str, start: int | None, end: int | None) -> Piece:
    """Bytes ``[start:end]`` of the file at ``path`` (Python slice rules, negatives from the end),
    for the caller to copy out (``Piece.tobytes``)."""
    fh, size = await open_file(core, path)
    try:
        first, stop, _ = slice(start, end).indices(size)
        return await core.read_out(fh, first, stop - first) if stop > first else Piece(b"")
    finally:
        core.release(fh)

