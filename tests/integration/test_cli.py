"""The command line as a user meets it: one-line errors, background mounts, unmount, demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from artifactfs.emulator import Emulator
from tests.conftest import config_text, fuse_mounts, run, stop_daemon, token_environ, wait_for_mount

ARTIFACTFS = [sys.executable, "-m", "artifactfs"]


def artifactfs(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ARTIFACTFS, *map(str, args)], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


BAD_CONFIGS = [
    ('[mount]\nlisting_tll = 5\n', "mount.listing_tll"),
    ('[mount]\nlisting_ttl = "soon"\n', "mount.listing_ttl"),
    ('[providers.sigmic]\ntoken_env = "ARTIFACTFS_TEST_UNSET"\ntasks = ["t"]\n', "ARTIFACTFS_TEST_UNSET"),
    ('[providers.sigmic]\ntoken_env = "X"\ntasks = "t"\n', "providers.sigmic.tasks"),
    ('[providers.work]\ntoken_env = "X"\n', "providers.work"),
    ('[providers.sigmic\n', "config.toml"),
]


@pytest.mark.parametrize("text,needle", BAD_CONFIGS)
def test_bad_config_is_one_line_and_non_zero(tmp_path: Path, text: str, needle: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    (tmp_path / "mnt").mkdir()
    env = dict(os.environ, X="token")
    env.pop("ARTIFACTFS_TEST_UNSET", None)
    assert_one_line_error(artifactfs("mount", tmp_path / "mnt", "-c", config, env=env), needle)
    assert str(tmp_path / "mnt") not in fuse_mounts()


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "sigmic.token"
    token.write_text("secret-value-123\n")
    token.chmod(0o644)
    config = tmp_path / "config.toml"
    config.write_text(f'[providers.sigmic]\ntoken_file = "{token}"\ntasks = ["t"]\n')
    (tmp_path / "mnt").mkdir()
    result = artifactfs("mount", tmp_path / "mnt", "-c", config)
    assert_one_line_error(result, "chmod 600")
    assert "secret-value-123" not in result.stderr


def test_bad_flags_and_missing_things_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(artifactfs("mount"), "mountpoint")
    assert_one_line_error(artifactfs("mount", tmp_path, "--listing-ttl", "abc"), "--listing-ttl")
    assert_one_line_error(artifactfs("mount", tmp_path, "-c", tmp_path / "nope.toml"), "nope.toml")
    assert_one_line_error(artifactfs("frobnicate"), "frobnicate")
    assert_one_line_error(artifactfs("unmount", tmp_path), "not an artifactfs mount")


def test_mount_point_problems_are_one_line(tmp_path: Path, emulator: Emulator, fuse_available: None) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(emulator, ("sigmic",), listing_ttl=60, cache_dir=tmp_path / "cache"))
    env = token_environ(emulator)
    assert_one_line_error(artifactfs("mount", tmp_path / "missing", "-c", config, env=env), "mkdir -p")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(artifactfs("mount", tmp_path / "file", "-c", config, env=env), "not a directory")


def test_background_mount_returns_when_live_and_unmount_stops_it(
        tmp_path: Path, emulator: Emulator, fuse_available: None) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(emulator, ("sigmic",), listing_ttl=60, cache_dir=tmp_path / "cache"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    try:
        result = artifactfs("mount", mnt, "-c", config, "--log-file", log, env=token_environ(emulator))
        assert result.returncode == 0, result.stderr
        assert str(mnt) in fuse_mounts()
        assert "downloads" in os.listdir(mnt / "sigmic" / "task_123")
        daemon = daemon_pid(mnt)
        assert daemon is not None
        again = artifactfs("mount", mnt, "-c", config, env=token_environ(emulator))
        assert_one_line_error(again, "already mounted")
        assert artifactfs("unmount", mnt).returncode == 0
        assert str(mnt) not in fuse_mounts()
        assert wait_exit(daemon, 15), "the daemon did not exit after unmount"
    finally:
        if str(mnt) in fuse_mounts():
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
        pid = daemon_pid(mnt)
        if pid:
            os.kill(pid, signal.SIGKILL)


def daemon_pid(mountpoint: Path) -> int | None:
    """The PID of the daemon serving ``mountpoint``, from /proc (to stop exactly that one)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"artifactfs" in argv and b"mount" in argv and str(mountpoint).encode() in argv:
            return int(entry.name)
    return None


def wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def test_sigterm_unmounts_cleanly(tmp_path: Path, emulator: Emulator, fuse_available: None) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(emulator, ("sigmic",), listing_ttl=60, cache_dir=tmp_path / "cache"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([*ARTIFACTFS, "mount", str(mnt), "-c", str(config), "-f", "--log-file", str(log)],
                            env=token_environ(emulator), stdin=subprocess.DEVNULL)
    try:
        wait_for_mount(mnt, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert str(mnt) not in fuse_mounts()
    finally:
        stop_daemon(mnt, proc)


def test_demo_mounts_the_emulator_and_ctrl_c_leaves_nothing(tmp_path: Path, fuse_available: None) -> None:
    mnt = tmp_path / "demo"
    proc = subprocess.Popen([*ARTIFACTFS, "demo", str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while str(mnt) not in fuse_mounts():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "demo did not mount"
            time.sleep(0.05)
        assert sorted(os.listdir(mnt)) == ["gumloop", "plangrep", "sigmic", "vm0"]
        assert run("head", "-c", "10", mnt / "sigmic" / "task_123" / "downloads" / "output.csv").stdout
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Try" in out and str(mnt) in out
        assert str(mnt) not in fuse_mounts()
    finally:
        stop_daemon(mnt, proc)
