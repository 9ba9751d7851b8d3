"""What the byte origin served: nginx access-log lines (or emulator log entries) as ``Hit``s, summed.

nginx writes one tab-separated line per request in ``LOG_FORMAT`` (its default escaping turns a
tab or newline inside a field into ``\\x09``/``\\x0A``, so splitting on tabs is safe).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .dataset import Item

LOG_FORMAT = "$request_method\\t$uri\\t$status\\t$body_bytes_sent\\t$http_range"
FIELDS = 5


@dataclass(frozen=True)
class Hit:
    """One request to the byte origin."""

    method: str
    path: str
    status: int
    bytes: int
    range: str = ""

    def is_for(self, item: Item) -> bool:
        """Whether it fetched ``item``: nginx's ``/<part>/<name>`` or the emulator's storage URL."""
        return self.path == f"/{item.path}" or f"/{item.artifact_id}/" in self.path


@dataclass(frozen=True)
class Traffic:
    """Request count and body bytes (and, for a whole case, the API calls beside them)."""

    requests: int
    bytes: int
    api_calls: int = 0


def parse_line(line: str) -> Hit | None:
    """A line in ``LOG_FORMAT``, or None for anything else (a partly written last line)."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) != FIELDS or not fields[2].isdigit() or not fields[3].isdigit():
        return None
    method, path, status, sent, range_ = fields
    return Hit(method, path, int(status), int(sent), "" if range_ == "-" else range_)


def parse_log(text: str) -> list[Hit]:
    return [hit for hit in map(parse_line, text.splitlines()) if hit is not None]


def from_emulator(entry: dict[str, Any]) -> Hit:
    """An entry of the emulator's request log (``/_emulator/requests``)."""
    headers = {key.lower(): value for key, value in entry.get("headers", {}).items()}
    return Hit(entry.get("method", "GET"), entry["path"], int(entry.get("status") or 0),
               int(entry.get("bytes_sent") or 0), headers.get("range", ""))


def total(hits: Iterable[Hit], item: Item | None = None) -> Traffic:
    """All ``hits``, or only those for ``item``."""
    chosen = [hit for hit in hits if item is None or hit.is_for(item)]
    return Traffic(len(chosen), sum(hit.bytes for hit in chosen))
