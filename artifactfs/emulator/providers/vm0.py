"""vm0 artifacts API: list, get, versions, and download (a 302 to a presigned tar.gz).

Choices where the docs are silent:
- Artifacts are addressed by id only (not by name). Lists are newest-created first;
  ``limit`` defaults to 20 and is clamped to 1–100 (non-integer: 400); cursors are opaque.
- ``size``/``file_count`` are the uncompressed total and count of the version's regular
  files, not the archive's size (the archive size is only known from the storage response).
- ``version_id`` for download is the full 64-hex id or a unique prefix of ≥ 8 characters
  (case-insensitive): shorter is 400 ``BAD_REQUEST``, ambiguous is 400
  ``AMBIGUOUS_VERSION``, no match is 404 ``NOT_FOUND``.
- Errors are ``{"error": {"message", "code"}}``: 401 ``UNAUTHORIZED``, 404 ``NOT_FOUND``,
  400 ``BAD_REQUEST``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
DEFAULT_TOKEN = "demo-vm0-token"
BUCKET = "vm0-artifacts"
ROUTES: dict[str, Any] = {}
EXPORTS = {
    "put_vm0_version": "put_version",
    "put_vm0_raw_archive": "put_raw_archive",
    "vm0_artifact_id": "artifact_id",
    "vm0_versions": "versions",
    "vm0_archive": "archive",
    "vm0_file": "file",
    "vm0_artifacts": "artifacts",
}
CONTROL: dict[str, Any] = {}

MIN_PREFIX = 8
DEFAULT_URL_TTL = 300.0
ARCHIVE_SUFFIX = ".tar.gz"
T = TypeVar("T")


@dataclass
class Vm0Version:
    version_id: str
    artifact_id: str
    created_at: float
    message: str
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
    versions: list[Vm0Version] = field(default_factory=list)

    @property
    def current(self) -> Vm0Version:
        return self.versions[-1]


def _only(found: Iterator[T]) -> T:
    """The first match, or KeyError (what a missing dict key would raise) instead of StopIteration."""
    for item in found:
        return item
    raise KeyError("no such item")


class State(ProviderState):
    """Artifacts (by id) and their versions, oldest first."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.artifacts: dict[str, Vm0Artifact] = {}

    def _put(self, name: str, files: dict[str, Blob] | None, archive: bytes | None, **fields: Any) -> tuple[str, str]:
        with self.world.lock:
            artifact = next((a for a in self.artifacts.values() if a.name == name), None)
            if artifact is None:
                artifact = Vm0Artifact(self.world.new_id("art_"), name)
                self.artifacts[artifact.artifact_id] = artifact
            if files is not None:
                size, count = sum(b.size for b in files.values()), len(files)
                manifest = "\n".join(f"{p}:{b.size}" for p, b in sorted(files.items()))
            else:
                assert archive is not None
                size, count = tarball.stats(archive)
                manifest = hashlib.sha256(archive).hexdigest()
            seed = f"{artifact.artifact_id}\n{len(artifact.versions)}\n{manifest}"
            version = Vm0Version(
                version_id=hashlib.sha256(seed.encode()).hexdigest(),
                artifact_id=artifact.artifact_id,
                files=files,
                size=size,
                file_count=count,
                _archive=archive,
                **fields,
            )
            artifact.versions.append(version)
            return artifact.artifact_id, version.version_id

    def put_version(
        self,
        name: str,
        files: dict[str, bytes | str | Blob],
        message: str = "Run output",
        created_by: str = "user_vm0demo",
        created_at: Timestamp = None,
    ) -> tuple[str, str]:
        """A new current version of artifact ``name`` (created if new) holding ``files``."""
        blobs = {path: as_blob(data) for path, data in files.items()}
        with self.world.lock:
            when = self.world.timestamp(created_at)
            return self._put(name, blobs, None, created_at=when, message=message, created_by=created_by)

    def put_raw_archive(
        self, name: str, archive_bytes: bytes, message: str = "Raw archive", created_at: Timestamp = None
    ) -> tuple[str, str]:
        """A new current version served exactly as ``archive_bytes`` (for hostile-archive tests)."""
        with self.world.lock:
            when = self.world.timestamp(created_at)
            return self._put(
                name, None, bytes(archive_bytes), created_at=when, message=message, created_by="user_vm0demo"
            )

    def artifact_id(self, name: str) -> str:
        with self.world.lock:
            return _only(a.artifact_id for a in self.artifacts.values() if a.name == name)

    def versions(self, artifact_id: str) -> list[str]:
        """Version ids, oldest first (the last is current)."""
        with self.world.lock:
            return [v.version_id for v in self.artifacts[artifact_id].versions]

    def _version(self, artifact_id: str, version_id: str | None) -> Vm0Version:
        with self.world.lock:
            artifact = self.artifacts[artifact_id]
            if version_id is None:
                return artifact.current
            return _only(v for v in artifact.versions if v.version_id == version_id)

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
        return self.world.signed_url(path, S3, self.world.url_ttl(DEFAULT_URL_TTL))

    def serve_object(self, req: Request, parts: list[str]) -> Reply | BlobReply:
        refused = storage.refusal(self.world, req, S3)
        if refused is not None:
            return refused
        if len(parts) != 2 or not parts[1].endswith(ARCHIVE_SUFFIX):
            return storage.no_such_key()
        try:
            version = self._version(parts[0], parts[1].removesuffix(ARCHIVE_SUFFIX))
        except KeyError:
            return storage.no_such_key()
        archive = BytesBlob(version.archive())
        return BlobReply(archive, "application/gzip", f'"{version.version_id}"', version.created_at)


def _error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"error": {"message": message, "code": code}})


def handle(state: State, req: Request, parts: list[str]) -> Reply:
    if bearer_problem(req, state.world.tokens["vm0"]) is not None:
        return _error(401, "UNAUTHORIZED", "Invalid or missing API key")
    match parts:
        case ["v1", "artifacts"]:
            return _list(state, req)
        case ["v1", "artifacts", artifact_id, *rest] if rest in ([], ["versions"], ["download"]):
            with state.world.lock:
                artifact = state.artifacts.get(artifact_id)
                if artifact is None:
                    return _error(404, "NOT_FOUND", "Artifact not found")
                if rest == ["versions"]:
                    return _versions(req, artifact)
                if rest == ["download"]:
                    return _download(state, req, artifact)
                return json_reply(200, {**_summary(artifact), "current_version": _version_json(artifact.current)})
    return _error(404, "NOT_FOUND", "Not found")


def _summary(artifact: Vm0Artifact) -> dict[str, Any]:
    current = artifact.current
    return {
        "id": artifact.artifact_id,
        "name": artifact.name,
        "current_version_id": current.version_id,
        "size": current.size,
        "file_count": current.file_count,
        "created_at": iso(artifact.versions[0].created_at),
        "updated_at": iso(current.created_at),
    }


def _version_json(version: Vm0Version) -> dict[str, Any]:
    return {
        "id": version.version_id,
        "artifact_id": version.artifact_id,
        "size": version.size,
        "file_count": version.file_count,
        "message": version.message,
        "created_by": version.created_by,
        "created_at": iso(version.created_at),
    }


def _paged(
    req: Request, items: list[Any], key: Callable[[Any], paging.Key], render: Callable[[Any], dict[str, Any]]
) -> Reply:
    try:
        limit = paging.parse_limit(req.params.get("limit"))
        chunk, next_cursor = paging.page(items, key, req.params.get("cursor"), limit)
    except ValueError:
        return _error(400, "BAD_REQUEST", "limit must be an integer and cursor one returned by the API")
    return json_reply(
        200,
        {
            "data": [render(i) for i in chunk],
            "pagination": {"has_more": next_cursor is not None, "next_cursor": next_cursor},
        },
    )


def _list(state: State, req: Request) -> Reply:
    with state.world.lock:
        return _paged(
            req, list(state.artifacts.values()), lambda a: (a.versions[0].created_at, a.artifact_id), _summary
        )


def _versions(req: Request, artifact: Vm0Artifact) -> Reply:
    return _paged(req, artifact.versions, lambda v: (v.created_at, v.version_id), _version_json)


def _download(state: State, req: Request, artifact: Vm0Artifact) -> Reply:
    wanted = (req.params.get("version_id") or "").lower()
    version = artifact.current
    if wanted:
        if len(wanted) < MIN_PREFIX:
            return _error(400, "BAD_REQUEST", f"version_id prefix must be at least {MIN_PREFIX} characters")
        matches = [v for v in artifact.versions if v.version_id.startswith(wanted)]
        if not matches:
            return _error(404, "NOT_FOUND", "Version not found")
        if len(matches) > 1:
            return _error(400, "AMBIGUOUS_VERSION", "version_id prefix matches more than one version")
        version = matches[0]
    return Reply(302, headers={"Location": state.signed_url(artifact.artifact_id, version.version_id)})


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
