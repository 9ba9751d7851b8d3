"""The kernel's form of a listing: which entries a replay may send without attributes."""

from __future__ import annotations

import ctypes

import pyfuse3

from artifactfs.fuse_ops import NODE_ID_OFFSET, KernelListing, anonymous


def listing(n: int, ttl: float = 60.0) -> KernelListing:
    entries = []
    for i in range(n):
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = 100 + i
        entries.append((f"f{i}".encode(), entry))
    made = KernelListing(entries, ttl)
    made.anonymous = entries
    return made


def test_the_node_id_is_found_and_cleared_apart_from_the_inode_number() -> None:
    """pyfuse3 sets the node id only together with ``st_ino``; the kernel lists a name whose
    ``d_ino`` is 0 as deleted (glibc skips it), so the inode number must stay."""
    assert NODE_ID_OFFSET is not None
    entry = pyfuse3.EntryAttributes()
    entry.st_ino, entry.st_size = 4242, 7
    same = anonymous(entry)
    assert same is entry and entry.st_ino == 0  # the getter reads the node id
    stat_ino = ctypes.c_uint64.from_address(id(entry) + NODE_ID_OFFSET + 24).value
    assert stat_ino == 4242 and entry.st_size == 7


def test_nothing_is_held_before_a_full_pass_from_the_start() -> None:
    kernel = listing(10)
    assert kernel.held(0.0) == 0
    kernel.gave(4, 10, 0.0)  # a pass that did not start at the first entry
    assert kernel.held(1.0) == 0


def test_a_full_pass_is_held_for_half_the_ttl() -> None:
    kernel = listing(10, ttl=60.0)
    kernel.gave(0, 6, 100.0)
    kernel.gave(6, 10, 100.5)
    assert kernel.held(101.0) == 10
    assert kernel.held(129.9) == 10
    assert kernel.held(130.0) == 0  # the kernel's copies may expire before the next pass ends
    kernel.gave(0, 10, 130.0)
    assert kernel.held(131.0) == 10


def test_an_interrupted_pass_holds_what_it_gave_and_a_gap_extends_nothing() -> None:
    kernel = listing(10)
    kernel.gave(0, 3, 0.0)
    assert kernel.held(1.0) == 3
    kernel.gave(5, 8, 1.0)  # entries 3 and 4 were never given
    assert kernel.held(2.0) == 3
    kernel.gave(3, 8, 2.0)
    assert kernel.held(3.0) == 8


def test_a_zero_ttl_or_no_anonymous_entries_hold_nothing() -> None:
    kernel = listing(4, ttl=0.0)
    kernel.gave(0, 4, 0.0)
    assert kernel.held(0.0) == 0
    plain = KernelListing(listing(4).entries, 60.0)  # its anonymous entries are not made yet
    plain.gave(0, 4, 0.0)
    assert plain.held(1.0) == 0
