"""The systems compared: ``curl``, local disk, artifactfs, and the anchor mounts (rclone, httpdirfs).

Each gives a fresh ``Session`` per case: for a mount, a new mount point process with an empty
cache directory, unmounted (``fusermount3 -u -z``) and stopped by PID when the case ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .cases import Case, Endpoint, Figures, Settings
from .dataset import TASK, Dataset
from .measure import Deadline
from .origin import OriginProcess
from .proc import BenchError, peak_rss, stop_process, unmount, wait_mounted

REPO = Path(__file__).resolve().parent.parent
TOKEN_ENV = "BENCH_SIGMIC_TOKEN"
RETRY_DELAY = 10.0


@dataclass
class Env:
    """What every system needs: the origin, the dataset, and where to put files."""

    origin: OriginProcess
    dataset: Dataset
    workdir: Path
    logs: Path
    local_tree: Path
    notes: list[str] = field(default_factory=list)


@dataclass
class Session:
    """One fresh setup for one case: a tree to read, or an endpoint for curl."""

    root: Path | None = None
    endpoint: Endpoint | None = None
    proc: subprocess.Popen[bytes] | None = None
    mountpoint: Path | None = None
    peak_rss: int | None = None

    def run(self, case: Case, ds: Dataset, settings: Settings, deadline: Deadline) -> Figures:
        if self.endpoint is not None:
            return case.on_curl(self.endpoint, ds, settings, deadline)
        assert self.root is not None
        return case.on_files(self.root, ds, settings, deadline)

    def exited(self, wait: float = 2.0) -> int | None:
        """The daemon's exit status if it is gone (crashed) within ``wait`` seconds, else None."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return None

    def abort(self) -> None:
        """Make a hung case return: kill the daemon (pending FUSE reads then fail) and unmount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.mountpoint is not None:
            unmount(self.mountpoint)


class System(ABC):
    """A column of the table."""

    name: str
    slug: str
    anchor = False  # one of the mounts artifactfs is compared with
    daemon = False  # has a process whose RSS is reported

    def __init__(self, env: Env) -> None:
        self.env = env

    def problem(self) -> str | None:
        """Why this system cannot run here, or None."""
        return None

    @abstractmethod
    @contextmanager
    def session(self, case: Case) -> Iterator[Session]:
        """A fresh setup for ``case``, torn down afterwards."""


class Curl(System):
    """``curl`` on the URLs: Sigmic's download endpoint with the token, or the static tree."""

    def __init__(self, env: Env, sigmic: bool) -> None:
        super().__init__(env)
        self.sigmic = sigmic
        self.name = "curl (sigmic API)" if sigmic else "curl (static)"
        self.slug = "curl-sigmic" if sigmic else "curl-static"

    def problem(self) -> str | None:
        return None if shutil.which("curl") else "curl is not installed"

    def endpoint(self) -> Endpoint:
        origin, scratch = self.env.origin, self.env.workdir
        if self.sigmic:
            return Endpoint(origin.sigmic_url, lambda _dir: origin.sigmic_listing_url(),
                            (f"Authorization: Bearer {origin.token}",), scratch)
        return Endpoint(origin.static_url, lambda d: origin.static_url(d) + "/", (), scratch)

    @contextmanager
    def session(self, case: Case) -> Iterator[Session]:
        yield Session(endpoint=self.endpoint())


class LocalDisk(System):
    """The dataset copied to a local directory; the page cache is dropped before each case."""

    name = "local disk"
    slug = "local"

    @contextmanager
    def session(self, case: Case) -> Iterator[Session]:
        drop_page_cache(self.env.notes)
        yield Session(root=self.env.local_tree)


def drop_page_cache(notes: list[str]) -> None:
    """``sync; echo 3 > /proc/sys/vm/drop_caches`` if permitted; otherwise note it once."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as exc:
        note = f"page cache not dropped for local disk ({exc.strerror}): its cold figures are warm"
        if note not in notes:
            notes.append(note)


def fuse_problem() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    return None


class MountSystem(System):
    """A FUSE mount run as a foreground subprocess."""

    daemon = True
    tool = ""
    attempts = 1

    @abstractmethod
    def command(self, mountpoint: Path, cache: Path, log: Path) -> list[str]:
        """The foreground mount command."""

    def dataset_root(self, mountpoint: Path) -> Path:
        return mountpoint

    def environ(self) -> dict[str, str]:
        return dict(os.environ)

    def problem(self) -> str | None:
        if shutil.which(self.tool) is None:
            return "not available"
        return fuse_problem()

    @contextmanager
    def session(self, case: Case) -> Iterator[Session]:
        mountpoint = self.env.workdir / "mnt" / self.slug
        cache = self.env.workdir / "cache" / self.slug
        shutil.rmtree(cache, ignore_errors=True)
        mountpoint.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True)
        log = self.env.logs / f"{self.slug}-{case.key}.log"
        proc = None
        try:
            proc = self._mount(mountpoint, cache, log)
            session = Session(root=self.dataset_root(mountpoint), proc=proc, mountpoint=mountpoint)
            yield session
            session.peak_rss = peak_rss(proc.pid) if proc.poll() is None else None
        finally:
            unmount(mountpoint)
            if proc is not None:
                stop_process(proc)
            shutil.rmtree(cache, ignore_errors=True)

    def _mount(self, mountpoint: Path, cache: Path, log: Path) -> subprocess.Popen[bytes]:
        """Start the daemon and wait for the mount; retry ``attempts`` times."""
        for attempt in range(1, self.attempts + 1):
            with open(log, "ab") as out:
                proc = subprocess.Popen(self.command(mountpoint, cache, log), stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, env=self.environ(), cwd=REPO)
            try:
                wait_mounted(mountpoint, proc, log)
                return proc
            except BenchError:
                unmount(mountpoint)
                stop_process(proc)
                if attempt == self.attempts:
                    raise
                time.sleep(RETRY_DELAY)
        raise AssertionError("unreachable")


class ArtifactFS(MountSystem):
    """``artifactfs mount -f`` on the Sigmic task, through the download endpoint."""

    name = "artifactfs"
    slug = "artifactfs"
    attempts = 3  # others may be mid-edit: a failed start is retried

    def problem(self) -> str | None:
        return fuse_problem()

    def config(self) -> Path:
        path = self.env.workdir / "artifactfs.toml"
        path.write_text("\n".join([
            "[mount]", "listing_ttl = 60", "",
            "[providers.sigmic]", f'base_url = "{self.env.origin.sigmic_base}"',
            f'token_env = "{TOKEN_ENV}"', f'tasks = ["{TASK}"]', "",
        ]))
        return path

    def command(self, mountpoint: Path, cache: Path, log: Path) -> list[str]:
        return [sys.executable, "-m", "artifactfs", "mount", str(mountpoint), "-c", str(self.config()), "-f",
                "--cache-dir", str(cache), "--log-file", str(log.with_suffix(".daemon.log"))]

    def dataset_root(self, mountpoint: Path) -> Path:
        return mountpoint / "sigmic" / TASK

    def environ(self) -> dict[str, str]:
        return {**os.environ, TOKEN_ENV: self.env.origin.token}


class Rclone(MountSystem):
    """``rclone mount`` with the http backend on the static tree."""

    anchor = True
    tool = "rclone"

    def __init__(self, env: Env, cache_mode: str) -> None:
        super().__init__(env)
        self.cache_mode = cache_mode
        self.name = f"rclone {cache_mode}"
        self.slug = f"rclone-{cache_mode}"

    def command(self, mountpoint: Path, cache: Path, log: Path) -> list[str]:
        return ["rclone", "mount", ":http:", str(mountpoint), "--http-url", self.env.origin.static_root,
                "--read-only", "--vfs-cache-mode", self.cache_mode, "--cache-dir", str(cache),
                "--config", "/dev/null"]


class HttpDirFS(MountSystem):
    """``httpdirfs -f`` on the static tree, with or without its disk cache."""

    anchor = True
    tool = "httpdirfs"

    def __init__(self, env: Env, cache: bool) -> None:
        super().__init__(env)
        self.cache = cache
        self.name = "httpdirfs cache" if cache else "httpdirfs no-cache"
        self.slug = "httpdirfs-cache" if cache else "httpdirfs-nocache"

    def command(self, mountpoint: Path, cache: Path, log: Path) -> list[str]:
        caching = ["--cache", "--cache-location", str(cache)] if self.cache else []
        return ["httpdirfs", "-f", *caching, self.env.origin.static_root, str(mountpoint)]


def all_systems(env: Env) -> list[System]:
    """Every column, in table order."""
    return [
        Curl(env, sigmic=True), Curl(env, sigmic=False), LocalDisk(env), ArtifactFS(env),
        Rclone(env, "full"), Rclone(env, "off"), HttpDirFS(env, cache=True), HttpDirFS(env, cache=False),
    ]
