"""Provider JSON read defensively: no value a server sends breaks a listing."""

from __future__ import annotations

import math

import pytest

from artifactfs.httpclient import RETRY_AFTER_CAP, retry_delay
from artifactfs.providers.fields import MAX_SIZE, as_size, as_str, parse_time, pick


@pytest.mark.parametrize("value,size", [
    (12, 12), ("34", 34), (" 56 ", 56), (7.0, 7), (MAX_SIZE, MAX_SIZE),
    (MAX_SIZE + 1, None), (2 ** 63, None), (-1, None), ("-1", None), ("²", None), ("٣", None),
    ("9" * 5000, None), ("1e3", None), (1.5, None), (math.nan, None), (math.inf, None), (True, None),
    (None, None), ([], None), ({}, None),
])
def test_sizes(value: object, size: int | None) -> None:
    assert as_size(value) == size


@pytest.mark.parametrize("value", ["2026-01-26T16:00:00.000Z", "2026-01-26T16:00:00+00:00", "2026-01-26T16:00:00"])
def test_times(value: str) -> None:
    assert parse_time(value) == 1769443200.0


@pytest.mark.parametrize("value", ["", "yesterday", "9999999-01-01T00:00:00Z", "0001-01-01T00:00:00Z", 5, None,
                                   "2026-01-26T16:00:00Z" * 10])
def test_odd_times_are_unknown(value: object) -> None:
    assert parse_time(value) is None


def test_strings_and_spellings() -> None:
    assert as_str(5) == "5" and as_str("") is None and as_str(math.nan) is None and as_str(False) is None
    assert pick({"fileCount": None, "file_count": 3}, "fileCount", "file_count") == 3


@pytest.mark.parametrize("header", ["nan", "inf", "-inf", "1e400", "garbage", "Wed, 99 Foo 2026"])
def test_unusable_retry_after_falls_back_to_backoff(header: str) -> None:
    delay = retry_delay(1, header)
    assert math.isfinite(delay) and 0 <= delay <= RETRY_AFTER_CAP
