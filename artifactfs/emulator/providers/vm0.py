"""vm0 artifacts API: list, get, versions, and download (a 302 to a presigned tar.gz).

To the docs (docs.vm0.ai reference) and the public server's routes:
- JSON is camelCase (``currentVersionId``, ``fileCount``, ``currentVersion{artifactId,
  createdBy}``, ``pagination{hasMore, nextCursor}``). The ``vm0_shape`` switch serves the
  older shapes: ``"snake"`` (the older server and the seed, field for field) and ``"mixed"``,
  a migration half done: ``createdAt``, ``currentVersion``, ``fileCount`` and
  ``nextCursor`` are still snake_case, every other field camelCase (every second name of
  the sorted camelCase ones, so the same field is spelt the same everywhere).
- Timestamps are JavaScript's ``toISOString()``: always milliseconds, ``...T10:30:00.000Z``.
- ``limit`` is an integer 1–100, default 20; anything else is 400 ``invalid_parameter``
  with ``param: "limit"`` and zod's message (not clamped).
- Errors are Stripe-style ``{"error": {"type", "code", "message"[, "param"]}}``: 401
  ``authentication_error``/``invalid_api_key`` "Invalid API key provided" (missing or
  wrong token alike), 404 ``not_found_error``/``resource_not_found``.
- ``X-Request-Id: req_<32 hex>`` and ``X-API-Version: v1`` are on list, get and versions
  (the ts-rest routes), errors included; not on download, a plain route handler, neither
  on its 302 nor on its errors.
- An artifact may have no version yet (``add_artifact``): ``currentVersionId`` and
  ``currentVersion`` are null, ``size`` and ``fileCount`` 0.
- Download takes ``versionId`` (current server) or ``version_id`` (older one; ``versionId``
  wins if both are given): the full 64-hex id or a unique prefix of at least 8 characters,
  case-insensitive; omitted or empty means the current version. Every failure is 404
  ``resource_not_found`` with the server's message (too short, ambiguous, not found, no
  versions, HEAD version not found, version has no files). A version with no files has
  no archive. ``drop_version`` makes "HEAD version not found" reachable: the version row
  is gone while the artifact still names it current.
- The 302 ``Location`` is a presigned URL (``signing.S3``) valid ``X-Amz-Expires=3600``
  seconds (the server's ``DOWNLOAD_EXPIRY_SECONDS``) unless the ``url_ttl`` switch says otherwise.
- The ``vm0_download`` switch ``"files"`` serves the intermediate contract's download instead
  (api/vm0.md, C-ART @be654b6): 200 JSON ``{version_id, files: [{path, size, download_url}],
  expires_at}``, snake_case as documented there, one presigned URL per file; that contract
  named the query parameter ``version``, also accepted. A raw archive has no file list: 404.

Choices where the docs are silent:
- Artifacts are addressed by id only (not by name); ids are ``art_`` + 9 base62 characters
  (the docs' style; the server's UUIDs are not promised), version ids 64 lowercase hex.
- ``size``/``fileCount`` are the uncompressed total and count of the version's regular
  files, not the archive's size (the archive size is only known from the storage response).
- Lists are newest-created first, then by id. The cursor is opaque: URL-safe base64 of
  the last item's ``(createdAt, id)`` (``paging``), a keyset that never skips or repeats an
  item, even when artifacts are added between pages. The server's own cursor is the raw
  last id filtered with ``id > cursor`` while sorting by ``createdAt``, which can skip or
  repeat; that quirk is not copied. A cursor we did not issue is 400 ``invalid_parameter``,
  ``param: "cursor"``.
- An artifact's ``updatedAt`` is when its current version was committed (``createdAt`` if none).
- Unknown paths below the base are 404 ``resource_not_found`` "Not found", without the headers.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from .. import paging, storage, tarball
from ..blobs import Blob, BytesBlob, PatternBlob, as_blob
from ..clock import Timestamp, iso
from ..samplefiles import MIB, png_bytes
from ..server import BlobReply, Reply, Request, bearer_problem, json_reply
from ..signing import S3
from . import ProviderState

if TYPE_CHECKING:
    from ..world import World

BASE_PATH = "/vm0"
DEFAULT_TOKEN = "vm0_live_" + hashlib.sha256(b"artifactfs emulator vm0 demo key").hexdigest()
BUCKET = "vm0-artifacts"
EXPORTS = {
    "add_vm0_artifact": "add_artifact",
    "put_vm0_version": "put_version",
    "put_vm0_raw_archive": "put_raw_archive",
    "drop_vm0_version": "drop_version",
    "vm0_artifact_id": "artifact_id",
    "vm0_versions": "versions",
    "vm0_archive": "archive",
    "vm0_file": "file",
    "vm0_artifacts": "artifacts",
}

MIN_PREFIX = 8
DOWNLOAD_EXPIRY_SECONDS = 3600.0
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
ARCHIVE_SUFFIX = ".tar.gz"
API_VERSION = "v1"
T = TypeVar("T")


class Shape(Enum):
    """Field-name spelling of the JSON (the ``vm0_shape`` switch)."""

    CAMEL = "camel"
    SNAKE = "snake"
    MIXED = "mixed"


class Download(Enum):
    """What a download answers (the ``vm0_download`` switch)."""

    ARCHIVE = "archive"  # 302 to the version's tar.gz (current docs and server)
    FILES = "files"  # 200 JSON with a presigned URL per file (the intermediate contract)


@dataclass
class Switches:
    shape: Shape = Shape.CAMEL
    download: Download = Download.ARCHIVE


# Every camelCase name the API uses; "mixed" spells every second one (sorted) in snake_case.
_CAMEL_NAMES = (
    "artifactId",
    "createdAt",
    "createdBy",
    "currentVersion",
    "currentVersionId",
    "fileCount",
    "hasMore",
    "nextCursor",
    "updatedAt",
)
_MIXED_SNAKE = frozenset(sorted(_CAMEL_NAMES)[1::2])


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def shaped(value: Any, shape: Shape) -> Any:
    """``value`` (built camelCase) with its keys spelt as ``shape`` says, recursively."""
    if isinstance(value, list):
        return [shaped(v, shape) for v in value]
    if not isinstance(value, dict) or shape is Shape.CAMEL:
        return value
    return {(_snake(k) if shape is Shape.SNAKE or k in _MIXED_SNAKE else k): shaped(v, shape) for k, v in value.items()}


@dataclass
class Vm0Version:
    version_id: str
    artifact_id: str
    created_at: float
    message: str | None
    created_by: str
    files: dict[str, Blob] | None  # None for a raw archive
    size: int
    file_count: int
    _archive: bytes | None = None
    _archive_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def archive(self) -> bytes:
        """The tar.gz, built once (outside the world lock: versions are immutable)."""
        with self._archive_lock:
            if self._archive is None:
                assert self.files is not None
                self._archive = tarball.build(self.files, self.created_at)
            return self._archive


@dataclass
class Vm0Artifact:
    artifact_id: str
    name: str
    created_at: float
    updated_at: float
    head: str | None = None  # the current version's id
    versions: list[Vm0Version] = field(default_factory=list)  # oldest first

    def version(self, version_id: str | None) -> Vm0Version | None:
        return next((v for v in self.versions if v.version_id == version_id), None)

    @property
    def current(self) -> Vm0Version | None:
        return self.version(self.head)


def _only(found: Iterator[T]) -> T:
    """The first match, or KeyError (what a missing dict key would raise) instead of StopIteration."""
    for item in found:
        return item
    raise KeyError("no such item")


class State(ProviderState):
    """Artifacts (by id) and their versions."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.switches = Switches()
        self.artifacts: dict[str, Vm0Artifact] = {}

    def _artifact(self, name: str, when: float) -> Vm0Artifact:
        artifact = next((a for a in self.artifacts.values() if a.name == name), None)
        if artifact is None:
            artifact = Vm0Artifact(self.world.new_id("art_"), name, when, when)
            self.artifacts[artifact.artifact_id] = artifact
        return artifact

    def add_artifact(self, name: str, created_at: Timestamp = None) -> str:
        """A new artifact without any version; its id."""
        with self.world.lock:
            if any(a.name == name for a in self.artifacts.values()):
                raise ValueError(f"artifact {name!r} already exists")
            return self._artifact(name, self.world.timestamp(created_at)).artifact_id

    def _commit(
        self, name: str, created_at: Timestamp, version_id: str | None, manifest: str, **fields: Any
    ) -> tuple[str, str]:
        """A new current version (``fields`` of ``Vm0Version``) of artifact ``name``, created if new.

        Its id is ``version_id`` or, by default, a hash of the artifact, its version count and ``manifest``.
        """
        with self.world.lock:
            when = self.world.timestamp(created_at)
            artifact = self._artifact(name, when)
            if version_id is None:
                seed = f"{artifact.artifact_id}\n{len(artifact.versions)}\n{manifest}"
                version_id = hashlib.sha256(seed.encode()).hexdigest()
            elif not re.fullmatch("[0-9a-f]{64}", version_id) or artifact.version(version_id) is not None:
                raise ValueError(f"version_id must be 64 lowercase hex characters, new to {name!r}")
            artifact.versions.append(Vm0Version(version_id, artifact.artifact_id, when, **fields))
            artifact.head = version_id
            artifact.updated_at = when
            return artifact.artifact_id, version_id

    def put_version(
        self,
        name: str,
        files: dict[str, bytes | str | Blob],
        message: str | None = "Run output",
        created_by: str = "user_vm0demo",
        created_at: Timestamp = None,
        version_id: str | None = None,
    ) -> tuple[str, str]:
        """A new current version of artifact ``name`` (created if new) holding ``files`` (``{}``: none).

        ``version_id`` (64 lowercase hex) replaces the content hash, e.g. for prefix tests.
        """
        blobs = {path: as_blob(data) for path, data in files.items()}
        manifest = "\n".join(f"{p}:{b.size}" for p, b in sorted(blobs.items()))
        size, count = sum(b.size for b in blobs.values()), len(blobs)
        fields = {"message": message, "created_by": created_by, "files": blobs, "size": size, "file_count": count}
        return self._commit(name, created_at, version_id, manifest, **fields)

    def put_raw_archive(
        self,
        name: str,
        archive_bytes: bytes,
        message: str | None = "Raw archive",
        created_at: Timestamp = None,
        file_count: int | None = None,
    ) -> tuple[str, str]:
        """A new current version served exactly as ``archive_bytes`` (for hostile-archive tests).

        Its ``size`` and ``fileCount`` are what the archive holds; ``fileCount`` is at least 1
        unless ``file_count`` says otherwise (a real version's counts come from its upload,
        not from the archive, so an unreadable archive still stands for files).
        """
        archive = bytes(archive_bytes)
        size, counted = tarball.stats(archive)
        count = max(1, counted) if file_count is None else file_count
        fields = {"message": message, "created_by": "user_vm0demo", "files": None, "size": size, "file_count": count}
        return self._commit(name, created_at, None, hashlib.sha256(archive).hexdigest(), _archive=archive, **fields)

    def drop_version(self, artifact_id: str, version_id: str) -> None:
        """Delete one version row; the artifact keeps naming it current if it was (a broken HEAD)."""
        with self.world.lock:
            artifact = self.artifacts[artifact_id]
            artifact.versions.remove(_only(v for v in artifact.versions if v.version_id == version_id))

    def artifact_id(self, name: str) -> str:
        with self.world.lock:
            return _only(a.artifact_id for a in self.artifacts.values() if a.name == name)

    def versions(self, artifact_id: str) -> list[str]:
        """Version ids, oldest first (the last is current unless it was dropped)."""
        with self.world.lock:
            return [v.version_id for v in self.artifacts[artifact_id].versions]

    def _version(self, artifact_id: str, version_id: str | None) -> Vm0Version:
        with self.world.lock:
            artifact = self.artifacts[artifact_id]
            found = artifact.version(artifact.head if version_id is None else version_id)
        if found is None:
            raise KeyError(version_id)
        return found

    def archive(self, artifact_id: str, version_id: str | None = None) -> bytes:
        """The exact tar.gz the storage origin serves for that version (default: current)."""
        return self._version(artifact_id, version_id).archive()

    def file(self, artifact_id: str, version_id: str | None, path: str) -> Blob:
        """One file of a version built with ``put_version``."""
        files = self._version(artifact_id, version_id).files
        if files is None:
            raise KeyError(f"{artifact_id} is a raw archive")
        return files[path]

    def signed_url(self, artifact_id: str, version_id: str) -> str:
        """A freshly presigned URL of one version's archive."""
        path = f"/{BUCKET}/{storage.quote(artifact_id)}/{storage.quote(version_id)}{ARCHIVE_SUFFIX}"
        return self.world.signed_url(path, S3, self.world.url_ttl(DOWNLOAD_EXPIRY_SECONDS))

    def signed_file_url(self, artifact_id: str, version_id: str, path: str) -> str:
        """A freshly presigned URL of one file of a version (the ``files`` download)."""
        key = "/".join(storage.quote(part) for part in (artifact_id, version_id, *path.split("/")))
        return self.world.signed_url(f"/{BUCKET}/{key}", S3, self.world.url_ttl(DOWNLOAD_EXPIRY_SECONDS))

    def serve_object(self, req: Request, parts: list[str]) -> Reply | BlobReply:
        refused = storage.refusal(self.world, req, S3)
        if refused is not None:
            return refused
        if len(parts) > 2:
            try:
                version = self._version(parts[0], parts[1])
                blob = (version.files or {})["/".join(parts[2:])]
            except KeyError:
                return storage.no_such_key()
            return BlobReply(blob, "application/octet-stream", f'"{version.version_id}"', version.created_at)
        if len(parts) != 2 or not parts[1].endswith(ARCHIVE_SUFFIX):
            return storage.no_such_key()
        try:
            version = self._version(parts[0], parts[1].removesuffix(ARCHIVE_SUFFIX))
        except KeyError:
            return storage.no_such_key()
        archive = BytesBlob(version.archive())
        return BlobReply(archive, "application/gzip", f'"{version.version_id}"', version.created_at)


# ---- the API ------------------------------------------------------------------------


class _Problem(Exception):
    """An error answer: ``status``, then the envelope's ``type``, ``code``, ``message`` and ``param``."""

    def __init__(self, status: int, kind: str, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, str] = {"type": kind, "code": code, "message": message}
        if param is not None:
            self.body["param"] = param


def _not_found(message: str) -> _Problem:
    return _Problem(404, "not_found_error", "resource_not_found", message)


def _invalid(param: str, message: str) -> _Problem:
    return _Problem(400, "invalid_request_error", "invalid_parameter", message, param)


def handle(state: State, req: Request, parts: list[str]) -> Reply:
    api_route = parts[:2] == ["v1", "artifacts"] and (len(parts) in (2, 3) or parts[3:] == ["versions"])
    try:
        if bearer_problem(req, state.world.tokens["vm0"]) is not None:
            raise _Problem(401, "authentication_error", "invalid_api_key", "Invalid API key provided")
        with state.world.lock:
            reply = _route(state, req, parts)
    except _Problem as problem:
        reply = json_reply(problem.status, {"error": problem.body})
    if api_route:
        reply.headers.update({"X-Request-Id": f"req_{uuid.uuid4().hex}", "X-API-Version": API_VERSION})
    return reply


def _route(state: State, req: Request, parts: list[str]) -> Reply:
    shape = state.switches.shape
    match parts:
        case ["v1", "artifacts"]:
            items = sorted(state.artifacts.values(), key=lambda a: (a.created_at, a.artifact_id), reverse=True)
            return json_reply(200, shaped(_page(req, items, lambda a: (a.created_at, a.artifact_id), _summary), shape))
        case ["v1", "artifacts", artifact_id, *rest] if rest in ([], ["versions"], ["download"]):
            artifact = state.artifacts.get(artifact_id)
            if artifact is None:
                raise _not_found(f"No such artifact: '{artifact_id}'")
            if rest == ["download"]:
                wanted = req.params.get("versionId") or req.params.get("version_id") or req.params.get("version")
                version = _resolve(artifact, wanted)
                if state.switches.download is Download.FILES:
                    return json_reply(200, _file_urls(state, version))
                return Reply(302, headers={"Location": state.signed_url(artifact.artifact_id, version.version_id)})
            if rest == ["versions"]:
                body = _page(req, artifact.versions, lambda v: (v.created_at, v.version_id), _version_json)
                return json_reply(200, shaped(body, shape))
            current = artifact.current
            detail = {**_summary(artifact), "currentVersion": _version_json(current) if current else None}
            return json_reply(200, shaped(detail, shape))
    raise _not_found("Not found")


def _limit(raw: str | None) -> int:
    """zod's ``coerce.number().int().min(1).max(100).default(20)``, with zod's messages."""
    if raw is None:
        return DEFAULT_LIMIT
    try:
        number = float(raw.strip() or 0)  # JavaScript's Number("") is 0
    except ValueError:
        number = math.nan
    if math.isnan(number):
        raise _invalid("limit", "Expected number, received nan")
    if number < 1:
        raise _invalid("limit", "Number must be greater than or equal to 1")
    if number > MAX_LIMIT:
        raise _invalid("limit", f"Number must be less than or equal to {MAX_LIMIT}")
    if not number.is_integer():
        raise _invalid("limit", "Expected integer, received float")
    return int(number)


def _page(
    req: Request, items: list[T], key: Callable[[T], paging.Key], render: Callable[[T], dict[str, Any]]
) -> dict[str, Any]:
    limit = _limit(req.params.get("limit"))
    try:
        chunk, next_cursor = paging.page(items, key, req.params.get("cursor"), limit)
    except ValueError:
        raise _invalid("cursor", "Invalid cursor") from None
    pagination = {"hasMore": next_cursor is not None, "nextCursor": next_cursor}
    return {"data": [render(i) for i in chunk], "pagination": pagination}


def _summary(artifact: Vm0Artifact) -> dict[str, Any]:
    current = artifact.current
    return {
        "id": artifact.artifact_id,
        "name": artifact.name,
        "currentVersionId": artifact.head,
        "size": current.size if current else 0,
        "fileCount": current.file_count if current else 0,
        "createdAt": iso(artifact.created_at, millis=True),
        "updatedAt": iso(artifact.updated_at, millis=True),
    }


def _version_json(version: Vm0Version) -> dict[str, Any]:
    return {
        "id": version.version_id,
        "artifactId": version.artifact_id,
        "size": version.size,
        "fileCount": version.file_count,
        "message": version.message,
        "createdBy": version.created_by,
        "createdAt": iso(version.created_at, millis=True),
    }


def _file_urls(state: State, version: Vm0Version) -> dict[str, Any]:
    """The intermediate contract's download answer: every file with its own presigned URL."""
    if version.files is None:
        raise _not_found(f"Version \"{version.version_id}\" has no file list")
    expires = time.time() + state.world.url_ttl(DOWNLOAD_EXPIRY_SECONDS)
    files = [{"path": path, "size": blob.size,
              "download_url": state.signed_file_url(version.artifact_id, version.version_id, path)}
             for path, blob in sorted(version.files.items())]
    return {"version_id": version.version_id, "files": files, "expires_at": iso(expires, millis=True)}


def _resolve(artifact: Vm0Artifact, wanted: str | None) -> Vm0Version:
    """The version a download asks for, as the server's version resolver finds it."""
    if not wanted:
        if artifact.head is None:
            raise _not_found(f"Artifact '{artifact.name}' has no versions")
        version = artifact.current
        if version is None:
            raise _not_found(f"Artifact '{artifact.name}' HEAD version not found")
    else:
        version = _by_prefix(artifact, wanted.lower())
    if version.file_count == 0:
        raise _not_found(f"Artifact '{artifact.name}' version has no files")
    return version


def _by_prefix(artifact: Vm0Artifact, wanted: str) -> Vm0Version:
    exact = artifact.version(wanted)
    if exact is not None:
        return exact
    if len(wanted) < MIN_PREFIX:
        raise _not_found(f"Version prefix too short. Minimum {MIN_PREFIX} characters required.")
    matches = [v for v in artifact.versions if v.version_id.startswith(wanted)]
    if not matches:
        raise _not_found(f'Version "{wanted}" not found')
    if len(matches) > 1:
        raise _not_found(f'Ambiguous version prefix "{wanted}". Please use more characters.')
    return matches[0]


# ---- control and sample data ----------------------------------------------------------


def _control_put(state: State, body: dict[str, Any]) -> dict[str, Any]:
    files: dict[str, bytes | str | Blob] = {path: str(text) for path, text in dict(body["files"]).items()}
    artifact_id, version_id = state.put_version(body["name"], files, message=body.get("message", "Run output"))
    return {"artifact_id": artifact_id, "version_id": version_id}


def _control_add(state: State, body: dict[str, Any]) -> dict[str, Any]:
    return {"artifact_id": state.add_artifact(body["name"])}


CONTROL = {"put": _control_put, "add": _control_add}


def seed(state: State) -> None:
    state.put_version(
        "output-results",
        {
            "README.md": "# output-results\n\nFirst run.\n",
            "results/summary.json": json.dumps({"accuracy": 0.91, "samples": 1000}, indent=2) + "\n",
        },
        message="Run output",
        created_at="2024-01-01T00:00:00Z",
    )
    state.put_version(
        "output-results",
        {
            "README.md": "# output-results\n\nSecond run, with plots.\n",
            "results/summary.json": json.dumps({"accuracy": 0.94, "samples": 1000}, indent=2) + "\n",
            "results/plots/loss.png": png_bytes(32, 16, 30),
            "logs/run.log": "".join(f"epoch {i} loss {1.0 / (i + 1):.4f}\n" for i in range(20)),
        },
        message="Latest output",
        created_at="2024-01-02T00:00:00Z",
    )
    state.put_version(
        "training-run",
        {
            "checkpoints/model.safetensors": PatternBlob(4 * MIB, seed=7),
            "config.yaml": "model: tiny-transformer\nlayers: 4\nlr: 0.0003\n",
            "metrics.csv": "step,loss\n" + "".join(f"{s},{2.0 / (s + 1):.5f}\n" for s in range(0, 1000, 50)),
        },
        message="Training checkpoint",
        created_at="2024-01-03T12:00:00Z",
    )
    state.put_version("empty-output", {}, message="Run produced no files", created_at="2024-01-04T08:00:00Z")
    state.add_artifact("pending-run", created_at="2024-01-05T09:30:00Z")
