"""The floor of listing an agent: a plain ``urllib`` loop over the Gumloop API's pages.

The same pages artifactfs fetches (``page_size=100``, following ``next_cursor``) with the same
headers it sends, and nothing else: no parsing beyond the cursor, no tree, no FUSE.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

PAGE_SIZE = 100
TOKEN_ENV = "BENCH_GUMLOOP_TOKEN"  # where artifactfs's config and the floors find the key
USER_ID_ENV = "BENCH_GUMLOOP_USER_ID"


@dataclass(frozen=True)
class GumloopApi:
    """Where the API is and the personal key's two headers."""

    base_url: str  # ends with /api/v1
    token: str
    user_id: str

    @classmethod
    def from_env(cls, base_url: str) -> GumloopApi:
        """The API at ``base_url`` with the key and user id from the environment."""
        return cls(base_url, os.environ[TOKEN_ENV], os.environ[USER_ID_ENV])

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "x-auth-key": self.user_id,
                "User-Agent": "artifactfs", "Accept": "application/json"}

    def filenames(self, agent: str, timeout: float) -> list[str]:
        """Every artifact's filename, page by page."""
        return [item["filename"] for item in self.artifacts(agent, timeout)]

    def sources(self, agent: str, timeout: float) -> dict[str, tuple[str, int]]:
        """Every artifact's signed URL and size, by filename."""
        return {item["filename"]: (item["url"], item["metadata"]["size"]) for item in self.artifacts(agent, timeout)}

    def artifacts(self, agent: str, timeout: float) -> list[dict[str, Any]]:
        """Every artifact of the agent as listed, page by page."""
        items: list[dict[str, Any]] = []
        params = {"page_size": str(PAGE_SIZE)}
        url = f"{self.base_url}/agents/{urllib.parse.quote(agent, safe='')}/artifacts"
        while True:
            request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(params)}", headers=self.headers())
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = json.loads(response.read())
            items += body["artifacts"]
            if not body.get("next_cursor"):
                return items
            params["cursor"] = body["next_cursor"]
