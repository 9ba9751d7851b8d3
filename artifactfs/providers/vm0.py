"""vm0: artifacts, their versions, and each version's tar.gz (seeds/vm0-artifacts.txt).

``GET /v1/artifacts`` (paged) gives every artifact with its ``current_version_id``, so one
listing fills ``vm0/`` and each artifact's ``versions/`` entry and ``current`` link.
``GET /v1/artifacts/{id}/versions`` (paged) fills ``versions/``. A version's archive comes from
``/download?version_id=`` as a 302 to a presigned URL on another origin (no token goes there):
it is shown as served (``<id>.tar.gz``, through the byte engine), and unpacked into the cache
on the first access of the version's directory, whose files are then read from disk.
Versions are immutable, so neither is ever fetched twice.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Hashable
from urllib.parse import quote, urljoin

import trio

from .. import archive
from ..errors import RemoteError, SourceExpired
from ..httpclient import HttpClient, url_path
from ..model import Entry, Kind, Source
from ..names import clean
from .base import Provider, api_base, as_str, log, parse_time
from .tree import build_tree

PAGE_LIMIT = 100
MAX_PAGES = 1000
MIN_PREFIX = 8
MAX_RESOLVES = 3
COPY_BUFFER = 8 << 20
VERSION_FIELDS = ("size", "file_count", "created_at", "message", "created_by")


class Vm0Provider(Provider):
    """Artifacts at the top; refs below: ``("versions", artifact)``, ``("version", artifact,
    version)`` (a directory, unpacked on listing), ``("archive", artifact, version)`` (a file)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = api_base(self.http.base_url, "/v1")
        self._names: dict[str, str] = {}
        self._versions: dict[str, dict[str, dict[str, Any]]] = {}
        self._unpack_locks: defaultdict[Path, trio.Lock] = defaultdict(trio.Lock)
        self._broken: dict[Path, str] = {}

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        if ref == self.ROOT:
            items = await self._pages(f"{self._api}/artifacts")
            return [entry for item in items if (entry := self._artifact(item)) is not None]
        match ref:
            case ("versions", artifact):
                return await self._version_entries(artifact)
            case ("version", artifact, version):
                return await self._unpacked(artifact, version)
        return []

    async def lookup(self, ref: Hashable, name: str) -> Entry | None:
        """A unique prefix (8+ characters) of a version id: an unlisted link to that version's
        directory, so the alias never duplicates the version in ``ls`` or ``cp -r``."""
        if not (isinstance(ref, tuple) and ref[0] == "versions") or len(name) < MIN_PREFIX:
            return None
        matches = [v for v in self._versions.get(ref[1], {}) if v.startswith(name)]
        if len(matches) != 1:
            return None
        return Entry(name=name, kind=Kind.LINK, ref=None, key=("prefix", ref[1], name),
                     target=clean(matches[0]), fingerprint=matches[0], listed=False)

    async def resolve(self, ref: Hashable) -> Source:
        """The archive's presigned URL, from the download endpoint's 302 (not followed here)."""
        _, artifact, version = ref  # type: ignore[misc]
        resp = await self.http.request(f"{self._artifact_url(artifact)}/download",
                                       {"version_id": version})
        location = resp.headers.get("location")
        if resp.is_redirect and location:
            return self.http.source(urljoin(str(resp.url), location))
        return self.http.source(str(resp.url))

    def _artifact_url(self, artifact: str) -> str:
        return f"{self._api}/artifacts/{quote(artifact, safe='')}"

    async def _pages(self, url: str) -> list[dict[str, Any]]:
        """Every item of a paged listing, following ``next_cursor`` (bounded: a cursor may loop)."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": PAGE_LIMIT}
        for _ in range(MAX_PAGES):
            body = await self.http.get_json(url, params)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                log.warning("%s: %s: no data array in the answer", self.name, url_path(url))
                raise RemoteError(f"{self.name}: {url_path(url)}: no data array")
            items.extend(item for item in data if isinstance(item, dict))
            page = body.get("pagination")
            cursor = as_str(page.get("next_cursor")) if isinstance(page, dict) and page.get("has_more") else None
            if cursor is None:
                return items
            params = {"limit": PAGE_LIMIT, "cursor": cursor}
        log.warning("%s: %s: stopped after %d pages", self.name, url_path(url), MAX_PAGES)
        return items

    def _artifact(self, item: dict[str, Any]) -> Entry | None:
        """An artifact's directory with its ``versions/`` and ``current`` (refreshed with ``vm0/``)."""
        artifact = as_str(item.get("id"))
        if artifact is None:
            return None
        name = as_str(item.get("name")) or ""
        self._names[artifact] = name
        updated = parse_time(item.get("updated_at"))
        children = [Entry(name="versions", kind=Kind.DIR, ref=("versions", artifact),
                          key=("versions", artifact), mtime=updated)]
        current = as_str(item.get("current_version_id"))
        if current:
            children.append(Entry(name="current", kind=Kind.LINK, ref=None, key=("current", artifact),
                                  target=f"versions/{clean(current)}", fingerprint=current, mtime=updated))
        xattrs = {"id": artifact, **_texts(item, ("name", "size", "file_count", "current_version_id",
                                                  "created_at", "updated_at"))}
        return Entry(name=name, kind=Kind.DIR, ref=None, key=("artifact", artifact), short_id=artifact,
                     mtime=updated, xattrs=xattrs, children=children)

    async def _version_entries(self, artifact: str) -> list[Entry]:
        items = await self._pages(f"{self._artifact_url(artifact)}/versions")
        versions = {version: item for item in items if (version := as_str(item.get("id")))}
        self._versions[artifact] = versions
        entries: list[Entry] = []
        for version, item in versions.items():
            entries += [self._version_dir(artifact, version, item), self._archive(artifact, version, item)]
        return entries

    def _version_xattrs(self, artifact: str, version: str, item: dict[str, Any]) -> dict[str, str]:
        named = {"name": self._names.get(artifact), **item}
        return {"id": artifact, "version_id": version, **_texts(named, ("name", *VERSION_FIELDS))}

    def _version_dir(self, artifact: str, version: str, item: dict[str, Any]) -> Entry:
        return Entry(name=version, kind=Kind.DIR, ref=("version", artifact, version),
                     key=("version", artifact, version), mtime=parse_time(item.get("created_at")),
                     short_id=version, xattrs=self._version_xattrs(artifact, version, item), immutable=True)

    def _archive(self, artifact: str, version: str, item: dict[str, Any]) -> Entry:
        """The archive as served; its size is learned when it is read (``size`` is the unpacked one)."""
        return Entry(name=f"{version}.tar.gz", kind=Kind.FILE, ref=("archive", artifact, version),
                     key=("archive", artifact, version), mtime=parse_time(item.get("created_at")),
                     fingerprint=version, short_id=version, mime_type="application/gzip",
                     xattrs=self._version_xattrs(artifact, version, item), immutable=True)

    async def _unpacked(self, artifact: str, version: str) -> list[Entry]:
        root = await self._unpack(artifact, version)
        return await trio.to_thread.run_sync(_local_tree, root, artifact, version)

    async def _unpack(self, artifact: str, version: str) -> Path:
        """The version's directory in the cache, unpacked now unless it already is.

        An archive that cannot be unpacked (corrupt, a bomb) stays broken: versions are
        immutable, so it is refused from memory rather than downloaded again.
        """
        key = hashlib.sha256(f"{artifact}\n{version}".encode()).hexdigest()[:32]
        final = self.state_dir / "versions" / key
        async with self._unpack_locks[final]:
            if final in self._broken:
                raise archive.ArchiveError(self._broken[final])
            download = partial(self._download, ("archive", artifact, version))
            try:
                return await trio.to_thread.run_sync(archive.unpack_once, final, download)
            except archive.ArchiveError as exc:
                log.error("%s: version %s of %s cannot be unpacked: %s", self.name, version, artifact, exc)
                self._broken[final] = str(exc)
                raise
            except OSError as exc:
                log.error("%s: version %s of %s: cannot write to the cache: %s",
                          self.name, version, artifact, exc)
                raise RemoteError(f"{self.name}: cache: {exc.strerror}") from None

    def _download(self, ref: Hashable, out: BinaryIO) -> None:
        """Stream the archive into ``out`` (in a worker thread), resolving again if storage refuses."""
        for _ in range(MAX_RESOLVES):
            source = trio.from_thread.run(self.resolve, ref)
            try:
                return _copy(self.http, source, out)
            except SourceExpired as exc:
                log.info("%s: %s; resolving again", self.name, exc)
        raise RemoteError(f"{self.name}: storage refused the archive {MAX_RESOLVES} times")


def _copy(http: HttpClient, source: Source, out: BinaryIO) -> None:
    """Append the bytes of ``source`` from ``out``'s position to the end (blocking)."""
    start = out.tell()
    buf = memoryview(bytearray(COPY_BUFFER))
    stream = http.open_bytes(source, start, None)
    try:
        skip = start - stream.first  # a server that ignores Range sends the file from 0
        while skip > 0 and (n := stream.readinto(buf[:min(skip, len(buf))])):
            skip -= n
        while n := stream.readinto(buf):
            out.write(buf[:n])
    finally:
        stream.close()
    if stream.total is not None and out.tell() < stream.total:
        raise RemoteError(f"{stream.where}: body ended at {out.tell()} of {stream.total} bytes")


def _local_tree(root: Path, artifact: str, version: str) -> list[Entry]:
    """The unpacked files as entries read from disk (immutable, like the version)."""
    files: list[tuple[str, Entry]] = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            stat = path.stat()
            files.append((relative, Entry(
                name=name, kind=Kind.FILE, ref=("file", artifact, version, relative),
                key=("file", artifact, version, relative), size=stat.st_size, mtime=stat.st_mtime,
                fingerprint=version, short_id=name, mime_type=mimetypes.guess_type(name)[0],
                xattrs={"id": artifact, "version_id": version, "path": relative},
                immutable=True, local_path=str(path))))
    return build_tree(files, ("version", artifact, version))


def _texts(item: dict[str, Any], fields: tuple[str, ...]) -> dict[str, str]:
    """The given JSON fields that have a value, as xattr text."""
    return {name: text for name in fields if (text := as_str(item.get(name)))}
