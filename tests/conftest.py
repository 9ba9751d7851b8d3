"""Fixtures shared by every layer of tests: the emulator and real mounts of it.

A mount is a subprocess running ``artifactfs mount -f`` against the in-process emulator.
Teardown unmounts (``fusermount3 -u -z``) and stops the daemon by PID, then fails the test
if the daemon logged an unexpected error or a traceback, or if a mount is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from artifactfs.emulator import Emulator

IN_CI = os.environ.get("CI", "").lower() == "true"
MOUNT_TIMEOUT = 20.0
TOKEN_ENV = {"gumloop": "TEST_GUMLOOP_TOKEN", "vm0": "TEST_VM0_TOKEN",
             "sigmic": "TEST_SIGMIC_TOKEN", "plangrep": "TEST_PLANGREP_TOKEN"}
DEFAULT_IDS = {"gumloop": ("agents", ["abc123DEFghiJKL"]), "sigmic": ("tasks", ["task_123"]),
               "plangrep": ("jobs", ["job_01abc123"]), "vm0": (None, [])}


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
        SECRETS.update((*emu.tokens.values(), emu.gumloop_user_id))
        STORAGE_REQUESTS.extend(emu.requests(origin="storage"))


def fuse_mounts() -> list[str]:
    with open("/proc/mounts", encoding="utf-8") as mounts:
        return [line.split()[1] for line in mounts if line.split()[2].startswith("fuse")]


def config_text(emu: Emulator, providers: tuple[str, ...], *, listing_ttl: float, cache_dir: Path,
                ids: dict[str, list[str]] | None = None, extra: str = "", timeout: float | None = None) -> str:
    lines = ["[mount]", f"listing_ttl = {listing_ttl}", *([f"timeout = {timeout}"] if timeout else []),
             "", "[cache]", f'dir = "{cache_dir}"', ""]
    for kind in providers:
        key, default_ids = DEFAULT_IDS[kind]
        lines += [f"[providers.{kind}]", f'base_url = "{emu.base_urls()[kind]}"',
                  f'token_env = "{TOKEN_ENV[kind]}"']
        if kind == "gumloop":
            lines.append('user_id_env = "TEST_GUMLOOP_USER"')
        if key:
            chosen = (ids or {}).get(kind, default_ids)
            lines.append(f"{key} = [{', '.join(repr(i).replace(chr(39), chr(34)) for i in chosen)}]")
        lines.append("")
    return "\n".join(lines) + extra


def token_environ(emu: Emulator) -> dict[str, str]:
    env = dict(os.environ)
    env.update({TOKEN_ENV[kind]: token for kind, token in emu.tokens.items()})
    env["TEST_GUMLOOP_USER"] = emu.gumloop_user_id
    return env


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen
    log_file: Path
    config_file: Path
    expected_log: list[str] = field(default_factory=list)  # ERROR lines containing these are fine

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if str(self.path) in fuse_mounts():
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stop_daemon(mnt: Path, proc: subprocess.Popen) -> None:
    """Teardown of a test's own daemon: clear its mount, then end it by PID."""
    if str(mnt) in fuse_mounts():
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


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
             args: tuple[str, ...] = (), extra_config: str = "", timeout: float | None = None) -> Mount:
        n = len(started)
        path = tmp_path / f"mnt{n}"
        path.mkdir()
        config_file = tmp_path / f"config{n}.toml"
        config_file.write_text(config_text(emulator, providers, listing_ttl=listing_ttl,
                                           cache_dir=tmp_path / "cache", ids=ids, extra=extra_config,
                                           timeout=timeout))
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
        for secret in (*emulator.tokens.values(), emulator.gumloop_user_id):
            assert secret not in log_text, "a secret reached the daemon log"
        unexpected = [line for line in log_text.splitlines()
                      if (" ERROR " in line or "Traceback" in line)
                      and not any(ok in line for ok in m.expected_log)]
        assert not unexpected, "unexpected errors in the daemon log:\n" + "\n".join(unexpected)


def run(*args: str | Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a real tool; text output; fail with its stderr when ``check``."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}): {result.stderr.strip()}")
    return result
