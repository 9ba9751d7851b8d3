"""Runs cases on systems, one fresh session each, bounded in time; collects every run's cells,
the origin traffic and peak RSS, and combines repeated runs into one cell (their median)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .cases import Case, Figures, Settings
from .measure import CaseError, CaseStopped, CaseTimeout, Cell, Deadline, combine
from .proc import BenchError
from .report import fmt
from .systems import Env, System
from .targets import Results
from .traffic import Traffic, total

GRACE = 30.0  # seconds past a case's deadline before a hung case is aborted
SETTLE = 0.2  # seconds for nginx to log the requests a stopped daemon just closed
Returned = Figures | BaseException | None


def bounded(fn: Callable[[], Figures | None], deadline: Deadline, abort: Callable[[], None]) -> Returned:
    """Run ``fn`` in a thread; past the deadline (plus grace) call ``abort`` and report a timeout."""
    box: dict[str, Returned] = {}

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


def as_stopped(outcome: Figures | BaseException) -> Figures | CaseStopped:
    """Any exception from a case as a ``CaseStopped`` (one line of message)."""
    if not isinstance(outcome, BaseException) or isinstance(outcome, CaseStopped):
        return outcome
    text = str(outcome).strip()
    return CaseError(text.splitlines()[0][:300] if text else type(outcome).__name__)


def failure(stopped: CaseStopped, metric: str) -> Cell:
    """The cell of a metric the case did not measure: a timeout (with its estimate) or an error."""
    if isinstance(stopped, CaseTimeout):
        return Cell(stopped.partial.get(metric), "timeout")
    return Cell(note=f"error: {stopped}")


class Runner:
    """Every run's cells per (system, metric), the last run's traffic per (system, case), peak RSS."""

    def __init__(self, env: Env, settings: Settings, timeout: float, cases: list[Case]) -> None:
        self.env = env
        self.settings = settings
        self.timeout = timeout
        self.cases = cases
        self.samples: dict[str, dict[str, list[Cell]]] = {}
        self.traffic: dict[tuple[str, str], Traffic] = {}
        self.rss: dict[str, int] = {}
        self.timed_out: set[tuple[str, str]] = set()  # not run again: a repeat would time out too

    def unavailable(self, system: System, problem: str) -> None:
        """Every cell of ``system`` says "not available"; the reason goes into the notes."""
        cells = self.samples.setdefault(system.name, {})
        for metric in [m for case in self.cases if system.runs(case) for m in case.metrics] + ["rss"]:
            cells[metric] = [Cell(note="not available")]
        self.env.notes.append(f"{system.name}: not available here ({problem}).")

    def run_round(self, systems: list[System], label: str) -> None:
        """One run of every case on every system, case by case: the systems of a row are
        measured minutes apart at most, so a spell of load elsewhere on the machine moves them
        together rather than one column alone (ratios within a row are what targets compare)."""
        for case in self.cases:
            for system in systems:
                if system.runs(case) and (system.name, case.key) not in self.timed_out:
                    self.run_case(system, case, label)

    def run_case(self, system: System, case: Case, label: str) -> None:
        """One fresh session, the case bounded in time, then its cells and traffic."""
        started = time.monotonic()
        self.env.nginx.mark()
        self.env.api.clear()
        deadline = Deadline(self.timeout)
        try:
            with system.session(case) as session:
                outcome = bounded(lambda: session.run(case, self.env.dataset, self.settings, deadline),
                                  deadline, session.abort)
                if outcome is None:
                    return
                outcome = as_stopped(outcome)
                if isinstance(outcome, CaseError) and (status := session.exited()) is not None:
                    outcome = CaseError(f"{outcome} (the daemon died: exit status {status})", outcome.done)
            if session.peak_rss:
                self.rss[system.name] = max(self.rss.get(system.name, 0), session.peak_rss)
        except (BenchError, OSError) as exc:  # the mount did not start
            outcome = CaseError(str(exc))
        self._record(system, case, outcome)
        print(f"[{label} {system.name}] {case.key}: {self._summary(system, case)} "
              f"({time.monotonic() - started:.1f} s)", flush=True)

    def _record(self, system: System, case: Case, outcome: Figures | CaseStopped) -> None:
        time.sleep(SETTLE)
        api_calls, storage = self.env.api.calls()
        hits = self.env.nginx.hits() + storage
        whole = total(hits)
        self.traffic[(system.name, case.key)] = Traffic(whole.requests, whole.bytes, api_calls)
        done = dict(outcome.done if isinstance(outcome, CaseStopped) else outcome)
        if isinstance(outcome, CaseTimeout):
            self.timed_out.add((system.name, case.key))
        elif not isinstance(outcome, CaseStopped) and case.origin_metric and case.origin_item:
            done[case.origin_metric] = float(total(hits, case.origin_item).bytes)
        cells = {key: Cell(value) for key, value in done.items()}
        if isinstance(outcome, CaseStopped):
            cells.update({m: failure(outcome, m) for m in case.metrics if m not in done})
        for metric, cell in cells.items():
            self.samples.setdefault(system.name, {}).setdefault(metric, []).append(cell)

    def _summary(self, system: System, case: Case) -> str:
        cells = {m: runs[-1] for m, runs in self.samples[system.name].items()}
        return ", ".join(f"{m} {fmt(cells[m].value, 'x') if cells[m].ok else cells[m].note}"  # type: ignore[arg-type]
                         for m in case.metrics if m in cells)

    def results(self, systems: list[System]) -> Results:
        """Each (system, metric) as one cell: the median of its runs; RSS as the highest peak."""
        results: Results = {}
        for system in systems:
            cells = {m: combine(runs) for m, runs in self.samples.get(system.name, {}).items()}
            if system.daemon and system.name in self.rss:
                cells["rss"] = Cell(float(self.rss[system.name]))
            elif "rss" not in cells:
                cells["rss"] = Cell(note="n/a")
            results[system.name] = cells
        return results
