"""``python -m bench.fsspecrun``: one case through an fsspec file system, in a process of its own.

    python -m bench.fsspecrun --protocol artifactfs|http --options JSON --prefixes JSON \\
        --case KEY --dataset JSON --settings JSON --seconds S

A process per case, like a fresh mount: its in-process caches start empty, its CPU time and
peak RSS are its own, and a hung case is ended by killing it. The last stdout line is the
``Outcome`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from .cases import CASES_BY_KEY, Figures, FsView, Settings
from .dataset import Dataset
from .measure import CaseError, CaseStopped, CaseTimeout, Deadline
from .proc import peak_rss


def fsspec_problem(protocol: str) -> str | None:
    """Why ``fsspec.filesystem(protocol)`` cannot work here, or None."""
    try:
        _fsspec().get_filesystem_class(protocol)
    except ImportError as exc:
        return f"{exc.name or exc} is not installed"
    except ValueError:
        return f"fsspec has no protocol {protocol}"
    return None


def _fsspec() -> Any:
    """fsspec, with the bare floor's protocol registered."""
    import fsspec

    from . import barefsspec  # noqa: F401 - registers it

    return fsspec


@dataclass
class Outcome:
    """What the worker reports: figures, or how it stopped (with what it had), and its peak RSS."""

    figures_done: Figures = field(default_factory=dict)
    stopped: str = ""  # "", "timeout", "error"
    message: str = ""
    partial: Figures = field(default_factory=dict)
    rss: int | None = None

    @classmethod
    def parse(cls, stdout: str, status: int | None) -> Outcome:
        lines = stdout.strip().splitlines()
        try:
            return cls(**json.loads(lines[-1]))
        except (IndexError, ValueError, TypeError):
            return cls(stopped="error", message=f"the fsspec process exited with status {status} and no outcome")

    def figures(self) -> Figures:
        """The figures, or the case's stop raised again."""
        if self.stopped == "timeout":
            raise CaseTimeout(self.partial)
        if self.stopped:
            raise CaseError(self.message, self.figures_done)
        return self.figures_done


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def run(args: argparse.Namespace) -> Outcome:
    prefixes: dict[str, str] = json.loads(args.prefixes)
    fs = _fsspec().filesystem(args.protocol, skip_instance_cache=True, **json.loads(args.options))
    view = FsView(fs, lambda item: prefixes[item.part] + item.name, own_cpu)
    settings = Settings(**json.loads(args.settings))
    try:
        figures = CASES_BY_KEY[args.case].on_fsspec(view, Dataset.from_json(args.dataset), settings,
                                                     Deadline(args.seconds))
        return Outcome(figures_done=figures or {})
    except CaseTimeout as exc:
        return Outcome(exc.done, "timeout", partial=exc.partial)
    except CaseStopped as exc:
        return Outcome(exc.done, "error", str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure of the file system is the case's error
        return Outcome(stopped="error", message=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fsspecrun", description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", required=True)
    parser.add_argument("--options", default="{}", help="keyword arguments of fsspec.filesystem, as JSON")
    parser.add_argument("--prefixes", required=True, help="part -> path or URL prefix of its files, as JSON")
    parser.add_argument("--case", required=True, choices=sorted(CASES_BY_KEY))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    outcome = run(parser.parse_args(argv))
    # VmHWM, not ``ru_maxrss``: Linux carries the bench's own peak into a child across fork and exec
    outcome.rss = peak_rss(os.getpid())
    print(json.dumps(asdict(outcome)), flush=True)
    os._exit(0)  # a file system's leftover threads must not keep the process (and the case) alive


if __name__ == "__main__":
    sys.exit(main())
