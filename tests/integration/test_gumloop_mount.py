"""Gumloop end to end on a real mount: tree, pages, versions, search, odd names, signed URLs."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from artifactfs.emulator import Emulator, PatternBlob
from artifactfs.emulator.server import Reply, Request, xml_reply
from tests.conftest import IN_CI, Mount, MountFactory, run, token_environ

AGENT = "abc123DEFghiJKL"
FIRST_SESSION, SECOND_SESSION = "ses_8h2k4m1n", "ses_3p9q7r2s"


def agent_dir(m: Mount, agent: str = AGENT) -> Path:
    return m.path / "gumloop" / agent


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def origin_sha(emu: Emulator, path: Path) -> str:
    """The emulator's bytes of the version a file says it is (its xattrs)."""
    artifact = os.getxattr(path, "user.artifactfs.id").decode()
    version = os.getxattr(path, "user.artifactfs.version_id").decode()
    return emu.gumloop_version(artifact, version).sha256()


def downloads(emu: Emulator) -> list[dict]:
    """Download-URL resolutions the API answered."""
    return emu.requests(origin="api", path_contains="/download")


def test_tree_of_the_sample_agent(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",))
    top = agent_dir(m)
    assert os.listdir(m.path / "gumloop") == [AGENT]
    assert sorted(os.listdir(top)) == ["artifacts", "latest", "search", "sessions"]
    latest = ["art_qRsTuV345.json", "chart.png", "q4_sales_report.pdf", "report.md",
              "report~art_vWxYz0123.md", "summary.txt"]
    assert sorted(os.listdir(top / "latest")) == latest
    assert sorted(os.listdir(top / "sessions")) == sorted([FIRST_SESSION, SECOND_SESSION])
    assert sorted(os.listdir(top / "sessions" / FIRST_SESSION)) == [
        "art_qRsTuV345.json", "q4_sales_report.pdf", "summary.txt"]
    assert sorted(os.listdir(top / "sessions" / SECOND_SESSION)) == [
        "chart.png", "report.md", "report~art_vWxYz0123.md"]
    assert os.listdir(top / "search") == []
    artifact = top / "artifacts" / "art_aBcDeF123"
    assert sorted(os.listdir(artifact)) == ["current", "versions"]
    assert os.listdir(artifact / "versions") == ["ver_xYz9012"]  # the API never listed the draft
    assert os.readlink(artifact / "current") == "versions/ver_xYz9012"
    assert run("readlink", artifact / "current").stdout.strip() == "versions/ver_xYz9012"
    report = emulator.gumloop_version("art_kLmNoP234").read_all()
    assert (top / "latest" / "report.md").read_bytes() == report  # the newest keeps the name
    assert (top / "latest" / "report~art_vWxYz0123.md").read_bytes() == \
        emulator.gumloop_version("art_vWxYz0123").read_all()
    files = [p for p in top.rglob("*") if p.is_file()]
    assert len(files) == 6 * 3  # latest/, sessions/, versions/
    for path in files:
        assert run("sha256sum", path).stdout.split()[0] == origin_sha(emulator, path), path
    stamp = os.stat(top / "latest" / "q4_sales_report.pdf")
    assert stamp.st_size == emulator.gumloop_version("art_aBcDeF123").size
    assert stamp.st_mtime == 1778855520.0  # 2026-05-15T14:32:00Z


def test_xattrs_answer_user_names_only_and_nothing_when_switched_off(mount: MountFactory,
                                                                    emulator: Emulator) -> None:
    """By default ``user.*`` names answer and any other name is ENODATA (what ``ls -l`` asks
    of every file); with ``--no-xattrs`` every call fails with EOPNOTSUPP, also the second
    (the daemon answered ENOSYS, so the kernel stopped asking), and the bytes still read."""
    on = agent_dir(mount(("gumloop",))) / "latest" / "report.md"
    assert os.getxattr(on, "user.artifactfs.provider") == b"gumloop"
    assert "user.artifactfs.provider" in os.listxattr(on)
    for name in ("trusted.overlay.opaque", "user.nothing", "user.artifactfs.nothing"):
        with pytest.raises(OSError) as missing:
            os.getxattr(on, name)
        assert missing.value.errno == errno.ENODATA, name
    off = agent_dir(mount(("gumloop",), args=("--no-xattrs",))) / "latest" / "report.md"
    for _ in range(2):
        for ask in (lambda: os.getxattr(off, "user.artifactfs.provider"), lambda: os.listxattr(off)):
            with pytest.raises(OSError) as unsupported:
                ask()
            assert unsupported.value.errno == errno.EOPNOTSUPP
    assert off.read_bytes() == emulator.gumloop_version("art_kLmNoP234").read_all()


def test_a_warm_listing_leaves_the_kernel_its_entries_and_survives_their_eviction(mount: MountFactory,
                                                                                 emulator: Emulator) -> None:
    """A listing replayed soon after the kernel got it in full sends names without attributes
    (the kernel keeps its dentries and attributes): ``ls -l`` shows the same. Once the kernel
    dropped them (``drop_caches``: it forgets the inodes), it looks each name up again."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root; dropping the kernel's dentries needs root")
        pytest.skip("dropping the kernel's dentries needs root")
    m = mount(("gumloop",))
    latest = agent_dir(m) / "latest"
    cold = run("ls", "-l", "--time-style=+%s", latest).stdout
    assert "without attributes" not in m.log_text()
    assert run("ls", "-l", "--time-style=+%s", latest).stdout == cold
    assert "readdir: entries 0-5 without attributes" in m.log_text()
    Path("/proc/sys/vm/drop_caches").write_text("2")
    assert run("ls", "-l", "--time-style=+%s", latest).stdout == cold
    for path in latest.iterdir():
        assert sha(path.read_bytes()) == origin_sha(emulator, path), path


def test_listing_and_stat_resolve_no_download_url(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",))
    emulator.clear_requests()
    run("ls", "-lR", agent_dir(m))
    for path in agent_dir(m).rglob("*"):
        os.lstat(path)
    run("getfattr", "-d", agent_dir(m) / "latest" / "chart.png")
    assert downloads(emulator) == [] and emulator.requests(origin="storage") == []
    assert len(emulator.requests(origin="api")) == 1  # one listing call for the whole agent


def test_every_page_is_listed(mount: MountFactory, emulator: Emulator) -> None:
    for n in range(260):
        emulator.put_gumloop_artifact("agent_many", f"file_{n:03d}.txt", f"content {n}\n",
                                      session_id=f"ses_{n % 3}")
    emulator.clear_requests()
    m = mount(("gumloop",), ids={"gumloop": ["agent_many"]})
    top = agent_dir(m, "agent_many")
    assert sorted(os.listdir(top / "latest")) == [f"file_{n:03d}.txt" for n in range(260)]
    assert sorted(os.listdir(top / "sessions")) == ["ses_0", "ses_1", "ses_2"]
    assert len(os.listdir(top / "artifacts")) == 260
    listings = emulator.requests(origin="api", path_contains="/agents/agent_many/artifacts")
    queries = [parse_qs(r["query"]) for r in listings]
    assert len(queries) == 3 and all(q["page_size"] == ["100"] for q in queries)
    assert "cursor" not in queries[0] and queries[1]["cursor"] != queries[2]["cursor"]
    assert (top / "latest" / "file_259.txt").read_bytes() == b"content 259\n"
    emulator.clear_requests()
    matches = sorted(os.listdir(top / "search" / "1"))
    assert matches == [f"file_{n:03d}.txt" for n in range(260) if "1" in f"{n:03d}"] and len(matches) > 100
    found = [parse_qs(r["query"]) for r in emulator.requests(origin="api", path_contains="/artifacts")]
    assert len(found) == 2 and all(q["search_query"] == ["1"] for q in found)


def test_a_new_version_keeps_the_old_one_under_versions(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",), listing_ttl=1)
    top = agent_dir(m)
    latest = top / "latest" / "q4_sales_report.pdf"
    old = latest.read_bytes()
    new = b"%PDF-1.4 revised\n" * 1000
    _, new_version = emulator.put_gumloop_artifact(AGENT, "q4_sales_report.pdf", new,
                                                   artifact_id="art_aBcDeF123")
    time.sleep(1.3)
    versions = top / "artifacts" / "art_aBcDeF123" / "versions"
    assert sorted(os.listdir(versions)) == sorted(["ver_xYz9012", new_version])
    assert os.readlink(versions.parent / "current") == f"versions/{new_version}"
    assert latest.stat().st_size == len(new)
    assert latest.read_bytes() == new
    assert (top / "sessions" / FIRST_SESSION / "q4_sales_report.pdf").read_bytes() == new
    assert (versions.parent / "current" / "q4_sales_report.pdf").read_bytes() == new
    assert (versions / "ver_xYz9012" / "q4_sales_report.pdf").read_bytes() == old
    assert os.getxattr(latest, "user.artifactfs.major_version") == b"3"


def test_search_lists_matches_and_survives_the_ttl(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",), listing_ttl=1)
    search = agent_dir(m) / "search"
    assert sorted(os.listdir(search / "report")) == ["q4_sales_report.pdf", "report.md",
                                                     "report~art_vWxYz0123.md"]
    assert run("ls", search / "REPORT").stdout.split() == ["q4_sales_report.pdf", "report.md",
                                                           "report~art_vWxYz0123.md"]
    assert os.listdir(search / "no-such-text") == []
    inode = os.stat(search / "report").st_ino
    names = ("report.md", "q4_sales_report.pdf")
    latest = {name: (agent_dir(m) / "latest" / name).read_bytes() for name in names}
    emulator.clear_requests()
    for name, data in latest.items():  # the same cache as latest/: no new fetch
        assert (search / "report" / name).read_bytes() == data
        assert sha(data) == origin_sha(emulator, search / "report" / name)
    assert emulator.requests(origin="storage") == [] and downloads(emulator) == []
    emulator.put_gumloop_artifact(AGENT, "final_report.txt", "final\n", session_id=SECOND_SESSION)
    time.sleep(1.3)
    assert run("ls", search / "report").stdout.split() == [
        "final_report.txt", "q4_sales_report.pdf", "report.md", "report~art_vWxYz0123.md"]
    assert os.stat(search / "report").st_ino == inode
    assert (search / "report" / "final_report.txt").read_bytes() == b"final\n"
    assert os.listdir(search) == []  # searches open on lookup; search/ itself lists nothing


def test_odd_filenames_get_safe_unique_names(mount: MountFactory, emulator: Emulator) -> None:
    odd = [None, "", ".", "..", "a/b", "x\x00y", "tab\tand\nnewline", "/", "dup.txt", "dup.txt", "dup.txt"]
    for n, filename in enumerate(odd):
        emulator.put_gumloop_artifact("agent_odd", filename, f"bytes of {n}\n", media_type="text/plain")
    m = mount(("gumloop",), ids={"gumloop": ["agent_odd"]}, listing_ttl=1)
    latest = agent_dir(m, "agent_odd") / "latest"
    names = sorted(os.listdir(latest))
    assert len(names) == len(odd) == len(set(names))
    assert all(name not in ("", ".", "..") and not any(c < " " for c in name) for name in names)
    assert {"a_b", "x_y", "tab_and_newline", "dup.txt"} <= set(names)
    assert len([n for n in names if n.startswith("dup~art_") and n.endswith(".txt")]) == 2
    newest_dup = os.getxattr(latest / "dup.txt", "user.artifactfs.created_at")
    assert all(os.getxattr(latest / n, "user.artifactfs.created_at") < newest_dup
               for n in names if n.startswith("dup~"))
    for name in names:
        assert sha((latest / name).read_bytes()) == origin_sha(emulator, latest / name), name
    time.sleep(1.3)
    assert sorted(os.listdir(latest)) == names  # the same names on every listing


def test_file_without_size_reads_completely(mount: MountFactory, emulator: Emulator, tmp_path: Path) -> None:
    big = PatternBlob(3 * 1048576 + 12345, seed=5)
    emulator.put_gumloop_artifact(AGENT, "unsized.bin", big, metadata_size=False)
    m = mount(("gumloop",))
    latest = agent_dir(m) / "latest"
    summary = emulator.gumloop_version("art_gHiJkL456").read_all()
    assert (latest / "summary.txt").stat().st_size == 0  # the listing gives no size
    assert run("cat", latest / "summary.txt").stdout.encode() == summary
    assert (latest / "summary.txt").stat().st_size == len(summary)
    with open(latest / "unsized.bin", "rb") as f:
        assert sha(f.read()) == big.sha256()
    run("cp", latest / "unsized.bin", tmp_path / "copy.bin")
    assert sha((tmp_path / "copy.bin").read_bytes()) == big.sha256()
    assert (latest / "unsized.bin").stat().st_size == big.size


def read_slowly(path: Path, pause: float) -> str:
    """sha256 of a file read in 16 MiB pieces with a pause after each one."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(16 << 20):
            digest.update(piece)
            time.sleep(pause)
    return digest.hexdigest()


def test_url_expiring_mid_read_is_resolved_again(mount: MountFactory, emulator: Emulator) -> None:
    short, long = PatternBlob(64 << 20, seed=11), PatternBlob(48 << 20, seed=12)
    emulator.put_gumloop_artifact(AGENT, "short.bin", short)
    emulator.put_gumloop_artifact(AGENT, "long.bin", long)
    emulator.set_url_ttl(1)  # signed URLs live 1 s (the listed ones too); the read takes several
    m = mount(("gumloop",))
    latest = agent_dir(m) / "latest"
    assert (latest / "short.bin").stat().st_size == short.size
    emulator.clear_requests()
    assert read_slowly(latest / "short.bin", 1.2) == short.sha256()
    assert len(downloads(emulator)) > 1
    assert all("version_id=" in r["query"] for r in downloads(emulator))

    emulator.set_url_ttl(300)
    emulator.clear_requests()
    refused: list[str] = []

    def refuse_once(req: Request) -> Reply | None:
        """Storage refuses the first request past byte 0, as it does a revoked signature."""
        if refused or req.headers.get("range", "").startswith("bytes=0-"):
            return None
        refused.append(req.headers.get("range", ""))
        return xml_reply(403, "<Error><Code>ExpiredToken</Code></Error>")

    emulator.origins["storage"].faults = refuse_once
    assert sha((latest / "long.bin").read_bytes()) == long.sha256()
    assert refused and len(downloads(emulator)) == 2  # the first URL, then one after the refusal


def test_token_and_user_id_never_reach_storage(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",))
    run("sha256sum", *sorted((agent_dir(m) / "latest").iterdir()))
    storage = emulator.requests(origin="storage")
    assert storage
    secrets = (emulator.tokens["gumloop"], emulator.gumloop_user_id)
    for request in storage:
        assert not {"authorization", "x-auth-key"} & set(request["headers"])
        text = repr(request)
        assert not any(secret in text for secret in secrets)
    for request in emulator.requests(origin="api"):
        assert request["headers"]["authorization"] == f"Bearer {secrets[0]}"
        assert request["headers"]["x-auth-key"] == secrets[1]
    assert not any(secret in m.log_text() for secret in secrets)


def test_getfattr_shows_metadata_and_no_url_or_token(mount: MountFactory, emulator: Emulator) -> None:
    m = mount(("gumloop",))
    out = run("getfattr", "-d", agent_dir(m) / "latest" / "q4_sales_report.pdf").stdout
    for expected in ('user.mime_type="application/pdf"', 'user.artifactfs.provider="gumloop"',
                     'user.artifactfs.id="art_aBcDeF123"', 'user.artifactfs.version_id="ver_xYz9012"',
                     'user.artifactfs.created_at="2026-05-15T14:32:00Z"', 'user.artifactfs.major_version="2"',
                     f'user.artifactfs.session_id="{FIRST_SESSION}"', f'user.artifactfs.agent_id="{AGENT}"',
                     'user.artifactfs.creator_email="ada@example.com"',
                     'user.artifactfs.creator_name="Ada Lovelace"'):
        assert expected in out, out
    assert "http" not in out and "Signature" not in out and emulator.tokens["gumloop"] not in out
    chart = run("getfattr", "-d", agent_dir(m) / "latest" / "chart.png").stdout
    assert "creator" not in chart and 'user.mime_type="image/png"' in chart


def test_unknown_agent_is_enoent_bad_token_is_eacces_other_agents_open(
        mount: MountFactory, emulator: Emulator) -> None:
    emulator.put_gumloop_artifact("agent_other", "notes.txt", "hello\n")
    m = mount(("gumloop",))
    result = run("ls", agent_dir(m, "no_such_agent"), check=False)
    assert result.returncode != 0 and "No such file or directory" in result.stderr
    assert "agent_other" not in os.listdir(m.path / "gumloop")
    assert os.listdir(agent_dir(m, "agent_other") / "latest") == ["notes.txt"]
    assert sorted(os.listdir(m.path / "gumloop")) == [AGENT, "agent_other"]
    env = token_environ(emulator)
    env["TEST_GUMLOOP_TOKEN"] = "wrong-token"
    bad = mount(("gumloop",), env=env)
    bad.expect_log(r"WARNING artifactfs.core: (lookup|opendir): gumloop: GET /gumloop/api/v1/agents/abc123DEFghiJKL/artifacts: HTTP 401")
    result = run("ls", agent_dir(bad), check=False)
    assert result.returncode != 0 and "Permission denied" in result.stderr
    assert "wrong-token" not in bad.log_text()


@pytest.mark.parametrize("kind", ["oauth", "team"])
def test_oauth_and_team_tokens_need_no_user_id(mount: MountFactory, emulator: Emulator, kind: str) -> None:
    """OAuth access tokens go without x-auth-key; team keys add team_id to every API request."""
    info = emulator.ready_info()
    env = token_environ(emulator)
    env["TEST_GUMLOOP_TOKEN"] = info[f"gumloop_{kind}_token"]
    env.pop("TEST_GUMLOOP_USER_ID")
    extra = f'team_id = "{info["gumloop_team_id"]}"\n' if kind == "team" else ""
    m = mount(("gumloop",), env=env, provider_extra={"gumloop": extra}, secrets=False)
    report = agent_dir(m) / "latest" / "q4_sales_report.pdf"
    assert report.read_bytes() == emulator.gumloop_version("art_aBcDeF123").read_all()
    api = emulator.requests(origin="api", path_contains="/gumloop/")
    assert api and all("x-auth-key" not in r["headers"] for r in api)
    assert all(("team_id=team_demo" in r["query"]) == (kind == "team") for r in api)
    assert all("team_id" not in r["query"] for r in emulator.requests(origin="storage"))
