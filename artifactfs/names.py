"""Safe, unique, stable names: what CONTRACT.md §3 promises about every name in the tree.

Every rule here runs on provider data, so each one is linear in the size of a listing and
never loops on what a server says (a hostile listing must not stall the event loop).
"""

from __future__ import annotations

import mimetypes
import re
import zlib
from typing import Hashable, Sequence

from .model import Entry

MAX_NAME_BYTES = 255
MAX_SUFFIX_BYTES = 16
MAX_ID_BYTES = 64
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def split_path(path: str | None) -> list[str]:
    """A provider path's components; empty, ``.``, ``..`` and the root are dropped.

    So ``/../a//b/./c`` is ``[a, b, c]``: nothing can climb out of the subtree it belongs to.
    """
    parts = (path or "").replace("\\", "/").split("/")
    return [name for name in map(clean, parts) if name]


def clean(name: str | None) -> str:
    """One name component: NUL, ``/`` and control characters become ``_``, lone surrogates
    (invalid UTF-8 from JSON or an archive) become U+FFFD, and it fits in 255 bytes."""
    if (name and name.isascii() and name.isprintable() and len(name) <= MAX_NAME_BYTES and "/" not in name
            and name[0] != " " and name[-1] != " " and name not in (".", "..")):
        return name  # the common case, answered by a few C calls: a listing cleans every name
    text = _SURROGATE.sub(REPLACEMENT, _UNSAFE.sub("_", name or "")).strip()
    if text in (".", ".."):
        return ""
    return fit(text)


def _split_suffix(name: str) -> tuple[str, str]:
    """``report.pdf`` → (``report``, ``.pdf``); a leading dot is no suffix (``.bashrc``)."""
    dot = name.rfind(".")
    return (name[:dot], name[dot:]) if dot > 0 else (name, "")


def _cut(text: str, limit: int) -> str:
    """The longest prefix of ``text`` of at most ``limit`` UTF-8 bytes, cut between characters."""
    return text.encode()[:max(limit, 0)].decode("utf-8", "ignore")


def fit(name: str, tag: str = "") -> str:
    """``stem + tag + suffix`` within 255 bytes: the stem is cut, the suffix kept if it is at
    most 16 bytes (else the whole name is cut), and ``tag`` (``~<id>``) always fits whole."""
    stem, suffix = _split_suffix(name)
    if len(suffix.encode()) > MAX_SUFFIX_BYTES:
        stem, suffix = name, ""
    tag = _cut(tag, MAX_NAME_BYTES - len(suffix.encode()) - 1)
    if len(name.encode()) + len(tag.encode()) <= MAX_NAME_BYTES:
        return stem + tag + suffix
    room = MAX_NAME_BYTES - len(tag.encode()) - len(suffix.encode())
    return _cut(stem, room) + tag + suffix


def fallback_name(short_id: str, mime_type: str | None) -> str:
    """A name for an entry with none usable: its id plus the extension of its media type."""
    ext = mimetypes.guess_extension(mime_type or "", strict=False) or ""
    return clean(f"{short_id or 'unnamed'}{ext}") or "unnamed"


def with_id(name: str, short_id: str) -> str:
    """``report.pdf`` + ``art_1`` → ``report~art_1.pdf``: the name of a collision's loser,
    within 255 bytes however long ``name`` is (an id over 64 bytes is shown as its CRC)."""
    tag = clean(short_id) or "x"
    if len(tag.encode()) > MAX_ID_BYTES:
        tag = f"{zlib.crc32(tag.encode()):08x}"
    return fit(name, "~" + tag)


def unique_by_key(entries: Sequence[Entry]) -> list[Entry]:
    """The entries with each ``key`` once (the first one): a provider that lists one thing
    twice must not show it twice, nor leak a node per refresh for the copy."""
    seen: dict[Hashable, Entry] = {}
    for entry in entries:
        seen.setdefault(entry.key, entry)
    return list(seen.values())


def assign_names(entries: Sequence[Entry]) -> list[tuple[str, Entry]]:
    """Unique names for one directory's entries, the same on every listing.

    The newest entry (largest mtime; ties broken by key) keeps a contested name; each other
    one becomes ``<stem>~<id><suffix>``; a name still taken after that (a repeated id, or an
    id whose name another entry already has) gets a counter. Linear in the number of entries.
    """
    claims: dict[str, list[Entry]] = {}
    for entry in unique_by_key(entries):
        name = clean(entry.name) or fallback_name(entry.short_id, entry.mime_type)
        claims.setdefault(name, []).append(entry)
    result: list[tuple[str, Entry]] = []
    losers: list[tuple[str, Entry]] = []
    for name, group in claims.items():
        if len(group) > 1:
            group.sort(key=_newest_first)
        result.append((name, group[0]))
        losers.extend((name, e) for e in group[1:])
    taken = set(claims)
    counters: dict[str, int] = {}
    for name, entry in sorted(losers, key=lambda pair: _newest_first(pair[1])):
        short_id = entry.short_id or f"{zlib.crc32(repr(entry.key).encode()):08x}"
        base = candidate = with_id(name, short_id)
        while candidate in taken:
            counters[base] = n = counters.get(base, 1) + 1
            candidate = with_id(name, f"{short_id}~{n}")
        taken.add(candidate)
        result.append((candidate, entry))
    return result


def _newest_first(entry: Entry) -> tuple[float, str]:
    return (-(entry.mtime or 0.0), repr(entry.key))
