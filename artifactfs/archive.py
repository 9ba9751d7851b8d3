"""Safe, bounded, atomic unpacking of a version archive (vm0's tar.gz) into the cache.

Why not ``tarfile.extractall``: an archive from the network may name ``../../x`` or ``/etc/x``,
carry links, devices or fifos, repeat names, or inflate to terabytes. Here only regular files
and directories are written, at paths cleaned like every provider path (``names.split_path``),
never through a link; a member that cannot be placed (a path too long for the file system)
is skipped like a link; decompressed bytes, member count and metadata header bytes are
bounded, and members are not kept once written (``tarfile`` would keep every one); the tree
appears under its final name only once complete (a staging dir renamed into place, under a
lock that two daemons sharing a cache dir both respect). The archive is read as a stream
(from the byte engine), never copied whole first.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import io
import logging
import os
import shutil
import tarfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Protocol

from .errors import RemoteError
from .names import split_path

log = logging.getLogger("artifactfs.archive")

MIN_BYTE_LIMIT = 1 << 30
RATIO_LIMIT = 100
MAX_MEMBERS = 100_000
MAX_HEADER_BYTES = 1 << 20
MAX_TOTAL_HEADER_BYTES = 16 << 20
COPY_STEP = 1 << 20
MAX_MTIME = 1 << 33
_METADATA_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                   tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class ArchiveError(RemoteError):
    """The archive is corrupt or too big to unpack: EIO, and no use trying it again."""


class Readable(Protocol):
    """A stream of the archive's bytes; ``size`` is known once reading began (or None)."""

    size: int | None

    def readinto(self, buffer: Any) -> int: ...


@dataclass
class Limits:
    """How much one archive may unpack to: uncompressed bytes (max(1 GiB, 100 × the archive),
    decided once the archive's size is known), members, and metadata header bytes."""

    archive: Readable | None = None
    fixed_bytes: int | None = None
    max_members: int = MAX_MEMBERS
    header_bytes: int = 0

    @property
    def max_bytes(self) -> int:
        if self.fixed_bytes is not None:
            return self.fixed_bytes
        size = self.archive.size if self.archive is not None else None
        return max(MIN_BYTE_LIMIT, RATIO_LIMIT * (size or 0))

    def count_header(self, size: int) -> None:
        self.header_bytes += size
        if size > MAX_HEADER_BYTES or self.header_bytes > MAX_TOTAL_HEADER_BYTES:
            raise ArchiveError(f"more than {MAX_TOTAL_HEADER_BYTES} bytes of metadata headers")


def unpack_once(final: Path, archive: Readable) -> int:
    """``final`` holding the unpacked archive read from ``archive``; the bytes unpacked
    (counted again if another process unpacked it first).

    Blocking (run it in a thread). Under an exclusive lock the archive is unpacked into
    ``<final>.partial``, renamed to ``final`` only when complete; a ``.partial`` left by a
    crash is removed first, and the staging dir is removed whatever happens.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.with_name(final.name + ".lock")):
        if final.is_dir():
            return _disk_usage(final)
        staging = final.with_name(final.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            size = extract(archive, staging, Limits(archive))
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return size


def _disk_usage(root: Path) -> int:
    return sum(Path(folder, name).stat().st_size for folder, _, names in os.walk(root) for name in names)


def extract(archive: Readable, dest: Path, limits: Limits) -> int:
    """Write the regular files and directories of a tar or tar.gz below ``dest`` (created here);
    returns the bytes written.

    Skipped: links, devices, fifos, members whose path cleans to nothing, runs into a file
    already written, or is too long to create. A repeated file name keeps the last member,
    as ``tar -x`` does. Raises ``ArchiveError`` for a corrupt archive or one over ``limits``.
    """
    dest.mkdir()
    stream = _Bounded(_decompressed(io.BufferedReader(archive, COPY_STEP)), limits)  # type: ignore[arg-type]
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_tarinfo_for(limits)) as tar:  # type: ignore[call-overload]
            return _extract_members(tar, dest, limits)
    except tarfile.TarError as exc:
        raise ArchiveError(f"corrupt archive: {exc}") from None


def _extract_members(tar: tarfile.TarFile, dest: Path, limits: Limits) -> int:
    declared = 0
    for count, member in enumerate(tar, 1):
        tar.members.clear()  # streamed: nothing needs the members already written
        if count > limits.max_members:
            raise ArchiveError(f"more than {limits.max_members} members")
        if member.isfile():
            declared += member.size
            if declared > limits.max_bytes:
                raise ArchiveError(f"its files would unpack to more than {limits.max_bytes} bytes")
        parts = split_path(member.name)
        try:
            target = _place(dest, parts, member.isdir()) if member.isfile() or member.isdir() else None
            if target is not None and member.isfile():
                _write(tar, member, target)
        except OSError as exc:
            if exc.errno not in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR):
                raise
            target = None
        if target is None:
            log.debug("archive member %r skipped (type %r)", member.name, member.type)
    return declared


def _place(dest: Path, parts: list[str], is_dir: bool) -> Path | None:
    """The path for a member below ``dest``, parents created; None where a file is in the way."""
    if not parts:
        return None
    folder = dest
    for part in parts[:-1]:
        folder = folder / part
        if not folder.is_dir():
            if folder.exists():
                return None
            folder.mkdir()
    target = folder / parts[-1]
    if is_dir:
        if not target.exists():
            target.mkdir()
        return target if target.is_dir() else None
    return None if target.is_dir() else target


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    assert source is not None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, COPY_STEP)
    mtime = min(max(member.mtime, 0), MAX_MTIME)
    os.utime(target, (mtime, mtime))


def _decompressed(raw: io.BufferedReader) -> BinaryIO:
    """The tar stream: gunzipped if it starts with the gzip magic, else as is."""
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw  # type: ignore[return-value]


class _Bounded:
    """The decompressed stream, counted: past the byte limit it is a bomb, not an archive.

    This bounds everything tarfile reads, headers and skipped data included; read errors of a
    corrupt gzip become ``ArchiveError`` here, so that disk errors while writing stay distinct.
    """

    def __init__(self, stream: BinaryIO, limits: Limits) -> None:
        self._stream = stream
        self._limits = limits
        self._total = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"corrupt archive: {exc}") from None
        self._total += len(data)
        if self._total > self._limits.max_bytes:
            raise ArchiveError(f"it unpacks to more than {self._limits.max_bytes} bytes")
        return data


def _tarinfo_for(limits: Limits) -> type[tarfile.TarInfo]:
    """tarfile reads a pax or GNU long-name header into memory whole: a TarInfo class that
    refuses absurd ones, and too many of them in all."""

    class BoundedTarInfo(tarfile.TarInfo):
        def _proc_member(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
            if self.type in _METADATA_TYPES:
                limits.count_header(self.size)
            return super()._proc_member(tarfile)  # type: ignore[misc]

    return BoundedTarInfo


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, released when the block ends (or the process dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
