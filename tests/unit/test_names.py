"""Names as CONTRACT.md §3 promises them: safe, unique, stable."""

from __future__ import annotations

from artifactfs.model import Entry, Kind
from artifactfs.names import assign_names, clean, fallback_name, split_path, with_id
from artifactfs.providers.tree import build_tree


def file(name: str | None, short_id: str, mtime: float = 0.0, mime: str | None = None) -> Entry:
    return Entry(name=name or "", kind=Kind.FILE, ref=short_id, key=short_id, mtime=mtime,
                 short_id=short_id, mime_type=mime)


def test_split_path_drops_what_could_escape() -> None:
    assert split_path("/../a//b/./c") == ["a", "b", "c"]
    assert split_path("../../etc/passwd") == ["etc", "passwd"]
    assert split_path("") == [] and split_path(None) == []
    assert split_path("a\\b") == ["a", "b"]


def test_clean_removes_nul_slash_and_control_characters() -> None:
    assert clean("a\x00b/c\nd") == "a_b_c_d"
    assert clean(".") == "" and clean("..") == ""
    assert len(clean("x" * 400).encode()) <= 255


def test_fallback_name_uses_id_and_media_type() -> None:
    assert fallback_name("art_1", "application/pdf") == "art_1.pdf"
    assert fallback_name("art_2", None) == "art_2"


def test_with_id_keeps_the_suffix() -> None:
    assert with_id("report.pdf", "art_gHiJkL456") == "report~art_gHiJkL456.pdf"
    assert with_id("README", "x") == "README~x"
    assert with_id(".bashrc", "x") == ".bashrc~x"


def test_collisions_newest_keeps_the_name_and_stable_across_listings() -> None:
    entries = [file("report.pdf", "a1", 10), file("report.pdf", "a2", 20), file("other", "a3")]
    names = {e.short_id: n for n, e in assign_names(entries)}
    assert names == {"a2": "report.pdf", "a1": "report~a1.pdf", "a3": "other"}
    again = {e.short_id: n for n, e in assign_names(list(reversed(entries)))}
    assert again == names


def test_unusable_names_fall_back_and_never_collide() -> None:
    entries = [file(None, "a1", mime="text/plain"), file("", "a2"), file("..", "a3"), file("a1.txt", "a4")]
    names = [n for n, _ in assign_names(entries)]
    assert len(set(names)) == 4
    assert all(n and n not in (".", "..") and "/" not in n and "\x00" not in n for n in names)


def test_build_tree_nests_paths() -> None:
    tree = build_tree([("downloads/a.csv", file("a.csv", "1")), ("downloads/sub/b", file("b", "2")),
                       ("../top", file("top", "3"))], "task")
    names = sorted(e.name for e in tree)
    assert names == ["downloads", "top"]
    downloads = next(e for e in tree if e.name == "downloads")
    assert sorted(e.name for e in downloads.children or []) == ["a.csv", "sub"]
