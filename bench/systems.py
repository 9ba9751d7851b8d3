"""The systems compared (the table's columns) and how each sets up a fresh ``Session`` per case.

For a mount: a new daemon process with an empty cache directory, unmounted (``fusermount3 -u
-z``) and stopped by PID when the case ends. For fsspec: a new Python process. Everything but
artifactfs reads nginx directly; artifactfs lists and resolves through the emulator's Gumloop
API and reads the bytes its signed URLs point to.
"""

from __future__ import annotations

import json
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
from typing import ClassVar, NamedTuple

from . import columns
from .cases import Case, Endpoint, Tree
from .dataset import PARTS, Dataset, agent
from .fsspecrun import fsspec_problem
from .gumloopapi import TOKEN_ENV, USER_ID_ENV, GumloopApi
from .nginx import Nginx
from .origin import ApiProcess
from .proc import BenchError, cpu_seconds, peak_rss, stop_process, unmount, wait_mounted
from .sessions import REPO, ApiSession, CurlSession, Session, TreeSession, WorkerSession

RETRY_DELAY = 10.0


@dataclass
class Env:
    """What every system needs: the two origins, the dataset, and where to put files."""

    nginx: Nginx
    api: ApiProcess
    dataset: Dataset
    workdir: Path
    logs: Path
    local_tree: Path
    notes: list[str] = field(default_factory=list)

    def gumloop(self) -> GumloopApi:
        return GumloopApi(self.api.base_url, self.api.token, self.api.user_id)

    def credentials(self) -> dict[str, str]:
        """The environment with the Gumloop key artifactfs's config names."""
        return {**os.environ, TOKEN_ENV: self.api.token, USER_ID_ENV: self.api.user_id}

    def artifactfs_config(self) -> Path:
        path = self.workdir / "artifactfs.toml"
        agents = ", ".join(f'"{agent(part)}"' for part in PARTS)
        path.write_text("\n".join([
            "[mount]", "listing_ttl = 60", "",
            "[providers.gumloop]", f'base_url = "{self.api.base_url}"', f'token_env = "{TOKEN_ENV}"',
            f'user_id_env = "{USER_ID_ENV}"', f"agents = [{agents}]", "",
        ]))
        return path


def artifactfs_roots(top: str) -> dict[str, Path]:
    """Each part's directory under an artifactfs root: ``gumloop/<agent>/latest``."""
    return {part: Path(top, "gumloop", agent(part), "latest") for part in PARTS}


class System(ABC):
    """A column of the table."""

    name: str
    slug: str
    anchor = False  # one of the mounts artifactfs is compared with
    daemon = False  # has a process whose RSS is reported
    cases: frozenset[str] | None = None  # the cases it runs (None: all)

    def __init__(self, env: Env) -> None:
        self.env = env

    def problem(self) -> str | None:
        """Why this system cannot run here (its cells then say "not available"), or None."""
        return None

    def runs(self, case: Case) -> bool:
        return self.cases is None or case.key in self.cases

    @abstractmethod
    @contextmanager
    def session(self, case: Case) -> Iterator[Session]:
        """A fresh setup for ``case``, torn down afterwards."""


class Curl(System):
    """``curl`` on nginx: the floor for bytes."""

    name = columns.CURL
    slug = "curl"

    def problem(self) -> str | None:
        return None if shutil.which("curl") else "curl is not installed"

    @contextmanager
    def session(self, case: Case) -> Iterator[Session]:
        nginx = self.env.nginx
        yield CurlSession(Endpoint(nginx.url, nginx.part_url, self.env.workdir))


class LocalDisk(System):
    """The files nginx serves, read where they are. The page cache is dropped before each case
    and the tree read back into it afterwards, so nginx serves every other system from memory."""

    name = columns.LOCAL
    slug = "local"

    @contextmanager
    def session(self, case: Case) -> Iterator[Session]:
        drop_page_cache(self.env.notes)
        try:
            yield TreeSession(Tree({part: self.env.local_tree / part for part in PARTS}))
        finally:
            read_back(self.env.local_tree)


def read_back(root: Path) -> None:
    """Read every file under ``root`` once, into the page cache."""
    buf = bytearray(1 << 20)
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


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


class ApiAlone(System):
    """The Gumloop API's pages fetched by a plain loop: the floor of listing."""

    name = columns.API
    slug = "api"
    cases = frozenset({"list"})

    @contextmanager
    def session(self, case: Case) -> Iterator[Session]:
        yield ApiSession(self.env.gumloop())


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

    def roots(self, mountpoint: Path) -> dict[str, Path]:
        return {part: mountpoint / part for part in PARTS}

    def environ(self) -> dict[str, str]:
        return dict(os.environ)

    def problem(self) -> str | None:
        if shutil.which(self.tool) is None:
            return f"{self.tool} is not installed"
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
            pid = proc.pid
            session = TreeSession(Tree(self.roots(mountpoint), lambda: cpu_seconds(pid)), proc, mountpoint)
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
            except BaseException as exc:  # Ctrl-C too: the daemon must not outlive the bench
                unmount(mountpoint)
                stop_process(proc)
                if not isinstance(exc, BenchError) or attempt == self.attempts:
                    raise
                time.sleep(RETRY_DELAY)
        raise AssertionError("unreachable")


class ArtifactFS(MountSystem):
    """``artifactfs mount -f`` with default settings on the three Gumloop agents."""

    name = columns.AFS
    slug = "artifactfs"
    attempts = 3  # a daemon that fails to start once is tried again
    flags: tuple[str, ...] = ()

    def problem(self) -> str | None:
        return fuse_problem()

    def command(self, mountpoint: Path, cache: Path, log: Path) -> list[str]:
        return [sys.executable, "-m", "artifactfs", "mount", str(mountpoint), "-c", str(self.env.artifactfs_config()),
                "-f", "--cache-dir", str(cache), "--log-file", str(log.with_suffix(".daemon.log")), *self.flags]

    def roots(self, mountpoint: Path) -> dict[str, Path]:
        return artifactfs_roots(str(mountpoint))

    def environ(self) -> dict[str, str]:
        return self.env.credentials()


class ArtifactFSNoXattrs(ArtifactFS):
    """artifactfs with ``--no-xattrs``: ``ls -l`` without a getxattr round trip per file."""

    name = columns.AFS_NO_XATTRS
    slug = "artifactfs-no-xattrs"
    flags = ("--no-xattrs",)
    cases = frozenset({"ls"})

    def problem(self) -> str | None:
        usage = subprocess.run([sys.executable, "-m", "artifactfs", "mount", "--help"], capture_output=True,
                               text=True, cwd=REPO).stdout
        return None if "--no-xattrs" in usage else "`artifactfs mount` has no --no-xattrs"


class BareVariant(NamedTuple):
    """One column of the bare pyfuse3 file system: its name, the cases it runs (None: all),
    its ``getxattr`` answer, and whether it keeps what it reads in the case's cache dir."""

    name: str
    cases: frozenset[str] | None
    getxattr: str
    keeps: bool


class BareFuse(MountSystem):
    """``python -m bench.barefs``: the floor of a Python FUSE file system over HTTP."""

    tool = sys.executable
    VARIANTS: ClassVar[dict[str, BareVariant]] = {
        "enoattr": BareVariant(columns.BARE, None, "enoattr", keeps=False),  # the floor
        "enosys": BareVariant(columns.BARE_ENOSYS, frozenset({"ls"}), "enosys", keeps=False),  # xattrs: ENOSYS
        "cached": BareVariant(columns.BARE_CACHED, frozenset({"parallel"}), "enoattr", keeps=True),
    }

    def __init__(self, env: Env, variant: str) -> None:
        super().__init__(env)
        self.variant = self.VARIANTS[variant]
        self.name = self.variant.name
        self.slug = f"barefs-{variant}"
        self.cases = self.variant.cases

    def problem(self) -> str | None:
        return fuse_problem()

    def command(self, mountpoint: Path, cache: Path, log: Path) -> list[str]:
        keeps = ["--cache-dir", str(cache)] if self.variant.keeps else []
        return [sys.executable, "-m", "bench.barefs", str(mountpoint), "--base-url", self.env.nginx.base_url,
                "--dataset", self.env.dataset.to_json(), "--getxattr", self.variant.getxattr, *keeps]


class Rclone(MountSystem):
    """``rclone mount`` with the http backend on nginx."""

    anchor = True
    tool = "rclone"

    def __init__(self, env: Env, cache_mode: str) -> None:
        super().__init__(env)
        self.cache_mode = cache_mode
        self.name = columns.RCLONE_FULL if cache_mode == "full" else columns.RCLONE_OFF
        self.slug = f"rclone-{cache_mode}"

    def command(self, mountpoint: Path, cache: Path, log: Path) -> list[str]:
        return ["rclone", "mount", ":http:", str(mountpoint), "--http-url", self.env.nginx.base_url,
                "--read-only", "--vfs-cache-mode", self.cache_mode, "--cache-dir", str(cache),
                "--config", "/dev/null"]


class HttpDirFS(MountSystem):
    """``httpdirfs -f`` on nginx, with or without its disk cache."""

    anchor = True
    tool = "httpdirfs"

    def __init__(self, env: Env, cache: bool) -> None:
        super().__init__(env)
        self.cache = cache
        self.name = columns.HTTPDIRFS_CACHE if cache else columns.HTTPDIRFS_NO_CACHE
        self.slug = "httpdirfs-cache" if cache else "httpdirfs-nocache"

    def command(self, mountpoint: Path, cache: Path, log: Path) -> list[str]:
        caching = ["--cache", "--cache-location", str(cache)] if self.cache else []
        # 1.2.5 looks for Accept-Ranges in the 206 answer, which nginx sends only on a 200
        return ["httpdirfs", "-f", "--no-range-check", *caching, self.env.nginx.base_url, str(mountpoint)]


class Fsspec(System):
    """An fsspec file system used from one Python process per case: artifactfs's own
    (``artifactfs`` protocol, a fresh cache dir), fsspec's ``http`` on nginx, or the bare
    floors of artifactfs's design (``baretrio``, random and parallel reads only;
    ``baretriocache``, which also writes what it read to a fresh cache dir; and ``baretriowork``,
    which lists the agent first and keeps what it read in artifactfs's disk cache: parallel
    reads)."""

    daemon = True
    NAMES: ClassVar[dict[str, str]] = {"artifactfs": columns.AFS_FSSPEC, "http": columns.FSSPEC_HTTP,
                                       "baretrio": columns.FSSPEC_BARE, "baretriocache": columns.FSSPEC_BARE_CACHED,
                                       "baretriowork": columns.FSSPEC_BARE_WORK}
    CASES: ClassVar[dict[str, frozenset[str]]] = {"baretrio": frozenset({"random", "parallel"}),
                                                  "baretriocache": frozenset({"parallel"}),
                                                  "baretriowork": frozenset({"parallel"})}

    def __init__(self, env: Env, protocol: str) -> None:
        super().__init__(env)
        self.protocol = protocol
        self.name = self.NAMES[protocol]
        self.slug = f"fsspec-{protocol}"
        self.cases = self.CASES.get(protocol, frozenset({"seq", "random", "parallel"}))

    def problem(self) -> str | None:
        return fsspec_problem(self.protocol)

    @contextmanager
    def session(self, case: Case) -> Iterator[Session]:
        cache = self.env.workdir / "cache" / self.slug
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        if self.protocol == "artifactfs":
            options = {"config": str(self.env.artifactfs_config()), "cache_dir": str(cache)}
            prefixes = {part: f"{root}/" for part, root in artifactfs_roots("").items()}
        elif self.protocol == "baretriowork":
            options = {"cache_dir": str(cache), "api": self.env.api.base_url}
            prefixes = {part: f"{agent(part)}/" for part in PARTS}
        else:
            options = {"cache_dir": str(cache)} if self.protocol == "baretriocache" else {}
            prefixes = {part: self.env.nginx.part_url(part) for part in PARTS}
        command = [sys.executable, "-m", "bench.fsspecrun", "--protocol", self.protocol,
                   "--options", json.dumps(options), "--prefixes", json.dumps(prefixes)]
        session = WorkerSession(command, self.env.credentials(), self.env.logs / f"{self.slug}-{case.key}.log")
        try:
            yield session
        finally:
            session.abort()
            shutil.rmtree(cache, ignore_errors=True)


def all_systems(env: Env) -> list[System]:
    """Every column, in table order."""
    return [
        Curl(env), LocalDisk(env), ArtifactFS(env), ArtifactFSNoXattrs(env),
        BareFuse(env, "enoattr"), BareFuse(env, "enosys"), BareFuse(env, "cached"),
        Rclone(env, "full"), Rclone(env, "off"), HttpDirFS(env, cache=True), HttpDirFS(env, cache=False),
        ApiAlone(env), Fsspec(env, "artifactfs"), Fsspec(env, "http"), Fsspec(env, "baretrio"),
        Fsspec(env, "baretriocache"), Fsspec(env, "baretriowork"),
    ]
