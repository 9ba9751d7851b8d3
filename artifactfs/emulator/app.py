"""``Emulator``: the world (data + switches) served on two loopback origins.

The API origin serves every provider API under its path prefix (``base_urls()``);
the storage origin serves the signed URLs that Gumloop's ``download_url`` and vm0's
302 point to. Both record every request in one log (``requests()``), and each has
fault switches (``faults(name).set(kind, ...)``, ``clear_faults()``; see ``faults``) and
a custom fault hook (``origins[name].faults``), consulted before routing.
"""

from __future__ import annotations

import threading
from typing import Any

from . import routes, storage
from .server import Origin, RequestLog
from .world import World


class Emulator(World):
    """Every provider API on 127.0.0.1; ``start()``/``stop()`` or use as a context manager.

    ``options`` go to the providers, named ``<type>_<option>`` (``gumloop_user_id="user_x"``).
    """

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        seed_sample_data: bool = True,
        api_port: int = 0,
        storage_port: int = 0,
        host: str = "127.0.0.1",
        **options: Any,
    ) -> None:
        super().__init__(tokens, **options)
        self.request_log = RequestLog()
        self._addresses = {"api": (host, api_port), "storage": (host, storage_port)}
        self._servers: dict[str, Origin] = {}
        self._threads: list[threading.Thread] = []
        if seed_sample_data:
            for kind, declared in self.types.items():
                declared.seed(self.providers[kind])

    def start(self) -> Emulator:
        """Bind both origins and serve them from background threads."""
        if self._servers:
            return self
        routers = {
            "api": routes.api_router(self, self.request_log),
            "storage": lambda req: storage.route(self, req),
        }
        for name, router in routers.items():
            self._servers[name] = Origin(name, self._addresses[name], router, self.origins[name], self.request_log)
        self.api_url = self._servers["api"].url
        self.storage_url = self._servers["storage"].url
        for server in self._servers.values():
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"emulator-{server.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop both origins, cut open connections, join the threads. Idempotent."""
        servers, self._servers = self._servers, {}
        for server in servers.values():
            server.shutdown()
            server.server_close()
            server.drop_connections()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _server(self, name: str) -> Origin:
        if name not in self._servers:
            raise RuntimeError("the emulator is not started")
        return self._servers[name]

    def base_urls(self) -> dict[str, str]:
        """The ``base_url`` to configure for each provider type."""
        if not self.api_url:
            raise RuntimeError("the emulator is not started")
        return {kind: self.api_url + declared.base_path for kind, declared in self.types.items()}

    def requests(self, origin: str | None = None, path_contains: str | None = None) -> list[dict[str, Any]]:
        """Copies of logged requests (oldest first), optionally filtered by origin and path substring."""
        return self.request_log.entries(origin, path_contains)

    def clear_requests(self) -> None:
        self.request_log.clear()

    def ready_info(self) -> dict[str, Any]:
        """What a client needs to connect (printed by ``python -m artifactfs.emulator``)."""
        info: dict[str, Any] = {
            "api_url": self.api_url,
            "storage_url": self.storage_url,
            "base_urls": self.base_urls(),
            "tokens": dict(self.tokens),
        }
        for state in self.providers.values():
            info.update(state.ready_info())
        return info
