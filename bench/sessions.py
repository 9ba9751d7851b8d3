"""What a system gives one case: a fresh ``Session`` that runs it on a directory tree, with curl,
on the Gumloop API, or in an fsspec worker process, and can be aborted when the case hangs."""

from __future__ import annotations

import json
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from .cases import Case, Endpoint, Figures, Settings, Tree
from .dataset import Dataset
from .fsspecrun import Outcome
from .gumloopapi import GumloopApi
from .measure import Deadline
from .proc import unmount

REPO = Path(__file__).resolve().parent.parent


class Session(ABC):
    """One fresh setup for one case."""

    peak_rss: int | None = None

    @abstractmethod
    def run(self, case: Case, ds: Dataset, settings: Settings, deadline: Deadline) -> Figures | None:
        """The case's figures, or None when it has no meaning here."""

    def abort(self) -> None:
        """Make a hung case return."""

    def exited(self, wait: float = 2.0) -> int | None:
        """The daemon's exit status if it is gone (crashed) within ``wait`` seconds, else None."""
        return None


@dataclass
class TreeSession(Session):
    """A directory tree: local disk, or a mount served by ``proc``."""

    tree: Tree
    proc: subprocess.Popen[bytes] | None = None
    mountpoint: Path | None = None

    def run(self, case: Case, ds: Dataset, settings: Settings, deadline: Deadline) -> Figures | None:
        return case.on_files(self.tree, ds, settings, deadline)

    def exited(self, wait: float = 2.0) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return None

    def abort(self) -> None:
        """Kill the daemon (pending FUSE reads then fail) and unmount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.mountpoint is not None:
            unmount(self.mountpoint)


@dataclass
class CurlSession(Session):
    endpoint: Endpoint

    def run(self, case: Case, ds: Dataset, settings: Settings, deadline: Deadline) -> Figures | None:
        return case.on_curl(self.endpoint, ds, settings, deadline)


@dataclass
class ApiSession(Session):
    api: GumloopApi

    def run(self, case: Case, ds: Dataset, settings: Settings, deadline: Deadline) -> Figures | None:
        return case.on_api(self.api, ds, settings, deadline)


@dataclass
class WorkerSession(Session):
    """A ``python -m bench.fsspecrun`` process that runs the case and prints its outcome."""

    command: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def run(self, case: Case, ds: Dataset, settings: Settings, deadline: Deadline) -> Figures | None:
        args = [*self.command, "--case", case.key, "--dataset", ds.to_json(),
                "--settings", json.dumps(settings.__dict__), "--seconds", str(deadline.remaining())]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                         env=self.env, cwd=REPO)
        out, _ = self.proc.communicate()
        outcome = Outcome.parse(out.decode(errors="replace"), self.proc.returncode)
        self.peak_rss = outcome.rss
        return outcome.figures()

    def abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
