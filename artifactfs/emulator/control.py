"""``/_emulator/`` on the API origin: what tests do in-process, over HTTP, for an emulator in another process.

No auth (it only ever listens on loopback). Bodies are JSON objects. Endpoints:
  GET  /_emulator/requests[?origin=&path_contains=]   the request log, as a JSON list
  POST /_emulator/clear_requests
  POST /_emulator/set          {"url_ttl": 5, "storage_ignore_range": true, "vm0_shape": "snake", ...}:
                               ``url_ttl``, ``{api,storage}_{ignore_range,chunked}``, ``vm0_shape``
                               (camel | snake | mixed), ``vm0_download`` (archive | files),
                               ``plangrep_content_length``, ``plangrep_ranges``
                               (see ``World.set``)
  POST /_emulator/faults       {"origin": "storage", "kind": "cut", "after": 100, "count"?, "path_contains"?}
                               or {"clear": true, "origin"?}  (see ``faults``)
and each provider's own, ``POST /_emulator/<type>/<action>`` (its module's ``CONTROL``):
  gumloop/put        {"agent_id", "filename"?, "content": text | "size" + "seed", "session_id"?,
                      "media_type"?, "artifact_id"?, "external_url"?}  → "artifact_id", "version_id"
  vm0/put            {"name", "files": {path: text}, "message"?}  → "artifact_id", "version_id"
  vm0/add            {"name"}  → "artifact_id" (an artifact without any version)
  sigmic/put         {"task_id", "path", "content": text | "size" + "seed", "mime_type"?, "category"?,
                      "modified_at"?}
  sigmic/remove      {"task_id", "path"}
  sigmic/status      {"task_id", "status", "error"?}
  sigmic/resume      {"task_id", "message"?}  (a finished task runs again; sigmic/status finishes it)
  plangrep/put       {"job_id", "status", "artifacts"?: {path: text}, "error"?, "project_id"?, "files"?,
                      "result_shape"?}
  plangrep/complete  {"job_id", "status"?: "completed" | "completed_with_errors"}
Success is 200 ``{"ok": true}`` (plus what the action returns); bad input is 400 ``{"error": "..."}``;
an unknown endpoint 404.
"""

from __future__ import annotations

from typing import Any

from .blobs import Blob, BytesBlob, PatternBlob
from .server import Reply, Request, RequestLog, json_reply
from .world import World

PREFIX = "/_emulator"


def handle(world: World, request_log: RequestLog, req: Request) -> Reply:
    parts = req.path[len(PREFIX) :].strip("/").split("/")
    result: dict[str, Any] | None = None
    try:
        match (req.method, parts):
            case ("GET", ["requests"]):
                params = req.params
                return json_reply(200, request_log.entries(params.get("origin"), params.get("path_contains")))
            case ("POST", ["clear_requests"]):
                request_log.clear()
            case ("POST", ["set"]):
                world.set(**_object(req))
            case ("POST", ["faults"]):
                _faults(world, _object(req))
            case ("POST", [kind, name]) if name in _actions(world, kind):
                result = world.types[kind].control[name](world.providers[kind], _object(req))
            case _:
                return json_reply(404, {"error": f"no control endpoint {req.method} {req.path}"})
    except (KeyError, TypeError, ValueError) as exc:
        return json_reply(400, {"error": f"{type(exc).__name__}: {exc}"})
    return json_reply(200, {"ok": True, **(result or {})})


def _actions(world: World, kind: str) -> set[str]:
    declared = world.types.get(kind)
    return set(declared.control) if declared else set()


def _object(req: Request) -> dict[str, Any]:
    body = req.json()
    if not isinstance(body, dict):
        raise TypeError("expected a JSON object")
    return body


def _faults(world: World, body: dict[str, Any]) -> None:
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


def content(body: dict[str, Any]) -> Blob:
    """A control body's file content: ``"content"`` (text), or ``"size"`` and ``"seed"`` of a pattern."""
    if "content" in body:
        return BytesBlob(str(body["content"]).encode())
    return PatternBlob(int(body["size"]), int(body.get("seed", 0)))
