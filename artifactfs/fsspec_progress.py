"""The progress bar of an fsspec copy (``get``, ``get_file``), shown as ``artifactfs cache prefetch``
shows its own: one tqdm bar in bytes over every file, with rate and ETA."""

from __future__ import annotations

from typing import Any

from fsspec.callbacks import Callback
from tqdm import tqdm


class ByteProgress(Callback):
    """The bar of a whole copy. fsspec counts files on this callback and bytes on the one
    ``branched`` gives each file: only the bytes are drawn."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="get")

    def branched(self, path_1: str, path_2: str, **kwargs: Any) -> Callback:
        return _FileBytes(self.bar)

    def close(self) -> None:
        self.bar.close()


class _FileBytes(Callback):
    """One file's bytes, added to the copy's bar."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar

    def relative_update(self, inc: int = 1) -> None:
        self.bar.update(inc)
