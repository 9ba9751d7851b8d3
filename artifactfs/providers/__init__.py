"""Provider registry: config type name → provider class, and how each one authenticates."""

from __future__ import annotations

from pathlib import Path

from ..config import ProviderConfig
from ..httpclient import HttpClient
from .base import Provider
from .gumloop import GumloopProvider
from .plangrep import PlangrepProvider
from .sigmic import SigmicProvider
from .vm0 import Vm0Provider

PROVIDER_CLASSES: dict[str, type[Provider]] = {
    "gumloop": GumloopProvider,
    "sigmic": SigmicProvider,
    "vm0": Vm0Provider,
    "plangrep": PlangrepProvider,
}


def auth_headers(config: ProviderConfig) -> dict[str, str]:
    """The headers that prove who we are; sent only to the provider's ``base_url`` origin."""
    headers = {"Authorization": f"Bearer {config.token}"}
    if config.type == "gumloop" and config.user_id:
        headers["x-auth-key"] = config.user_id
    return headers


def make_provider(config: ProviderConfig, cache_dir: Path, timeout: float) -> Provider:
    """The provider for one ``[providers.*]`` table; a type without one yet lists empty."""
    cls = PROVIDER_CLASSES.get(config.type, Provider)
    http = HttpClient(config.name, config.base_url, auth_headers(config), timeout=timeout)
    return cls(config, http, cache_dir / "providers" / config.name)
