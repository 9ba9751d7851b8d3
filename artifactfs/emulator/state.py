"""The emulated world: every provider's data, the switches that change it, one lock.

Route handlers read it under ``World.lock``; tests change it through the methods
here (the same ones the ``/_emulator/`` control endpoints call). Content is held as
``Blob`` objects, which are immutable, so a replaced file never disturbs a response
already streaming the old bytes.

Timestamps not given explicitly come from a logical clock that starts at
2026-06-01T00:00:00Z and advances one second per change (past any explicit time
seen): listings are the same on every run, and every change gets a later, distinct
time, so mtimes always move.
"""

from __future__ import annotations

import dataclasses
import hashlib
import mimetypes
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from . import tarball
from .blobs import Blob, as_blob
from .faults import FaultSwitches
from .server import OriginSettings
from .signing import Scheme, Signer

DEFAULT_TOKENS = {
    "gumloop": "demo-gumloop-token",
    "vm0": "demo-vm0-token",
    "sigmic": "demo-sigmic-token",
    "plangrep": "demo-plangrep-token",
}
DEFAULT_GUMLOOP_USER_ID = "user_demo"
DEFAULT_CREATOR: dict[str, str | None] = {
    "id": "user_19a3bc",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "profile_picture": "https://example.com/avatars/ada.png",
}
PLANGREP_STATUSES = ("queued", "running", "completed", "failed")
CLOCK_START = datetime(2026, 6, 1, tzinfo=UTC).timestamp()

_MIME = mimetypes.MimeTypes()  # built-in table only (not /etc/mime.types): the same answer on every machine
for _type, _ext in (("text/markdown", ".md"), ("application/yaml", ".yaml"), ("text/plain", ".log")):
    _MIME.add_type(_type, _ext)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_UNSET: Any = object()

T = TypeVar("T")
Content = bytes | str | Blob
Timestamp = float | int | str | datetime | None


def to_epoch(value: float | int | str | datetime) -> float:
    """Unix seconds (rounded to ms, so ISO round trips are exact) from a number, ISO string or datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return round(float(value), 3)


def iso(ts: float, millis: bool = False) -> str:
    """``2026-05-15T14:32:00Z``; with ``millis`` (or a fractional time) ``...00.000Z``."""
    moment = datetime.fromtimestamp(ts, UTC)
    if millis or ts != int(ts):
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def guess_mime(path: str | None) -> str:
    return (_MIME.guess_type(path or "")[0]) or "application/octet-stream"


@dataclass
class Switches:
    """World-wide switches; per-origin ones live in ``World.origins``."""

    url_ttl: float = 300.0  # lifetime of signed/presigned storage URLs, seconds
    plangrep_content_length: bool = False  # plangrep artifact: send Content-Length instead of chunked
    plangrep_ranges: bool = False  # plangrep artifact: honour Range


@dataclass
class SigmicFile:
    path: str
    blob: Blob
    mime_type: str
    category: str
    modified_at: float
    revision: int  # bumped on every put, so the ETag changes even if size and time do not


@dataclass
class GumloopVersion:
    version_id: str
    major_version: int
    filename: str | None
    session_id: str | None
    created_at: float
    blob: Blob
    media_type: str
    metadata_size: bool  # False: metadata is {} and the download endpoint gives no size/type
    creator: dict[str, Any] | None


@dataclass
class GumloopArtifact:
    artifact_id: str
    agent_id: str
    versions: list[GumloopVersion] = field(default_factory=list)

    @property
    def current(self) -> GumloopVersion:
        return self.versions[-1]


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


@dataclass
class PlangrepJob:
    job_id: str
    status: str
    created_at: float
    completed_at: float | None = None
    artifacts: dict[str, Blob] = field(default_factory=dict)
    error: str | None = None


class World:
    """All provider data and switches; every method is safe to call from any thread."""

    def __init__(self, tokens: dict[str, str] | None = None, gumloop_user_id: str = DEFAULT_GUMLOOP_USER_ID) -> None:
        self.lock = threading.RLock()
        self.tokens = {**DEFAULT_TOKENS, **(tokens or {})}
        self.gumloop_user_id = gumloop_user_id
        self.switches = Switches()
        self.signer = Signer(os.urandom(32))
        self._fault_switches = {"api": FaultSwitches("api"), "storage": FaultSwitches("storage", self.signer)}
        self.origins = {name: OriginSettings(fault_switches=sw) for name, sw in self._fault_switches.items()}
        self.storage_url = ""  # set once the storage origin listens
        self.sigmic_tasks: dict[str, dict[str, SigmicFile]] = {}
        self.gumloop_agents: set[str] = set()
        self.gumloop_artifacts: dict[str, GumloopArtifact] = {}
        self.vm0_artifacts: dict[str, Vm0Artifact] = {}
        self.plangrep_jobs: dict[str, PlangrepJob] = {}
        self._clock = CLOCK_START
        self._minted = 0
        self._revisions = 0

    # ---- helpers -------------------------------------------------------

    def _time(self, value: Timestamp) -> float:
        """``value`` as epoch seconds, or the next tick; a tick is always later than any time seen."""
        if value is not None:
            ts = to_epoch(value)
            self._clock = max(self._clock, ts)
            return ts
        self._clock = float(int(self._clock) + 1)
        return self._clock

    def _new_id(self, prefix: str) -> str:
        """Deterministic ``prefix`` + 9 base62 characters, like ``art_aBcDeF123``."""
        self._minted += 1
        n = int.from_bytes(hashlib.sha256(f"{prefix}{self._minted}".encode()).digest()[:8], "big")
        chars = []
        for _ in range(9):
            n, r = divmod(n, 62)
            chars.append(_BASE62[r])
        return prefix + "".join(chars)

    def storage_link(self, path: str, scheme: Scheme) -> str:
        """A signed URL on the storage origin, valid for ``switches.url_ttl`` seconds."""
        return self.signer.sign(self.storage_url, path, scheme, self.switches.url_ttl)

    # ---- switches ------------------------------------------------------

    def set(self, **switches: Any) -> None:
        """Set switches by name: ``url_ttl``, ``plangrep_content_length``, ``plangrep_ranges``,
        and ``{api,storage}_{ignore_range,chunked}``. Unknown names or wrong types raise."""
        with self.lock:
            for name, value in switches.items():
                origin, _, attr = name.partition("_")
                if origin in self.origins and attr in ("ignore_range", "chunked"):
                    target: Any = self.origins[origin]
                elif name in {f.name for f in dataclasses.fields(Switches)}:
                    target, attr = self.switches, name
                else:
                    raise KeyError(f"unknown switch {name!r}")
                current = getattr(target, attr)
                if isinstance(current, bool) != isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"switch {name!r} needs a {type(current).__name__}")
                setattr(target, attr, type(current)(value))

    def set_url_ttl(self, seconds: float) -> None:
        self.set(url_ttl=float(seconds))

    def faults(self, origin: str) -> FaultSwitches:
        """The fault switches of ``"api"`` or ``"storage"``: ``.set(kind, **options)``, ``.clear()``
        (see ``faults``)."""
        try:
            return self._fault_switches[origin]
        except KeyError:
            raise KeyError(f"unknown origin {origin!r}; 'api' or 'storage'") from None

    def clear_faults(self) -> None:
        """Both origins healthy again: every fault rule disarmed and any custom fault hook dropped."""
        for name, settings in self.origins.items():
            self._fault_switches[name].clear()
            settings.faults = None

    # ---- Sigmic --------------------------------------------------------

    def add_sigmic_task(self, task_id: str) -> None:
        with self.lock:
            self.sigmic_tasks.setdefault(task_id, {})

    def put_sigmic_file(
        self,
        task_id: str,
        path: str,
        data: Content,
        mime_type: str | None = None,
        category: str | None = None,
        modified_at: Timestamp = None,
    ) -> None:
        """Add or replace a workspace file (the task is created if new)."""
        mime = mime_type or guess_mime(path)
        with self.lock:
            self._revisions += 1
            self.sigmic_tasks.setdefault(task_id, {})[path] = SigmicFile(
                path,
                as_blob(data),
                mime,
                category or sigmic_category(path, mime),
                self._time(modified_at),
                self._revisions,
            )

    def remove_sigmic_file(self, task_id: str, path: str) -> None:
        with self.lock:
            del self.sigmic_tasks[task_id][path]

    def sigmic_file(self, task_id: str, path: str) -> Blob:
        with self.lock:
            return self.sigmic_tasks[task_id][path].blob

    # ---- Gumloop -------------------------------------------------------

    def add_gumloop_agent(self, agent_id: str) -> None:
        with self.lock:
            self.gumloop_agents.add(agent_id)

    def put_gumloop_artifact(
        self,
        agent_id: str,
        filename: str | None,
        data: Content,
        session_id: str | None = None,
        media_type: str | None = None,
        artifact_id: str | None = None,
        metadata_size: bool = True,
        creator: dict[str, Any] | None = _UNSET,
        version_id: str | None = None,
        created_at: Timestamp = None,
    ) -> tuple[str, str]:
        """A new artifact, or a new current version of ``artifact_id`` (major_version + 1).

        A new version without ``session_id`` stays in its predecessor's session.
        """
        with self.lock:
            self.gumloop_agents.add(agent_id)
            artifact = self.gumloop_artifacts.get(artifact_id or "")
            if artifact is None:
                artifact = GumloopArtifact(artifact_id or self._new_id("art_"), agent_id)
                self.gumloop_artifacts[artifact.artifact_id] = artifact
            elif artifact.agent_id != agent_id:
                raise ValueError(f"artifact {artifact_id} belongs to agent {artifact.agent_id}")
            previous = artifact.versions[-1] if artifact.versions else None
            if version_id is not None and any(v.version_id == version_id for v in artifact.versions):
                raise ValueError(f"artifact {artifact.artifact_id} already has version {version_id}")
            version = GumloopVersion(
                version_id=version_id or self._new_id("ver_"),
                major_version=previous.major_version + 1 if previous else 1,
                filename=filename,
                session_id=session_id if session_id or not previous else previous.session_id,
                created_at=self._time(created_at),
                blob=as_blob(data),
                media_type=media_type or guess_mime(filename),
                metadata_size=metadata_size,
                creator=dict(DEFAULT_CREATOR) if creator is _UNSET else creator,
            )
            artifact.versions.append(version)
            return artifact.artifact_id, version.version_id

    def gumloop_version(self, artifact_id: str, version_id: str | None = None) -> Blob:
        """The bytes of one version (default: current)."""
        with self.lock:
            artifact = self.gumloop_artifacts[artifact_id]
            if version_id is None:
                return artifact.current.blob
            return _only(v.blob for v in artifact.versions if v.version_id == version_id)

    # ---- vm0 -----------------------------------------------------------

    def _put_vm0(
        self, name: str, files: dict[str, Blob] | None, archive: bytes | None, **fields: Any
    ) -> tuple[str, str]:
        with self.lock:
            artifact = next((a for a in self.vm0_artifacts.values() if a.name == name), None)
            if artifact is None:
                artifact = Vm0Artifact(self._new_id("art_"), name)
                self.vm0_artifacts[artifact.artifact_id] = artifact
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

    def put_vm0_version(
        self,
        name: str,
        files: dict[str, Content],
        message: str = "Run output",
        created_by: str = "user_vm0demo",
        created_at: Timestamp = None,
    ) -> tuple[str, str]:
        """A new current version of artifact ``name`` (created if new) holding ``files``."""
        blobs = {path: as_blob(data) for path, data in files.items()}
        with self.lock:
            when = self._time(created_at)
            return self._put_vm0(name, blobs, None, created_at=when, message=message, created_by=created_by)

    def put_vm0_raw_archive(
        self, name: str, archive_bytes: bytes, message: str = "Raw archive", created_at: Timestamp = None
    ) -> tuple[str, str]:
        """A new current version served exactly as ``archive_bytes`` (for hostile-archive tests)."""
        with self.lock:
            when = self._time(created_at)
            return self._put_vm0(
                name, None, bytes(archive_bytes), created_at=when, message=message, created_by="user_vm0demo"
            )

    def vm0_artifact_id(self, name: str) -> str:
        with self.lock:
            return _only(a.artifact_id for a in self.vm0_artifacts.values() if a.name == name)

    def vm0_versions(self, artifact_id: str) -> list[str]:
        """Version ids, oldest first (the last is current)."""
        with self.lock:
            return [v.version_id for v in self.vm0_artifacts[artifact_id].versions]

    def _vm0_version(self, artifact_id: str, version_id: str | None) -> Vm0Version:
        with self.lock:
            artifact = self.vm0_artifacts[artifact_id]
            if version_id is None:
                return artifact.current
            return _only(v for v in artifact.versions if v.version_id == version_id)

    def vm0_archive(self, artifact_id: str, version_id: str | None = None) -> bytes:
        """The exact tar.gz the storage origin serves for that version (default: current)."""
        return self._vm0_version(artifact_id, version_id).archive()

    def vm0_file(self, artifact_id: str, version_id: str | None, path: str) -> Blob:
        """One file of a version built with ``put_vm0_version``."""
        files = self._vm0_version(artifact_id, version_id).files
        if files is None:
            raise KeyError(f"{artifact_id} is a raw archive")
        return files[path]

    # ---- Plangrep ------------------------------------------------------

    def put_plangrep_job(
        self,
        job_id: str,
        status: str,
        artifacts: dict[str, Content] | None = None,
        error: str | None = None,
        created_at: Timestamp = None,
        completed_at: Timestamp = None,
    ) -> None:
        """Create (or replace) a job; see ``set_plangrep_status`` for the status rules."""
        with self.lock:
            self.plangrep_jobs[job_id] = PlangrepJob(job_id, "queued", self._time(created_at))
            self.set_plangrep_status(job_id, status, artifacts, error, completed_at)

    def set_plangrep_status(
        self,
        job_id: str,
        status: str,
        artifacts: dict[str, Content] | None = None,
        error: str | None = None,
        completed_at: Timestamp = None,
    ) -> None:
        """Move a job to ``status``; reaching completed/failed stamps ``completed_at``.

        ``artifacts`` (if given) replaces the result snapshot, which is shown only once completed.
        """
        if status not in PLANGREP_STATUSES:
            raise ValueError(f"status must be one of {PLANGREP_STATUSES}")
        with self.lock:
            job = self.plangrep_jobs[job_id]
            finished = status in ("completed", "failed")
            if finished and job.status not in ("completed", "failed"):
                job.completed_at = self._time(completed_at)
            elif not finished:
                job.completed_at = None
            job.status = status
            if artifacts is not None:
                job.artifacts = {path: as_blob(data) for path, data in artifacts.items()}
            job.error = (error or "Job failed") if status == "failed" else None

    def plangrep_file(self, job_id: str, path: str) -> Blob:
        with self.lock:
            return self.plangrep_jobs[job_id].artifacts[path]


def _only(found: Iterator[T]) -> T:
    """The first match, or KeyError (what a missing dict key would raise) instead of StopIteration."""
    for item in found:
        return item
    raise KeyError("no such item")


_CATEGORIES = {
    "csv": "csv",
    "pdf": "pdf",
    "json": "json",
    "md": "text",
    "txt": "text",
    "py": "code",
    "js": "code",
    "ts": "code",
    "sh": "code",
    "sql": "code",
}


def sigmic_category(path: str, mime: str) -> str:
    """Sigmic's ``category``: by extension, else ``image``/``text`` by MIME type, else ``other``."""
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    if ext in _CATEGORIES:
        return _CATEGORIES[ext]
    for prefix in ("image", "text"):
        if mime.startswith(prefix + "/"):
            return prefix
    return "other"
