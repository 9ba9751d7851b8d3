"""The blocking front end's trip to the trio thread: each call gets its own outcome, tasks are
kept for the next calls, and a stopped run fails calls at once instead of hanging them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import trio

from artifactfs.errors import RemoteError
from artifactfs.runtime import Runtime


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = Runtime()
    yield runtime
    runtime.stop()
    assert not runtime.alive


async def double_later(x: int) -> int:
    await trio.sleep(0.001)
    return 2 * x


async def fail(message: str) -> None:
    await trio.lowlevel.checkpoint()
    raise ValueError(message)


def test_calls_from_many_threads_each_get_their_own_outcome(rt: Runtime) -> None:
    results: dict[int, list[int]] = {}

    def caller(n: int) -> None:
        results[n] = [rt.call(double_later, n * 100 + i) for i in range(20)]

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {n: [2 * (n * 100 + i) for i in range(20)] for n in range(6)}
    assert len(rt._idle) <= 6  # a task per caller at once, kept for the next calls


def test_an_error_reaches_its_caller_and_the_next_call_works(rt: Runtime) -> None:
    with pytest.raises(ValueError, match="nope"):
        rt.call(fail, "nope")
    assert rt.call(double_later, 4) == 8


def test_after_stop_a_call_fails_at_once(rt: Runtime) -> None:
    assert rt.call(double_later, 1) == 2
    rt.stop()
    with pytest.raises(RemoteError, match="stopped"):
        rt.call(double_later, 1)


def test_a_call_from_the_trio_thread_itself_is_refused(rt: Runtime) -> None:
    async def nested() -> int:
        return rt.call(double_later, 1)

    with pytest.raises(RuntimeError, match="trio thread"):
        rt.call(nested)


def test_calls_from_several_threads_run_at_once(rt: Runtime) -> None:
    """Each caller's call starts without waiting for another's to end: they meet inside."""
    callers = 5
    arrived: list[int] = []
    everyone: list[trio.Event] = []

    async def meet(n: int) -> int:
        if not everyone:
            everyone.append(trio.Event())
        arrived.append(n)
        if len(arrived) == callers:
            everyone[0].set()
        with trio.fail_after(5):
            await everyone[0].wait()
        return n

    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, rt.call(meet, n))) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {n: n for n in range(callers)}


def test_calls_under_way_when_the_run_stops_fail_instead_of_hanging(rt: Runtime) -> None:
    started: list[int] = []
    outcomes: list[str] = []

    async def wait_forever() -> None:
        started.append(1)
        await trio.sleep_forever()

    def caller() -> None:
        try:
            rt.call(wait_forever)
        except RemoteError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(started) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    rt.stop()
    for thread in threads:
        thread.join(10)
    assert len(started) == 3 and not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == 3 and all("stopped" in text for text in outcomes)
