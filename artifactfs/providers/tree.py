"""Turn a flat list of ``(path, file entry)`` into nested directory entries.

Sigmic workspaces, Plangrep results and vm0 archives all name files by path; the
providers hand them here so that every provider nests and sanitizes paths the same way.
"""

from __future__ import annotations

from typing import Hashable, Iterable

from ..model import Entry, Kind
from ..names import split_path


def build_tree(files: Iterable[tuple[str, Entry]], parent_key: Hashable) -> list[Entry]:
    """Nest files under directory entries made from their paths' components.

    A path whose components all vanish (``..``, ``/``) keeps only its file name's last usable
    part; a path with none at all uses the entry's own name (the namespace then falls back to
    the id). Directory mtimes are the newest mtime below them.
    """
    root: list[Entry] = []
    dirs: dict[tuple[str, ...], Entry] = {}
    for path, entry in files:
        parts = split_path(path)
        if parts:
            entry.name = parts[-1]
        siblings = root
        for depth in range(len(parts) - 1):
            prefix = tuple(parts[: depth + 1])
            folder = dirs.get(prefix)
            if folder is None:
                folder = Entry(name=prefix[-1], kind=Kind.DIR, ref=None, key=(parent_key, prefix),
                               children=[], immutable=entry.immutable)
                dirs[prefix] = folder
                siblings.append(folder)
            if entry.mtime is not None and (folder.mtime or 0) < entry.mtime:
                folder.mtime = entry.mtime
            siblings = folder.children  # type: ignore[assignment]
        siblings.append(entry)
    return root
