"""The emulated providers, one module each, found by ``discover()``: a fifth provider is one new module.

A provider that outgrows one file is a package instead (``plangrep``); its ``__init__`` then
declares what a module would. The module's name is the provider type (the config's
``type``). At module level it declares:

  BASE_PATH      where its API lives on the API origin (``Emulator.base_urls()[type]``)
  DEFAULT_TOKEN  the token accepted unless ``Emulator(tokens={type: ...})`` says otherwise
  State          its data and the methods that change it, built as ``State(world, **options)``
                 (``Emulator(<type>_<option>=...)``); a ``ProviderState``
  handle         ``handle(state, req, parts)``: the answer to ``BASE_PATH/<parts...>``
  seed           ``seed(state)``: the sample data
and, where it has any:
  CONTROL        ``{name: action(state, body)}``: ``POST /_emulator/<type>/<name>`` with a JSON
                 object body; the action's dict (if any) is merged into ``{"ok": true}``
  EXPORTS        ``{world attribute: state attribute}``: shortcuts such as ``World.put_sigmic_file``
  ROUTES         more ``{path prefix: handler}`` on the API origin, served like ``handle``
  BUCKET         a path prefix on the storage origin, whose requests ``state.serve_object(req, parts)``
                 answers
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..server import BlobReply, Reply, Request
    from ..world import World

Handler = Callable[[Any, "Request", list[str]], "Reply | BlobReply"]
ControlAction = Callable[[Any, dict[str, Any]], "dict[str, Any] | None"]


@dataclasses.dataclass
class NoSwitches:
    """For a provider without switches of its own."""


class ProviderState:
    """Base of each provider's data: the world it lives in and its switches.

    ``switches`` is a dataclass; ``World.set(<type>_<field>=value)`` sets its fields,
    checked against their annotations.
    """

    switches: Any = NoSwitches()

    def __init__(self, world: World) -> None:
        self.world = world

    def ready_info(self) -> dict[str, Any]:
        """What ``Emulator.ready_info()`` adds for this provider, besides its base URL and token."""
        return {}

    def serve_object(self, req: Request, parts: list[str]) -> Reply | BlobReply:
        raise NotImplementedError(f"{type(self).__name__} has no storage bucket")


@dataclasses.dataclass(frozen=True)
class ProviderType:
    """What one provider module declares (see the package docstring), the optional parts filled in."""

    name: str
    base_path: str
    default_token: str
    state: type[ProviderState]
    handle: Handler
    seed: Callable[[Any], None]
    control: Mapping[str, ControlAction] = dataclasses.field(default_factory=dict)
    exports: Mapping[str, str] = dataclasses.field(default_factory=dict)
    routes: Mapping[str, Handler] = dataclasses.field(default_factory=dict)
    bucket: str = ""

    @classmethod
    def of(cls, name: str, module: ModuleType) -> ProviderType:
        missing = [attr for attr in _REQUIRED.values() if not hasattr(module, attr)]
        if missing:
            raise AttributeError(f"provider module {module.__name__} declares no {', '.join(missing)}")
        declared = {
            field: getattr(module, attr) for field, attr in (_REQUIRED | _OPTIONAL).items() if hasattr(module, attr)
        }
        return cls(name, **declared)


_REQUIRED = {
    "base_path": "BASE_PATH",
    "default_token": "DEFAULT_TOKEN",
    "state": "State",
    "handle": "handle",
    "seed": "seed",
}
_OPTIONAL = {"control": "CONTROL", "exports": "EXPORTS", "routes": "ROUTES", "bucket": "BUCKET"}


def discover() -> dict[str, ProviderType]:
    """Every provider module (or package) of this package, by type, in name order."""
    found: dict[str, ProviderType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found[info.name] = ProviderType.of(info.name, importlib.import_module(f"{__name__}.{info.name}"))
    return found
