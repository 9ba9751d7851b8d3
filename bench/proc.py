"""Processes and mounts: start, wait, stop by PID, unmount, peak RSS. Nothing is ever killed by name."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

MOUNT_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class BenchError(Exception):
    """A step that could not run; its message goes into the table."""


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a FUSE mount point right now."""
    target = os.path.realpath(path)
    with open("/proc/mounts", encoding="utf-8") as mounts:
        return any(
            len(f) > 2 and _unescape(f[1]) == target and f[2].startswith("fuse")
            for f in (line.split() for line in mounts)
        )


def wait_mounted(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = MOUNT_TIMEOUT) -> None:
    """Return once ``path`` is mounted; raise if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if proc.poll() is not None:
            raise BenchError(f"mount exited with status {proc.returncode}: {last_line(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"not mounted within {timeout:g} s")
        time.sleep(0.05)


def last_line(log: Path) -> str:
    """The last non-empty line of a log file (for one-line error messages)."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(empty log)"


def unmount(path: Path) -> None:
    """Lazy unmount, if mounted (works on a dead daemon's mount too)."""
    if is_mounted(path):
        result = subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30)
        if result.returncode != 0 and is_mounted(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += tree(int(child))
    return found


def peak_rss(pid: int) -> int:
    """Sum of VmHWM (peak resident set) over ``pid`` and its descendants, in bytes."""
    total = 0
    for member in tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants, and of the children they reaped."""
    ticks = 0
    for member in tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime (fields 14-17)
    return ticks / os.sysconf("SC_CLK_TCK")
