"""The core for blocking callers (fsspec): one trio run in a daemon thread per process.

The core is async and owns its state on one trio thread. A blocking front end calls into it
from its own threads (``call``); the trio thread serves them all at once
(a range is fetched there as for the mount, with no worker thread to hop to and back). One
core runs per distinct config (``key``), started on first use and shared by everything that
asks with the same key, across threads and fsspec instances. ``shutdown`` (registered with ``atexit``)
cancels the run, so every core closes its providers and its cache writer flushes. The thread
is a daemon joined with a bound: it never holds up exit. A forked child starts its own run.

A call is queued and rings a bell (a socket pair) that one task, the leader, waits on; woken,
it serves the first call queued itself and gives the others, and the lead, to tasks kept
idle from earlier calls; the caller waits on a lock. Through trio's ``run_sync_soon`` a call
woke trio's entry-queue task first, which then woke a serving task: one more pass of the
scheduler per call (``trio.from_thread.run`` also starts a task per call).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import outcome
import trio

from .config import Config
from .core import Core, CoreError
from .errors import RemoteError

log = logging.getLogger("artifactfs.runtime")

T = TypeVar("T")
STOP_TIMEOUT = 15.0
"""Seconds exit waits for the cores to close (the cache writer flushing its queue)."""
STOPPED = "the artifactfs background loop has stopped (after shutdown or a fork: open files again)"


class _Call:
    """One call from another thread: what to await, and its outcome once ``done`` is released."""

    __slots__ = ("args", "done", "fn", "result")

    def __init__(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.result: outcome.Outcome[Any] = outcome.Error(RemoteError(STOPPED))
        self.done = threading.Lock()
        self.done.acquire()


class Runtime:
    """A trio run in a daemon thread, hosting one ``Core`` per config key."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._cores: dict[Hashable, Core] = {}
        self._calls: collections.deque[_Call] = collections.deque()  # any thread appends, the trio thread takes
        self._taking = True  # under ``_calls_lock``: False once the run has ended
        self._calls_lock = threading.Lock()
        self._bell, self._ring = socket.socketpair()  # a byte sent on ``_ring`` wakes the leader
        self._bell.setblocking(False)
        self._ring.setblocking(False)
        self._idle: list[trio.lowlevel.Task] = []  # trio thread: tasks waiting to lead
        self._lock = threading.Lock()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="artifactfs-trio", daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        try:
            trio.run(self._main, ready)
        except BaseException:  # noqa: BLE001 - a crashed run ends its thread; callers then get EIO
            log.exception("the artifactfs background loop stopped unexpectedly")
        finally:
            self._fail_queued()
            ready.set()  # a run that could not start must not leave its starter waiting

    async def _main(self, ready: threading.Event) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery, self._token = nursery, trio.lowlevel.current_trio_token()
            nursery.start_soon(self._serve, None)
            ready.set()
            await trio.sleep_forever()

    def _fail_queued(self) -> None:
        """The run has ended: calls still queued fail (as after ``stop``), and none are queued
        from now on. The sockets stay open: a caller may still ring, and a closed descriptor's
        number could by then be another file's."""
        with self._calls_lock:
            self._taking = False
            queued = list(self._calls)
            self._calls.clear()
        for call in queued:
            call.done.release()

    @property
    def alive(self) -> bool:
        """Running, and in this process (a forked child has no copy of the thread)."""
        return self.pid == os.getpid() and self._thread.is_alive()

    def session(self, key: Hashable, config: Config) -> Session:
        """The core for ``key``, started from ``config`` if it is not running yet.
        A core that cannot start (its cache dir) raises OSError with the core's one line."""
        with self._lock:
            if key not in self._cores:
                try:
                    self._cores[key] = self.call(self._nursery.start, self._host, config)
                except CoreError as exc:
                    raise OSError(str(exc)) from None
            return Session(self, self._cores[key])

    @staticmethod
    async def _host(config: Config, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with Core.running(config, shared_buffers=True, writes_around=False) as core:
            task_status.started(core)
            await trio.sleep_forever()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the trio thread, from any other thread. After a fork the run
        is the parent's: a call would wait forever, so it fails at once, as after ``stop``."""
        if threading.get_ident() == self._thread.ident:
            raise RuntimeError("a blocking call from the trio thread itself would wait forever")
        if not self.alive:
            raise RemoteError(STOPPED)
        call = _Call(fn, args)
        with self._calls_lock:
            if not self._taking:
                raise RemoteError(STOPPED)
            self._calls.append(call)
        try:
            self._ring.send(b"\0")
        except BlockingIOError:
            pass  # the bell is full: rung already, and not answered yet
        call.done.acquire()
        try:
            return call.result.unwrap()  # type: ignore[no-any-return]
        except trio.Cancelled:
            raise RemoteError(STOPPED) from None

    async def _serve(self, work: _Call | None) -> None:
        """Serve ``work`` (``None``: lead, that is wait for calls), then wait to be given more,
        until the run is cancelled. A leader woken keeps the first call, gives the others and
        the lead to idle tasks (or new ones), all started in the scheduler's next pass."""
        while True:
            if work is None:
                first, *others = await self._queued_calls()
                for call in others:
                    self._give(call)
                self._give(None)
                work = first
            work.result = await outcome.acapture(work.fn, *work.args)
            work.done.release()
            task = trio.lowlevel.current_task()
            self._idle.append(task)

            def forget(_: Any, task: trio.lowlevel.Task = task) -> trio.lowlevel.Abort:
                self._idle.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED

            work = await trio.lowlevel.wait_task_rescheduled(forget)

    async def _queued_calls(self) -> list[_Call]:
        """The leader's wait: every call queued, once there is one. The bell is emptied before
        the queue is looked at, so a call queued after the look has rung again."""
        while True:
            try:
                while self._bell.recv(4096):
                    pass
            except BlockingIOError:
                pass
            if self._calls:
                calls = []
                while self._calls:
                    calls.append(self._calls.popleft())
                return calls
            await trio.lowlevel.wait_readable(self._bell)

    def _give(self, work: _Call | None) -> None:
        """``work`` (a call, or ``None``: the lead) to an idle task, else to a new one."""
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop(), outcome.Value(work))
        else:
            self._nursery.start_soon(self._serve, work)

    def soon(self, fn: Callable[..., object], *args: Any) -> None:
        """``fn(*args)`` on the trio thread, without waiting: safe from any thread (a finalizer too)."""
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    def stop(self) -> None:
        """Close every core and end the thread, waiting at most ``STOP_TIMEOUT``."""
        if self.alive:
            self.soon(self._nursery.cancel_scope.cancel)
            self._thread.join(STOP_TIMEOUT)


@dataclass(frozen=True)
class Session:
    """One core and the run it lives in: what an open file keeps, so its handle stays valid."""

    runtime: Runtime
    core: Core

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.runtime.call(fn, *args)


_current: Runtime | None = None
_current_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's runtime, started on first use (again after ``shutdown`` or a fork)."""
    global _current
    with _current_lock:
        if _current is None or not _current.alive:
            _current = Runtime()
        return _current


def shutdown() -> None:
    """Stop the runtime, if one runs: every core closes and its cache writer flushes."""
    global _current
    with _current_lock:
        current, _current = _current, None
    if current is not None:
        current.stop()


atexit.register(shutdown)
