"""vm0 end to end on a real mount: artifacts, versions, archives as served and unpacked."""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import io
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from artifactfs.emulator import Emulator
from artifactfs.emulator.server import Reply, Request, json_reply
from tests.conftest import MountFactory, run

RESULTS = "output-results"
TRAINING = "training-run"


def versions_of(emu: Emulator, name: str) -> tuple[str, list[str]]:
    artifact = emu.vm0_artifact_id(name)
    return artifact, emu.vm0_versions(artifact)


def files_below(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def expected_files(emu: Emulator, artifact: str, version: str) -> dict[str, bytes]:
    with emu.lock:
        blobs = next(v for v in emu.vm0_artifacts[artifact].versions if v.version_id == version).files
    assert blobs is not None
    return {path: emu.vm0_file(artifact, version, path).read_all() for path in blobs}


def downloads(emu: Emulator) -> list[dict]:
    return emu.requests(path_contains="/download") + emu.requests(origin="storage")


def test_artifacts_versions_and_current(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("vm0",))
    root = m.path / "vm0"
    artifact, versions = versions_of(emulator, RESULTS)
    assert sorted(os.listdir(root)) == sorted(a.name for a in emulator.vm0_artifacts.values())
    assert sorted(os.listdir(root / RESULTS)) == ["current", "versions"]
    assert os.listdir(root / "pending-run") == ["versions"]  # no version yet: no current link
    assert sorted(os.listdir(root / RESULTS / "versions")) == sorted(versions + [f"{v}.tar.gz" for v in versions])
    assert os.readlink(root / RESULTS / "current") == f"versions/{versions[-1]}"
    assert "logs" in os.listdir(root / RESULTS / "current")
    attrs = run("getfattr", "-d", root / RESULTS / "versions" / versions[0]).stdout
    for expected in (f'user.artifactfs.id="{artifact}"', f'user.artifactfs.version_id="{versions[0]}"',
                     f'user.artifactfs.name="{RESULTS}"', 'user.artifactfs.message="Run output"',
                     'user.artifactfs.created_by="user_vm0demo"', 'user.artifactfs.file_count="2"',
                     'user.artifactfs.created_at="2024-01-01T00:00:00.000Z"', 'user.artifactfs.size="'):
        assert expected in attrs
    assert emulator.tokens["vm0"] not in attrs


def test_every_page_of_artifacts_and_versions_is_listed(mount: MountFactory, emulator: Emulator) -> None:
    for i in range(105):
        emulator.put_vm0_version(f"bulk-{i:03d}", {"n.txt": str(i)})
    for i in range(101):
        emulator.put_vm0_version("many-versions", {"n.txt": str(i)})
    m = mount(("vm0",))
    assert len(os.listdir(m.path / "vm0")) == len(emulator.vm0_artifacts) > 105
    assert len(os.listdir(m.path / "vm0" / "many-versions" / "versions")) == 2 * 101
    assert all("limit=100" in r["query"] for r in emulator.requests(path_contains="/vm0/v1/artifacts"))
    assert any("cursor=" in r["query"] for r in emulator.requests(path_contains="/versions"))


def test_same_named_artifacts_both_show(mount: MountFactory, emulator: Emulator) -> None:
    with emulator.lock:
        twin = emulator.vm0_artifacts[emulator.vm0_artifact_id(RESULTS)]
        emulator.vm0_artifacts["art_twin"] = dataclasses.replace(
            twin, artifact_id="art_twin", versions=list(twin.versions[:1]), head=twin.versions[0].version_id,
            created_at=twin.created_at - 60, updated_at=twin.created_at - 60)
    m = mount(("vm0",))
    names = os.listdir(m.path / "vm0")
    assert RESULTS in names and f"{RESULTS}~art_twin" in names


def test_a_unique_prefix_of_eight_opens_the_version(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("vm0",))
    _, versions = versions_of(emulator, RESULTS)
    folder = m.path / "vm0" / RESULTS / "versions"
    assert sorted(os.listdir(folder / versions[0][:8])) == sorted(os.listdir(folder / versions[0]))
    assert (folder / versions[1][:12] / "README.md").read_bytes().startswith(b"# output-results")
    assert os.readlink(folder / versions[0][:8]) == versions[0]
    assert versions[0][:8] not in os.listdir(folder)
    for name in (versions[0][:7], "zzzzzzzz"):
        with pytest.raises(OSError) as info:
            os.stat(folder / name)
        assert info.value.errno == errno.ENOENT


def test_an_ambiguous_prefix_is_enoent(mount: MountFactory, emulator: Emulator) -> None:
    ids = ["abcdef01" + "0" * 56, "abcdef01" + "1" * 56]

    def versions_listing(req: Request) -> Reply | None:
        if req.path.endswith("/versions"):
            return json_reply(200, {"data": [{"id": i, "created_at": "2024-01-01T00:00:00Z"} for i in ids],
                                    "pagination": {"has_more": False, "next_cursor": None}})
        return None

    emulator.origins["api"].faults = versions_listing
    m = mount(("vm0",))
    folder = m.path / "vm0" / RESULTS / "versions"
    with pytest.raises(FileNotFoundError):
        os.stat(folder / "abcdef01")
    assert os.stat(folder / "abcdef010").st_ino == os.stat(folder / "abcdef010").st_ino


def test_archive_is_served_exactly_with_its_size_learned(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("vm0",))
    artifact, versions = versions_of(emulator, TRAINING)
    target = m.path / "vm0" / TRAINING / "versions" / f"{versions[0]}.tar.gz"
    expected = emulator.vm0_archive(artifact, versions[0])
    assert run("sha256sum", target).stdout.split()[0] == hashlib.sha256(expected).hexdigest()
    assert target.stat().st_size == len(expected)
    assert target.read_bytes() == expected


def test_unpacked_files_are_exact(mount: MountFactory, emulator: Emulator, tmp_path: Path) -> None:
    m = mount(("vm0",))
    for name in (RESULTS, TRAINING):
        artifact, versions = versions_of(emulator, name)
        for version in versions:
            folder = m.path / "vm0" / name / "versions" / version
            assert files_below(folder) == expected_files(emulator, artifact, version)
    run("cp", "-rL", m.path / "vm0" / TRAINING / "current/", tmp_path / "copy")
    artifact, versions = versions_of(emulator, TRAINING)
    assert files_below(tmp_path / "copy") == expected_files(emulator, artifact, versions[-1])
    weights = m.path / "vm0" / TRAINING / "current" / "checkpoints" / "model.safetensors"
    assert weights.stat().st_size == 4 << 20
    out = run("getfattr", "-d", weights).stdout
    assert f'user.artifactfs.version_id="{versions[-1]}"' in out


def test_a_server_listing_files_instead_of_an_archive(mount: MountFactory, emulator: Emulator,
                                                       tmp_path: Path) -> None:
    """The intermediate contract's download (200 JSON, a URL per file): the version's files,
    exact, each from its own URL; no archive (ENOENT); the token never goes to storage."""
    emulator.set(vm0_download="files")
    m = mount(("vm0",))
    artifact, versions = versions_of(emulator, TRAINING)
    folder = m.path / "vm0" / TRAINING / "versions"
    for version in versions:
        assert files_below(folder / version) == expected_files(emulator, artifact, version)
    run("cp", "-rL", m.path / "vm0" / TRAINING / "current/", tmp_path / "copy")
    assert files_below(tmp_path / "copy") == expected_files(emulator, artifact, versions[-1])
    weights = m.path / "vm0" / TRAINING / "current" / "checkpoints" / "model.safetensors"
    assert run("ls", "-l", weights).stdout.split()[4] == str(4 << 20)
    assert f'user.artifactfs.path="checkpoints/model.safetensors"' in run("getfattr", "-d", weights).stdout
    with pytest.raises(FileNotFoundError):
        (folder / f"{versions[0]}.tar.gz").read_bytes()
    storage = emulator.requests(origin="storage")
    assert storage and all("/vm0-artifacts/" in r["path"] and ".tar.gz" not in r["path"] for r in storage)


def test_unpacking_waits_for_the_version_and_survives_a_restart(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("vm0",))
    _, versions = versions_of(emulator, TRAINING)
    folder = m.path / "vm0" / TRAINING / "versions"
    emulator.clear_requests()
    assert run("ls", "-l", folder).returncode == 0
    os.stat(folder / versions[0])
    os.stat(folder / f"{versions[0]}.tar.gz")
    assert downloads(emulator) == []
    assert "config.yaml" in os.listdir(folder / versions[0])
    assert len(emulator.requests(path_contains="/download")) == 1
    storage = emulator.requests(origin="storage")
    assert storage and all("authorization" not in r["headers"] for r in storage)
    assert not any(emulator.tokens["vm0"] in str(r) for r in storage)
    os.listdir(folder / versions[0] / "checkpoints")
    assert len(emulator.requests(path_contains="/download")) == 1
    m.stop()
    again = mount(("vm0",))
    emulator.clear_requests()
    assert "config.yaml" in os.listdir(again.path / "vm0" / TRAINING / "versions" / versions[0])
    assert downloads(emulator) == []


def hostile_archive(escape: str) -> bytes:
    """Every trick a tar can play, and one honest file to show the rest was handled."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        def add(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields: object) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, (len(data) if kind == tarfile.REGTYPE else 0)
            for key, value in fields.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if info.size else None)

        add("ok.txt", b"honest\n")
        add("../../x", b"climbed\n")
        add(escape, b"absolute\n")
        add("link", kind=tarfile.SYMTYPE, linkname=os.path.dirname(escape))
        add("link/payload", b"through the link\n")
        add("hard", kind=tarfile.LNKTYPE, linkname="/etc/passwd")
        add("dev", kind=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("fifo", kind=tarfile.FIFOTYPE)
        add("dup.txt", b"first\n")
        add("dup.txt", b"second\n")
    return out.getvalue()


def gzip_bomb(size: int = 1100 << 20) -> bytes:
    """A tar.gz of about 1 MiB holding one 1.1 GiB file of zeros (concatenated gzip members)."""
    info = tarfile.TarInfo("bomb.bin")
    info.size = size
    block = 64 << 20
    tail = size % block + (-size) % 512 + 1024
    return (gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)) + gzip.compress(bytes(block)) * (size // block)
            + gzip.compress(bytes(tail)))


def all_paths(root: Path) -> set[Path]:
    """Every path below ``root``, not descending into mount points."""
    found: set[Path] = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith("mnt")]
        found.update(Path(folder, name) for name in dirs + files)
    return found


def test_a_hostile_archive_is_contained(mount: MountFactory, emulator: Emulator, tmp_path: Path) -> None:
    escape = f"/tmp/artifactfs-escape-{uuid.uuid4().hex}/abs.txt"
    artifact, version = emulator.put_vm0_raw_archive("hostile", hostile_archive(escape))
    m = mount(("vm0",))
    folder = m.path / "vm0" / "hostile" / "versions" / version
    before = all_paths(tmp_path)
    found = files_below(folder)
    assert found == {"ok.txt": b"honest\n", "x": b"climbed\n", escape.lstrip("/"): b"absolute\n",
                     "link/payload": b"through the link\n", "dup.txt": b"second\n"}
    assert not os.path.lexists(os.path.dirname(escape))
    cache = tmp_path / "cache"
    new = all_paths(tmp_path) - before
    assert [p for p in new if not p.is_relative_to(cache)] == []
    assert not any(p.is_symlink() or not (p.is_file() or p.is_dir()) for p in new)
    assert (m.path / "vm0" / RESULTS / "current" / "README.md").read_bytes().startswith(b"# output-results")


@pytest.mark.parametrize("archive,why", [(gzip_bomb(), "unpack to more than"),
                                         (os.urandom(5000), "corrupt archive")])
def test_a_bomb_or_corrupt_archive_is_eio_and_the_mount_goes_on(mount: MountFactory, emulator: Emulator,
                                                                tmp_path: Path, archive: bytes, why: str) -> None:
    _, version = emulator.put_vm0_raw_archive("broken", archive)
    m = mount(("vm0",))
    m.expect_log(rf"ERROR artifactfs.core: (opendir|lookup): vm0: version {version} of .* cannot be unpacked: .*{why}",
                 None, least=2, most=4)
    folder = m.path / "vm0" / "broken" / "versions" / version
    for _ in range(2):
        result = run("ls", folder, check=False)
        assert result.returncode != 0 and "Input/output error" in result.stderr
    assert len(emulator.requests(path_contains="/download")) == 1
    trees = tmp_path / "cache" / "trees"
    assert [p.name for p in trees.iterdir() if not p.name.endswith(".lock")] == []
    artifact, versions = versions_of(emulator, RESULTS)
    assert files_below(m.path / "vm0" / RESULTS / "current") == expected_files(emulator, artifact, versions[-1])
