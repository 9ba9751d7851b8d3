"""The provider registry: every module in this package that declares a ``SPEC``.

A new provider type is one new module here (plus its part of the emulator): config keys,
auth, the doctor probe and demo settings all come from its ``ProviderSpec``.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from ..config import ProviderConfig
from ..httpclient import HttpClient
from .base import Provider, ProviderSpec, api_base

_SUPPORT = {"base", "fields", "paging", "tree"}


def _discover() -> dict[str, ProviderSpec]:
    specs: dict[str, ProviderSpec] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name in _SUPPORT:
            continue
        spec = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SPEC", None)
        if isinstance(spec, ProviderSpec):
            specs[spec.type] = spec
    return dict(sorted(specs.items()))


SPECS: dict[str, ProviderSpec] = _discover()


def make_http(config: ProviderConfig, timeout: float, **transports: Any) -> HttpClient:
    """The HTTP client of one provider: its base URL, credentials and error bodies
    (``api_transport``/``byte_transport`` replace the network in tests)."""
    spec = SPECS[config.type]
    return HttpClient(config.name, config.base_url, spec.headers(config), params=spec.params(config),
                      timeout=timeout, classify=spec.classify, **transports)


def make_provider(config: ProviderConfig, cache_dir: Path, timeout: float, **transports: Any) -> Provider:
    """The provider for one ``[providers.*]`` table, with its state dir under ``cache.dir``."""
    return SPECS[config.type].provider(config, make_http(config, timeout, **transports),
                                       cache_dir / "providers" / config.name)


def api_url(config: ProviderConfig) -> str:
    """The provider's API base: ``base_url`` with the type's version prefix once."""
    return api_base(config.base_url, SPECS[config.type].api_prefix)
