"""``artifactfs demo``: the bundled emulator plus a mount of it, no account or network needed."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .config import Overrides, load_config
from .mount import MountError, run_foreground
from .providers import SPECS

EMULATOR_START_TIMEOUT = 30.0


def demo_config_text(info: dict, cache_dir: Path) -> str:
    """A config for the emulator described by ``info`` (its ready-file JSON): every provider
    type, each with what its module declares for the demo (``ProviderSpec.demo``)."""
    lines = ["[mount]", "listing_ttl = 10", "", "[cache]", f"dir = {json.dumps(str(cache_dir))}", ""]
    for kind, spec in SPECS.items():
        table = {"base_url": info["base_urls"][kind], "token": info["tokens"][kind], **spec.demo(info)}
        lines.append(f"[providers.{kind}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def tour(mountpoint: Path, cache_dir: Path, config: Path) -> str:
    """What to try: one line per idea, each with what it shows."""
    return f"""
artifactfs demo is mounted at {mountpoint}  (Ctrl-C unmounts and stops the emulator)
A local emulator serves Gumloop, vm0, Sigmic and Plangrep with sample artifacts.

Try, in another terminal:
  cd {shlex.quote(str(mountpoint))}
  ls                                                    # one directory per provider
  ls sigmic plangrep vm0                                # every task, job and artifact the tokens see
  ls -l gumloop/abc123DEFghiJKL/latest                  # an agent's current artifacts
  getfattr -d gumloop/abc123DEFghiJKL/latest/report.md  # provider metadata as xattrs
  readlink vm0/output-results/current                   # a vm0 artifact's current version
  ls -R vm0/output-results/current/                     # its archive, unpacked
  ls -R plangrep/job_01abc123                           # a finished Plangrep job: result.json and artifacts
  getfattr -n user.artifactfs.status plangrep/job_03failed   # a job's status (and error)
  head sigmic/task_123/downloads/output.csv             # fetched on first read, then cached
  cp -r sigmic/task_123 /tmp/task_123                   # any tool works: cp, grep, pandas

and what the cache holds now:
  {_command()} cache stats --cache-dir {shlex.quote(str(cache_dir))}

Python without a mount, through fsspec (same tree, same cache as this mount):
  {sys.executable} -c "import fsspec; print(fsspec.filesystem('artifactfs', config='{config}').ls('vm0/output-results/current', detail=False))"
  {sys.executable} -c "import fsspec; print(fsspec.filesystem('artifactfs', config='{config}').cat_file('sigmic/task_123/downloads/output.csv', 0, 200).decode())"
  # with pandas: pd.read_csv("artifactfs://sigmic/task_123/downloads/output.csv", storage_options={{"config": "{config}"}})
"""


def _command() -> str:
    """How to run artifactfs from another terminal: by name when that is this one, else by path."""
    script = Path(sys.argv[0]).absolute()
    on_path = shutil.which("artifactfs")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "artifactfs"
    return str(script) if script.name == "artifactfs" else f"{sys.executable} -m artifactfs"


def start_emulator(workdir: Path) -> tuple[subprocess.Popen, dict]:
    """Start ``python -m artifactfs.emulator`` and wait for its ready file."""
    ready = workdir / "emulator.json"
    proc = subprocess.Popen([sys.executable, "-m", "artifactfs.emulator", "--ready-file", str(ready)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise MountError("the demo emulator did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after a grace period: by PID, never by name."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(mountpoint: Path) -> int:
    mountpoint = mountpoint.expanduser().absolute()
    mountpoint.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="artifactfs-demo-") as tmp:
        workdir = Path(tmp)
        proc, info = start_emulator(workdir)
        try:
            config_file = workdir / "config.toml"
            config_file.write_text(demo_config_text(info, workdir / "cache"))
            os.chmod(config_file, 0o600)
            config = load_config(config_file, Overrides(), require_file=True)
            run_foreground(config, mountpoint,
                           on_ready=lambda: print(tour(mountpoint, config.cache_dir, config_file), flush=True))
        finally:
            stop_process(proc)
    return 0
