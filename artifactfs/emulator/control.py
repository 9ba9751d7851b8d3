"""``/_emulator/`` on the API origin: the switches over HTTP, for an emulator in another process.

No auth (it only ever listens on loopback). Endpoints:
  GET  /_emulator/requests[?origin=&path_contains=]   the request log, as a JSON list
  POST /_emulator/clear_requests
  POST /_emulator/sigmic/put   {"task_id", "path", "content": text | "size" + "seed",
                                "mime_type"?, "category"?, "modified_at"?}
  POST /_emulator/set          {"url_ttl": 5, "storage_ignore_range": true, ...}  (see ``World.set``)
  POST /_emulator/faults       {"origin": "storage", "kind": "cut", "after": 100, "count"?, "path_contains"?}
                               or {"clear": true, "origin"?}  (see ``faults``)
Success is 200 ``{"ok": true}``; bad input is 400 ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

from .blobs import Blob, BytesBlob, PatternBlob
from .server import Reply, Request, RequestLog, json_reply
from .state import World

PREFIX = "/_emulator"


def handle(world: World, request_log: RequestLog, req: Request) -> Reply:
    action = (req.method, req.path[len(PREFIX) :])
    try:
        match action:
            case ("GET", "/requests"):
                params = req.params
                return json_reply(200, request_log.entries(params.get("origin"), params.get("path_contains")))
            case ("POST", "/clear_requests"):
                request_log.clear()
            case ("POST", "/sigmic/put"):
                body = req.json()
                world.put_sigmic_file(
                    body["task_id"],
                    body["path"],
                    _content(body),
                    mime_type=body.get("mime_type"),
                    category=body.get("category"),
                    modified_at=body.get("modified_at"),
                )
            case ("POST", "/set"):
                world.set(**req.json())
            case ("POST", "/faults"):
                _faults(world, req.json())
            case _:
                return json_reply(404, {"error": f"no control endpoint {req.method} {req.path}"})
    except (KeyError, TypeError, ValueError) as exc:
        return json_reply(400, {"error": f"{type(exc).__name__}: {exc}"})
    return json_reply(200, {"ok": True})


def _faults(world: World, body: Any) -> None:
    if not isinstance(body, dict):
        raise TypeError("expected a JSON object")
    options = dict(body)
    origin = options.pop("origin", None)
    if options.pop("clear", False):
        if origin is None:
            world.clear_faults()
        else:
            world.faults(origin).clear()
        return
    if origin is None or "kind" not in options:
        raise KeyError("origin and kind are required (or clear)")
    world.faults(origin).set(options.pop("kind"), **options)


def _content(body: dict[str, Any]) -> Blob:
    if "content" in body:
        return BytesBlob(str(body["content"]).encode())
    return PatternBlob(int(body["size"]), int(body.get("seed", 0)))
