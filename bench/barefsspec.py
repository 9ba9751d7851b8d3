"""A bare fsspec file system over nginx: the floor of "a trio core on its own thread that the
caller asks once per read, the bytes fetched there", which is how ``artifactfs://`` reads.

``fsspec.filesystem("baretrio")`` (registered on import): each ``cat_file`` makes one trip to a
trio thread (``trio.from_thread.run``), which fetches exactly the bytes asked for with one GET,
on artifactfs's byte transport: the hand-offs of artifactfs's fsspec front end, without its
namespace, blocks or cache. Paths are nginx URLs.
"""

from __future__ import annotations

import threading
from typing import Any

import fsspec
import trio
from fsspec.spec import AbstractFileSystem

from artifactfs.transport import HttpTransport

from .bodyget import get_into

PROTOCOL = "baretrio"


class BareTrioFileSystem(AbstractFileSystem):
    """Reads nginx URLs after a trip to a trio thread; nothing else."""

    protocol = PROTOCOL

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transport = HttpTransport()
        started = threading.Event()
        threading.Thread(target=trio.run, args=(self._serve, started), name="baretrio", daemon=True).start()
        started.wait()

    async def _serve(self, started: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        started.set()
        await trio.sleep_forever()

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return path  # the paths are URLs

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        return bytes(trio.from_thread.run(self._get, path, start, end, trio_token=self._token))

    async def _get(self, url: str, start: int | None, end: int | None) -> memoryview:
        """One GET (ranged if asked), its body read into one buffer."""
        status, buf = await get_into(self._transport, url, start, None if start is None or end is None else end - start)
        if status not in (200, 206):
            raise OSError(f"{url}: HTTP {status}")
        return buf


fsspec.register_implementation(PROTOCOL, BareTrioFileSystem, clobber=True)
