"""sd_notify(3) without libsystemd: one datagram per message to ``$NOTIFY_SOCKET``.

systemd starts a ``Type=notify`` service with ``NOTIFY_SOCKET`` set to a Unix datagram socket
(a path, or ``@name`` for the abstract namespace) and waits for ``READY=1`` before it calls the
service started. Outside systemd the variable is unset and every call is a no-op, so the daemon
can always notify without asking where it runs.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("artifactfs.sdnotify")

ENV = "NOTIFY_SOCKET"


def _address(value: str) -> str | None:
    """The socket address of ``$NOTIFY_SOCKET``: ``@`` means the abstract namespace (a NUL byte)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    return value if value.startswith("/") else None


def format_message(fields: dict[str, object]) -> bytes:
    """``ready=True, status="x"`` → ``b"READY=1\\nSTATUS=x"``; newlines in values become spaces."""
    lines = []
    for key, value in fields.items():
        text = "1" if value is True else str(value)
        lines.append(f"{key.upper()}={' '.join(text.splitlines())}")
    return "\n".join(lines).encode()


class Notifier:
    """A connection to the service manager, or nothing when not started by one."""

    def __init__(self, socket_path: str | None = None) -> None:
        self.socket_path = os.environ.get(ENV, "") if socket_path is None else socket_path
        self.address = _address(self.socket_path) if self.socket_path else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send ``fields`` as one message (``READY=1``, ``STATUS=...``); False if not sent.

        A failure is logged at debug level only: systemd going away must not stop the mount.
        """
        if self.address is None or not fields:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(format_message(fields), self.address)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.socket_path, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

