"""The tools compared with (installed with apt when missing) and a description of the machine."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

APT_PACKAGES = {"nginx": "nginx", "rclone": "rclone", "httpdirfs": "httpdirfs", "curl": "curl"}
APT_TIMEOUT = 900
VERSION_ARGS = {"nginx": ["-v"], "rclone": ["version"], "httpdirfs": ["--version"], "curl": ["--version"]}
REPO = Path(__file__).resolve().parent.parent
SBIN = "/usr/sbin:/sbin"  # where nginx lives, not on every user's PATH


def tool_path(tool: str) -> str | None:
    """The executable of ``tool``, also looked for in the sbin directories."""
    return shutil.which(tool, path=f"{os.environ.get('PATH', os.defpath)}:{SBIN}")


def ensure_installed(tools: tuple[str, ...] = tuple(APT_PACKAGES)) -> list[str]:
    """Install the missing tools with apt; return a note for each one still missing."""
    missing = [APT_PACKAGES[t] for t in tools if tool_path(t) is None]
    if missing and not _apt_install(missing):
        _apt("update", "-qq")
        _apt_install(missing)
    return [f"{t}: not available (apt-get install {APT_PACKAGES[t]} failed)" for t in tools if tool_path(t) is None]


def _apt_install(packages: list[str]) -> bool:
    print(f"bench: installing {' '.join(packages)} with apt-get", flush=True)
    return _apt("install", "-y", "-qq", *packages)


def _apt(*args: str) -> bool:
    sudo = [] if os.geteuid() == 0 else (["sudo"] if shutil.which("sudo") else None)
    if sudo is None or shutil.which("apt-get") is None:
        return False
    command = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", *args]
    try:
        return subprocess.run(command, stdout=subprocess.DEVNULL, timeout=APT_TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def version(tool: str) -> str:
    """First line of the tool's version output, or "not installed"."""
    executable = tool_path(tool)
    if executable is None:
        return f"{tool} not installed"
    try:
        out = subprocess.run([executable, *VERSION_ARGS[tool]], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return f"{tool} not installed"
    lines = (out.stdout + "\n" + out.stderr).strip().splitlines()
    named = [line for line in lines if tool in line.lower()]
    return (named or lines or [f"{tool} (unknown version)"])[0].strip()


# What was found out about a tool version while building this benchmark (shown under the table).
KNOWN_QUIRKS = {
    "HTTPDirFS version 1.2.5": [
        "httpdirfs 1.2.5 (Debian 12) spends ~100 ms on every HTTP request: its transfer loop calls "
        "`curl_multi_poll(…, 100 ms)` even once the transfer is done (later versions only poll while "
        "transfers run). Without `--cache` every 128 KiB kernel read is one such request, so it reads "
        "at ~1.3 MB/s and times out on the big cases.",
        "httpdirfs 1.2.5 refuses a server whose 206 answers lack `Accept-Ranges` (nginx sends it with "
        "200s only), so it runs with `--no-range-check`.",
    ],
}


def quirk_notes() -> list[str]:
    """Known quirks of the installed tool versions."""
    found = {version(tool) for tool in VERSION_ARGS}
    return [note for line, notes in KNOWN_QUIRKS.items() if line in found for note in notes]


def artifactfs_version() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "artifactfs (unknown commit)"
    return f"artifactfs {out.stdout.strip() or '(unknown commit)'}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return "? GiB"
    return f"{kib / (1 << 20):.0f} GiB"


def machine_lines() -> list[str]:
    """Markdown lines describing this machine, the date and the tool versions."""
    return [
        f"- Machine: {os.cpu_count()} CPUs ({_cpu_model()}), {_memory()} RAM, "
        f"kernel {platform.release()}, Python {platform.python_version()}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Versions: {artifactfs_version()}; {version('nginx')}; {version('rclone')}; {version('httpdirfs')}; "
        f"{' '.join(version('curl').split()[:2])}",
    ]
