"""Fault switches: make one origin misbehave on purpose, per test; thread-safe, resettable.

    emu.faults("api").set("status", code=503, retry_after=2, count=1)
    emu.faults("storage").set("cut", after=1000, path_contains="/gumloop-artifacts/")
    emu.faults("storage").clear()   # that origin is healthy again
    emu.clear_faults()              # both origins (a custom ``origins[...].faults`` hook is dropped too)

Over HTTP, for an emulator in another process: ``POST /_emulator/faults`` with
``{"origin": "storage", "kind": "cut", "after": 1000}``, or ``{"clear": true}`` (both
origins) / ``{"clear": true, "origin": "api"}``.

``set(kind, *, count=None, path_contains=None, **options)`` arms one rule:

  refuse             the connection is closed without a response (a reset where the OS
                     allows). It happens once the request has been read: with one listening
                     socket a refusal at connect time cannot be had, this is the nearest.
  hang               nothing is sent for ``seconds`` (default 60, at most 600), then the
                     connection closes; stopping the emulator ends it at once.
  slow               the normal response, its body throttled to ``rate`` bytes/s (default
                     64 KiB/s) or, with ``delay``, a pause of ``delay`` s before each 64 KiB piece.
  cut                the normal status and headers (full Content-Length), then only ``after``
                     body bytes (default: half), then the connection closes; a chunked body
                     stops without its terminating chunk.
  status             ``code`` (required) with a plausible error body (JSON on the api origin,
                     S3/GCS-style XML on storage); ``retry_after`` (seconds, or any string such
                     as an HTTP date) adds ``Retry-After``.
  throttle           429, same body style, optional ``retry_after``.
  bad_range          a Range request gets a 206 for other bytes than asked: the range moved by
                     ``shift`` bytes (default 1, labelled truthfully in Content-Range), and/or
                     a Content-Range whose total is the lie ``total``.
  ignore_range       a Range request gets the whole body (200), like the
                     ``{api,storage}_ignore_range`` switch of ``World.set``, but per rule.
  expire_signatures  storage only, one-shot: every signed URL issued so far is refused from
                     now on as expired (403 ExpiredToken / AccessDenied "Request has expired");
                     URLs issued afterwards work. Takes no options; ``clear()`` does not revive
                     the old URLs (real expired URLs stay expired).

A rule applies to every matching request until cleared, or only to the next ``count``
matching ones (then it is gone). ``path_contains`` limits it to requests whose target
(path and query, as sent) contains that string; ``bad_range`` and ``ignore_range`` match
only requests with a Range header. ``/_emulator/`` control requests never match. Each
request gets at most one fault: that of the most recently armed matching rule. It is
decided before routing and recorded in the request's log entry as ``entry["fault"]``
(the kind, else None), so ``len([e for e in emu.requests() if e["fault"] == "cut"])``
counts injections. (bad_range/ignore_range on a route that answers without bytes, or
slow/cut on a HEAD, are recorded but change nothing.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any

from .server import Fault, Reply, Request, http_date, json_reply, xml_reply
from .signing import Signer

ORIGINS = ("api", "storage")
MAX_HANG = 600.0
CONTROL_PREFIX = "/_emulator/"

# S3/GCS XML error codes for the statuses a test is likely to inject.
_STORAGE_CODES = {
    400: "InvalidArgument",
    401: "AuthenticationRequired",
    403: "AccessDenied",
    404: "NoSuchKey",
    408: "RequestTimeout",
    429: "SlowDown",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

RetryAfter = int | float | str | datetime | None


def error_reply(origin: str, code: int, retry_after: RetryAfter = None) -> Reply:
    """A plausible error answer of ``origin``: ``{"error": {"code", "message"}}`` or S3/GCS XML."""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    if origin == "storage":
        name = _STORAGE_CODES.get(code) or "".join(phrase.title().split()) or "Error"
        reply = xml_reply(
            code,
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{name}</Code><Message>{phrase}</Message></Error>",
        )
    else:
        reply = json_reply(code, {"error": {"code": phrase.upper().replace(" ", "_"), "message": phrase}})
    if retry_after is not None:
        reply.headers["Retry-After"] = _retry_after(retry_after)
    return reply


def _retry_after(value: RetryAfter) -> str:
    if isinstance(value, datetime):
        return http_date(value.timestamp())
    if isinstance(value, str):
        return value  # verbatim: an HTTP date, or garbage to test the client
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise TypeError("retry_after must be seconds (>= 0), an HTTP-date string or a datetime")
    return str(int(value)) if float(value).is_integer() else str(value)


def _number(name: str, value: Any, low: float, high: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return float(value)


def _integer(name: str, value: Any, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer")
    if low is not None and value < low:
        raise ValueError(f"{name} must be at least {low}")
    return value


# ---- one builder per kind: its keyword options, checked, as the Fault to act on ----------


def _refuse(origin: str) -> Fault:
    return Fault("refuse")


def _hang(origin: str, seconds: float = 60.0) -> Fault:
    return Fault("hang", seconds=_number("seconds", seconds, 0, MAX_HANG))


def _slow(origin: str, rate: float | None = None, delay: float | None = None) -> Fault:
    if rate is not None and delay is not None:
        raise TypeError("slow takes rate or delay, not both")
    if delay is not None:
        return Fault("slow", delay=_number("delay", delay, 0, MAX_HANG))
    rate = 65536.0 if rate is None else _number("rate", rate, 1)
    return Fault("slow", rate=rate)


def _cut(origin: str, after: int | None = None) -> Fault:
    return Fault("cut", after=None if after is None else _integer("after", after, 0))


def _status(origin: str, code: int, retry_after: RetryAfter = None) -> Fault:
    code = _integer("code", code)
    if not 200 <= code <= 599:
        raise ValueError("code must be an HTTP status between 200 and 599")
    return Fault("status", reply=error_reply(origin, code, retry_after))


def _throttle(origin: str, retry_after: RetryAfter = None) -> Fault:
    return Fault("throttle", reply=error_reply(origin, 429, retry_after))


def _bad_range(origin: str, shift: int | None = None, total: int | None = None) -> Fault:
    if shift is None and total is None:
        shift = 1
    return Fault(
        "bad_range",
        shift=0 if shift is None else _integer("shift", shift),
        total=None if total is None else _integer("total", total, 0),
    )


def _ignore_range(origin: str) -> Fault:
    return Fault("ignore_range")


_BUILDERS: dict[str, Callable[..., Fault]] = {
    "refuse": _refuse,
    "hang": _hang,
    "slow": _slow,
    "cut": _cut,
    "status": _status,
    "throttle": _throttle,
    "bad_range": _bad_range,
    "ignore_range": _ignore_range,
}
KINDS = (*_BUILDERS, "expire_signatures")
_RANGE_ONLY = ("bad_range", "ignore_range")


@dataclass
class _Rule:
    fault: Fault
    path_contains: str | None
    remaining: int | None  # None: until cleared

    def matches(self, req: Request) -> bool:
        if self.fault.kind in _RANGE_ONLY and "range" not in req.headers:
            return False
        if self.path_contains is None:
            return True
        target = f"{req.path}?{req.query}" if req.query else req.path
        return self.path_contains in target


class FaultSwitches:
    """The fault rules of one origin; also its fault hook (``__call__`` decides per request)."""

    def __init__(self, origin: str, signer: Signer | None = None) -> None:
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}")
        self.origin = origin
        self._signer = signer
        self._rules: list[_Rule] = []  # oldest first; the newest matching one wins
        self._lock = threading.Lock()

    def set(self, kind: str, *, count: int | None = None, path_contains: str | None = None, **options: Any) -> None:
        """Arm a rule (see the module docstring). Unknown kinds: ValueError; bad options: TypeError/ValueError."""
        if kind == "expire_signatures":
            if self.origin != "storage" or self._signer is None:
                raise ValueError("expire_signatures applies to the storage origin only")
            if count is not None or path_contains is not None or options:
                raise TypeError("expire_signatures takes no options")
            self._signer.revoke_all()
            return
        builder = _BUILDERS.get(kind)
        if builder is None:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(KINDS)}")
        if count is not None:
            count = _integer("count", count, 1)
        if path_contains is not None and not isinstance(path_contains, str):
            raise TypeError("path_contains must be a string")
        rule = _Rule(builder(self.origin, **options), path_contains, count)
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        """Disarm every rule of this origin (revoked signatures stay revoked)."""
        with self._lock:
            self._rules.clear()

    def __call__(self, req: Request) -> Fault | None:
        """The fault for ``req``, if any; counts it against its rule's ``count``."""
        if req.path.startswith(CONTROL_PREFIX):
            return None
        if self._signer is not None and self._signer.revoked(req.path, req.params):
            return Fault("expire_signatures")
        with self._lock:
            for rule in reversed(self._rules):
                if rule.matches(req):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if not rule.remaining:
                            self._rules.remove(rule)
                    return rule.fault
        return None
