"""What the package asks of its environment matches what its code uses."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import trio

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def minimum(requirement: str) -> tuple[int, ...]:
    found = re.search(r">=\s*([0-9.]+)", requirement)
    assert found, requirement
    return tuple(int(part) for part in found.group(1).split("."))


def test_trio_minimum_has_the_thread_apis_the_engine_uses() -> None:
    """``abandon_on_cancel`` arrived in trio 0.23; with 0.22 every read failed."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    trio_requirement = next(d for d in dependencies if d.startswith("trio"))
    assert minimum(trio_requirement) >= (0, 23)
    assert "abandon_on_cancel" in inspect.signature(trio.to_thread.run_sync).parameters
