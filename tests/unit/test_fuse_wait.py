"""The wait for FUSE requests that replaces pyfuse3's, on a socket standing in for /dev/fuse:
a task answered True must find a request to read at once (a read of the empty device would
block the loop), one task at a time waits for the device, and closing ends every wait."""

from __future__ import annotations

import socket

import pyfuse3
import pytest
import trio

from artifactfs import fuse_wait
from artifactfs.fuse_wait import RequestWait, replaced_request_wait


@pytest.fixture
def device() -> tuple[socket.socket, socket.socket]:
    ours, kernel = socket.socketpair()
    ours.setblocking(False)  # a read with nothing there raises instead of blocking the test
    yield ours, kernel
    ours.close()
    kernel.close()


async def serve(wait: RequestWait, ours: socket.socket, got: list[bytes]) -> None:
    """As pyfuse3's session loop does: wait, then read one request with no checkpoint between."""
    while await wait.wait():
        got.append(ours.recv(1))


async def test_a_request_already_there_is_taken_at_once(device: tuple[socket.socket, socket.socket]) -> None:
    ours, kernel = device
    kernel.send(b"a")
    wait = RequestWait(ours.fileno())
    with trio.fail_after(1):
        assert await wait.wait()
    assert ours.recv(1) == b"a"


async def test_one_task_waits_for_the_device_and_every_request_is_read_once(
        device: tuple[socket.socket, socket.socket]) -> None:
    ours, kernel = device
    wait, got = RequestWait(ours.fileno()), []
    sent = [bytes([65 + i % 26]) * (1 + i % 3) for i in range(40)]  # one to three requests at a time
    async with trio.open_nursery() as nursery:
        for _ in range(8):  # two tasks waiting on the fd at once would raise BusyResourceError
            nursery.start_soon(serve, wait, ours, got)
        for i, requests in enumerate(sent):
            kernel.send(requests)
            await trio.sleep(0.002 * (i % 2))
        with trio.fail_after(5):
            while len(got) < len(b"".join(sent)):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert b"".join(got) == b"".join(sent)


async def test_closing_the_device_ends_every_wait(device: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = device
    wait, got = RequestWait(ours.fileno()), []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(serve, wait, ours, got)
            await trio.sleep(0.05)
            trio.lowlevel.notify_closing(ours)  # what pyfuse3.terminate does
    assert got == []
    assert not await wait.wait()


async def test_the_end_of_the_session_reaches_every_task(device: tuple[socket.socket, socket.socket]) -> None:
    """An unmount leaves the device readable for good; each task's read then ends its loop."""
    ours, kernel = device
    wait, ended = RequestWait(ours.fileno()), []

    async def until_the_end() -> None:
        while await wait.wait():
            if ours.recv(1) == b"":
                ended.append(True)
                return

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(until_the_end)
            await trio.sleep(0.05)
            kernel.shutdown(socket.SHUT_WR)
    assert len(ended) == 6


def test_pyfuse3_still_looks_up_the_wait_this_replaces() -> None:
    """If a pyfuse3 release renames it, the mount keeps pyfuse3's own (slower) wait: fail here."""
    assert callable(getattr(pyfuse3, "_wait_fuse_readable", None))


def test_without_a_fuse_device_pyfuse3s_wait_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuse_wait, "device_fd", lambda: None)
    original = pyfuse3._wait_fuse_readable
    with replaced_request_wait() as replaced:
        assert not replaced
        assert pyfuse3._wait_fuse_readable is original


def test_with_one_fuse_device_the_wait_is_replaced_until_the_block_ends(
        monkeypatch: pytest.MonkeyPatch, device: tuple[socket.socket, socket.socket]) -> None:
    monkeypatch.setattr(fuse_wait, "device_fd", lambda: device[0].fileno())
    original = pyfuse3._wait_fuse_readable
    with replaced_request_wait() as replaced:
        assert replaced
        assert pyfuse3._wait_fuse_readable.__self__.__class__ is RequestWait
    assert pyfuse3._wait_fuse_readable is original
