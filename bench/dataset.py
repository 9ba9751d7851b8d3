"""The benchmark's files, in three parts: one big file, 10,000 small files, 200 files of 1 MiB.

Each part is a directory on nginx (``/big/big.bin``, ``/small/f00000.txt``, ``/mib/m0000.bin``)
and a Gumloop agent in the emulator (``benchbig``, ``benchsmall``, ``benchmib``), so a case lists
only the part it reads. Every byte is deterministic (``PatternBlob``/``BytesBlob``): the files
nginx serves, the emulator's sizes and the checks in the cases all derive from the sizes alone.
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
PARTS = ("big", "small", "mib")


@dataclass(frozen=True)
class Item:
    """One file: the part (directory, agent) it is in and its name."""

    part: str
    name: str

    @property
    def path(self) -> str:
        """Its path on nginx and on local disk, relative to the tree's root."""
        return f"{self.part}/{self.name}"

    @property
    def artifact_id(self) -> str:
        """A fixed Gumloop artifact id, so the emulator's storage URLs name the file."""
        return f"art_{self.part}_{self.name.split('.')[0]}"


BIG = Item("big", "big.bin")


def agent(part: str) -> str:
    """The Gumloop agent holding ``part``."""
    return f"bench{part}"


@dataclass(frozen=True)
class Dataset:
    """Sizes of the three parts (names are fixed: ``big.bin``, ``fNNNNN.txt``, ``mNNNN.bin``)."""

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
        return (f"{BIG.path} {self.big_size / MIB:g} MiB; small/ {self.small_count:,} × {self.small_size} B; "
                f"mib/ {self.mib_count} × {self.mib_size / MIB:g} MiB")

    def big(self) -> Blob:
        return PatternBlob(self.big_size, seed=1)

    def small_items(self) -> list[Item]:
        return [Item("small", f"f{i:05d}.txt") for i in range(self.small_count)]

    def mib_items(self) -> list[Item]:
        return [Item("mib", f"m{i:04d}.bin") for i in range(self.mib_count)]

    def small(self, index: int) -> Blob:
        """Distinct text of exactly ``small_size`` bytes (cheap: no pattern block per file)."""
        line = f"small file {index:05d} of the artifactfs benchmark\n".encode()
        return BytesBlob((line * (self.small_size // len(line) + 1))[: self.small_size])

    def mib(self, index: int) -> Blob:
        return PatternBlob(self.mib_size, seed=100 + index)

    def files(self) -> Iterator[tuple[Item, Blob]]:
        """Every file with its content."""
        yield BIG, self.big()
        for i, item in enumerate(self.small_items()):
            yield item, self.small(i)
        for i, item in enumerate(self.mib_items()):
            yield item, self.mib(i)

    def blob(self, item: Item) -> Blob:
        """The content of one file."""
        if item == BIG:
            return self.big()
        index = int(item.name[1:].split(".")[0])
        return self.small(index) if item.part == "small" else self.mib(index)


def write_tree(dataset: Dataset, root: Path) -> None:
    """Write every file under ``root`` (``root/<part>/<name>``) and flush it to disk."""
    for item, blob in dataset.files():
        target = root / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            for chunk in blob.chunks(0, blob.size):
                out.write(chunk)
    os.sync()
