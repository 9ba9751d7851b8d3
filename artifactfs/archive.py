"""Safe, bounded, atomic unpacking of a version archive (vm0's tar.gz) into the cache.

Why not ``tarfile.extractall``: an archive from the network may name ``../../x`` or ``/etc/x``,
carry links, devices or fifos, repeat names, or inflate to terabytes. Here only regular files
and directories are written, at paths cleaned like every provider path (``names.split_path``),
never through a link; decompressed bytes and member count are bounded; and the tree appears
under its final name only once complete (a staging dir renamed into place, under a lock that
two daemons sharing a cache dir both respect).
"""

from __future__ import annotations

import fcntl
import gzip
import logging
import os
import shutil
import tarfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import RemoteError
from .names import split_path

log = logging.getLogger("artifactfs.archive")

MIN_BYTE_LIMIT = 1 << 30
RATIO_LIMIT = 100
MAX_MEMBERS = 100_000
MAX_HEADER_BYTES = 1 << 20
COPY_STEP = 1 << 20
MAX_MTIME = 1 << 33
_METADATA_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                   tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class ArchiveError(RemoteError):
    """The archive is corrupt or too big to unpack: EIO, and no use trying it again."""


@dataclass(frozen=True)
class Limits:
    """How much one archive may unpack to: total uncompressed bytes and number of members."""

    max_bytes: int
    max_members: int = MAX_MEMBERS

    @classmethod
    def for_archive(cls, size: int) -> "Limits":
        """max(1 GiB, 100 × the archive): room for honest archives, none for a bomb."""
        return cls(max(MIN_BYTE_LIMIT, RATIO_LIMIT * size))


def unpack_once(final: Path, download: Callable[[BinaryIO], None]) -> Path:
    """``final`` holding the unpacked archive that ``download`` writes; reused if already there.

    Blocking (run it in a thread). Under an exclusive lock the archive is downloaded and unpacked
    into ``<final>.partial``, renamed to ``final`` only when complete; a ``.partial`` left by a
    crash is removed first, and the staging dir is removed whatever happens.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.with_name(final.name + ".lock")):
        if final.is_dir():
            return final
        staging = final.with_name(final.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            archive = staging / "archive"
            with open(archive, "wb") as out:
                download(out)
            extract(archive, staging / "tree", Limits.for_archive(archive.stat().st_size))
            os.rename(staging / "tree", final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def extract(archive: Path, dest: Path, limits: Limits) -> None:
    """Write the regular files and directories of a tar or tar.gz below ``dest`` (created here).

    Skipped: links, devices, fifos, members whose path cleans to nothing or runs into a file
    already written. A repeated file name keeps the last member, as ``tar -x`` does.
    Raises ``ArchiveError`` for a corrupt archive or one over ``limits``.
    """
    dest.mkdir()
    with open(archive, "rb") as raw:
        stream = _Bounded(_decompressed(raw), limits.max_bytes)
        try:
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as tar:  # type: ignore[call-overload]
                _extract_members(tar, dest, limits)
        except tarfile.TarError as exc:
            raise ArchiveError(f"corrupt archive: {exc}") from None


def _extract_members(tar: tarfile.TarFile, dest: Path, limits: Limits) -> None:
    declared = 0
    for count, member in enumerate(tar, 1):
        if count > limits.max_members:
            raise ArchiveError(f"more than {limits.max_members} members")
        if member.isfile():
            declared += member.size
            if declared > limits.max_bytes:
                raise ArchiveError(f"its files would unpack to more than {limits.max_bytes} bytes")
        parts = split_path(member.name)
        target = _place(dest, parts, member.isdir()) if member.isfile() or member.isdir() else None
        if target is None:
            log.debug("archive member %r skipped (type %r)", member.name, member.type)
        elif member.isfile():
            _write(tar, member, target)


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


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """The tar stream: gunzipped if the file starts with the gzip magic, else as is."""
    gzipped = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw  # type: ignore[return-value]


class _Bounded:
    """The decompressed stream, counted: past ``limit`` bytes it is a bomb, not an archive.

    This bounds everything tarfile reads, headers and skipped data included; read errors of a
    corrupt gzip become ``ArchiveError`` here, so that disk errors while writing stay distinct.
    """

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._total = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"corrupt archive: {exc}") from None
        self._total += len(data)
        if self._total > self._limit:
            raise ArchiveError(f"it unpacks to more than {self._limit} bytes")
        return data


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax or GNU long-name header into memory whole: refuse absurd ones."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.type in _METADATA_TYPES and self.size > MAX_HEADER_BYTES:
            raise ArchiveError(f"a {self.size}-byte metadata header")
        return super()._proc_member(tarfile)  # type: ignore[misc]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, released when the block ends (or the process dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
