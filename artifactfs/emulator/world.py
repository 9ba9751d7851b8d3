"""The emulated world: every provider's state (``providers``), the switches, one lock.

Route handlers read provider state under ``World.lock``; tests change it through the
states' methods (the same ones the ``/_emulator/`` control endpoints call), most of which
are also ``World`` attributes under their historic names (``put_sigmic_file``; each
provider module's ``EXPORTS``). Content is held as ``Blob`` objects, which are immutable,
so a replaced file never disturbs a response already streaming the old bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import typing
from enum import Enum
from typing import Any

from . import providers
from .clock import Clock, Timestamp
from .faults import FaultSwitches
from .providers import ProviderState, ProviderType
from .server import OriginSettings
from .signing import Scheme, Signer

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ORIGIN_SWITCHES = ("ignore_range", "chunked")


@dataclasses.dataclass
class Switches:
    """World-wide switches; per-origin ones live in ``World.origins``, per-provider ones in each state."""

    url_ttl: float | None = None  # lifetime of signed storage URLs, seconds; None: each provider's own default


class World:
    """All provider data and switches; every method is safe to call from any thread.

    ``options`` are the providers' constructor options, named ``<type>_<option>``
    (``gumloop_user_id="user_x"``).
    """

    def __init__(self, tokens: dict[str, str] | None = None, **options: Any) -> None:
        self.lock = threading.RLock()
        self.types = providers.discover()
        unknown = set(tokens or {}) - set(self.types)
        if unknown:
            raise ValueError(f"tokens for unknown provider types: {sorted(unknown)}")
        self.tokens = {kind: declared.default_token for kind, declared in self.types.items()} | (tokens or {})
        self.switches = Switches()
        self.clock = Clock()
        self.signer = Signer(os.urandom(32))
        self._fault_switches = {"api": FaultSwitches("api"), "storage": FaultSwitches("storage", self.signer)}
        self.origins = {name: OriginSettings(fault_switches=sw) for name, sw in self._fault_switches.items()}
        self.api_url = ""  # set once the origins listen
        self.storage_url = ""
        self._minted = 0
        self.providers: dict[str, ProviderState] = {
            kind: declared.state(self, **_options_of(kind, options)) for kind, declared in self.types.items()
        }
        if options:
            raise TypeError(f"unknown options: {', '.join(sorted(options))}")
        self._exports = _exports(self.types)

    def __getattr__(self, name: str) -> Any:
        """A provider's state by type (``world.plangrep``), or an exported attribute of one."""
        states = self.__dict__.get("providers", {})
        if name in states:
            return states[name]
        kind, attr = self.__dict__.get("_exports", {}).get(name, (None, None))
        if kind is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(states[kind], attr)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.providers, *self._exports})

    # ---- for provider states ----------------------------------------------

    def timestamp(self, value: Timestamp = None) -> float:
        """``value`` as epoch seconds, or the logical clock's next tick (see ``clock``)."""
        with self.lock:
            return self.clock.stamp(value)

    def new_id(self, prefix: str) -> str:
        """Deterministic ``prefix`` + 9 base62 characters, like ``art_aBcDeF123``."""
        with self.lock:
            self._minted += 1
            n = int.from_bytes(hashlib.sha256(f"{prefix}{self._minted}".encode()).digest()[:8], "big")
        chars = []
        for _ in range(9):
            n, r = divmod(n, 62)
            chars.append(_BASE62[r])
        return prefix + "".join(chars)

    def url_ttl(self, default: float) -> float:
        """Seconds a newly signed URL lives: the ``url_ttl`` switch if set, else the provider's ``default``."""
        ttl = self.switches.url_ttl
        return default if ttl is None else ttl

    def signed_url(self, path: str, scheme: Scheme, ttl: float) -> str:
        """A signed URL for ``path`` on the storage origin."""
        return self.signer.sign(self.storage_url, path, scheme, ttl)

    # ---- switches ------------------------------------------------------

    def set(self, **switches: Any) -> None:
        """Set switches by name, each checked against its declared type (else KeyError/TypeError/ValueError).

        ``url_ttl``; ``{api,storage}_{ignore_range,chunked}``; and each provider's own as
        ``<type>_<name>`` (``vm0_shape``, ``vm0_download``, ``plangrep_content_length``, ``plangrep_ranges``).
        """
        with self.lock:
            for name, value in switches.items():
                target, attr = self._switch(name)
                hint = typing.get_type_hints(type(target))[attr]
                setattr(target, attr, _coerce(name, value, hint))

    def _switch(self, name: str) -> tuple[Any, str]:
        if name in {f.name for f in dataclasses.fields(Switches)}:
            return self.switches, name
        prefix, _, attr = name.partition("_")
        if prefix in self.origins and attr in _ORIGIN_SWITCHES:
            return self.origins[prefix], attr
        state = self.providers.get(prefix)
        if state is not None and attr in {f.name for f in dataclasses.fields(state.switches)}:
            return state.switches, attr
        raise KeyError(f"unknown switch {name!r}")

    def set_url_ttl(self, seconds: float) -> None:
        self.set(url_ttl=float(seconds))

    def faults(self, origin: str) -> FaultSwitches:
        """The fault switches of ``"api"`` or ``"storage"``: ``.set(kind, **options)``, ``.clear()``
        (see ``faults``)."""
        try:
            return self._fault_switches[origin]
        except KeyError:
            raise KeyError(f"unknown origin {origin!r}; 'api' or 'storage'") from None

    def clear_faults(self) -> None:
        """Both origins healthy again: every fault rule disarmed and any custom fault hook dropped."""
        for name, settings in self.origins.items():
            self._fault_switches[name].clear()
            settings.faults = None


def _options_of(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Pops the ``<kind>_*`` options, without their prefix."""
    prefix = kind + "_"
    return {name[len(prefix) :]: options.pop(name) for name in list(options) if name.startswith(prefix)}


def _exports(types: dict[str, ProviderType]) -> dict[str, tuple[str, str]]:
    exports: dict[str, tuple[str, str]] = {}
    for kind, declared in types.items():
        for name, attr in declared.exports.items():
            if name in exports or name in types or hasattr(World, name):
                raise ValueError(f"provider {kind!r} exports {name!r}, which is already taken")
            exports[name] = (kind, attr)
    return exports


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the switch's declared type: bool, a number, None, or an Enum's value."""
    for kind in typing.get_args(hint) or (hint,):
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return value
        if kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return kind(value)
        if isinstance(kind, type) and issubclass(kind, Enum) and isinstance(value, (str, kind)):
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"switch {name!r} is one of {[m.value for m in kind]}") from None
    raise TypeError(f"switch {name!r} needs a {hint}")
