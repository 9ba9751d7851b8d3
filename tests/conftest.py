"""Fixtures shared by every layer of tests: the emulator and real mounts of it.

A mount is a subprocess running ``artifactfs mount -f`` against the in-process emulator.
Teardown unmounts (``fusermount3 -u -z``) and stops the daemon by PID, then fails the test
if a mount is left behind, a secret reached the daemon's log, or the log holds a warning,
an error or a traceback the test did not declare (``Mount.expect_log(pattern, count)``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from artifactfs import blockcache
from artifactfs.blockcache import CacheStats
from artifactfs.emulator import Emulator
from artifactfs.providers import SPECS

IN_CI = os.environ.get("CI", "").lower() == "true"
MOUNT_TIMEOUT = 20.0
TOKEN_ENV = {kind: f"TEST_{kind.upper()}_TOKEN" for kind in SPECS}
LOUD = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")


def fuse_problem() -> str | None:
    """Why FUSE cannot be used here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"/dev/fuse cannot be opened: {exc.strerror}"
    return None


@pytest.fixture(scope="session")
def fuse_available() -> None:
    """In CI a FUSE test must never skip: there, unusable FUSE fails the test."""
    problem = fuse_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"FUSE is unusable in CI: {problem}")
        pytest.skip(f"FUSE is unusable here: {problem}")


STORAGE_REQUESTS: list[dict] = []
SECRETS: set[str] = set()


@pytest.fixture(scope="session", autouse=True)
def secrets_never_reach_storage() -> Iterator[None]:
    """Over the whole run: no request to a storage origin carried a token or the user id."""
    yield
    leaks = [request["path"] for request in STORAGE_REQUESTS
             if {"authorization", "x-auth-key"} & set(request["headers"])
             or any(secret in text for secret in SECRETS
                    for text in (request["query"], *request["headers"].values()))]
    assert not leaks, f"secrets reached a storage origin: {leaks[:20]}"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
        SECRETS.update(secrets_of(emu))
        STORAGE_REQUESTS.extend(emu.requests(origin="storage"))


def secrets_of(emu: Emulator) -> list[str]:
    """Every credential the emulator knows: tokens, user ids, team tokens."""
    info = emu.ready_info()
    return [*emu.tokens.values(), *(str(v) for k, v in info.items() if k.endswith(("_token", "_user_id")))]


def fuse_mounts() -> list[str]:
    with open("/proc/mounts", encoding="utf-8") as mounts:
        return [line.split()[1] for line in mounts if line.split()[2].startswith("fuse")]


def secret_env(kind: str, stem: str) -> str:
    """The variable a test config names for a provider's extra credential (Gumloop's user id)."""
    return f"TEST_{kind.upper()}_{stem.upper()}"


def config_text(emu: Emulator, providers: tuple[str, ...], *, listing_ttl: float, cache_dir: Path,
                ids: dict[str, list[str]] | None = None, extra: str = "", timeout: float | None = None,
                provider_extra: dict[str, str] | None = None, secrets: bool = True) -> str:
    """A config for the emulator: tokens from variables (``token_environ``), ids as the demo
    has them unless ``ids`` names others (none: the provider's own discovery)."""
    lines = ["[mount]", f"listing_ttl = {listing_ttl}", *([f"timeout = {timeout}"] if timeout else []),
             "", "[cache]", f'dir = "{cache_dir}"', ""]
    info = emu.ready_info()
    for kind in providers:
        spec = SPECS[kind]
        lines += [f"[providers.{kind}]", f'base_url = "{emu.base_urls()[kind]}"', f'token_env = "{TOKEN_ENV[kind]}"']
        lines += [f'{stem}_env = "{secret_env(kind, stem)}"' for stem in spec.secrets if secrets]
        if spec.ids_key:
            chosen = (ids or {}).get(kind, spec.demo(info).get(spec.ids_key, []))
            lines.append(f"{spec.ids_key} = {json.dumps(chosen)}")
        lines.append((provider_extra or {}).get(kind, ""))
    return "\n".join(lines) + extra


def token_environ(emu: Emulator) -> dict[str, str]:
    env = dict(os.environ)
    env.update({TOKEN_ENV[kind]: token for kind, token in emu.tokens.items()})
    info = emu.ready_info()
    env.update({secret_env(kind, stem): str(info[f"{kind}_{stem}"]) for kind, spec in SPECS.items() for stem in spec.secrets})
    return env


@dataclass
class Expected:
    """Log lines a test declares: a pattern (regex) and how many lines it must match."""

    pattern: re.Pattern[str]
    least: int
    most: int
    seen: int = 0


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen
    log_file: Path
    config_file: Path
    expected: list[Expected] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def expect_log(self, pattern: str, count: int | None = 1, *, least: int = 1, most: int = 10_000) -> None:
        """Declare warnings/errors this test causes: ``count`` lines matching ``pattern``
        (or between ``least`` and ``most`` when ``count`` is None)."""
        low, high = (count, count) if count is not None else (least, most)
        self.expected.append(Expected(re.compile(pattern), low, high))

    def unexpected_log(self) -> list[str]:
        """Loud lines no declaration covers, and declarations whose count was not met."""
        problems: list[str] = []
        for line in self.log_text().splitlines():
            if not LOUD.search(line):
                continue
            match = next((e for e in self.expected if e.pattern.search(line)), None)
            if match is None:
                problems.append(line)
            else:
                match.seen += 1
        problems += [f"expected {e.least}..{e.most} lines matching {e.pattern.pattern!r}, saw {e.seen}"
                     for e in self.expected if not e.least <= e.seen <= e.most]
        return problems

    def stop(self) -> None:
        stop_daemon(self.path, self.proc, signal.SIGTERM)


def fuse_connection(path: Path) -> Path | None:
    """The kernel's control directory of the FUSE mount at ``path`` (to abort it), if mounted."""
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[4] == str(path) and " - fuse" in line:
                return Path("/sys/fs/fuse/connections", fields[2].split(":")[1])
    return None


def stop_daemon(mnt: Path, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Teardown of a daemon: clear its mount, end it by PID; if it cannot die (a thread stuck
    in the kernel on its own mount), abort the FUSE connection so nothing stays wedged."""
    connection = fuse_connection(mnt)
    if connection is not None:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                if connection is not None:
                    if not connection.exists() and os.geteuid() == 0:
                        subprocess.run(["mount", "-t", "fusectl", "none", str(connection.parent)], capture_output=True)
                    (connection / "abort").write_text("1")
                proc.wait(10)


def wait_for_mount(path: Path, proc: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while str(path) not in fuse_mounts():
        if proc.poll() is not None:
            raise AssertionError(f"mount exited with {proc.returncode}: "
                                 f"{log_file.read_text(errors='replace') if log_file.exists() else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not mounted within {MOUNT_TIMEOUT} s")
        time.sleep(0.05)
    os.listdir(path)


MountFactory = Callable[..., Mount]


@pytest.fixture
def mount(tmp_path: Path, emulator: Emulator, fuse_available: None) -> Iterator[MountFactory]:
    """``mount(providers=("sigmic",), listing_ttl=60, ids=None, env=None, args=(), timeout=None)``.

    Mounts of one test share a cache dir (``tmp_path/cache``), like a remount would.
    """
    started: list[Mount] = []

    def make(providers: tuple[str, ...] = ("sigmic",), *, listing_ttl: float = 60,
             ids: dict[str, list[str]] | None = None, env: dict[str, str] | None = None,
             args: tuple[str, ...] = (), extra_config: str = "", timeout: float | None = None,
             provider_extra: dict[str, str] | None = None, secrets: bool = True) -> Mount:
        n = len(started)
        path = tmp_path / f"mnt{n}"
        path.mkdir()
        config_file = tmp_path / f"config{n}.toml"
        config_file.write_text(config_text(emulator, providers, listing_ttl=listing_ttl,
                                           cache_dir=tmp_path / "cache", ids=ids, extra=extra_config,
                                           timeout=timeout, provider_extra=provider_extra, secrets=secrets))
        log_file = tmp_path / f"daemon{n}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "artifactfs", "mount", str(path), "-c", str(config_file), "-f",
             "--log-file", str(log_file), "--log-level", "debug", *args],
            env=env or token_environ(emulator), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"daemon{n}.stderr", "wb"))
        m = Mount(path, proc, log_file, config_file)
        started.append(m)
        wait_for_mount(path, proc, log_file)
        return m

    yield make
    for m in started:
        m.stop()
    for m in started:
        assert str(m.path) not in fuse_mounts(), f"{m.path} is still mounted"
        assert m.proc.poll() is not None, "daemon still running"
        log_text = m.log_text()
        for secret in secrets_of(emulator):
            assert secret not in log_text, "a secret reached the daemon log"
        unexpected = m.unexpected_log()
        assert not unexpected, "unexpected lines in the daemon log:\n" + "\n".join(unexpected)


def run(*args: str | Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a real tool; text output; fail with its stderr when ``check``."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def cache_settled(directory: Path, done: Callable[[CacheStats], bool], timeout: float = 10.0) -> CacheStats:
    """The cache's stats once ``done`` holds (the daemon writes behind reads), or as they are
    when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        stats = blockcache.read_stats(directory)
        if done(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)
