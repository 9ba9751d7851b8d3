"""Threads for the read path's blocking work (HTTP bodies, cache loads), kept for the process's life.

``trio.to_thread`` starts a thread whenever none is idle, lets idle threads exit after 10 s,
and renames the thread around every job. A mount's first read after a quiet spell then
waited for a new thread (0.5 ms here, a twentieth of ``head -c 4096`` on a fresh mount) and
every fetch paid for two ``prctl`` calls. Here a thread, once started, waits for jobs until
the process ends; ``warm`` starts a few with the core, and a result goes back to its task
with one ``run_sync_soon``. There are as many threads as jobs ever ran at once: the callers
bound that (``FETCH_THREADS`` per provider, one load per reader).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class _Job:
    __slots__ = ("fn", "args", "task", "token", "abandoned")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.task = trio.lowlevel.current_task()
        self.token = trio.lowlevel.current_trio_token()
        self.abandoned = False  # the task was cancelled and went on without the result

    def run(self) -> outcome.Outcome | None:
        """Worker thread: the job's outcome, or None if its task already gave up."""
        return None if self.abandoned else outcome.capture(self.fn, *self.args)

    def deliver(self, result: outcome.Outcome) -> None:
        """Worker thread: send the outcome to the task (never waiting for the trio thread)."""
        try:
            self.token.run_sync_soon(self._resume, result)
        except trio.RunFinishedError:
            pass

    def _resume(self, result: outcome.Outcome) -> None:
        if not self.abandoned:
            trio.lowlevel.reschedule(self.task, result)


class Workers:
    """A pool of daemon threads that never exit; one per process (made again after a fork)."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job and not yet promised one
        self.started = 0

    def warm(self, count: int) -> None:
        """Have at least ``count`` threads waiting (a fresh mount's first reads find them)."""
        with self._lock:
            while self.started < count:
                self._idle += 1
                self._start()

    async def run(self, fn: Callable[..., T], *args: Any, abandon_on_cancel: bool = False) -> T:
        """``fn(*args)`` in a worker thread. Cancelled while it runs: with ``abandon_on_cancel``
        the task goes on at once and the result is dropped, else it waits for the job."""
        job = _Job(fn, args)
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._start()
        self._jobs.put(job)

        def abort(_: Any) -> trio.lowlevel.Abort:
            if not abandon_on_cancel:
                return trio.lowlevel.Abort.FAILED
            job.abandoned = True
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]

    def _start(self) -> None:
        self.started += 1
        threading.Thread(target=self._serve, name=f"artifactfs-worker-{self.started}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            result = job.run()
            with self._lock:  # idle before the task resumes: its next job finds this thread
                self._idle += 1
            if result is not None:
                job.deliver(result)


_workers: Workers | None = None
_workers_lock = threading.Lock()


def workers() -> Workers:
    """This process's pool."""
    global _workers
    with _workers_lock:
        if _workers is None or _workers._pid != os.getpid():
            _workers = Workers()
        return _workers
