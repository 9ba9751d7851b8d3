"""The floor of listing an agent: a plain ``urllib`` loop over the Gumloop API's pages.

The same pages artifactfs fetches (``page_size=100``, following ``next_cursor``) with the same
headers it sends, and nothing else: no parsing beyond the cursor, no tree, no FUSE.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass

PAGE_SIZE = 100


@dataclass(frozen=True)
class GumloopApi:
    """Where the API is and the personal key's two headers."""

    base_url: str  # ends with /api/v1
    token: str
    user_id: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "x-auth-key": self.user_id,
                "User-Agent": "artifactfs", "Accept": "application/json"}

    def filenames(self, agent: str, timeout: float) -> list[str]:
        """Every artifact's filename, page by page."""
        names: list[str] = []
        params = {"page_size": str(PAGE_SIZE)}
        url = f"{self.base_url}/agents/{urllib.parse.quote(agent, safe='')}/artifacts"
        while True:
            request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(params)}", headers=self.headers())
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = json.loads(response.read())
            names += [item["filename"] for item in body["artifacts"]]
            if not body.get("next_cursor"):
                return names
            params["cursor"] = body["next_cursor"]
