"""Safe extraction: hostile members stay inside, limits hold, the tree appears atomically."""

from __future__ import annotations

import gzip
import io
import os
import resource
import tarfile
from pathlib import Path
from typing import Any

import pytest

from artifactfs.archive import MAX_HEADER_BYTES, ArchiveError, Limits, extract, unpack_once
from artifactfs.errors import RemoteError

ROOMY = Limits(fixed_bytes=1 << 20, max_members=100)


class Stream(io.RawIOBase):
    """An archive as the byte engine hands it over: a raw stream that knows its size."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self.size = len(data)
        self.reads = 0
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.reads += 1
        if self._fail_after is not None and self._data.tell() >= self._fail_after:
            raise RemoteError("connection lost")
        return self._data.readinto(buffer)


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields: object) -> tuple:
    return name, data, kind, fields


def tar_bytes(*members: tuple, gz: bool = True, pax: dict[str, str] | None = None) -> bytes:
    """A tar(.gz) holding exactly ``members``: (name, data, type, TarInfo fields)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers=pax or {}) as tar:
        for name, data, kind, fields in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.mtime = 1_700_000_000
            for key, value in fields.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return gzip.compress(out.getvalue()) if gz else out.getvalue()


def unpacked(tmp_path: Path, archive: bytes, limits: Limits = ROOMY) -> Path:
    dest = tmp_path / "box" / "tree"
    dest.parent.mkdir()
    extract(Stream(archive), dest, limits)
    return dest


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path below ``root``: file contents, None for directories (links would be str)."""
    found: dict[str, bytes | None] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            assert not path.is_symlink(), rel
            found[rel] = None if path.is_dir() else path.read_bytes()
    return found


def test_regular_files_and_directories_with_their_mtimes(tmp_path: Path) -> None:
    dest = unpacked(tmp_path, tar_bytes(member("docs", kind=tarfile.DIRTYPE), member("docs/a.txt", b"alpha"),
                                        member("b/c/d.bin", b"\0" * 5000)))
    assert tree(dest) == {"docs": None, "docs/a.txt": b"alpha", "b": None, "b/c": None,
                          "b/c/d.bin": b"\0" * 5000}
    assert (dest / "docs" / "a.txt").stat().st_mtime == 1_700_000_000


def test_plain_uncompressed_tar_works_too(tmp_path: Path) -> None:
    assert tree(unpacked(tmp_path, tar_bytes(member("x", b"1"), gz=False))) == {"x": b"1"}


def test_hostile_members_never_leave_the_destination(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    archive = tar_bytes(
        member("../../escape.txt", b"up"),
        member(f"{outside}/abs.txt", b"abs"),
        member("link", kind=tarfile.SYMTYPE, linkname=str(outside)),
        member("link/through.txt", b"through"),
        member("hard", kind=tarfile.LNKTYPE, linkname="/etc/passwd"),
        member("dev", kind=tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("fifo", kind=tarfile.FIFOTYPE),
        member("./././..", b"nothing"),
        member("dup.txt", b"first"),
        member("dup.txt", b"second"),
        member("file", b"a file"),
        member("file/under.txt", b"under a file"),
        member("file", kind=tarfile.DIRTYPE),
    )
    dest = unpacked(tmp_path, archive)
    assert tree(dest) == {
        "escape.txt": b"up", "link": None, "link/through.txt": b"through", "dup.txt": b"second",
        "file": b"a file", **{rel: None for rel in _components(f"{outside}/abs.txt")[:-1]},
        _components(f"{outside}/abs.txt")[-1]: b"abs",
    }
    assert not outside.exists()
    assert sorted(os.listdir(tmp_path)) == ["box"]
    assert os.listdir(tmp_path / "box") == ["tree"]


def _components(path: str) -> list[str]:
    """``/a/b/c`` → ``[a, a/b, a/b/c]``: where an absolute member lands, relative to the tree."""
    parts = path.strip("/").split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def test_declared_sizes_over_the_limit_stop_before_writing(tmp_path: Path) -> None:
    archive = tar_bytes(member("a", b"x" * 60_000), member("b", b"y" * 60_000))
    with pytest.raises(ArchiveError, match="files would unpack to more than 100000 bytes"):
        unpacked(tmp_path, archive, Limits(fixed_bytes=100_000))
    assert tree(tmp_path / "box" / "tree") == {"a": b"x" * 60_000}


def test_too_many_members(tmp_path: Path) -> None:
    archive = tar_bytes(*(member(f"f{i}", b"") for i in range(11)))
    with pytest.raises(ArchiveError, match="more than 10 members"):
        unpacked(tmp_path, archive, Limits(fixed_bytes=1 << 20, max_members=10))


def test_decompressed_stream_is_bounded_even_without_file_data(tmp_path: Path) -> None:
    archive = tar_bytes(*(member(f"d{i}", kind=tarfile.DIRTYPE) for i in range(50)))
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        unpacked(tmp_path, archive, Limits(fixed_bytes=8192))


def test_huge_metadata_header_is_refused(tmp_path: Path) -> None:
    archive = tar_bytes(member("a", b"1"), pax={"comment": "x" * (MAX_HEADER_BYTES + 1)})
    with pytest.raises(ArchiveError, match="metadata header"):
        unpacked(tmp_path, archive, Limits(fixed_bytes=1 << 30))


@pytest.mark.parametrize("archive", [b"", b"not an archive at all" * 50, gzip.compress(b"garbage" * 100),
                                     tar_bytes(member("a", b"x" * 4000))[:-40]])
def test_corrupt_archives_are_archive_errors(tmp_path: Path, archive: bytes) -> None:
    with pytest.raises(ArchiveError, match="corrupt"):
        unpacked(tmp_path, archive)


def test_limits_scale_with_the_archive() -> None:
    assert Limits(Stream(b"x" * 1000)).max_bytes == 1 << 30
    big = Stream(b"")
    big.size = 100 << 20
    assert Limits(big).max_bytes == 100 * (100 << 20)


def test_hundreds_of_big_pax_headers_neither_grow_memory_nor_pass(tmp_path: Path) -> None:
    """400 members with 1 MiB pax headers: tarfile kept every member (+400 MiB); now members
    are dropped as they are written and metadata headers are capped in all."""
    archive = tar_bytes(*(member(f"f{i}", b"x", pax_headers={"comment": "y" * (MAX_HEADER_BYTES - 1024)})
                          for i in range(400)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ArchiveError, match="metadata headers"):
        unpacked(tmp_path, archive, Limits(fixed_bytes=1 << 34, max_members=1000))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024, f"grew {grown_kib} KiB"


def test_many_members_are_not_kept_in_memory(tmp_path: Path) -> None:
    archive = tar_bytes(*(member(f"d/f{i}", b"z", pax_headers={"comment": "c" * 2000}) for i in range(3000)))
    dest = unpacked(tmp_path, archive, Limits(fixed_bytes=1 << 30, max_members=5000))
    assert len(os.listdir(dest / "d")) == 3000


def test_a_member_path_longer_than_path_max_is_skipped(tmp_path: Path) -> None:
    deep = "/".join(["d" * 200] * 30)  # 6000 bytes: each part fits, the whole path does not
    dest = unpacked(tmp_path, tar_bytes(member(deep + "/x.txt", b"far"), member("ok.txt", b"near")))
    assert tree(dest)["ok.txt"] == b"near"
    assert not any(name.endswith("x.txt") for name in tree(dest))


def test_unpack_once_reuses_a_finished_tree(tmp_path: Path) -> None:
    final = tmp_path / "v" / "key"
    first = Stream(tar_bytes(member("a", b"1")))
    assert unpack_once(final, first) == 1
    again = Stream(b"never read")
    assert unpack_once(final, again) == 1
    assert again.reads == 0 and tree(final) == {"a": b"1"}
    assert sorted(os.listdir(final.parent)) == ["key", "key.lock"]


def test_a_failed_unpack_leaves_nothing_visible(tmp_path: Path) -> None:
    final = tmp_path / "key"
    with pytest.raises(ArchiveError):
        unpack_once(final, Stream(b"corrupt"))
    with pytest.raises(RemoteError) as failed:  # a download that broke is no broken archive
        unpack_once(final, Stream(tar_bytes(member("a", os.urandom(3 << 20)), gz=False), fail_after=1 << 20))
    assert not isinstance(failed.value, ArchiveError)
    assert sorted(os.listdir(tmp_path)) == ["key.lock"]


def test_a_leftover_staging_dir_from_a_crash_is_replaced(tmp_path: Path) -> None:
    final = tmp_path / "key"
    leftover = tmp_path / "key.partial" / "tree"
    leftover.mkdir(parents=True)
    (leftover / "stale").write_bytes(b"half")
    unpack_once(final, Stream(tar_bytes(member("a", b"1"))))
    assert tree(final) == {"a": b"1"}
    assert sorted(os.listdir(tmp_path)) == ["key", "key.lock"]
