"""Each fault of either origin, injected into the emulator under a real mount.

The promise: transient faults are retried and the reader gets exact bytes; when retries
run out the reader gets the right errno and a log line that names the path, never
sticky; 401/403 → EACCES, 404 → ENOENT; no partial byte is ever served or cached.

Each test declares the log lines its fault causes (``tests/faults/logs.py``). A read that
fails is asked twice by the kernel (its readahead, then the page read itself), so one
failed ``read()`` is one or two failed FUSE reads, each logged once.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
from pathlib import Path

import pytest

from artifactfs.emulator import Emulator, PatternBlob
from artifactfs.httpclient import MAX_ATTEMPTS, deadline_for
from tests.conftest import Mount, MountFactory, run
from tests.faults.logs import failed, retry, stale

TASK = "task_123"
MiB = 1 << 20
AGENT = "abc123DEFghiJKL"
LISTING = f"/sigmic/api/v1/tasks/{TASK}/artifacts"
DOWNLOAD = f"/sigmic/api/v1/tasks/{TASK}/artifacts/download"
KERNEL_READS = 2  # FUSE reads the kernel makes for one failed read()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sigmic_file(emu: Emulator, m: Mount, size: int = 6 * MiB, seed: int = 3) -> tuple[Path, PatternBlob]:
    blob = PatternBlob(size, seed)
    emu.put_sigmic_file(TASK, "data/file.bin", blob)
    return m.path / "sigmic" / TASK / "data" / "file.bin", blob


def gumloop_file(emu: Emulator, m: Mount, size: int = 6 * MiB, seed: int = 4) -> tuple[Path, PatternBlob, str]:
    """The file, its bytes, and the path of its signed URLs on the storage origin."""
    blob = PatternBlob(size, seed)
    artifact, version = emu.put_gumloop_artifact(AGENT, "faulty.bin", blob)
    return m.path / "gumloop" / AGENT / "latest" / "faulty.bin", blob, f"/gumloop-artifacts/{artifact}/{version}"


def faults_seen(emu: Emulator, kind: str) -> int:
    return sum(1 for r in emu.requests() if r.get("fault") == kind)


# Why a failed attempt failed, as the HTTP layer words it.
REASONS = {"status": "HTTP {code}", "throttle": "HTTP 429",
           "refuse": r"(\w+Error|the server closed the connection \(\w+\))",
           "cut": r"(\w+Error|body broke off \(.+\)|the connection closed within a response head)",
           "bad_range": r"the answer holds bytes \d+-\d+/\d+, not \d+-"}


def reason(kind: str, options: dict) -> str:
    return REASONS[kind].format(**options)


@pytest.mark.parametrize("kind,options", [
    ("status", {"code": 503}), ("status", {"code": 502}), ("status", {"code": 500}),
    ("throttle", {}), ("refuse", {}), ("cut", {"after": 5}),
])
def test_transient_api_faults_are_retried(mount: MountFactory, emulator: Emulator,
                                          kind: str, options: dict) -> None:
    m = mount(timeout=2)
    emulator.faults("api").set(kind, count=2, path_contains="/tasks/", **options)
    # Two failed attempts: the first is INFO, the second one WARNING; the third succeeds. A
    # connection closed unanswered may be a kept one the server let go: it is replaced once,
    # quietly, as any HTTP client does, so a refusal may cost no attempt.
    least = 0 if kind == "refuse" else 1
    m.expect_log(retry("sigmic", LISTING, reason(kind, options)), None, least=least, most=1)
    assert "downloads" in os.listdir(m.path / "sigmic" / TASK)
    assert faults_seen(emulator, kind) == 2
    assert "(attempt 1/" in m.log_text()


def test_retry_after_is_honoured(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=5)
    emulator.faults("api").set("throttle", retry_after=1.5, count=1, path_contains="/tasks/")
    started = time.monotonic()
    assert os.listdir(m.path / "sigmic" / TASK)
    assert time.monotonic() - started >= 1.4
    # One failed attempt is INFO only: nothing to declare.
    assert "HTTP 429 (attempt 1/" in m.log_text()


def test_exhausted_retries_give_eio_with_a_log_line_and_are_not_sticky(
        mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=2)
    emulator.faults("api").set("status", code=500, path_contains="/tasks/")
    m.expect_log(retry("sigmic", LISTING, "HTTP 500"), MAX_ATTEMPTS - 2)
    m.expect_log(failed("opendir", "sigmic", LISTING, f"HTTP 500, {MAX_ATTEMPTS} attempts"), 1)
    result = run("ls", m.path / "sigmic" / TASK, check=False)
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert faults_seen(emulator, "status") == MAX_ATTEMPTS
    emulator.faults("api").clear()
    assert "downloads" in os.listdir(m.path / "sigmic" / TASK)


def test_exhausted_download_retries_give_eio_naming_the_path_and_are_not_sticky(
        mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=2)
    target, blob = sigmic_file(emulator, m, size=3 * MiB)
    target.stat()
    emulator.faults("api").set("status", code=503, path_contains="/download")
    with open(target, "rb") as f, pytest.raises(OSError) as info:
        os.pread(f.fileno(), 4096, 0)
    assert info.value.errno == errno.EIO
    give_ups = len(re.findall(failed("read", "sigmic", DOWNLOAD, f"HTTP 503, {MAX_ATTEMPTS} attempts"),
                              m.log_text(), re.MULTILINE))
    # Per FUSE read: attempts 1 (INFO), 2 and 3 (WARNING), 4 fails too, and the read says so.
    m.expect_log(retry("sigmic", DOWNLOAD, "HTTP 503"), (MAX_ATTEMPTS - 2) * give_ups)
    m.expect_log(failed("read", "sigmic", DOWNLOAD, f"HTTP 503, {MAX_ATTEMPTS} attempts"), give_ups)
    assert 1 <= give_ups <= KERNEL_READS
    assert faults_seen(emulator, "status") == MAX_ATTEMPTS * give_ups  # as many attempts as the log says
    emulator.faults("api").clear()
    assert sha(target.read_bytes()) == blob.sha256()


def test_a_hanging_api_gives_eio_within_the_deadline(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=1)
    emulator.faults("api").set("hang", seconds=60, path_contains="/tasks/")
    # Attempts time out after 1 s; within the 3 s deadline the second one may fail (WARNING).
    m.expect_log(retry("sigmic", LISTING, "TimeoutError"), None, least=0, most=1)
    m.expect_log(failed("opendir", "sigmic", LISTING, rf"no answer within {deadline_for(1):.0f} s"), 1)
    started = time.monotonic()
    result = run("ls", m.path / "sigmic" / TASK, check=False)
    assert "Input/output error" in result.stderr
    assert time.monotonic() - started < deadline_for(1) + 5
    emulator.faults("api").clear()
    assert os.listdir(m.path / "sigmic" / TASK)


def test_a_hanging_download_gives_eio_within_the_deadline(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=1)
    target, blob = sigmic_file(emulator, m)
    target.stat()
    emulator.faults("api").set("hang", seconds=60, path_contains="/download")
    # Per FUSE read: attempts time out after 1 s, the second may fail within the deadline.
    m.expect_log(retry("sigmic", DOWNLOAD, "TimeoutError"), None, least=0, most=KERNEL_READS)
    m.expect_log(failed("read", "sigmic", DOWNLOAD, rf"gave up after {deadline_for(1):.0f} s \(TimeoutError, at byte 0\)"),
                 None, least=1, most=KERNEL_READS)
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        target.read_bytes()
    assert info.value.errno == errno.EIO
    assert time.monotonic() - started < KERNEL_READS * deadline_for(1) + 5
    emulator.faults("api").clear()
    assert sha(target.read_bytes()) == blob.sha256()


@pytest.mark.parametrize("code,errno_name", [(401, "EACCES"), (403, "EACCES"), (404, "ENOENT")])
def test_api_errors_map_to_errno(mount: MountFactory, emulator: Emulator, code: int, errno_name: str) -> None:
    m = mount(timeout=2)
    emulator.faults("api").set("status", code=code, path_contains="/tasks/")
    if code != 404:  # EACCES is a WARNING; ENOENT is quiet
        m.expect_log(failed("opendir", "sigmic", LISTING, f"HTTP {code}", level="WARNING"), 1)
    with pytest.raises(OSError) as info:
        os.listdir(m.path / "sigmic" / TASK)
    assert info.value.errno == getattr(errno, errno_name)
    assert faults_seen(emulator, "status") == 1  # not retried


def test_stale_listing_is_served_when_the_api_fails_after_the_ttl(
        mount: MountFactory, emulator: Emulator) -> None:
    m = mount(listing_ttl=1, timeout=1)
    before = sorted(os.listdir(m.path / "sigmic" / TASK / "downloads"))
    emulator.faults("api").set("status", code=503, path_contains="/tasks/")
    m.expect_log(retry("sigmic", LISTING, "HTTP 503"), MAX_ATTEMPTS - 2)
    m.expect_log(stale(f"sigmic/{TASK}", rf"sigmic: GET {re.escape(LISTING)}: HTTP 503, {MAX_ATTEMPTS} attempts"), 1)
    time.sleep(1.2)
    assert sorted(os.listdir(m.path / "sigmic" / TASK / "downloads")) == before


@pytest.mark.parametrize("origin,kind,options", [
    ("api", "cut", {"after": 300_000}), ("api", "refuse", {}), ("api", "status", {"code": 503}),
    ("api", "bad_range", {"shift": 7}), ("api", "bad_range", {"total": 123}),
])
def test_byte_faults_on_the_api_origin_never_serve_partial_bytes(
        mount: MountFactory, emulator: Emulator, origin: str, kind: str, options: dict) -> None:
    m = mount(timeout=2)
    target, blob = sigmic_file(emulator, m)
    target.stat()
    emulator.faults(origin).set(kind, count=2, path_contains="/download", **options)
    if kind != "cut":  # a cut body made progress: its retry is a first attempt again (INFO)
        # Two failed attempts: one WARNING if one fetch got both, none if two fetches got one each.
        m.expect_log(retry("sigmic", DOWNLOAD, reason(kind, options)), None, least=0, most=1)
    assert sha(target.read_bytes()) == blob.sha256()
    assert faults_seen(emulator, kind) == 2


def test_a_body_always_cut_short_is_eio_and_never_cached(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(timeout=1)
    target, blob = sigmic_file(emulator, m, size=3 * MiB)
    target.stat()
    emulator.faults("api").set("cut", after=1000, path_contains="/download")
    # Every attempt makes progress, so only the deadline ends it; each FUSE read logs why. The
    # kernel's retry of the first page alone is an opening read that asks just its bytes, which
    # the cuts let through: the reads after it fail in turn.
    m.expect_log(failed("read", "sigmic", DOWNLOAD), None, least=1, most=KERNEL_READS + 1)
    with pytest.raises(OSError) as info:
        target.read_bytes()
    assert info.value.errno == errno.EIO
    emulator.faults("api").clear()
    assert sha(target.read_bytes()) == blob.sha256()


@pytest.mark.parametrize("kind,options", [
    ("cut", {"after": 200_000}), ("status", {"code": 503}), ("throttle", {"retry_after": 0}),
    ("refuse", {}), ("status", {"code": 403}),
])
def test_storage_faults_on_signed_urls(mount: MountFactory, emulator: Emulator, kind: str, options: dict) -> None:
    m = mount(("gumloop",), timeout=2)
    target, blob, stored = gumloop_file(emulator, m)
    target.stat()
    emulator.faults("storage").set(kind, count=2, **options)
    # A cut body made progress, and a refused URL is resolved again: INFO only. Other faults:
    # two failed attempts, one WARNING if one fetch got both, none if two fetches got one each.
    if kind != "cut" and options.get("code") != 403:
        m.expect_log(retry("gumloop", stored, reason(kind, options)), None, least=0, most=1)
    assert sha(target.read_bytes()) == blob.sha256()
    assert faults_seen(emulator, kind) == 2


def test_signatures_expiring_early_mid_read_are_resolved_again(
        mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",), timeout=5)
    target, blob, _ = gumloop_file(emulator, m, size=24 * MiB)
    with open(target, "rb") as f:
        first = f.read(2 * MiB)
        resolved_before = len(emulator.requests(origin="api", path_contains="/download"))
        emulator.faults("storage").set("expire_signatures")
        rest = f.read()
    assert sha(first + rest) == blob.sha256()
    assert faults_seen(emulator, "expire_signatures") >= 1  # storage refused the old URL mid-read ...
    resolved_after = len(emulator.requests(origin="api", path_contains="/download"))
    assert resolved_after > resolved_before  # ... and the read went on with a new one
    assert "resolving the URL again" in m.log_text()  # INFO: nothing to declare


def test_storage_that_ignores_range_still_serves_exact_bytes(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",), timeout=5)
    target, blob, _ = gumloop_file(emulator, m, size=12 * MiB)
    emulator.faults("storage").set("ignore_range")
    with open(target, "rb") as f:
        assert os.pread(f.fileno(), 4096, 9 * MiB) == blob.read(9 * MiB, 4096)
        assert sha(f.read()) == blob.sha256()
