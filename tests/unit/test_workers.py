"""The read path's worker threads: results and errors come back, cancellation abandons or
waits as asked, threads are kept and reused, and as many run as jobs wait at once."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from artifactfs.workers import Workers


async def test_a_job_returns_its_value_or_raises_its_error() -> None:
    pool = Workers()
    assert await pool.run(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        await pool.run(lambda: 1 / 0)


async def test_a_cancelled_caller_may_abandon_its_job_and_the_thread_serves_the_next() -> None:
    pool, release = Workers(), threading.Event()
    with trio.move_on_after(0.05) as scope:
        await pool.run(release.wait, 10.0, abandon_on_cancel=True)
    assert scope.cancelled_caught
    assert await pool.run(threading.get_ident) != threading.get_ident()  # served while the first is stuck
    release.set()
    for _ in range(20):
        await pool.run(time.sleep, 0)
    assert pool.started == 2


async def test_a_cancelled_caller_that_may_not_abandon_waits_for_its_job() -> None:
    pool, done = Workers(), threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        done.set()

    start = trio.current_time()
    with trio.move_on_after(0.02):
        await pool.run(slow)
    assert done.is_set() and trio.current_time() - start >= 0.2


async def test_warm_threads_are_kept_and_reused_and_concurrent_jobs_get_their_own() -> None:
    pool = Workers()
    pool.warm(2)
    idents = {await pool.run(threading.get_ident) for _ in range(50)}
    assert pool.started == 2 and len(idents) <= 2

    barrier = threading.Barrier(5, timeout=5)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(pool.run, barrier.wait)
    assert pool.started == 5
