"""``make bench``: artifactfs against curl, local disk, a bare pyfuse3 file system, rclone mount,
httpdirfs and fsspec, all reading the same bytes from one nginx on loopback.

    .venv/bin/python -m bench.run [--quick] [--repeat N] [--systems a,b] [--cases seq,head] [--timeout S]

Sizes default to full (1 GiB, 10,000 small files, 200 × 1 MiB); ``--quick`` (or BENCH_QUICK=1)
uses 256 MiB / 2,000 / 50 and one run per cell. Every flag also reads a BENCH_* variable (see
``--help``). Writes bench/results.md and prints it. Mounts and processes are always cleaned up,
also on Ctrl-C; a case that runs out of time is recorded as "timeout" and the run goes on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from .cases import CASES, Case, Settings
from .dataset import MIB, Dataset, write_tree
from .nginx import Nginx
from .origin import ApiProcess, bytes_on_nginx
from .proc import BenchError, unmount
from .report import metrics, render
from .runner import Runner
from .systems import Env, System, all_systems
from .tools import ensure_installed, machine_lines, quirk_notes

HERE = Path(__file__).resolve().parent


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BENCH_{name}", default)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", default=_env("QUICK", "") not in ("", "0"),
                   help="small sizes and one run per cell, for a smoke run (BENCH_QUICK=1)")
    p.add_argument("--repeat", type=int, default=int(_env("REPEAT", "0")) or None,
                   help="runs per cell, the median is reported (BENCH_REPEAT; default 3, 1 with --quick)")
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
    args = p.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    return args


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


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def sweep(workdir: Path) -> None:
    """Last resort: unmount anything still mounted under the scratch directory."""
    for mountpoint in (workdir / "mnt").glob("*"):
        unmount(mountpoint)


def header(args: argparse.Namespace, env: Env, settings: Settings, tool_notes: list[str]) -> list[str]:
    via = ("the signed URLs point at the same files on nginx" if bytes_on_nginx() else
           "this emulator cannot point downloads at nginx yet (no `external_url`), so artifactfs "
           "reads the bytes from the emulator's own storage origin: its byte figures are not yet comparable")
    return [
        *machine_lines(),
        f"- Dataset: {env.dataset.describe()}{' (--quick)' if args.quick else ''}",
        f"- Origin: nginx on 127.0.0.1 (sendfile, keep-alive, autoindex) serves the files from disk (in the "
        f"page cache: they are read back after each local-disk case) to curl, rclone, httpdirfs, the bare "
        f"pyfuse3 file system, fsspec http and the bare trio fsspec floors. artifactfs (and the listed "
        f"floor) lists and resolves through the emulator's Gumloop API (own process; agents benchbig, benchsmall, benchmib; "
        f"listing_ttl 60): {via}.",
        f"- Every case runs on a fresh mount (fsspec: a fresh process) with an empty cache dir; each cell is "
        f"the median of {args.repeat} run(s), each run taking the cases one at a time on every system in turn "
        f"(every other run in reverse order); timeout {args.timeout:g} s per case; {settings.random_reads} "
        f"reads at seeded offsets; MB/s = 10^6 B/s; ratios are system / reference in the row's unit.",
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
    nginx = Nginx(workdir / "tree", workdir / "nginx")
    api: ApiProcess | None = None
    try:
        print(f"bench: writing the dataset ({ds.describe()}) to {nginx.root}", flush=True)
        write_tree(ds, nginx.root)
        nginx.start()
        api = ApiProcess(ds, nginx.base_url, workdir, logs / "emulator.log").start()
        env = Env(nginx, api, ds, workdir, logs, nginx.root)
        systems = select_systems(all_systems(env), args.systems)
        cases = select_cases(args.cases)
        runner = Runner(env, settings, args.timeout, cases)
        available = []
        for system in systems:
            if problem := system.problem():
                print(f"[{system.name}] not available: {problem}", flush=True)
                runner.unavailable(system, problem)
            else:
                available.append(system)
        for run in range(1, args.repeat + 1):
            order = available if run % 2 else available[::-1]  # no column always follows the same one
            runner.run_round(order, f"run {run}/{args.repeat}")
        measured = {m for case in cases for m in case.metrics} | {"rss"}
        rows = [m for m in metrics(ds, settings) if m.key in measured]
        text = render(header(args, env, settings, tool_notes), rows, runner.results(systems),
                      [s.name for s in systems], runner.traffic, [c.key for c in cases], env.notes + quirk_notes())
    except KeyboardInterrupt:
        print(f"bench: interrupted; cleaning up (logs are in {logs})", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if api is not None:
            api.stop()
        nginx.stop()
        sweep(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    args.output.write_text(text)
    print(text)
    print(f"bench: wrote {args.output}; logs are in {logs}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
