"""Signed storage URLs, shaped like S3 SigV4 presigned URLs (``X-Amz-*``) and GCS V4 signed URLs (``X-Goog-*``).

Each carries ``<prefix>-Algorithm`` (``AWS4-HMAC-SHA256`` / ``GOOG4-RSA-SHA256``),
``-Credential`` (``<key>/<YYYYMMDD>/<region>/<service>/<aws4|goog4>_request``), ``-Date``
(``YYYYMMDDTHHMMSSZ``, when it was signed), ``-Expires`` (seconds after ``-Date``),
``-SignedHeaders=host`` and ``-Signature`` (64 hex).

Simplified on purpose: the signature is HMAC-SHA256 over the path and the other five
parameters as sent, so a changed path, date, lifetime or signature is refused, and the
URL expires at ``Date + Expires``. The HTTP method is not signed, so a GET URL also
answers HEAD (real S3/GCS are stricter).

``Signer.token(path)`` is the other kind: a bare ``?token=<hex>`` for ``path`` that does
not expire (Plangrep's pre-signed ``resultUrl``).

``Signer.revoke_all()`` (the ``expire_signatures`` fault) retires the secret: every URL
signed so far is then refused as expired, early, while URLs signed afterwards work.
"""

from __future__ import annotations

import hmac
import math
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_SIGNED = ("Algorithm", "Credential", "Date", "Expires", "SignedHeaders")


@dataclass(frozen=True)
class Scheme:
    """One storage flavour: its query parameters' prefix, algorithm and credential."""

    prefix: str
    algorithm: str
    access_key: str
    scope: str  # after the day in the credential: region/service/terminator

    def param(self, name: str) -> str:
        return f"{self.prefix}-{name}"


S3 = Scheme("X-Amz", "AWS4-HMAC-SHA256", "EMULATORR2ACCESSKEY", "auto/s3/aws4_request")
GCS = Scheme(
    "X-Goog",
    "GOOG4-RSA-SHA256",
    "gumloop-artifacts@artifactfs-emulator.iam.gserviceaccount.com",
    "auto/storage/goog4_request",
)


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
        self._signed_now: dict[tuple[Scheme, int, int], tuple[list[str], str]] = {}  # this second's, per scheme and lifetime

    @staticmethod
    def _signature(secret: bytes, path: str, signed: list[str]) -> str:
        return hmac.digest(secret, "\n".join([path, *signed]).encode(), "sha256").hex()

    def query(self, path: str, scheme: Scheme, ttl: float) -> str:
        """The signed query string for ``path``, valid ``ttl`` seconds (rounded up) from now.
        A listing signs one URL per item: all but the path and signature is made once a second."""
        key = (scheme, int(time.time()), max(0, math.ceil(ttl)))
        made = self._signed_now.get(key)
        if made is None:
            now = datetime.fromtimestamp(key[1], UTC)
            values = [scheme.algorithm, f"{scheme.access_key}/{now:%Y%m%d}/{scheme.scope}", now.strftime(DATE_FORMAT),
                      str(key[2]), "host"]
            params = urllib.parse.urlencode({scheme.param(name): value
                                             for name, value in zip(_SIGNED, values, strict=True)})
            made = (values, params)
            self._signed_now = {**{k: v for k, v in self._signed_now.items() if k[1] == key[1]}, key: made}
        values, params = made
        return f"{params}&{scheme.param('Signature')}={self._signature(self._secret, path, values)}"

    def sign(self, base_url: str, path: str, scheme: Scheme, ttl: float) -> str:
        """``base_url + path`` with its signed query."""
        return f"{base_url}{path}?{self.query(path, scheme, ttl)}"

    def token(self, path: str) -> str:
        """The token that grants ``path`` (until the secret is revoked)."""
        return self._signature(self._secret, path, ["token"])

    def token_valid(self, path: str, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.token(path).encode())

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
            presented = _presented(params, scheme)
            if presented is not None and self._matches(revoked, path, presented):
                return True
        return False

    def _matches(self, secrets: tuple[bytes, ...], path: str, presented: list[str]) -> bool:
        *signed, signature = presented
        return any(
            hmac.compare_digest(signature.encode(), self._signature(secret, path, signed).encode())
            for secret in secrets
        )

    def check(self, path: str, params: dict[str, str], scheme: Scheme) -> Refusal | None:
        """None when the URL is genuine and unexpired; the signature is checked before the expiry."""
        presented = _presented(params, scheme)
        if presented is None:
            return Refusal.MISSING
        if not self._matches((self._secret,), path, presented):
            return Refusal.EXPIRED if self._matches(self._revoked, path, presented) else Refusal.BAD_SIGNATURE
        try:
            signed_at = datetime.strptime(params[scheme.param("Date")], DATE_FORMAT).replace(tzinfo=UTC)
            lifetime = int(params[scheme.param("Expires")])
        except ValueError:
            return Refusal.BAD_SIGNATURE
        if time.time() >= signed_at.timestamp() + lifetime:
            return Refusal.EXPIRED
        return None


def _presented(params: dict[str, str], scheme: Scheme) -> list[str] | None:
    """The five signed values and the signature, as sent; None if any is missing."""
    names = [scheme.param(name) for name in (*_SIGNED, "Signature")]
    if any(name not in params for name in names):
        return None
    return [params[name] for name in names]
