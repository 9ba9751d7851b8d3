"""sd_notify without libsystemd: what a fake NOTIFY_SOCKET receives, path and abstract alike."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Iterator

import pytest

from artifactfs.sdnotify import Notifier, format_message


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and its NOTIFY_SOCKET value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def test_messages_reach_a_path_socket(receiver: tuple[socket.socket, str]) -> None:
    sock, address = receiver
    notifier = Notifier(address)
    assert notifier.enabled
    assert notifier.notify(ready=True, status="3 files cached")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 files cached"
    assert notifier.notify(stopping=True)
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_an_abstract_socket_is_written_with_an_at_sign() -> None:
    name = f"artifactfs-test-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier("@" + name)
        assert notifier.notify(ready=True)
        assert sock.recv(4096) == b"READY=1"
        notifier.close()


def test_notify_socket_comes_from_the_environment(receiver: tuple[socket.socket, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sock, address = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert Notifier().notify(status="hello")
    assert sock.recv(4096) == b"STATUS=hello"


def test_without_systemd_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled
    assert not Notifier().notify(ready=True)
    assert not Notifier("relative/path").enabled
    assert not Notifier(str(tmp_path / "gone")).notify(ready=True), "a vanished socket is not an error"


def test_values_stay_on_one_line() -> None:
    assert format_message({"status": "two\nlines", "errno": 5}) == b"STATUS=two lines\nERRNO=5"
