"""Logging: one line per event, to stderr or a file; library chatter kept quiet."""

from __future__ import annotations

import logging
from pathlib import Path

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "info", log_file: Path | None = None) -> None:
    """Configure the root logger. httpx/httpcore log full URLs (signed queries): keep them quiet."""
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "pyfuse3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("pyfuse3").addFilter(_interrupted_replies)


def _interrupted_replies(record: logging.LogRecord) -> bool:
    """pyfuse3 logs an ERROR when it answers a request the kernel gave up on (the reader was
    interrupted, or the mount is going away): ENOENT from the reply, nothing went wrong here."""
    return "fuse_reply_* failed with No such file or directory" not in record.getMessage()
