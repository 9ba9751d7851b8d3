"""The storage origin: signed GCS-like and presigned S3-like URLs, one bucket per provider that has one.

A provider module with a ``BUCKET`` owns the paths below ``/<BUCKET>/`` and answers them
with ``state.serve_object(req, parts)``, checking the signature first (``refusal``).
Refusals are 403 with the provider-flavoured XML error; a genuine URL for an object
that no longer exists is 404 ``NoSuchKey``. The API token never matters here.
"""

from __future__ import annotations

import urllib.parse

from .server import BlobReply, Reply, Request, path_parts, xml_reply
from .signing import GCS, S3, Refusal, Scheme
from .world import World

_MESSAGES = {
    GCS: {
        Refusal.MISSING: ("AccessDenied", "Access denied. Anonymous caller does not have storage.objects.get access."),
        Refusal.BAD_SIGNATURE: (
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ),
        Refusal.EXPIRED: ("ExpiredToken", "The provided token has expired."),
    },
    S3: {
        Refusal.MISSING: (
            "AuthorizationQueryParametersError",
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
        ),
        Refusal.BAD_SIGNATURE: (
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ),
        Refusal.EXPIRED: ("AccessDenied", "Request has expired"),
    },
}


def quote(part: str) -> str:
    """One path segment of an object key, percent-encoded."""
    return urllib.parse.quote(part, safe="")


def error(status: int, code: str, message: str) -> Reply:
    return xml_reply(
        status, f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )


def no_such_key() -> Reply:
    return error(404, "NoSuchKey", "The specified key does not exist.")


def refusal(world: World, req: Request, scheme: Scheme) -> Reply | None:
    """The 403 for a URL that is not genuinely signed with ``scheme`` or has expired; None if it is fine."""
    problem = world.signer.check(req.path, req.params, scheme)
    return None if problem is None else error(403, *_MESSAGES[scheme][problem])


def route(world: World, req: Request) -> Reply | BlobReply:
    if req.method not in ("GET", "HEAD"):
        return error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
    for kind, declared in world.types.items():
        prefix = f"/{declared.bucket}"
        if declared.bucket and req.path.startswith(prefix + "/"):
            return world.providers[kind].serve_object(req, path_parts(req.path, prefix))
    return no_such_key()
