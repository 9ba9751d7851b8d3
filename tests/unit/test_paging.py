"""Following a paginated listing: the next page is asked for while this one converts, and
errors still come out as themselves."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from artifactfs.errors import RemoteError
from artifactfs.providers.paging import CONVERT_RUN, collect_pages


def numbered(last: int, log: list[str], size: int = 1) -> Any:
    """Pages 0..last of ``size`` items (page 1's are 100, 101, ...); a cursor is the next
    page's number."""

    async def fetch(cursor: int | None) -> tuple[list[int], int | None]:
        number = cursor or 0
        log.append(f"ask {number}")
        await trio.sleep(0.005)
        return [number * 100 + i for i in range(size)], None if number == last else number + 1

    return fetch


async def test_the_next_page_is_asked_for_while_this_one_converts() -> None:
    """Converting lets the next page's task go on every ``CONVERT_RUN`` items: its request is
    out before this page's items past the first run are converted."""
    log: list[str] = []

    def convert(item: int) -> int | None:
        log.append(f"convert {item}")
        return None if item % 100 == 7 else item  # None: left out

    listed = await collect_pages(numbered(2, log, size=3 * CONVERT_RUN), "test", key=lambda item: item,
                                 convert=convert)
    assert listed == [p * 100 + i for p in range(3) for i in range(3 * CONVERT_RUN) if i != 7]
    assert log.index("ask 1") < log.index(f"convert {CONVERT_RUN}")
    assert log.index("ask 2") < log.index(f"convert {100 + CONVERT_RUN}")
    assert [line for line in log if line.startswith("ask")] == ["ask 0", "ask 1", "ask 2"]


async def test_an_error_on_a_page_asked_ahead_comes_out_as_itself() -> None:
    async def fetch(cursor: str | None) -> tuple[list[str], str | None]:
        if cursor is None:
            return ["a"], "second"
        raise RemoteError("the second page failed")

    with pytest.raises(RemoteError, match="second page"):
        await collect_pages(fetch, "test", key=lambda item: item, convert=str.upper)


async def test_a_page_asked_ahead_that_is_not_needed_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """A server looping with fresh cursors: the first page that brings nothing new ends the
    listing, and the page already asked for after it is cancelled, not waited for."""
    asked: list[int] = []

    async def fetch(cursor: int | None) -> tuple[list[str], int]:
        asked.append(cursor or 0)
        if cursor and cursor >= 2:
            await trio.sleep(30)  # never answers in time: only a cancel ends it
        return ["same"], (cursor or 0) + 1

    with trio.fail_after(5):
        assert await collect_pages(fetch, "test", key=lambda item: item) == ["same"]
    assert asked == [0, 1, 2]
    assert "repeated a page" in caplog.text


async def test_max_pages_asks_for_no_page_beyond_it(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    assert await collect_pages(numbered(10, log), "test", key=lambda item: item, max_pages=3) == [0, 100, 200]
    assert log == ["ask 0", "ask 1", "ask 2"]
    assert "stopped after 3 pages" in caplog.text
