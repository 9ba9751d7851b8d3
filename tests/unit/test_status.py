"""The one-line status a running mount reports to systemd."""

from __future__ import annotations

import logging

from artifactfs.blockcache import CacheStats
from artifactfs.status import ProblemCounter, human_size, status_line


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1536, 5 * 1024 ** 3, 3 * 1024 ** 4)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 GiB", "3.0 TiB"]


def test_status_line_counts_cache_and_problems() -> None:
    problems = ProblemCounter()
    logger = logging.getLogger("artifactfs.test-status")
    logger.addHandler(problems)
    try:
        logger.info("not a problem")
        logger.warning("one")
        logger.error("two")
        logger.error("three")
    finally:
        logger.removeHandler(problems)
    stats = CacheStats(bytes=3 * 1024 ** 2, blocks=3, files=2, trees=0, hits=1, misses=1)
    assert status_line(stats, problems) == "2 files cached (3.0 MiB), 50% hits; 2 errors, 1 warning"
