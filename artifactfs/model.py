"""What a provider returns: plain data, no behaviour, no HTTP, no FUSE."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Hashable


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    LINK = "link"


@dataclass
class Entry:
    """One name in a directory as a provider sees it.

    ``name`` is the raw name from the API; the namespace makes it safe and unique.
    ``ref`` is the provider's own handle, passed back to ``list_dir``/``lookup``/``resolve``.
    ``key`` identifies the thing across refreshes, so a refreshed listing reuses inodes.
    ``fingerprint`` changes whenever the content may have changed (version, size, mtime).
    ``children`` lets one API call deliver a whole subtree (a Sigmic task's workspace):
    such subdirectories are refreshed together with the directory that listed them; a
    callable builds them only when the directory is first used (views derived from one
    listing, like Gumloop's ``sessions/``). ``local`` marks a file kept complete on local
    disk (an unpacked archive member): the provider's ``local_file`` gives its path.
    ``listed=False`` marks a name that opens on lookup but is not shown by readdir
    (a Gumloop search).
    """

    name: str
    kind: Kind
    ref: Hashable
    key: Hashable
    size: int | None = None
    mtime: float | None = None
    fingerprint: str = ""
    short_id: str = ""
    mime_type: str | None = None
    xattrs: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    immutable: bool = False
    children: list["Entry"] | Callable[[], list["Entry"]] | None = None
    local: bool = False
    listed: bool = True


EXPIRY_MARGIN = 30.0  # a URL this close to its expiry is not used: a new one is asked for


@dataclass(frozen=True)
class Source:
    """Where a file's bytes are: URL, the headers to send there, and when the URL stops working."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    expires_at: float | None = None
    size: int | None = None

    def expiring(self, now: float) -> bool:
        """Whether the URL stops working within ``EXPIRY_MARGIN`` of ``now`` (an unknown
        expiry never does: storage refusing it is what asks for a new one)."""
        return self.expires_at is not None and self.expires_at - EXPIRY_MARGIN <= now
