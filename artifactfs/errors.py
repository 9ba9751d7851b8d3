"""Exception types and their errno: the one table every layer uses.

Providers and the HTTP layer raise these; the FUSE layer turns them into
``FUSEError(exc.errno)``. Messages never contain tokens or signed URLs.
"""

from __future__ import annotations

import errno


class FsError(Exception):
    """Base of every error that reaches a reader as an errno."""

    errno: int = errno.EIO


class NotFound(FsError):
    """The provider says the thing does not exist (404, NOT_FOUND)."""

    errno = errno.ENOENT


class AccessDenied(FsError):
    """Missing, invalid or insufficient credentials (401, 403)."""

    errno = errno.EACCES


class Unauthorized(AccessDenied):
    """The credentials themselves were refused (401): nothing will work with them."""


class TransportError(Exception):
    """The connection failed or the body broke off: worth another attempt (the HTTP layer
    retries it; it never reaches a reader as such)."""


class RemoteError(FsError):
    """Any other failure: 5xx, bad JSON, timeouts after retries, short bodies."""

    errno = errno.EIO


class NotADirectory(FsError):
    """A directory operation on a file."""

    errno = errno.ENOTDIR


class IsADirectory(FsError):
    """A file operation on a directory."""

    errno = errno.EISDIR


class Invalid(FsError):
    """An operation that makes no sense on this node (readlink of a file)."""

    errno = errno.EINVAL


class ReadOnly(FsError):
    """A write-type operation on the read-only tree."""

    errno = errno.EROFS


def error_for_status(status: int) -> type[FsError]:
    """The exception class for a failed HTTP status (401/403 → EACCES, 404 → ENOENT, else EIO)."""
    if status == 401:
        return Unauthorized
    if status == 403:
        return AccessDenied
    if status in (404, 410):
        return NotFound
    return RemoteError
