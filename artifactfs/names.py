"""Safe, unique, stable names: what CONTRACT.md §3 promises about every name in the tree."""

from __future__ import annotations

import mimetypes
import re
import zlib
from pathlib import PurePosixPath
from typing import Iterable, Sequence

from .model import Entry

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/]")
MAX_NAME_BYTES = 255


def split_path(path: str | None) -> list[str]:
    """A provider path's components; empty, ``.``, ``..`` and the root are dropped.

    So ``/../a//b/./c`` is ``[a, b, c]``: nothing can climb out of the subtree it belongs to.
    """
    parts = (path or "").replace("\\", "/").split("/")
    return [name for name in map(clean, parts) if name]


def clean(name: str | None) -> str:
    """One name component with NUL, ``/`` and control characters replaced, length bounded."""
    text = _UNSAFE.sub("_", name or "").strip()
    if text in (".", ".."):
        return ""
    encoded = text.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_NAME_BYTES:
        text = encoded[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    return text


def fallback_name(short_id: str, mime_type: str | None) -> str:
    """A name for an entry with none usable: its id plus the extension of its media type."""
    ext = mimetypes.guess_extension(mime_type or "", strict=False) or ""
    return clean(f"{short_id or 'unnamed'}{ext}") or "unnamed"


def with_id(name: str, short_id: str) -> str:
    """``report.pdf`` + ``art_1`` → ``report~art_1.pdf``: the name of a collision's loser."""
    path = PurePosixPath(name)
    suffix = path.suffix if path.stem else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    return clean(f"{stem}~{short_id}{suffix}")


def assign_names(entries: Sequence[Entry]) -> list[tuple[str, Entry]]:
    """Unique names for one directory's entries, the same on every listing.

    The newest entry (largest mtime; ties broken by key) keeps a contested name; each other
    one becomes ``<stem>~<id><suffix>``. Entries without a usable name get a fallback name.
    """
    wanted = [(clean(e.name) or fallback_name(e.short_id, e.mime_type), e) for e in entries]
    taken: set[str] = set()
    claims: dict[str, list[Entry]] = {}
    for name, entry in wanted:
        claims.setdefault(name, []).append(entry)
    result: list[tuple[str, Entry]] = []
    losers: list[tuple[str, Entry]] = []
    for name, group in claims.items():
        group.sort(key=_newest_first)
        result.append((name, group[0]))
        taken.add(name)
        losers.extend((name, e) for e in group[1:])
    for name, entry in losers:
        unique = _unused(with_id(name, entry.short_id or f"{zlib.crc32(repr(entry.key).encode()):08x}"), taken)
        taken.add(unique)
        result.append((unique, entry))
    return result


def _newest_first(entry: Entry) -> tuple[float, str]:
    return (-(entry.mtime or 0.0), repr(entry.key))


def _unused(name: str, taken: Iterable[str]) -> str:
    """``name`` or, if taken (an id repeated by the provider), ``name`` with a counter."""
    taken = set(taken)
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = with_id(name, str(n))
    return candidate
