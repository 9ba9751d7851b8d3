"""MIME types by file name, the same on every machine."""

from __future__ import annotations

import mimetypes

_MIME = mimetypes.MimeTypes()  # built-in table only (not /etc/mime.types): the same answer on every machine
for _type, _ext in (("text/markdown", ".md"), ("application/yaml", ".yaml"), ("text/plain", ".log")):
    _MIME.add_type(_type, _ext)


def guess_mime(path: str | None) -> str:
    return (_MIME.guess_type(path or "")[0]) or "application/octet-stream"
