"""Patterns of the daemon log lines a fault causes, for ``Mount.expect_log``.

The HTTP layer logs each failed attempt (INFO for the first, WARNING from the second); when
it gives up, the core logs the failed call once: ERROR for EIO, WARNING for EACCES. A listing
that fails after a good one is one WARNING from the namespace.
"""

from __future__ import annotations

import re


def retry(provider: str, path: str, reason: str = r".+") -> str:
    """A WARNING of the HTTP layer: a failed attempt at ``path`` (an API call or a byte
    fetch), to be retried. ``path`` is literal, ``reason`` a regex."""
    return (rf" WARNING artifactfs\.http: {re.escape(provider)}: (GET )?{re.escape(path)}: {reason}"
            rf" \(attempt \d+/\d+, retrying\)$")


def failed(call: str, provider: str, path: str, reason: str = r".+", *, level: str = "ERROR") -> str:
    """The core's one line for a failed call (``opendir``, ``read``...) that names ``path``."""
    return rf" {level} artifactfs\.core: {call}: {re.escape(provider)}: (GET )?{re.escape(path)}: {reason}$"


def stale(directory: str, reason: str = r".+") -> str:
    """The namespace's WARNING: a refresh of ``directory`` failed, its last listing is served."""
    return (rf" WARNING artifactfs\.namespace: {re.escape(directory)}: listing failed \({reason}\);"
            r" serving the last good listing$")
