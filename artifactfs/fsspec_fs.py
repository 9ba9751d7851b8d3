"""``artifactfs://``: the mount's tree as an fsspec file system, for Python without FUSE.

``pd.read_csv("artifactfs://sigmic/task_123/downloads/output.csv")`` reads through the same
core as a mount (chunk cache, readahead, single-flight fetches, lazy URLs) and the same disk
cache, shared with mounts and other processes. Nothing here imports pyfuse3. The core runs on
the process's trio thread (``runtime``); each call below is one trip there. Errors are Python's
own (``FileNotFoundError``, ``PermissionError``, ``OSError`` with the errno and the reason);
every write raises ``PermissionError`` (EROFS).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from . import fsspec_ops as ops
from .buffers import Piece
from .config import SECONDS, Config, ConfigError, Overrides, default_config_path, load_config, parse_size
from .errors import FsError
from .fsspec_progress import ByteProgress
from .runtime import Session, runtime


class ArtifactFileSystem(AbstractFileSystem):
    """The artifactfs tree: ``gumloop/<agent>/latest/report.csv``, ``vm0/<name>/current/...``.

    Storage options, as the mount's: ``config`` (default: the mount's default config file),
    ``cache_dir``, ``cache_size`` (``"10GiB"`` or bytes) and ``listing_ttl`` (seconds).
    Instances with equal options share one core (fsspec also caches the instances).
    """

    protocol = "artifactfs"
    root_marker = ""
    cachable = True

    def __init__(self, config: str | os.PathLike[str] | None = None, cache_dir: str | os.PathLike[str] | None = None,
                 cache_size: str | int | None = None, listing_ttl: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._key, self._config = load(config, cache_dir, cache_size, listing_ttl)
        self._current: Session | None = None
        self._session()  # a cache dir that cannot be used fails here, not at the first read

    def _session(self) -> Session:
        """The core for these options: the one of the last call while its run is alive (none
        after ``shutdown`` or in a forked child), else the process's, started if need be."""
        current = self._current
        if current is None or not current.runtime.alive:
            current = self._current = runtime().session(self._key, self._config)
        return current

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """``artifactfs://a/b``, ``/a/b/`` and ``a/b`` are all ``a/b``; the root is ``""``."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return super()._strip_protocol(path).strip("/")

    def _call(self, fn: Callable[..., Any], path: str, *args: Any) -> Any:
        """``await fn(core, path, *args)`` on the trio thread."""
        path = self._strip_protocol(path)
        session = self._session()
        try:
            return session.call(fn, session.core, path, *args)
        except FsError as exc:  # as ``translated`` does, without a generator per call
            raise os_error(exc, path) from None

    # ---- reading ---------------------------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        entries = self._call(ops.listing, path)
        return entries if detail else [item["name"] for item in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._call(ops.describe, path)

    def modified(self, path: str) -> datetime:
        return datetime.fromtimestamp(self.info(path)["mtime"], tz=UTC)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        """Bytes ``[start:end]`` (negatives count from the end), in one trip to the core."""
        return self._call(ops.read_range, path, start, end).tobytes()

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict[str, Any] | None = None, **kwargs: Any) -> ArtifactFile:
        if mode != "rb":
            refuse()
        return ArtifactFile(self, path, block_size=block_size, cache_options=cache_options, **kwargs)

    # ---- copying out -----------------------------------------------------------------------------

    def get_file(self, rpath: str, lpath: Any, callback: Callback = DEFAULT_CALLBACK, outfile: Any = None,
                 *, progress: bool = False, **kwargs: Any) -> None:
        """Copy one file out; ``progress=True`` draws a byte bar like ``artifactfs cache prefetch``."""
        if progress:
            with self._progress(callback, [rpath]) as bar:
                return super().get_file(rpath, lpath, callback=bar.branched(rpath, lpath), outfile=outfile, **kwargs)
        return super().get_file(rpath, lpath, callback=callback, outfile=outfile, **kwargs)

    def get(self, rpath: Any, lpath: Any, recursive: bool = False, callback: Callback = DEFAULT_CALLBACK,
            maxdepth: int | None = None, *, progress: bool = False, **kwargs: Any) -> None:
        """Copy files or trees out; ``progress=True`` draws one byte bar over all of them."""
        if progress:
            with self._progress(callback, self.expand_path(rpath, recursive=recursive, maxdepth=maxdepth)) as bar:
                return super().get(rpath, lpath, recursive=recursive, callback=bar, maxdepth=maxdepth, **kwargs)
        return super().get(rpath, lpath, recursive=recursive, callback=callback, maxdepth=maxdepth, **kwargs)

    def _progress(self, callback: Callback, paths: list[str]) -> ByteProgress:
        """The bar for copying ``paths``, sized by their files' bytes."""
        if callback is not DEFAULT_CALLBACK:
            raise ValueError("progress=True draws its own bar: pass progress or callback, not both")
        infos = [self.info(path) for path in paths]
        return ByteProgress(sum(info["size"] for info in infos if info["type"] == "file"))

    # ---- writing: never ------------------------------------------------------------------------

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        refuse()

    mkdir = makedirs = rmdir = rm_file = rm = _rm = touch = _refuse  # type: ignore[assignment]
    cp_file = copy = mv = put_file = put = pipe_file = pipe = _refuse  # type: ignore[assignment]


class ArtifactFile(AbstractBufferedFile):
    """A file open for reading, seekable. Reads go to the core's engine; the small buffer here
    (``block_size``, 1 MiB) only spares line-by-line readers a thread trip per line, and reads
    of a block or more pass it by. The handle belongs to the core it was opened on, so the
    file keeps that session."""

    DEFAULT_BLOCK_SIZE = 1 << 20

    def __init__(self, fs: ArtifactFileSystem, path: str, block_size: int | None = None,
                 cache_type: str = "readahead", cache_options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.pop("size", None)  # fsspec passes it when it re-opens a pickled file; the core knows it
        with translated(path):
            self._session = fs._session()
            self._fh, size = self._session.call(ops.open_file, self._session.core, path)
        try:
            super().__init__(fs, path, "rb", block_size, cache_type=cache_type, cache_options=cache_options,
                             size=size, **kwargs)
        except BaseException:
            self._release()
            raise

    def read(self, length: int = -1) -> bytes:
        """Reads of a block or more come straight from the core, copied once; shorter ones
        through fsspec's buffer."""
        size = self._direct(-1 if length is None else int(length))
        if not size:
            return super().read(length)
        data = self._piece(self.loc, size).tobytes()
        self.loc += len(data)
        return data

    def readinto(self, b: Any) -> int:
        """As ``read``, into the caller's buffer: by the kernel (the GIL let go) where the core's
        buffers are memfds."""
        out = memoryview(b).cast("B")
        size = self._direct(out.nbytes)
        if not size:
            return super().readinto(out)
        got = self._piece(self.loc, size).copy_into(out)
        self.loc += got
        return got

    def _direct(self, length: int) -> int:
        """How many bytes a read of ``length`` (all if negative) takes straight from the core:
        0 if it goes through fsspec's buffer (shorter than a block, or a file not readable)."""
        if self.closed or self.mode != "rb":
            return 0  # fsspec's read says why not
        rest = max(0, self.size - self.loc)
        size = rest if length < 0 else min(length, rest)
        return size if size >= self.blocksize else 0

    def _piece(self, start: int, size: int) -> Piece:
        with translated(self.path):
            return self._session.call(self._session.core.read_out, self._fh, start, size)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self._piece(start, end - start).tobytes()

    def _release(self) -> None:
        """Give the handle back without waiting (also from a finalizer, on any thread)."""
        self._session.runtime.soon(self._session.core.release, self._fh)

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()


def load(config: str | os.PathLike[str] | None, cache_dir: str | os.PathLike[str] | None,
         cache_size: str | int | None, listing_ttl: float | None) -> tuple[Hashable, Config]:
    """The config the storage options name, and the key of the core it runs in.
    Any problem is a ValueError with one line naming it and the fix."""
    if listing_ttl is not None and not SECONDS.accepts(listing_ttl):
        raise ValueError(f"listing_ttl: must be {SECONDS.what} (e.g. listing_ttl=60)")
    if cache_size is not None:
        try:
            parse_size(cache_size)
        except ValueError as exc:
            raise ValueError(f"cache_size: {exc}") from None
    path = Path(config if config is not None else default_config_path()).expanduser().absolute()
    overrides = Overrides(listing_ttl=listing_ttl, cache_dir=Path(cache_dir) if cache_dir is not None else None,
                          cache_max_size=None if cache_size is None else str(cache_size))
    try:
        loaded = load_config(path, overrides)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if not loaded.providers:
        raise ValueError(f"{path}: no providers configured (add a [providers.NAME] table; see README 'Config')")
    return (path, overrides), loaded


@contextmanager
def translated(path: str) -> Iterator[None]:
    """The core's errors as Python's: the exception for the errno, naming ``path``, with the
    core's reason where it says more than the path."""
    try:
        yield
    except FsError as exc:
        raise os_error(exc, path) from None


def os_error(exc: FsError, path: str) -> OSError:
    """The exception for the core's error's errno, naming ``path``, with the core's reason where
    it says more than the path."""
    reason, detail = os.strerror(exc.errno), str(exc).strip("/")
    if detail and detail != path:
        reason = f"{reason} ({detail})"
    return OSError(exc.errno, reason, path)


def refuse() -> NoReturn:
    raise PermissionError(errno.EROFS, "Read-only file system (artifactfs is read-only)")
