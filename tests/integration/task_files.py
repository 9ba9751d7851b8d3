"""Files of one Sigmic task on the emulator, as the cache tests put, read and count them."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from artifactfs.emulator import Emulator, PatternBlob
from tests.conftest import Mount

TASK = "task_123"
MiB = 1 << 20


def put(emu: Emulator, path: str, size: int, seed: int = 1) -> PatternBlob:
    blob = PatternBlob(size, seed)
    emu.put_sigmic_file(TASK, path, blob)
    return blob


def downloads(emu: Emulator, path: str) -> list[dict]:
    """The download requests the origin saw for ``path``."""
    return [r for r in emu.requests(path_contains="/download") if path in unquote(r["query"])]


def file_of(m: Mount, path: str) -> Path:
    return m.path / "sigmic" / TASK / path
