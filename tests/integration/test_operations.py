"""Operating artifactfs: systemd (sd_notify, unit files), doctor, the fstab helper, stale mounts,
the demo's tour, and logs without secrets. Every process is stopped by PID, every mount cleared."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from artifactfs.emulator import Emulator
from tests.conftest import MountFactory, config_text, fuse_mounts, run, stop_daemon, token_environ, wait_for_mount
from tests.integration.test_cli import ARTIFACTFS, artifactfs, assert_one_line_error, daemon_pid, wait_exit

ALL = ("gumloop", "vm0", "sigmic", "plangrep")
REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sys.executable).parent


def write_config(tmp_path: Path, emulator: Emulator, providers: tuple[str, ...] = ("sigmic",)) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(config_text(emulator, providers, listing_ttl=60, cache_dir=tmp_path / "cache"))
    return config


# ---- systemd -------------------------------------------------------------------------------

@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A fake systemd: an abstract datagram socket and its ``NOTIFY_SOCKET`` value."""
    name = f"artifactfs-test-{os.getpid()}-{os.urandom(4).hex()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield sock, "@" + name
    sock.close()


def receive_until(sock: socket.socket, field: str, timeout: float = 20) -> list[str]:
    """Messages received until one has a line starting with ``field``; fails after ``timeout``."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(line.startswith(field) for m in messages for line in m.split("\n")):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"no {field} within {timeout} s; got {messages}") from None
    return messages


def test_foreground_mount_speaks_sd_notify(tmp_path: Path, emulator: Emulator, fuse_available: None,
                                           notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(token_environ(emulator), NOTIFY_SOCKET=address)
    proc = subprocess.Popen([*ARTIFACTFS, "mount", str(mnt), "-c", str(write_config(tmp_path, emulator)), "-f",
                             "--log-file", str(tmp_path / "daemon.log")], env=env, stdin=subprocess.DEVNULL)
    try:
        receive_until(sock, "READY=1")
        assert str(mnt) in fuse_mounts(), "READY=1 only once the mount is live"
        assert "task_123" in os.listdir(mnt / "sigmic")
        status = receive_until(sock, "STATUS=", 5)[-1]
        assert "files cached" in status and "errors" in status
        proc.send_signal(signal.SIGTERM)
        stopping = receive_until(sock, "STOPPING=1")
        assert not any("READY=1" in m for m in stopping)
        assert proc.wait(15) == 0
        assert str(mnt) not in fuse_mounts()
    finally:
        stop_daemon(mnt, proc)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The user unit as installed for a user with ~/.local/bin/artifactfs; the system unit with
    /usr/local/bin/artifactfs replaced by this venv's script (verify checks the binary exists)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    script = SCRIPTS / "artifactfs"
    home, runtime = tmp_path / "home", tmp_path / "run"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "artifactfs").symlink_to(script)
    runtime.mkdir(mode=0o700)
    user_unit = tmp_path / "user" / "artifactfs@mnt-artifacts.service"
    system_unit = tmp_path / "system" / "artifactfs@mnt-artifacts.service"
    for unit in (user_unit, system_unit):
        unit.parent.mkdir()
    shutil.copy(REPO / "systemd" / "artifactfs@.service", user_unit)
    system_unit.write_text((REPO / "systemd" / "system" / "artifactfs@.service").read_text()
                           .replace("/usr/local/bin/artifactfs", str(script)))
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    for args in (["--user", user_unit], ["--system", system_unit]):
        result = run("systemd-analyze", "verify", *args, check=False, env=env)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), args
    for unit in (user_unit, system_unit):
        text = unit.read_text()
        assert "Type=notify" in text and "mount %f --foreground" in text and "Restart=on-failure" in text


# ---- doctor --------------------------------------------------------------------------------

def test_doctor_passes_on_the_emulator(tmp_path: Path, emulator: Emulator, fuse_available: None) -> None:
    result = artifactfs("doctor", "-c", write_config(tmp_path, emulator, ALL), env=token_environ(emulator))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("ok ") for line in lines), result.stdout
    for what in ("/dev/fuse", "fusermount3", "config", "cache dir", *ALL):
        assert any(line[6:].partition(":")[0] == what for line in lines), what
    assert sum("answers" in line for line in lines) == len(ALL)


def test_doctor_names_the_missing_token_and_checks_the_rest(tmp_path: Path, emulator: Emulator) -> None:
    env = token_environ(emulator)
    del env["TEST_VM0_TOKEN"]
    env["TEST_PLANGREP_TOKEN"] = "wrong-token"
    result = artifactfs("doctor", "-c", write_config(tmp_path, emulator, ALL), env=env)
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert any(line.startswith("FAIL  vm0:") and "TEST_VM0_TOKEN is not set" in line for line in fails), fails
    assert any(line.startswith("FAIL  plangrep:") and "refused" in line for line in fails), fails
    assert "ok    sigmic: answers" in result.stdout and "ok    gumloop: answers" in result.stdout
    for secret in (*emulator.tokens.values(), emulator.gumloop_user_id, "wrong-token"):
        assert secret not in result.stdout + result.stderr


# ---- mounts that outlive their daemon, fstab -----------------------------------------------

def test_unmount_clears_a_killed_daemons_mount(tmp_path: Path, emulator: Emulator, fuse_available: None) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    config = write_config(tmp_path, emulator)
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen([*ARTIFACTFS, "mount", str(mnt), "-c", str(config), "-f", "--log-file", str(log)],
                            env=token_environ(emulator), stdin=subprocess.DEVNULL)
    try:
        wait_for_mount(mnt, proc, log)
        proc.kill()
        proc.wait()
        assert str(mnt) in fuse_mounts(), "a killed daemon leaves its mount behind"
        again = artifactfs("mount", mnt, "-c", config, env=token_environ(emulator))
        assert_one_line_error(again, "transport endpoint is not connected", f"artifactfs unmount {mnt}")
        result = artifactfs("unmount", mnt)
        assert result.returncode == 0, result.stderr
        assert str(mnt) not in fuse_mounts()
    finally:
        stop_daemon(mnt, proc)


def test_mount_helper_mounts_from_fstab_options(tmp_path: Path, emulator: Emulator, fuse_available: None) -> None:
    """What mount(8) runs for ``artifactfs /mnt fuse.artifactfs config=...,_netdev 0 0``."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log, cache = tmp_path / "helper.log", tmp_path / "helper-cache"
    options = (f"rw,nodev,nosuid,_netdev,noauto,x-systemd.automount,config={write_config(tmp_path, emulator)},"
               f"listing_ttl=5,cache_dir={cache},log_file={log},log_level=debug")
    try:
        result = run(SCRIPTS / "mount.fuse.artifactfs", "artifactfs", mnt, "-o", options,
                     env=token_environ(emulator), stdin=subprocess.DEVNULL)
        assert result.stderr == ""
        assert str(mnt) in fuse_mounts()
        assert run("head", "-c", "10", mnt / "sigmic" / "task_123" / "downloads" / "output.csv").stdout
        assert (cache / "index.sqlite3").exists() and " DEBUG " in log.read_text()
        daemon = daemon_pid(mnt)
        assert daemon is not None
        assert artifactfs("unmount", mnt).returncode == 0
        assert wait_exit(daemon, 15), "the daemon did not exit after unmount"
    finally:
        if str(mnt) in fuse_mounts():
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        if (pid := daemon_pid(mnt)) is not None:
            os.kill(pid, signal.SIGKILL)


# ---- demo and logs -------------------------------------------------------------------------

def test_every_command_of_the_demo_tour_works(tmp_path: Path, fuse_available: None) -> None:
    mnt = tmp_path / "demo"
    proc = subprocess.Popen([*ARTIFACTFS, "demo", str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        tour: list[str] = []
        while not tour or "read_csv" not in tour[-1]:
            tour.append(proc.stdout.readline())
            assert tour[-1], "the demo ended before its tour was printed"
        commands = [line.split("  #")[0].strip() for line in tour if line.startswith("  ")]
        commands = [command for command in commands if command]
        assert commands[0] == f"cd {shlex.quote(str(mnt))}" and "fsspec" in commands[-1]
        outputs = []
        for command in commands[1:]:
            command = command.replace("/tmp/task_123", str(tmp_path / "task_123"))
            result = run("bash", "-c", command, check=False, cwd=mnt)
            assert result.returncode == 0, f"{command}: {result.stderr}"
            outputs.append(result.stdout)
        assert any("files:" in out and "hit ratio:" in out for out in outputs)
        assert "date,region,units" in outputs[-1]  # fsspec read the same file
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert str(mnt) not in fuse_mounts()
    finally:
        stop_daemon(mnt, proc)


def test_debug_log_names_provider_and_path_and_holds_no_secret(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(ALL)
    agent = m.path / "gumloop" / "abc123DEFghiJKL" / "latest"
    for path in (agent / "report.md", m.path / "vm0" / "output-results" / "current" / "README.md",
                 m.path / "sigmic" / "task_123" / "downloads" / "output.csv",
                 m.path / "plangrep" / "job_01abc123" / "results" / "job_01abc123" / "summary.md"):
        assert path.read_bytes()
    log = m.log_text()
    for provider in ALL:
        assert f" DEBUG artifactfs.http: {provider}: GET /" in log and " ms" in log, provider
    for secret in (*emulator.tokens.values(), emulator.gumloop_user_id, "Signature=", "Bearer"):
        assert secret not in log, f"{secret!r} is in the daemon log"
