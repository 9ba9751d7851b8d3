"""``python -m artifactfs.emulator``: run the emulator in the foreground until SIGINT/SIGTERM.

Prints one JSON line once both origins listen (``Emulator.ready_info()``) and, with
``--ready-file``, writes the same JSON there atomically, so a parent process can wait
for the file instead of parsing stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from .app import Emulator

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m artifactfs.emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-port", type=int, default=0)
    parser.add_argument("--storage-port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--empty", action="store_true", help="start without sample data")
    args = parser.parse_args(argv)

    emulator = Emulator(
        seed_sample_data=not args.empty, api_port=args.api_port, storage_port=args.storage_port, host=args.host
    )
    return serve(emulator, args.ready_file, args.host)


def serve(emulator: Emulator, ready_file: Path | None, host: str = "127.0.0.1") -> int:
    """Start ``emulator`` (not yet started), announce it, and serve until SIGINT/SIGTERM."""
    # Blocked before any thread starts, so every thread inherits the mask and the
    # signals are only ever taken by sigwait below: no KeyboardInterrupt traceback.
    # Dispositions are reset first: an inherited SIG_IGN (a shell's background job)
    # would discard SIGINT before sigwait could see it.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        emulator.start()
    except OSError as exc:
        print(f"artifactfs emulator: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        info = json.dumps(emulator.ready_info())
        if ready_file:
            _write_atomically(ready_file, info + "\n")
        print(info, flush=True)
        signal.sigwait(STOP_SIGNALS)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
