"""The Gumloop provider without a mount: hostile JSON, paging bounds, versions, signed-URL expiry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import pytest

from artifactfs.config import ProviderConfig
from artifactfs.errors import RemoteError
from artifactfs.httpclient import HttpClient
from artifactfs.model import Entry, Kind
from artifactfs.providers.gumloop import GumloopProvider, url_expiry

API = "https://api.gumloop.example/api/v1"
Answer = Callable[[str, Mapping[str, Any]], Any]


class ScriptedHttp(HttpClient):
    """Answers API calls from a function of (path, params) and records them."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("gumloop", API, {"Authorization": "Bearer t", "x-auth-key": "u"})
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None, **_: Any) -> Any:
        self.calls.append((path, dict(params or {})))
        return self.answer(path, params or {})


def provider(answer: Answer, tmp_path: Path) -> tuple[GumloopProvider, ScriptedHttp]:
    http = ScriptedHttp(answer)
    config = ProviderConfig("gumloop", "gumloop", API, "t", ("agent",), secrets={"user_id": "u"})
    return GumloopProvider(config, http, tmp_path), http


def item(artifact: str, version: str, filename: str | None = "f.txt", **extra: Any) -> dict[str, Any]:
    return {"id": artifact, "version_id": version, "filename": filename, "session_id": "ses",
            "created_at": "2026-05-15T14:32:00Z", "metadata": {"size": 3}, **extra}


def listing(*items: Any, cursor: Any = None) -> Answer:
    return lambda path, params: {"artifacts": list(items), "next_cursor": cursor}


def kids(entry: Entry) -> list[Entry]:
    """An entry's children, built if they are built on first use."""
    children = entry.children
    return children() if callable(children) else children or []


def child(entries: list[Entry], name: str) -> Entry:
    return next(e for e in entries if e.name == name)


async def test_hostile_json_gives_a_working_tree(tmp_path: Path) -> None:
    odd = [None, 3, "x", {"id": None}, {"filename": "no-id.txt"},
           {"id": 5, "filename": 7, "metadata": "x", "creator": "y", "created_at": 12,
            "version_id": [], "session_id": {}, "major_version": "two"},
           item("art_1", "ver_1", metadata={"size": "12"}, creator={"first_name": None, "email": 4})]
    for body in (None, "text", [], {"artifacts": "nope"}, {"artifacts": odd, "next_cursor": 17}):
        gumloop, _ = provider(lambda path, params, body=body: body, tmp_path)
        tree = await gumloop.list_dir(("agent", "agent"))
        assert [e.name for e in tree] == ["latest", "sessions", "artifacts", "search"]
    latest = kids(child(tree, "latest"))
    assert sorted((e.short_id, e.name, e.size) for e in latest) == [("5", "7", None), ("art_1", "f.txt", 12)]
    assert child(latest, "7").xattrs == {"id": "5", "agent_id": "agent", "created_at": "12"}
    assert child(latest, "7").mtime is None
    assert [a.short_id for a in kids(child(tree, "artifacts"))] == ["5", "art_1"]


async def test_paging_is_bounded_by_a_repeated_cursor(tmp_path: Path) -> None:
    gumloop, http = provider(listing(item("art_1", "ver_1"), cursor="again"), tmp_path)
    await gumloop.list_dir(("agent", "agent"))
    assert [params.get("cursor") for _, params in http.calls] == [None, "again"]
    assert all(params["page_size"] == 100 for _, params in http.calls)


async def test_versions_seen_are_remembered_and_current_links_a_safe_name(tmp_path: Path) -> None:
    answers = [listing(item("art_1", "..")),
               listing(item("art_1", "ver_2", created_at="2026-05-16T00:00:00Z"))]
    gumloop, _ = provider(lambda path, params: answers[0](path, params), tmp_path)
    await gumloop.list_dir(("agent", "agent"))
    answers.pop(0)
    tree = await gumloop.list_dir(("agent", "agent"))
    artifact = child(kids(child(tree, "artifacts")), "art_1")
    versions = kids(child(artifact.children or [], "versions"))
    assert sorted(v.name for v in versions) == ["..", "ver_2"]  # the namespace cleans ".." itself
    assert all(v.immutable and kids(v)[0].immutable for v in versions)
    assert child(kids(artifact), "current").target == "versions/ver_2"
    files = {kids(v)[0].fingerprint for v in versions}
    assert len(files) == 2, "each version has its own fingerprint"
    answers[0] = listing(item("art_1", "..", created_at="2026-05-17T00:00:00Z"))
    tree = await gumloop.list_dir(("agent", "agent"))
    link = child(child(kids(child(tree, "artifacts")), "art_1").children or [], "current")
    assert link.kind is Kind.LINK and link.target == "versions/unnamed"


async def test_latest_sessions_versions_and_search_share_key_and_fingerprint(tmp_path: Path) -> None:
    gumloop, http = provider(listing(item("art_1", "ver_1")), tmp_path)
    tree = await gumloop.list_dir(("agent", "agent"))
    found = await gumloop.lookup(("search", "agent"), "f")
    assert found is not None and found.ref == ("search", "agent", "f")
    assert http.calls[-1][1]["search_query"] == "f"
    artifact = child(kids(child(tree, "artifacts")), "art_1")
    places = [kids(child(tree, "latest"))[0],
              (kids(child(tree, "sessions"))[0].children or [])[0],
              (kids(child(kids(artifact), "versions"))[0].children or [])[0],
              kids(found)[0]]
    assert len({(e.key, e.fingerprint, e.ref) for e in places}) == 1


async def test_a_listing_names_its_first_signed_url_to_be_connected_to_ahead(tmp_path: Path) -> None:
    """One URL per listing (the connection is made per origin), none when no item has one."""
    named: list[str] = []
    gumloop, http = provider(listing(item("art_1", "v1"), item("art_2", "v2", url="https://s.example/2?sig"),
                                     item("art_3", "v3", url="https://s.example/3?sig")), tmp_path)
    http.listed = named.append  # type: ignore[method-assign]
    await gumloop.list_dir(("agent", "agent"))
    assert named == ["https://s.example/2?sig"]
    gumloop, http = provider(listing(item("art_1", "v1")), tmp_path)
    http.listed = named.append  # type: ignore[method-assign]
    await gumloop.list_dir(("agent", "agent"))
    assert named == ["https://s.example/2?sig"]


async def test_resolve_scopes_the_token_to_the_api_origin(tmp_path: Path) -> None:
    signed = "https://storage.example/o?X-Goog-Date=20260515T143200Z&X-Goog-Expires=900&X-Goog-Signature=s"
    gumloop, http = provider(lambda path, params: {"download_url": signed, "size": "12"}, tmp_path)
    source = await gumloop.resolve(("file", "art/1", "ver_1"))
    assert http.calls == [(f"{API}/artifacts/art%2F1/download", {"version_id": "ver_1"})]
    assert source.url == signed and source.headers == () and source.size == 12
    assert source.expires_at == 1778855520.0 + 900
    gumloop.http = ScriptedHttp(lambda path, params: {"download_url": f"{API}/blob"})
    assert dict((await gumloop.resolve(("file", "art_1", None))).headers)["x-auth-key"] == "u"
    gumloop.http = ScriptedHttp(lambda path, params: {"url": signed})
    with pytest.raises(RemoteError):
        await gumloop.resolve(("file", "art_1", "ver_1"))


@pytest.mark.parametrize("url,expected", [
    ("https://s/o?X-Goog-Algorithm=a&X-Goog-Date=20260515T143200Z&X-Goog-Expires=900", 1778855520.0 + 900),
    ("https://s/o?X-Amz-Date=20260515T143200Z&X-Amz-Expires=60&X-Amz-Signature=x", 1778855520.0 + 60),
    ("https://s/o?X-Goog-Expires=1778855520&X-Goog-Signature=x", 1778855520.0),  # absolute, no date
    ("https://s/o?Expires=1778855520&Signature=x", 1778855520.0),
    ("https://s/o?X-Goog-Expires=900", None),  # seconds from an unknown time: opaque
    ("https://s/o?X-Goog-Date=garbage&X-Goog-Expires=900", None),
    ("https://s/o?token=abc", None),
    ("https://s/o?x-goog-date=20260515T143200Z&x-goog-expires=900", 1778855520.0 + 900),  # any case
    ("https://s/o?X-Goog-Expires=&Expires=1778855520&Signature=a%26b", 1778855520.0),  # a blank one is absent
    ("https://s/o", None),
])
def test_url_expiry(url: str, expected: float | None) -> None:
    assert url_expiry(url) == expected
