"""A local server of the four provider APIs (Gumloop, vm0, Sigmic, Plangrep), for demo, tests and benchmarks.

Standard library only. ``Emulator`` serves two loopback origins:

- API origin, one prefix per provider (``Emulator.base_urls()``): ``/gumloop/api/v1``,
  ``/vm0``, ``/sigmic``, ``/plangrep/api/open/v1`` (also ``/api/open/v1``, the doc's
  origin-relative artifact URLs), ``/_emulator/`` control endpoints (no auth; see ``control``), and
  ``/static/{task_id}/...``: every Sigmic task's files as a plain HTTP directory tree
  (nginx-autoindex HTML, no auth), for benchmarks against rclone's http backend and httpdirfs.
- Storage origin: the signed/presigned URLs Gumloop's ``url``/``download_url``, vm0's 302 and
  Plangrep's ``resultUrl`` point to.

Each provider is one module of ``providers`` (discovered; see its docstring for what a
module declares). Where the provider docs are silent, each module's docstring says what
was chosen: ``providers.gumloop``, ``.vm0``, ``.sigmic``, ``.plangrep`` (API behaviour),
``static``, ``storage`` and ``signing`` (signed URLs), ``paging`` (cursors), ``clock``
(timestamps), ``world`` (switches), ``faults`` (fault injection:
``Emulator.faults(origin).set(kind, ...)``).
"""

from .app import Emulator
from .blobs import Blob, BytesBlob, PatternBlob

__all__ = ["Blob", "BytesBlob", "Emulator", "PatternBlob"]
