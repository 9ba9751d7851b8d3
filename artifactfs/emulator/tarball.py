"""vm0 version archives: deterministic tar.gz in, size and file count out."""

from __future__ import annotations

import gzip
import io
import tarfile

from .blobs import Blob


def build(files: dict[str, Blob], mtime: float) -> bytes:
    """A tar.gz of ``files`` that is byte-identical on every build.

    Members are sorted, parent directories are listed before their children,
    owners are 0/root, member mtimes are ``mtime`` and the gzip header's is 0.
    """
    dirs = {path.rsplit("/", i)[0] for path in files for i in range(1, path.count("/") + 1)}
    out = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(dirs | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime = int(mtime)
            info.uname = info.gname = "root"
            if name in files:
                info.size = files[name].size
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(files[name].read_all()))
            else:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
    return out.getvalue()


def stats(archive: bytes) -> tuple[int, int]:
    """Total size and count of the regular files in ``archive``; ``(len, 0)`` if it is not a tar.gz."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError, EOFError):
        return len(archive), 0
    return sum(m.size for m in members), len(members)
