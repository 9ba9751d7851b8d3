"""A static directory tree of every Sigmic task's files, like nginx ``autoindex on``.

  /static/                         index of the tasks
  /static/{task_id}/{dir}/         index of one directory of the workspace
  /static/{task_id}/{path}         the file's bytes (Range, HEAD, Content-Length, Last-Modified)

For benchmarks against tools that mount a plain HTTP server (rclone's http backend,
httpdirfs): the bytes are the same ``Blob`` objects the Sigmic download endpoint serves,
through the same ``serve_blob``. No auth. Index pages are nginx-style HTML: directories
first, then files, each an ``<a href>`` relative to the page, followed by the mtime and
size columns; a directory asked for without its trailing slash is a 301 to it, as nginx does.
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .server import BlobReply, Reply, Request

if TYPE_CHECKING:
    from .providers.sigmic import SigmicFile, State

PREFIX = "/static"
_NAME_COLUMN = 50


def handle(state: State, req: Request, parts: list[str]) -> Reply | BlobReply:
    if not parts:
        with state.world.lock:
            tasks = {task_id: _newest(task.files.values()) for task_id, task in state.tasks.items() if task.files}
        return _directory(req, tasks, {})
    task_id, rel = parts[0], "/".join(parts[1:])
    with state.world.lock:
        task = state.tasks.get(task_id)
        files = task.files if task else {}
        f = None if req.path.endswith("/") else files.get(rel)
        subdirs, children = ({}, {}) if f else _children(files, rel + "/" if rel else "")
    if f is not None:
        return state.file_reply(task_id, f, filename=None)
    if not subdirs and not children:
        return _not_found()
    return _directory(req, subdirs, children)


def _newest(files: Iterable[SigmicFile]) -> float:
    return max((f.modified_at for f in files), default=0.0)


def _children(files: dict[str, SigmicFile], prefix: str) -> tuple[dict[str, float], dict[str, SigmicFile]]:
    """The subdirectories (name → newest mtime below) and files directly under ``prefix``."""
    subdirs: dict[str, float] = {}
    children: dict[str, SigmicFile] = {}
    for path, f in files.items():
        if not path.startswith(prefix):
            continue
        name, slash, _ = path[len(prefix) :].partition("/")
        if slash:
            subdirs[name] = max(subdirs.get(name, 0.0), f.modified_at)
        elif name:
            children[name] = f
    return subdirs, children


def _directory(req: Request, subdirs: dict[str, float], children: dict[str, SigmicFile]) -> Reply:
    if not req.path.endswith("/"):
        return Reply(301, b"", {"Location": req.path + "/", "Content-Type": "text/html"})
    title = html.escape(urllib.parse.unquote(req.path))
    rows = [_row(name + "/", mtime, "-") for name, mtime in sorted(subdirs.items())]
    rows += [_row(name, f.modified_at, str(f.blob.size)) for name, f in sorted(children.items())]
    page = (
        f"<html>\r\n<head><title>Index of {title}</title></head>\r\n<body>\r\n"
        f'<h1>Index of {title}</h1><hr><pre><a href="../">../</a>\r\n' + "".join(rows) + "</pre><hr></body>\r\n</html>\r\n"
    )
    return Reply(200, page.encode(), {"Content-Type": "text/html"})


def _row(name: str, mtime: float, size: str) -> str:
    link = f'<a href="{urllib.parse.quote(name)}">{html.escape(name)}</a>'
    stamp = time.strftime("%d-%b-%Y %H:%M", time.gmtime(mtime))
    return f"{link}{' ' * max(1, _NAME_COLUMN - len(name))} {stamp} {size:>19}\r\n"


def _not_found() -> Reply:
    body = b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n</body>\r\n</html>\r\n"
    return Reply(404, body, {"Content-Type": "text/html"})
