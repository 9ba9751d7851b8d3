"""The Gumloop API artifactfs lists and resolves through: the emulator, in its own process.

``python -m bench.origin --dataset JSON --bytes-url URL --ready-file FILE`` serves each part
of the dataset as a Gumloop agent (``benchbig``, ``benchsmall``, ``benchmib``). Where the
emulator's ``put_gumloop_artifact`` takes ``external_url``, every signed download URL points at
the same file on nginx (``URL/<part>/<name>`` plus a GCS-style query nginx ignores), so
artifactfs reads the very bytes the other systems read. An older emulator serves the bytes
from its own storage origin instead (``bytes_on_nginx()`` says which, for the report).
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from artifactfs.emulator import Emulator
from artifactfs.emulator.__main__ import serve

from .dataset import Dataset, agent
from .proc import BenchError, stop_process
from .traffic import Hit, from_emulator

READY_TIMEOUT = 120.0
CONTROL = "/_emulator/"
CREATED_AT = "2026-05-01T00:00:00Z"


def bytes_on_nginx() -> bool:
    """Whether this emulator can point Gumloop downloads at another origin (``external_url``)."""
    return "external_url" in inspect.signature(Emulator(seed_sample_data=False).put_gumloop_artifact).parameters


def build(dataset: Dataset, bytes_url: str) -> Emulator:
    """An emulator (not started) whose only data is the dataset, one agent per part."""
    emulator = Emulator(seed_sample_data=False)
    external = bytes_on_nginx()
    for item, blob in dataset.files():
        extra = {"external_url": bytes_url + item.path} if external else {}
        emulator.put_gumloop_artifact(agent(item.part), item.name, blob, artifact_id=item.artifact_id,
                                      created_at=CREATED_AT, **extra)
    return emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.origin", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="Dataset as JSON")
    parser.add_argument("--bytes-url", required=True, help="nginx's root URL (ends with /)")
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args(argv)
    return serve(build(Dataset.from_json(args.dataset), args.bytes_url), args.ready_file)


class ApiProcess:
    """The emulator subprocess: where its Gumloop API is, its credentials, and its request log."""

    def __init__(self, dataset: Dataset, bytes_url: str, workdir: Path, log: Path) -> None:
        self.command = [sys.executable, "-m", "bench.origin", "--dataset", dataset.to_json(),
                        "--bytes-url", bytes_url, "--ready-file", str(workdir / "origin.json")]
        self.ready_file = workdir / "origin.json"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> ApiProcess:
        """Start the process (its stderr, e.g. tracebacks of clients hanging up, goes to ``log``)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=Path(__file__).resolve().parent.parent,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the emulator did not start (exit status {self.proc.poll()}; see {self.log})")
            time.sleep(0.05)
        self.info = json.loads(self.ready_file.read_text())
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    @property
    def base_url(self) -> str:
        """The Gumloop ``base_url`` (ends with ``/api/v1``)."""
        return str(self.info["base_urls"]["gumloop"])

    @property
    def token(self) -> str:
        return str(self.info["tokens"]["gumloop"])

    @property
    def user_id(self) -> str:
        return str(self.info["gumloop_user_id"])

    def _control(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.info['api_url']}{CONTROL}{path}", method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def clear(self) -> None:
        self._control("POST", "clear_requests")

    def calls(self) -> tuple[int, list[Hit]]:
        """Since ``clear()``: the number of API calls, and the storage origin's requests (bytes)."""
        entries = [e for e in self._control("GET", "requests") if not e["path"].startswith(CONTROL)]
        return (sum(1 for e in entries if e.get("origin") != "storage"),
                [from_emulator(e) for e in entries if e.get("origin") == "storage"])


if __name__ == "__main__":
    sys.exit(main())
