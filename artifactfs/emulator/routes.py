"""The API origin's router: each provider's ``BASE_PATH`` and ``ROUTES``, and ``/_emulator/``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from . import control
from .server import BlobReply, Reply, Request, RequestLog, json_reply, path_parts
from .world import World

Route = Callable[[Request, list[str]], "Reply | BlobReply"]


def api_router(world: World, request_log: RequestLog) -> Callable[[Request], Reply | BlobReply]:
    table: list[tuple[str, Route]] = []
    for kind, declared in world.types.items():
        state = world.providers[kind]
        for prefix, handler in {declared.base_path: declared.handle, **declared.routes}.items():
            table.append((prefix, partial(handler, state)))

    def route(req: Request) -> Reply | BlobReply:
        if req.path.startswith(control.PREFIX + "/"):
            return control.handle(world, request_log, req)
        for prefix, handler in table:
            if req.path == prefix or req.path.startswith(prefix + "/"):
                if req.method not in ("GET", "HEAD"):
                    return json_reply(405, {"error": "method not allowed"}, {"Allow": "GET, HEAD"})
                return handler(req, path_parts(req.path, prefix))
        return json_reply(404, {"error": "no API under this path; see Emulator.base_urls()"})

    return route
