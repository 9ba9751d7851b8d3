"""``artifactfs cache prefetch``: read files through a live mount so the daemon caches them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

BLOCK = 1 << 20


def files_under(paths: list[Path]) -> Iterator[Path]:
    """Every regular file named or below the named directories (symlinks not followed)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    candidate = Path(root) / name
                    if candidate.is_file() and not candidate.is_symlink():
                        yield candidate
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")


def prefetch(paths: list[Path], *, progress: bool = True) -> tuple[int, int]:
    """Read every file once; returns (files, bytes). The bar shows bytes, rate and ETA."""
    files = list(files_under(paths))
    total = sum(f.stat().st_size for f in files)
    count = done = 0
    buf = bytearray(BLOCK)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
              desc="prefetch") as bar:
        for path in files:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    done += n
                    bar.update(n)
            count += 1
    return count, done
