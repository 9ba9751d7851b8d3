"""vm0: artifacts, their versions, and each version's tar.gz (api/vm0.md; seeds/vm0-artifacts.txt).

``GET /v1/artifacts`` (paged) gives every artifact with its current version, so one listing
fills ``vm0/`` and each artifact's ``current`` link; ``GET /v1/artifacts/{id}/versions``
(paged) fills ``versions/``. The API answers camelCase (``currentVersionId``, ``fileCount``,
``createdAt``, ``pagination.hasMore``/``nextCursor``); its older shape, and the seed, are
snake_case. Both are read field by field, so a half-migrated server works too.

A version's archive comes from ``/download?versionId=`` (older servers: ``version_id``, and
the intermediate contract's ``version``; all are sent) as a 302 to a presigned URL on another
origin (no token goes there). It is shown as served (``<id>.tar.gz``, through the byte engine
and its cache), and unpacked from the same cached bytes on the first access of the version's
directory, into the cache's budget. A server of the intermediate contract answers the
download with 200 JSON instead, ``{version_id, files: [{path, size, download_url}],
expires_at}``: the version's directory then lists those files, each read from its own URL,
and ``<id>.tar.gz`` is ENOENT (that server has no archive).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import time
from pathlib import Path
from typing import Any, Hashable, Mapping
from urllib.parse import quote, urljoin

import trio

from .. import archive
from ..errors import NotFound, RemoteError
from ..model import Entry, Kind, Source
from ..names import clean
from .base import Probe, Provider, ProviderSpec, api_base
from .fields import as_dict, as_size, as_str, parse_time, pick, texts
from .paging import collect_pages
from .tree import build_tree

PAGE_LIMIT = 100  # the API rejects more (400), and 1-100 is its documented range
MIN_PREFIX = 8
ARTIFACT_FIELDS = {"name": ("name",), "size": ("size",), "file_count": ("fileCount", "file_count"),
                   "current_version_id": ("currentVersionId", "current_version_id"),
                   "created_at": ("createdAt", "created_at"), "updated_at": ("updatedAt", "updated_at")}
VERSION_FIELDS = {"size": ("size",), "file_count": ("fileCount", "file_count"),
                  "created_at": ("createdAt", "created_at"), "message": ("message",),
                  "created_by": ("createdBy", "created_by")}


def _current_version(item: Mapping[str, Any]) -> str | None:
    """``currentVersionId``, ``current_version_id``, or the id inside ``currentVersion``."""
    nested = as_dict(pick(item, "currentVersion", "current_version"))
    return as_str(pick(item, "currentVersionId", "current_version_id")) or as_str(nested.get("id"))


class Vm0Provider(Provider):
    """Artifacts at the top; refs below: ``("versions", artifact)``, ``("version", artifact,
    version)`` (a directory, unpacked on listing), ``("archive", artifact, version)`` (a file),
    ``("member", artifact, version, path)`` (a file of an unpacked version, read from disk)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = api_base(self.http.base_url, SPEC.api_prefix)
        self._names: dict[str, str] = {}
        self._versions: dict[str, dict[str, dict[str, Any]]] = {}
        self._unpack_locks: dict[str, trio.Lock] = {}
        self._broken: dict[str, str] = {}
        self._file_lists: dict[tuple[str, str], dict[str, _FileUrl]] = {}  # servers without archives

    async def list_dir(self, ref: Hashable) -> list[Entry]:
        if ref == self.ROOT:
            return [self._artifact(item) for item in await self._pages(f"{self._api}/artifacts")]
        match ref:
            case ("versions", artifact):
                return await self._version_entries(artifact)
            case ("version", artifact, version):
                return await self._version_files(artifact, version)
        return []

    async def lookup(self, ref: Hashable, name: str) -> Entry | None:
        """A unique prefix (8+ characters) of a version id: an unlisted link to that version's
        directory, so the alias never duplicates the version in ``ls`` or ``cp -r``."""
        if not (isinstance(ref, tuple) and ref[0] == "versions") or len(name) < MIN_PREFIX:
            return None
        prefix = name.lower()
        matches = [v for v in self._versions.get(ref[1], {}) if v.lower().startswith(prefix)]
        if len(matches) != 1:
            return None
        return Entry(name=name, kind=Kind.LINK, ref=None, key=("prefix", ref[1], name),
                     target=clean(matches[0]), fingerprint=matches[0], listed=False)

    async def resolve(self, ref: Hashable) -> Source:
        """The archive's presigned URL (the download's 302, not followed here), or one file's
        URL from a server that lists them (its listed URL once, then a new download answer)."""
        kind, artifact, version, *rest = ref  # type: ignore[misc]
        if kind == "file":
            listed = self._file_lists.get((artifact, version), {}).get(rest[0])
            if listed is not None and not listed.used:
                listed.used = True
                source = self.http.source(listed.url, expires_at=listed.expires_at)
                if not source.expiring(time.time()):
                    return source
            answer = await self._download(artifact, version)
            found = answer.get(rest[0]) if isinstance(answer, dict) else None
            if found is None:
                raise NotFound(f"{self.name}: {rest[0]} is no longer in version {version} of {artifact}")
            return self.http.source(found.url, expires_at=found.expires_at)
        answer = await self._download(artifact, version)
        if isinstance(answer, dict):
            self._file_lists[(artifact, version)] = answer
            raise NotFound(f"{self.name}: version {version} of {artifact} is served file by file, without an archive")
        return answer

    async def _download(self, artifact: str, version: str) -> Source | dict[str, _FileUrl]:
        """The download endpoint's answer: the archive's URL (a 302; a 200 that is not JSON is the
        archive itself), or the intermediate contract's list of files with a URL each."""
        resp = await self.http.request(f"{self._artifact_url(artifact)}/download",
                                       {"versionId": version, "version_id": version, "version": version})
        location = resp.headers.get("location")
        if resp.is_redirect and location:
            return self.http.source(urljoin(str(resp.url), location))
        files = _file_urls(resp.content)
        return self.http.source(str(resp.url)) if files is None else files

    async def _version_files(self, artifact: str, version: str) -> list[Entry]:
        """A version's files: unpacked from its archive, or as a server without archives lists
        them (resolving the archive finds that out, with the one download request)."""
        files = self._file_lists.get((artifact, version))
        if files is None:
            try:
                root = await self._unpack(artifact, version)
            except NotFound:
                files = self._file_lists.get((artifact, version))  # resolving the archive found a list
                if files is None:
                    raise
            else:
                return await trio.to_thread.run_sync(_local_tree, root, artifact, version)
        created = parse_time(pick(self._versions.get(artifact, {}).get(version, {}), "createdAt", "created_at"))
        return build_tree(((path, Entry(
            name=path, kind=Kind.FILE, ref=("file", artifact, version, path), key=("file", artifact, version, path),
            size=item.size, mtime=created, fingerprint=version, short_id=path.rsplit("/", 1)[-1],
            mime_type=mimetypes.guess_type(path)[0], xattrs={"id": artifact, "version_id": version, "path": path},
            immutable=True)) for path, item in files.items()), ("version", artifact, version))

    async def local_file(self, ref: Hashable) -> str:
        _, artifact, version, relative = ref  # type: ignore[misc]
        path = await self._unpack(artifact, version) / relative
        if not await trio.to_thread.run_sync(path.is_file):
            raise NotFound(f"{self.name}: {relative} is not in version {version}")
        return str(path)

    def _artifact_url(self, artifact: str) -> str:
        return f"{self._api}/artifacts/{quote(artifact, safe='')}"

    async def _pages(self, url: str) -> list[dict[str, Any]]:
        """Every item of a paged listing (``hasMore``/``nextCursor`` or their snake_case)."""

        async def page(cursor: str | None) -> tuple[list[Any], str | None]:
            params: dict[str, Any] = {"limit": PAGE_LIMIT, **({"cursor": cursor} if cursor else {})}
            body = as_dict(await self.http.get_json(url, params))
            data = body.get("data")
            if not isinstance(data, list):
                raise RemoteError(f"{self.name}: {url}: the answer has no data array")
            paging = as_dict(body.get("pagination"))
            more = pick(paging, "hasMore", "has_more")
            cursor = as_str(pick(paging, "nextCursor", "next_cursor"))
            return [i for i in data if isinstance(i, dict)], (cursor if more is not False else None)

        return await collect_pages(page, f"{self.name}: {url.removeprefix(self._api)}",
                                   key=lambda item: as_str(item.get("id")))

    def _artifact(self, item: dict[str, Any]) -> Entry:
        """An artifact's directory with its ``versions/`` and ``current`` (refreshed with ``vm0/``)."""
        artifact = as_str(item.get("id")) or ""
        name = as_str(item.get("name")) or ""
        self._names[artifact] = name
        updated = parse_time(pick(item, "updatedAt", "updated_at")) or parse_time(pick(item, "createdAt", "created_at"))
        children = [Entry(name="versions", kind=Kind.DIR, ref=("versions", artifact),
                          key=("versions", artifact), mtime=updated)]
        current = _current_version(item)
        if current:
            children.append(Entry(name="current", kind=Kind.LINK, ref=None, key=("current", artifact),
                                  target=f"versions/{clean(current)}", fingerprint=current, mtime=updated))
        xattrs = {"id": artifact, **texts(item, ARTIFACT_FIELDS)}
        if current:
            xattrs["current_version_id"] = current
        return Entry(name=name, kind=Kind.DIR, ref=None, key=("artifact", artifact), short_id=artifact,
                     mtime=updated, xattrs=xattrs, children=children)

    async def _version_entries(self, artifact: str) -> list[Entry]:
        items = await self._pages(f"{self._artifact_url(artifact)}/versions")
        versions = {version: item for item in items if (version := as_str(item.get("id")))}
        self._versions[artifact] = versions
        entries: list[Entry] = []
        for version, item in versions.items():
            xattrs = {"id": artifact, "version_id": version,
                      **texts({"name": self._names.get(artifact), **item}, {"name": ("name",), **VERSION_FIELDS})}
            created = parse_time(pick(item, "createdAt", "created_at"))
            entries.append(Entry(name=version, kind=Kind.DIR, ref=("version", artifact, version),
                                 key=("version", artifact, version), mtime=created, short_id=version,
                                 xattrs=xattrs, immutable=True))
            entries.append(Entry(name=f"{version}.tar.gz", kind=Kind.FILE, ref=("archive", artifact, version),
                                 key=("archive", artifact, version), mtime=created, fingerprint=version,
                                 short_id=version, mime_type="application/gzip", xattrs=dict(xattrs),
                                 immutable=True))
        return entries

    async def _unpack(self, artifact: str, version: str) -> Path:
        """The version's directory in the cache, unpacked from the cached archive unless it
        already is. An archive that cannot be unpacked (corrupt, a bomb) stays broken:
        versions are immutable, so it is refused from memory rather than unpacked again."""
        assert self.engine is not None
        name = hashlib.sha256(f"{self.name}\n{artifact}\n{version}".encode()).hexdigest()[:32]
        lock = self._unpack_locks.setdefault(name, trio.Lock())
        async with lock:
            if name in self._broken:
                raise archive.ArchiveError(self._broken[name])
            ref = ("archive", artifact, version)
            try:
                return await self.engine.unpacked(name, self, ref, ref, version)
            except archive.ArchiveError as exc:
                self._broken[name] = f"{self.name}: version {version} of {artifact} cannot be unpacked: {exc}"
                raise archive.ArchiveError(self._broken[name]) from None


class _FileUrl:
    """One file of a download answer without archive: its size and presigned URL (used once
    as listed; a later read asks the download again, as the URL may have expired)."""

    __slots__ = ("size", "url", "expires_at", "used")

    def __init__(self, size: int | None, url: str, expires_at: float | None) -> None:
        self.size, self.url, self.expires_at, self.used = size, url, expires_at, False


def _file_urls(body: bytes) -> dict[str, _FileUrl] | None:
    """The files of a 200 JSON download answer (``files[]`` of ``path``, ``size``,
    ``download_url``; camelCase too), or None if the body is not such an answer."""
    if body[:64].lstrip()[:1] != b"{":  # not JSON (an archive served inline): no copy, no parse
        return None
    try:
        answer = as_dict(json.loads(body))
    except ValueError:
        return None
    items = answer.get("files")
    if not isinstance(items, list):
        return None
    expires = parse_time(pick(answer, "expires_at", "expiresAt"))
    files: dict[str, _FileUrl] = {}
    for item in items:
        item = as_dict(item)
        path, url = as_str(item.get("path")), as_str(pick(item, "download_url", "downloadUrl", "url"))
        if path and url:
            files.setdefault(path, _FileUrl(as_size(item.get("size")), url, expires))
    return files


def _local_tree(root: Path, artifact: str, version: str) -> list[Entry]:
    """The unpacked files as entries read from disk (immutable, like the version)."""
    files: list[tuple[str, Entry]] = []
    for folder_path, _, names in os.walk(root):
        for name in names:
            path = Path(folder_path, name)
            relative = path.relative_to(root).as_posix()
            stat = path.stat()
            files.append((relative, Entry(
                name=name, kind=Kind.FILE, ref=("member", artifact, version, relative),
                key=("file", artifact, version, relative), size=stat.st_size, mtime=stat.st_mtime,
                fingerprint=version, short_id=name, mime_type=mimetypes.guess_type(name)[0],
                xattrs={"id": artifact, "version_id": version, "path": relative},
                immutable=True, local=True)))
    return build_tree(files, ("version", artifact, version))


SPEC = ProviderSpec(
    type="vm0",
    provider=Vm0Provider,
    default_base_url="https://api.vm0.ai",
    api_prefix="/v1",
    probe=Probe("/artifacts", {"limit": 1}),
    demo=lambda info: {},
)
