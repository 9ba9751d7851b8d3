"""A bare fsspec file system over nginx: the floor of "a trio core on its own thread, bytes
fetched in worker threads", which is how ``artifactfs://`` works.

``fsspec.filesystem("baretrio")`` (registered on import): each ``cat_file`` crosses to one
trio thread (``trio.from_thread.run``), which fetches exactly the bytes asked for with one GET
in a worker thread (``trio.to_thread``, urllib3 ``readinto`` into one buffer) and hands them
back: the hand-offs of artifactfs's fsspec front end, without its namespace, blocks or cache.
Paths are nginx URLs.
"""

from __future__ import annotations

import threading
from typing import Any

import fsspec
import trio
import urllib3
from fsspec.spec import AbstractFileSystem

PROTOCOL = "baretrio"


class BareTrioFileSystem(AbstractFileSystem):
    """Reads nginx URLs through a trio thread and its worker threads; nothing else."""

    protocol = PROTOCOL

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool = urllib3.PoolManager(maxsize=32)
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
        return bytes(trio.from_thread.run(self._fetch, path, start, end, trio_token=self._token))

    async def _fetch(self, url: str, start: int | None, end: int | None) -> memoryview:
        return await trio.to_thread.run_sync(self._get, url, start, end)

    def _get(self, url: str, start: int | None, end: int | None) -> memoryview:
        """One GET (ranged if asked), its body read into one buffer of Content-Length."""
        headers = {} if start is None else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        response = self._pool.request("GET", url, headers=headers, preload_content=False)
        try:
            buf = memoryview(bytearray(int(response.headers["content-length"])))
            got = 0
            while got < len(buf) and (n := response.readinto(buf[got:])):
                got += n
        finally:
            response.release_conn()
        if response.status not in (200, 206) or got != len(buf):
            raise OSError(f"{url}: HTTP {response.status}, {got} of {len(buf)} bytes")
        return buf


fsspec.register_implementation(PROTOCOL, BareTrioFileSystem, clobber=True)
