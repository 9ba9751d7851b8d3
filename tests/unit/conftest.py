"""Fixtures of the emulator's unit tests: one emulator with sample data, one HTTP client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from artifactfs.emulator import Emulator


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = Emulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client
