"""The byte origin: nginx serving the dataset from disk, in the foreground, stopped by PID.

One process (``master_process off``), every path (config, pid, logs, temp) inside its own
directory, ``sendfile``, long keep-alive, ``autoindex`` listings (rclone's http backend and
httpdirfs parse them) and nginx's own Range support. Each request is one access-log line
(``traffic.LOG_FORMAT``); ``mark()`` and ``hits()`` give the requests of one case.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

from .dataset import Item
from .proc import BenchError, last_line, stop_process
from .tools import tool_path
from .traffic import LOG_FORMAT, Hit, parse_log

START_TIMEOUT = 30.0
TEMP_MODULES = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

CONFIG = """\
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bench "{log_format}";
    access_log {dir}/access.log bench;
{temp_paths}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex on;
        location / {{ }}
    }}
}}
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def temp_modules(version_text: str) -> list[str]:
    """The ``*_temp_path`` directives this build knows (a module built ``--without`` has none)."""
    return [m for m in TEMP_MODULES if m == "client_body" or f"--without-http_{m}_module" not in version_text]


class Nginx:
    """nginx on a free loopback port serving ``root``; its files live in ``directory``."""

    def __init__(self, root: Path, directory: Path) -> None:
        self.root = root
        self.dir = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def part_url(self, part: str) -> str:
        """The directory URL of one part (ends with ``/``)."""
        return f"{self.base_url}{urllib.parse.quote(part)}/"

    def url(self, item: Item) -> str:
        return self.base_url + urllib.parse.quote(item.path)

    def config(self, executable: str) -> str:
        built = subprocess.run([executable, "-V"], capture_output=True, text=True).stderr
        temps = "\n".join(f"    {m}_temp_path {self.dir}/temp/{m};" for m in temp_modules(built))
        return CONFIG.format(dir=self.dir, log_format=LOG_FORMAT, temp_paths=temps, port=self.port, root=self.root)

    def start(self) -> Nginx:
        executable = tool_path("nginx")
        if executable is None:
            raise BenchError("nginx is not installed (apt-get install nginx)")
        (self.dir / "temp").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config(executable))
        error_log = self.dir / "error.log"
        with open(error_log, "ab") as errors:
            self.proc = subprocess.Popen([executable, "-p", str(self.dir), "-c", str(conf), "-e", str(error_log)],
                                         stdin=subprocess.DEVNULL, stdout=errors, stderr=errors)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"nginx did not start: {last_line(error_log)}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def mark(self) -> None:
        """Start counting requests from here."""
        self._log_offset = self.access_log.stat().st_size if self.access_log.exists() else 0

    def hits(self) -> list[Hit]:
        """The requests since ``mark()``."""
        try:
            with open(self.access_log, "rb") as log:
                log.seek(self._log_offset)
                return parse_log(log.read().decode(errors="replace"))
        except FileNotFoundError:
            return []

