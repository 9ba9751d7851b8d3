"""File contents: literal bytes, or a deterministic pattern that is never held in memory whole.

A ``PatternBlob`` is cut from one precomputed 1 MiB block, rotated by a seed-derived
amount (so files with different seeds differ), and every 4 KiB page starts with a
stamp of its absolute page number mixed with the seed. The stamp matters: without it
the content would repeat every 1 MiB, and a client that serves block N+1 in place of
block N would still pass a checksum comparison.
"""

from __future__ import annotations

import functools
import hashlib
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterator

BLOCK = 1 << 20
PAGE = 4096
_PAGES_PER_BLOCK = BLOCK // PAGE
_WORDS_PER_PAGE = PAGE // 8


class Blob(ABC):
    """Immutable bytes of a known size, readable at any offset."""

    size: int

    @abstractmethod
    def chunks(self, offset: int, length: int) -> Iterator[memoryview]:
        """The bytes ``[offset, offset+length)`` (clamped to the size) as slices of ≤ 1 MiB."""

    def read(self, offset: int, length: int) -> bytes:
        return b"".join(self.chunks(offset, length))

    def read_all(self) -> bytes:
        return self.read(0, self.size)

    def sha256(self) -> str:
        """Hex digest, computed by streaming (fine for multi-GiB patterns)."""
        digest = hashlib.sha256()
        for chunk in self.chunks(0, self.size):
            digest.update(chunk)
        return digest.hexdigest()

    def _span(self, offset: int, length: int) -> tuple[int, int]:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")
        start = min(offset, self.size)
        return start, min(self.size, start + length)


class BytesBlob(Blob):
    """Literal content."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.size = len(self.data)

    def chunks(self, offset: int, length: int) -> Iterator[memoryview]:
        start, end = self._span(offset, length)
        view = memoryview(self.data)
        for pos in range(start, end, BLOCK):
            yield view[pos : min(end, pos + BLOCK)]

    def __repr__(self) -> str:
        return f"BytesBlob(size={self.size})"


@functools.lru_cache(maxsize=1)
def _base_block() -> bytes:
    return hashlib.shake_256(b"artifactfs-emulator-pattern").digest(BLOCK)


@functools.lru_cache(maxsize=32)
def _seed_block(seed: int) -> tuple[bytes, int]:
    """The base block rotated for ``seed``, and the seed's 64-bit stamp key."""
    mix = hashlib.sha256(f"seed:{seed}".encode()).digest()
    rotation = int.from_bytes(mix[:4], "little") % BLOCK
    base = _base_block()
    return base[rotation:] + base[:rotation], int.from_bytes(mix[8:16], "little")


@functools.lru_cache(maxsize=16)
def _stamped_block(seed: int, index: int) -> bytearray:
    """Block ``index`` of every pattern with ``seed`` (shared by all blobs, bounded memory).

    Never mutated after it is built: it is only handed out as memoryview slices.
    """
    rotated, key = _seed_block(seed)
    block = bytearray(rotated)
    first_page = index * _PAGES_PER_BLOCK
    stamps = array("Q", [(page ^ key) for page in range(first_page, first_page + _PAGES_PER_BLOCK)])
    memoryview(block).cast("Q")[::_WORDS_PER_PAGE] = stamps
    return block


class PatternBlob(Blob):
    """``size`` pseudo-random bytes fully determined by ``seed``; cheap at any offset."""

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 0:
            raise ValueError("size must be non-negative")
        self.size = size
        self.seed = seed

    def chunks(self, offset: int, length: int) -> Iterator[memoryview]:
        start, end = self._span(offset, length)
        pos = start
        while pos < end:
            index, within = divmod(pos, BLOCK)
            take = min(end - pos, BLOCK - within)
            yield memoryview(_stamped_block(self.seed, index))[within : within + take]
            pos += take

    def __repr__(self) -> str:
        return f"PatternBlob(size={self.size}, seed={self.seed})"


def as_blob(data: bytes | bytearray | str | Blob) -> Blob:
    """Accept what switches are given: bytes, text (UTF-8) or a ready Blob."""
    if isinstance(data, Blob):
        return data
    if isinstance(data, str):
        return BytesBlob(data.encode())
    return BytesBlob(bytes(data))
