"""Signed storage URLs, shaped like GCS (``X-Goog-*``) and S3 (``X-Amz-*``) presigned URLs.

Simplified on purpose: the signature is HMAC-SHA256 over ``path`` and the absolute
expiry (unix seconds), so a changed path, expiry or signature is refused. The HTTP
method is not signed, so a GET URL also answers HEAD (real S3/GCS are stricter).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Scheme:
    """Query parameter names of one storage flavour."""

    expires: str
    signature: str


GCS = Scheme("X-Goog-Expires", "X-Goog-Signature")
S3 = Scheme("X-Amz-Expires", "X-Amz-Signature")


class Refusal(Enum):
    """Why a signed URL was refused."""

    MISSING = "missing"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"


class Signer:
    """Mints and checks signed URLs with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, base_url: str, path: str, scheme: Scheme, ttl: float) -> str:
        """``base_url + path`` with expiry ``now + ttl`` and its signature."""
        expires = int(time.time() + ttl)
        query = urllib.parse.urlencode({scheme.expires: expires, scheme.signature: self._signature(path, expires)})
        return f"{base_url}{path}?{query}"

    def check(self, path: str, params: dict[str, str], scheme: Scheme) -> Refusal | None:
        """None when the URL is genuine and unexpired; the signature is checked before the expiry."""
        raw_expires, signature = params.get(scheme.expires), params.get(scheme.signature)
        if raw_expires is None or signature is None:
            return Refusal.MISSING
        try:
            expires = int(raw_expires)
        except ValueError:
            return Refusal.BAD_SIGNATURE
        if not hmac.compare_digest(signature.encode(), self._signature(path, expires).encode()):
            return Refusal.BAD_SIGNATURE
        if time.time() >= expires:
            return Refusal.EXPIRED
        return None
