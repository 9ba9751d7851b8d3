"""The benchmark's files: one big file, a directory of small files, a directory of 1 MiB files.

Every byte is deterministic (``PatternBlob``/``BytesBlob``), so the origin process, the
local-disk copy and the checks in the cases all derive the same content from the sizes alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from artifactfs.emulator import BytesBlob, PatternBlob
from artifactfs.emulator.blobs import Blob

MIB = 1 << 20
GIB = 1 << 30
TASK = "bench"
BIG = "big.bin"
SMALL_DIR = "small"
MIB_DIR = "mib"


@dataclass(frozen=True)
class Dataset:
    """Sizes of the three parts (the layout is fixed: ``big.bin``, ``small/``, ``mib/``)."""

    big_size: int = GIB
    small_count: int = 10_000
    small_size: int = 100
    mib_count: int = 200
    mib_size: int = MIB

    @classmethod
    def quick(cls) -> Dataset:
        return cls(big_size=256 * MIB, small_count=2_000, mib_count=50)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Dataset:
        return cls(**json.loads(text))

    def describe(self) -> str:
        return (f"{BIG} {self.big_size / MIB:g} MiB; {SMALL_DIR}/ {self.small_count} × {self.small_size} B; "
                f"{MIB_DIR}/ {self.mib_count} × {self.mib_size / MIB:g} MiB")

    def big(self) -> Blob:
        return PatternBlob(self.big_size, seed=1)

    def small_paths(self) -> list[str]:
        return [f"{SMALL_DIR}/f{i:05d}.txt" for i in range(self.small_count)]

    def mib_paths(self) -> list[str]:
        return [f"{MIB_DIR}/m{i:04d}.bin" for i in range(self.mib_count)]

    def small(self, index: int) -> Blob:
        """Distinct text of exactly ``small_size`` bytes (cheap: no pattern block per file)."""
        line = f"small file {index:05d} of the artifactfs benchmark\n".encode()
        return BytesBlob((line * (self.small_size // len(line) + 1))[: self.small_size])

    def mib(self, index: int) -> Blob:
        return PatternBlob(self.mib_size, seed=100 + index)

    def files(self) -> Iterator[tuple[str, Blob]]:
        """Every file as (path relative to the dataset root, content)."""
        yield BIG, self.big()
        for i, path in enumerate(self.small_paths()):
            yield path, self.small(i)
        for i, path in enumerate(self.mib_paths()):
            yield path, self.mib(i)

    def blob(self, path: str) -> Blob:
        """The content of one file by its relative path."""
        if path == BIG:
            return self.big()
        directory, _, name = path.partition("/")
        index = int(name[1:].split(".")[0])
        return self.small(index) if directory == SMALL_DIR else self.mib(index)


def write_tree(dataset: Dataset, root: Path) -> None:
    """Write every file under ``root`` (the local-disk reference) and flush it to disk."""
    for path, blob in dataset.files():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            for chunk in blob.chunks(0, blob.size):
                out.write(chunk)
    os.sync()
