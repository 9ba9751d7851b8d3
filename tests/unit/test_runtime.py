"""The blocking front end's trip to the trio thread: each call gets its own outcome, tasks are
kept for the next calls, and a stopped run fails calls at once instead of hanging them."""

from __future__ import annotations

import threading
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
