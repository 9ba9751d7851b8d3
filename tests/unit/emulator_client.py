"""Authenticated requests to the emulator's provider APIs, as each provider's docs ask."""

from __future__ import annotations

import httpx

from artifactfs.emulator import Emulator


def auth(emu: Emulator, provider: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {emu.tokens[provider]}"}
    if provider == "gumloop":
        headers["x-auth-key"] = emu.gumloop_user_id
    return headers


def get(http: httpx.Client, emu: Emulator, provider: str, path: str, **kw: object) -> httpx.Response:
    headers = {**auth(emu, provider), **kw.pop("headers", {})}  # type: ignore[dict-item]
    return http.get(emu.base_urls()[provider] + path, headers=headers, **kw)  # type: ignore[arg-type]
