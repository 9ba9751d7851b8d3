"""The origin every system reads from: the emulator, in its own process, holding the dataset.

``python -m bench.origin --dataset JSON --ready-file FILE`` serves the dataset as Sigmic task
``bench`` (artifactfs and ``curl`` with the token read it through the download endpoint) and,
through the same server code, as the plain directory tree ``/static/bench/`` (rclone's http
backend, httpdirfs and ``curl`` read that). ``OriginProcess`` starts it and reads its request log.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifactfs.emulator import Emulator
from artifactfs.emulator.__main__ import serve

from .dataset import TASK, Dataset
from .proc import BenchError, stop_process

READY_TIMEOUT = 120.0
CONTROL_PREFIX = "/_emulator/"


def build(dataset: Dataset) -> Emulator:
    """An emulator (not started) whose only data is the dataset, as Sigmic task ``bench``."""
    emulator = Emulator(seed_sample_data=False)
    for path, blob in dataset.files():
        emulator.put_sigmic_file(TASK, path, blob, modified_at="2026-05-01T00:00:00Z")
    return emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.origin", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="Dataset as JSON")
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args(argv)
    return serve(build(Dataset.from_json(args.dataset)), args.ready_file)


@dataclass(frozen=True)
class Traffic:
    """What the origin served: request count and body bytes."""

    requests: int
    bytes: int


class OriginProcess:
    """The origin subprocess: URLs of each file, and its request log."""

    def __init__(self, dataset: Dataset, workdir: Path, log: Path) -> None:
        self.dataset = dataset
        self.ready_file = workdir / "origin.json"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> OriginProcess:
        """Start the process (its stderr, e.g. tracebacks of clients hanging up, goes to ``log``)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.origin", "--dataset", self.dataset.to_json(),
                 "--ready-file", str(self.ready_file)],
                cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the origin did not start (exit status {self.proc.poll()})")
            time.sleep(0.05)
        self.info = json.loads(self.ready_file.read_text())
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    @property
    def token(self) -> str:
        return str(self.info["tokens"]["sigmic"])

    @property
    def sigmic_base(self) -> str:
        return str(self.info["base_urls"]["sigmic"])

    @property
    def static_root(self) -> str:
        """URL of the dataset root as a directory tree (ends with ``/``)."""
        return f"{self.info['api_url']}/static/{TASK}/"

    def static_url(self, path: str) -> str:
        return self.static_root + urllib.parse.quote(path)

    def sigmic_url(self, path: str) -> str:
        query = urllib.parse.urlencode({"path": path})
        return f"{self.sigmic_base}/api/v1/tasks/{TASK}/artifacts/download?{query}"

    def sigmic_listing_url(self) -> str:
        return f"{self.sigmic_base}/api/v1/tasks/{TASK}/artifacts"

    def _control(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.info['api_url']}{CONTROL_PREFIX}{path}", method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def clear(self) -> None:
        self._control("POST", "clear_requests")

    def requests(self) -> list[dict[str, Any]]:
        """The request log since ``clear()``."""
        return list(self._control("GET", "requests"))


def traffic(entries: list[dict[str, Any]], path: str | None = None) -> Traffic:
    """Requests and body bytes: all but the bench's own control calls, or those for one dataset file."""
    entries = [e for e in entries if not e["path"].startswith(CONTROL_PREFIX)]
    if path is not None:
        entries = [e for e in entries if _names(e, path)]
    return Traffic(len(entries), sum(int(e["bytes_sent"]) for e in entries))


def _names(entry: dict[str, Any], path: str) -> bool:
    """Whether a logged request is for ``path``: the static URL's path, or Sigmic's ``?path=``."""
    url_path = urllib.parse.unquote(entry["path"])
    query = urllib.parse.parse_qs(entry["query"]).get("path", [""])[0]
    return url_path.endswith(f"/{TASK}/{path}") or (url_path.endswith("/artifacts/download") and query == path)


if __name__ == "__main__":
    sys.exit(main())
