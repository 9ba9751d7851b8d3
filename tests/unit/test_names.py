"""Names as CONTRACT.md §3 promises them: safe, unique, stable."""

from __future__ import annotations

import time

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


CJK = "報告書の最終版" * 13 + ".pdf"  # 91 characters, 277 bytes


def test_long_names_fit_255_bytes_keeping_the_suffix_cut_between_characters() -> None:
    name = clean(CJK)
    assert len(name.encode()) <= 255 and name.endswith(".pdf") and CJK.startswith(name[:-4])
    assert clean("x" * 300 + ".a-very-long-suffix-indeed").encode() == ("x" * 255).encode()


def test_two_long_equal_names_get_distinct_names_within_255_bytes() -> None:
    """The names of a collision's losers always fit: this hung the whole mount before."""
    entries = [file(CJK, f"art_{n}", mtime=n) for n in range(3)]
    names = [n for n, _ in assign_names(entries)]
    assert len(set(names)) == 3
    assert all(len(n.encode()) <= 255 and n.endswith(".pdf") for n in names)
    assert sum("~art_" in n for n in names) == 2


def test_one_id_repeated_thousands_of_times_is_named_in_linear_time() -> None:
    entries = [Entry(name="same.txt", kind=Kind.FILE, ref=n, key=("k", n), short_id="dup") for n in range(8000)]
    started = time.perf_counter()
    names = [n for n, _ in assign_names(entries)]
    assert time.perf_counter() - started < 1.0
    assert len(set(names)) == 8000 and all(len(n.encode()) <= 255 for n in names)


def test_a_key_listed_twice_is_shown_once() -> None:
    twice = [file("a.txt", "same"), file("b.txt", "same")]
    assert [n for n, _ in assign_names(twice)] == ["a.txt"]


def test_lone_surrogates_and_long_ids_are_safe() -> None:
    assert clean("bad\ud800name.txt") == "bad\ufffdname.txt"
    assert clean("a\udcffb").encode() == "a\ufffdb".encode()
    assert len(with_id("report.pdf", "i" * 500).encode()) < 40
