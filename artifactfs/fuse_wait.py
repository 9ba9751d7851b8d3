"""How pyfuse3's worker tasks wait for the kernel's next request: one pass of trio's
scheduler per request where pyfuse3 takes two, and no ``epoll`` round when one is waiting.

pyfuse3 (3.x) has each worker task take a ``trio.Lock`` and then ``wait_readable`` on
``/dev/fuse`` before it reads a request, even when one is already there. A warm ``ls -l``
of 10,000 files makes 20,000 requests (two ``getxattr`` per file), each of which went
through the scheduler twice and through ``epoll`` once. ``replaced_request_wait`` swaps
that wait (``_wait_fuse_readable``, which pyfuse3's session loop looks up among its
module's globals for every request) for ``RequestWait.wait``: after one checkpoint (other
tasks run, and a client's next request has time to arrive), a task takes the next request
at once if one is there and no task waits for the device (one ``poll``); otherwise one task
at a time waits for the device while the others park. The request is read right after the
``poll``, with no checkpoint between, so no other task can take it first: a read of the
device with nothing in it would block the whole loop.

Measured here (lab, fresh mounts, interleaved): a warm ``ls -l`` of 10,000 files with xattrs
took 623 against 881 ms (medians of 20), and 200 files of 1 MiB read by 8 threads ran at 574
against 491 MB/s (medians of 8), as README and docs/architecture.md say.

pyfuse3 counts the tasks in its own wait to decide when to start another and when an idle
one ends; that count lives in its C code, so with this wait it starts tasks up to
``max_tasks`` and keeps them (parked, they cost nothing). Where pyfuse3 has no such global,
or the process holds more than one ``/dev/fuse`` descriptor, nothing is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
from collections.abc import Iterator

import pyfuse3
import trio

log = logging.getLogger("artifactfs.fuse_wait")

DEVICE = "/dev/fuse"


class RequestWait:
    """The wait for the next request on the FUSE device ``fd`` (trio thread only)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._waiting = False  # a task waits for the device
        self._ended = False  # the device is being closed (``pyfuse3.terminate``)
        self._parked = trio.lowlevel.ParkingLot()  # tasks waiting for the one that waits for the device

    async def wait(self) -> bool:
        """True when a request can be read now (at once, with no checkpoint); False once the
        session ends. When the kernel ends it (an unmount), the device reads as ready, and
        the read ends each task's loop in turn."""
        parked = self._parked
        await trio.lowlevel.cancel_shielded_checkpoint()
        while self._waiting and not self._ended:
            await parked.park()
        if self._ended:
            return False
        if self._poll.poll(0):
            parked.unpark()  # a parked task goes on from here (at the end, each one reads the end)
            return True
        self._waiting = True
        try:
            await trio.lowlevel.wait_readable(self._fd)
        except trio.ClosedResourceError:
            self._ended = True
            parked.unpark_all()
            return False
        finally:
            self._waiting = False
            parked.unpark()
        return True


def device_fd() -> int | None:
    """The process's one descriptor of ``/dev/fuse`` (pyfuse3 does not tell its own), or None."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == DEVICE:
                found.append(int(name))
    return found[0] if len(found) == 1 else None


@contextlib.contextmanager
def replaced_request_wait() -> Iterator[bool]:
    """pyfuse3's wait replaced by ``RequestWait`` (after ``pyfuse3.init``) until the block
    ends; yields whether it was."""
    original = getattr(pyfuse3, "_wait_fuse_readable", None)
    fd = device_fd() if callable(original) else None
    if fd is None:
        log.debug("pyfuse3's own wait for requests is kept")
        yield False
        return
    pyfuse3._wait_fuse_readable = RequestWait(fd).wait
    try:
        yield True
    finally:
        pyfuse3._wait_fuse_readable = original
