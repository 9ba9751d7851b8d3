"""The API origin's router: one path prefix per provider, ``/static/`` and ``/_emulator/``."""

from __future__ import annotations

from collections.abc import Callable

from . import control, gumloop, plangrep, sigmic, static, vm0
from .server import BlobReply, Reply, Request, RequestLog, json_reply, path_parts
from .state import World

Handler = Callable[[World, Request, list[str]], "Reply | BlobReply"]

# Base URL path of each provider type on the API origin (Emulator.base_urls()).
BASE_PATHS: dict[str, str] = {
    "gumloop": "/gumloop/api/v1",
    "vm0": "/vm0",
    "sigmic": "/sigmic",
    "plangrep": "/plangrep/api/open/v1",
}
_HANDLERS: list[tuple[str, Handler]] = [
    (BASE_PATHS["gumloop"], gumloop.handle),
    (BASE_PATHS["vm0"], vm0.handle),
    (BASE_PATHS["sigmic"], sigmic.handle),
    (BASE_PATHS["plangrep"], plangrep.handle),
    (plangrep.DOC_PREFIX, plangrep.handle),  # the doc's origin-relative artifact ``url``s
    (static.PREFIX, static.handle),  # Sigmic tasks' files as a plain directory tree, no auth
]


def api_router(world: World, request_log: RequestLog) -> Callable[[Request], Reply | BlobReply]:
    def route(req: Request) -> Reply | BlobReply:
        if req.path.startswith(control.PREFIX + "/"):
            return control.handle(world, request_log, req)
        for prefix, handler in _HANDLERS:
            if req.path == prefix or req.path.startswith(prefix + "/"):
                if req.method not in ("GET", "HEAD"):
                    return json_reply(405, {"error": "method not allowed"}, {"Allow": "GET, HEAD"})
                return handler(world, req, path_parts(req.path, prefix))
        return json_reply(404, {"error": "no API under this path; see Emulator.base_urls()"})

    return route
