"""The storage origin: signed GCS-like URLs for Gumloop, presigned S3-like URLs for vm0.

Layout (both minted and served here):
  /gumloop-artifacts/{artifact_id}/{version_id}?X-Goog-Expires=<unix ts>&X-Goog-Signature=<hex>
  /vm0-artifacts/{artifact_id}/{version_id}.tar.gz?X-Amz-Expires=<unix ts>&X-Amz-Signature=<hex>
Refusals are 403 with the provider-flavoured XML error; a genuine URL for an object
that no longer exists is 404 ``NoSuchKey``. The token never matters here.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

from .blobs import BytesBlob
from .server import BlobReply, Reply, Request, path_parts, xml_reply
from .signing import GCS, S3, Refusal, Scheme
from .state import World

GUMLOOP_PREFIX = "/gumloop-artifacts"
VM0_PREFIX = "/vm0-artifacts"
ARCHIVE_SUFFIX = ".tar.gz"

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
        Refusal.MISSING: ("AccessDenied", "Query-string authentication requires the Signature and Expires parameters"),
        Refusal.BAD_SIGNATURE: (
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ),
        Refusal.EXPIRED: ("AccessDenied", "Request has expired"),
    },
}


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def gumloop_url(world: World, artifact_id: str, version_id: str) -> str:
    return world.storage_link(f"{GUMLOOP_PREFIX}/{_quote(artifact_id)}/{_quote(version_id)}", GCS)


def vm0_url(world: World, artifact_id: str, version_id: str) -> str:
    return world.storage_link(f"{VM0_PREFIX}/{_quote(artifact_id)}/{_quote(version_id)}{ARCHIVE_SUFFIX}", S3)


def _error(status: int, code: str, message: str) -> Reply:
    return xml_reply(
        status, f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )


def _no_such_key() -> Reply:
    return _error(404, "NoSuchKey", "The specified key does not exist.")


def route(world: World, req: Request) -> Reply | BlobReply:
    if req.method not in ("GET", "HEAD"):
        return _error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
    if req.path.startswith(GUMLOOP_PREFIX + "/"):
        return _serve(world, req, GCS, path_parts(req.path, GUMLOOP_PREFIX), _gumloop_object)
    if req.path.startswith(VM0_PREFIX + "/"):
        return _serve(world, req, S3, path_parts(req.path, VM0_PREFIX), _vm0_object)
    return _no_such_key()


Lookup = Callable[[World, str, str], "BlobReply | None"]


def _serve(world: World, req: Request, scheme: Scheme, parts: list[str], lookup: Lookup) -> Reply | BlobReply:
    refusal = world.signer.check(req.path, req.params, scheme)
    if refusal is not None:
        return _error(403, *_MESSAGES[scheme][refusal])
    if len(parts) != 2:
        return _no_such_key()
    return lookup(world, *parts) or _no_such_key()


def _gumloop_object(world: World, artifact_id: str, version_id: str) -> BlobReply | None:
    with world.lock:
        artifact = world.gumloop_artifacts.get(artifact_id)
        version = next((v for v in artifact.versions if v.version_id == version_id), None) if artifact else None
    if version is None:
        return None
    return BlobReply(version.blob, version.media_type, f'"{version.version_id}"', version.created_at)


def _vm0_object(world: World, artifact_id: str, name: str) -> BlobReply | None:
    version_id = name.removesuffix(ARCHIVE_SUFFIX)
    with world.lock:
        artifact = world.vm0_artifacts.get(artifact_id)
        version = next((v for v in artifact.versions if v.version_id == version_id), None) if artifact else None
    if version is None or not name.endswith(ARCHIVE_SUFFIX):
        return None
    return BlobReply(BytesBlob(version.archive()), "application/gzip", f'"{version.version_id}"', version.created_at)
