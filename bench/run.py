"""``make bench``: artifactfs against curl, local disk, rclone mount and httpdirfs, on one origin.

    .venv/bin/python -m bench.run [--quick] [--systems a,b] [--cases seq,head] [--timeout S]

Sizes default to full (1 GiB, 10,000 small files, 200 × 1 MiB); ``--quick`` (or BENCH_QUICK=1)
uses 256 MiB / 2,000 / 50. Every flag also reads a BENCH_* variable (see ``--help``).
Writes bench/results.md and prints it. Mounts and processes are always cleaned up,
also on Ctrl-C; a case that runs out of time is recorded as "timeout" and the run goes on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from .cases import CASES, Case, Figures, Settings
from .dataset import MIB, Dataset, write_tree
from .measure import CaseError, CaseStopped, CaseTimeout, Cell, Deadline
from .origin import OriginProcess, Traffic, traffic
from .proc import BenchError, unmount
from .report import ARTIFACTFS, fmt, metrics, render
from .systems import Env, System, all_systems
from .tools import ensure_installed, machine_lines, quirk_notes

HERE = Path(__file__).resolve().parent
GRACE = 30.0  # seconds past a case's deadline before a hung case is aborted
Outcome = Figures | BaseException


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BENCH_{name}", default)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", default=_env("QUICK", "") not in ("", "0"),
                   help="small sizes for a smoke run (BENCH_QUICK=1)")
    p.add_argument("--big-mib", type=int, default=int(_env("BIG_MIB", "0")) or None, help="size of big.bin (BENCH_BIG_MIB)")
    p.add_argument("--small-count", type=int, default=int(_env("SMALL_COUNT", "0")) or None, help="BENCH_SMALL_COUNT")
    p.add_argument("--mib-count", type=int, default=int(_env("MIB_COUNT", "0")) or None, help="BENCH_MIB_COUNT")
    p.add_argument("--random-reads", type=int, default=int(_env("RANDOM_READS", "2000")))
    p.add_argument("--readers", type=int, default=int(_env("READERS", "8")))
    p.add_argument("--timeout", type=float, default=float(_env("TIMEOUT", "120")),
                   help="seconds per case before it is recorded as timeout (BENCH_TIMEOUT)")
    p.add_argument("--systems", default=_env("SYSTEMS", ""), help="comma-separated column names/slugs (default all)")
    p.add_argument("--cases", default=_env("CASES", ""), help="comma-separated: " + ",".join(c.key for c in CASES))
    p.add_argument("--output", type=Path, default=Path(_env("OUTPUT", str(HERE / "results.md"))))
    p.add_argument("--workdir", type=Path, default=None, help="parent of the scratch directory (default $TMPDIR)")
    return p.parse_args(argv)


def dataset_from(args: argparse.Namespace) -> Dataset:
    base = Dataset.quick() if args.quick else Dataset()
    return Dataset(
        big_size=(args.big_mib * MIB) if args.big_mib else base.big_size,
        small_count=args.small_count or base.small_count,
        small_size=base.small_size,
        mib_count=args.mib_count or base.mib_count,
        mib_size=base.mib_size,
    )


def _wanted(text: str) -> set[str]:
    return {w.strip() for w in text.split(",") if w.strip()}


def select_systems(systems: list[System], text: str) -> list[System]:
    wanted = _wanted(text)
    return [s for s in systems if not wanted or {s.name, s.slug} & wanted]


def select_cases(text: str) -> list[Case]:
    wanted = _wanted(text)
    return [c for c in CASES if not wanted or c.key in wanted]


def bounded(fn: Callable[[], Figures], deadline: Deadline, abort: Callable[[], None]) -> Outcome:
    """Run ``fn`` in a thread; past the deadline (plus grace) call ``abort`` and report a timeout."""
    box: dict[str, Outcome] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["out"] = exc

    thread = threading.Thread(target=target, name="bench-case", daemon=True)
    thread.start()
    thread.join(deadline.remaining() + GRACE)
    if thread.is_alive():
        abort()
        thread.join(GRACE)
        return CaseTimeout()
    return box["out"]


class Runner:
    """Runs every case on every system and collects cells, origin traffic and peak RSS."""

    def __init__(self, env: Env, settings: Settings, timeout: float, cases: list[Case]) -> None:
        self.env = env
        self.settings = settings
        self.timeout = timeout
        self.cases = cases
        self.results: dict[str, dict[str, Cell]] = {}
        self.traffic: dict[tuple[str, str], Traffic] = {}
        self.rss: dict[str, int] = {}

    def run_system(self, system: System) -> None:
        problem = system.problem()
        self.results.setdefault(system.name, {})
        if problem:
            print(f"[{system.name}] {problem}", flush=True)
            for metric in [m for case in self.cases for m in case.metrics] + ["rss"]:
                self.results[system.name][metric] = Cell(note=problem)
            return
        for case in self.cases:
            self.run_case(system, case)

    def run_case(self, system: System, case: Case) -> None:
        """One fresh session, the case bounded in time, then its cells and traffic."""
        started = time.monotonic()
        self.env.origin.clear()
        deadline = Deadline(self.timeout)
        try:
            with system.session(case) as session:
                outcome = bounded(lambda: session.run(case, self.env.dataset, self.settings, deadline),
                                  deadline, session.abort)
                outcome = _as_stopped(outcome)
                if isinstance(outcome, CaseError) and (status := session.exited()) is not None:
                    outcome = CaseError(f"{outcome} (the daemon died: exit status {status})", outcome.done)
            if session.peak_rss:
                self.rss[system.name] = max(self.rss.get(system.name, 0), session.peak_rss)
        except (BenchError, OSError) as exc:  # the mount did not start
            outcome = CaseError(str(exc))
        self._record(system, case, outcome)
        print(f"[{system.name}] {case.key}: {self._summary(system, case)} ({time.monotonic() - started:.1f} s)",
              flush=True)

    def _record(self, system: System, case: Case, outcome: Figures | CaseStopped) -> None:
        entries = self.env.origin.requests()
        self.traffic[(system.name, case.key)] = traffic(entries)
        cells = self.results[system.name]
        done = outcome.done if isinstance(outcome, CaseStopped) else outcome
        cells.update({key: Cell(value) for key, value in done.items()})
        if isinstance(outcome, CaseStopped):
            rest = [m for m in case.metrics if m not in done]
            for i, metric in enumerate(rest):
                cells[metric] = _failure(outcome, metric, first=i == 0)
        elif case.origin_metric and case.origin_file:
            cells[case.origin_metric] = Cell(float(traffic(entries, case.origin_file).bytes))

    def _summary(self, system: System, case: Case) -> str:
        cells = self.results[system.name]
        return ", ".join(f"{m} {fmt(cells[m].value, 'x') if cells[m].ok else cells[m].note}" for m in case.metrics)

    def finish_rss(self, systems: list[System]) -> None:
        for system in systems:
            if system.daemon and system.name in self.rss:
                self.results[system.name]["rss"] = Cell(float(self.rss[system.name]))
            else:
                self.results[system.name].setdefault("rss", Cell(note="n/a"))

    def retry_errors(self, system: System) -> list[str]:
        """Run again the cases that failed with an error (an engine mid-edit); names of those retried."""
        failed = [c for c in self.cases if any(self.results[system.name][m].note.startswith("error") for m in c.metrics)]
        for case in failed:
            print(f"[{system.name}] retrying {case.key}", flush=True)
            self.run_case(system, case)
        return [c.key for c in failed]


def _as_stopped(outcome: Outcome) -> Figures | CaseStopped:
    """Any exception from a case as a ``CaseStopped`` (one line of message)."""
    if not isinstance(outcome, BaseException) or isinstance(outcome, CaseStopped):
        return outcome
    text = str(outcome).strip()
    return CaseError(text.splitlines()[0][:300] if text else type(outcome).__name__)


def _failure(stopped: CaseStopped, metric: str, first: bool) -> Cell:
    """The cell of a metric the case did not measure: a timeout (with its estimate) or an error."""
    if isinstance(stopped, CaseTimeout):
        return Cell(stopped.partial.get(metric), "timeout")
    return Cell(note=f"error: {stopped}") if first else Cell(note="not run")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def sweep(workdir: Path) -> None:
    """Last resort: unmount anything still mounted under the scratch directory."""
    for mountpoint in (workdir / "mnt").glob("*"):
        unmount(mountpoint)


def header(args: argparse.Namespace, ds: Dataset, settings: Settings, tool_notes: list[str]) -> list[str]:
    return [
        *machine_lines(),
        f"- Dataset: {ds.describe()}{' (--quick)' if args.quick else ''}",
        "- Origin: the artifactfs emulator in its own process on 127.0.0.1; artifactfs and curl (sigmic API) "
        "read Sigmic's download endpoint with the token, rclone/httpdirfs/curl (static) read the same blobs "
        "through the emulator's `/static/` directory tree (same `serve_blob`).",
        f"- Every case runs on a fresh mount with an empty cache dir; timeout {args.timeout:g} s per case; "
        f"{settings.random_reads} reads at seeded offsets; MB/s = 10^6 B/s; ratios are artifactfs / other "
        "in the row's unit; the best anchor is the best of the rclone and httpdirfs columns on that row.",
        *(f"- {note}" for note in tool_notes),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (a background job)
        signal.signal(signum, _interrupt)
    ds = dataset_from(args)
    settings = Settings(random_reads=args.random_reads, readers=args.readers)
    tool_notes = ensure_installed()
    workdir = Path(tempfile.mkdtemp(prefix="artifactfs-bench-", dir=args.workdir))
    logs = Path(args.workdir or tempfile.gettempdir()) / "artifactfs-bench-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    origin = OriginProcess(ds, workdir, logs / "origin.log")
    try:
        origin.start()
        env = Env(origin, ds, workdir, logs, workdir / "local")
        print(f"bench: writing the local-disk copy ({ds.describe()}) to {env.local_tree}", flush=True)
        write_tree(ds, env.local_tree)
        systems = select_systems(all_systems(env), args.systems)
        cases = select_cases(args.cases)
        runner = Runner(env, settings, args.timeout, cases)
        for system in systems:
            runner.run_system(system)
        for system in systems:
            if system.name == ARTIFACTFS and (retried := runner.retry_errors(system)):
                env.notes.append(f"artifactfs cases {', '.join(retried)} failed once and were run again at the end")
        runner.finish_rss(systems)
        names = [s.name for s in systems]
        measured = {m for case in cases for m in case.metrics} | {"rss"}
        rows = [m for m in metrics(ds, settings.random_reads, settings.readers) if m.key in measured]
        text = render(header(args, ds, settings, tool_notes), rows,
                      runner.results, names, [s.name for s in systems if s.anchor], runner.traffic,
                      [c.key for c in cases], env.notes + quirk_notes())
    except KeyboardInterrupt:
        print(f"bench: interrupted; cleaning up (daemon logs are in {logs})", file=sys.stderr)
        return 130
    finally:
        origin.stop()
        sweep(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    args.output.write_text(text)
    print(text)
    print(f"bench: wrote {args.output}; daemon logs are in {logs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
