"""Signed storage URLs, shaped like GCS (``X-Goog-*``) and S3 (``X-Amz-*``) presigned URLs.

Simplified on purpose: the signature is HMAC-SHA256 over ``path`` and the absolute
expiry (unix seconds), so a changed path, expiry or signature is refused. The HTTP
method is not signed, so a GET URL also answers HEAD (real S3/GCS are stricter).

``Signer.revoke_all()`` (the ``expire_signatures`` fault) retires the secret: every URL
signed so far is then refused as expired, early, while URLs signed afterwards work.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
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
        self._revoked: tuple[bytes, ...] = ()  # secrets of URLs that now read as expired
        self._lock = threading.Lock()

    @staticmethod
    def _signature(secret: bytes, path: str, expires: int) -> str:
        return hmac.new(secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, base_url: str, path: str, scheme: Scheme, ttl: float) -> str:
        """``base_url + path`` with expiry ``now + ttl`` and its signature."""
        expires = int(time.time() + ttl)
        signature = self._signature(self._secret, path, expires)
        query = urllib.parse.urlencode({scheme.expires: expires, scheme.signature: signature})
        return f"{base_url}{path}?{query}"

    def revoke_all(self) -> None:
        """Every URL signed so far is refused as expired from now on; later ones are signed anew."""
        with self._lock:
            self._revoked += (self._secret,)
            self._secret = os.urandom(32)

    def revoked(self, path: str, params: dict[str, str]) -> bool:
        """Whether the URL (either scheme) carries a genuine signature by a revoked secret."""
        revoked = self._revoked
        if not revoked:
            return False
        for scheme in (GCS, S3):
            raw_expires, signature = params.get(scheme.expires), params.get(scheme.signature)
            if raw_expires is not None and signature is not None and raw_expires.isdigit():
                if self._matches(revoked, signature, path, int(raw_expires)):
                    return True
        return False

    def _matches(self, secrets: tuple[bytes, ...], signature: str, path: str, expires: int) -> bool:
        return any(
            hmac.compare_digest(signature.encode(), self._signature(secret, path, expires).encode())
            for secret in secrets
        )

    def check(self, path: str, params: dict[str, str], scheme: Scheme) -> Refusal | None:
        """None when the URL is genuine and unexpired; the signature is checked before the expiry."""
        raw_expires, signature = params.get(scheme.expires), params.get(scheme.signature)
        if raw_expires is None or signature is None:
            return Refusal.MISSING
        try:
            expires = int(raw_expires)
        except ValueError:
            return Refusal.BAD_SIGNATURE
        if not self._matches((self._secret,), signature, path, expires):
            return Refusal.EXPIRED if self._matches(self._revoked, signature, path, expires) else Refusal.BAD_SIGNATURE
        if time.time() >= expires:
            return Refusal.EXPIRED
        return None
