"""The config file (TOML) read once at start into frozen, fully validated dataclasses.

Every other layer trusts these values, so all checking happens here, and every problem is one
``ConfigError`` line: ``<file>: <dotted key>: <problem> (<fix>)``. No message ever holds a token
or a user id, only the name of the variable, file or key it came from.

Precedence, highest first:

- ``listing_ttl`` of a provider: the ``--listing-ttl`` flag, then the provider's own
  ``listing_ttl``, then ``[mount] listing_ttl``, then 60 seconds.
- ``allow_other``, cache ``dir`` and ``max_size``: the flag, then the file, then the default.

Credentials of a provider: exactly one of ``token_env`` (an environment variable name),
``token_file`` (a path; the file must not be accessible by group or others) or ``token``
(inline; only if the config file itself is not accessible by group or others). With none of
them the token comes from ``token_env = "<TYPE>_API_KEY"``, e.g. ``GUMLOOP_API_KEY`` (by type,
so every instance of a type shares it unless told otherwise). A provider type may declare
further credentials read the same way (Gumloop's optional user id: ``user_id_env``, default
``GUMLOOP_USER_ID``, ``user_id_file`` or ``user_id``), and its own keys with their checks:
each provider module declares them (``providers/<type>.py``'s ``SPEC``), this module only
applies them.

Paths in the file (``token_file``, ``[cache] dir``) expand ``~``; relative ones are taken
relative to the config file's directory, so the daemon finds them whatever its working directory.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A config problem as one line naming the file, the key and the fix."""


DEFAULT_LISTING_TTL = 60.0
DEFAULT_NEGATIVE_TTL = 5.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_CACHE_SIZE = "10GiB"

PRIVATE_MASK = 0o077
"""Permission bits a file holding a secret must not have: any access by group or others."""


@dataclass(frozen=True)
class ProviderConfig:
    """One ``[providers.NAME]`` table, resolved: the token is the value itself."""

    name: str
    type: str
    base_url: str
    token: str = field(repr=False)
    ids: tuple[str, ...] = ()
    listing_ttl: float = DEFAULT_LISTING_TTL
    secrets: Mapping[str, str | None] = field(default_factory=dict, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """The whole config, flags applied."""

    path: Path | None
    listing_ttl: float
    negative_ttl: float
    allow_other: bool
    cache_dir: Path
    timeout: float
    xattrs: bool
    cache_max_size: int
    providers: tuple[ProviderConfig, ...]

    def provider(self, name: str) -> ProviderConfig:
        """The provider mounted at top-level directory ``name``; KeyError if there is none."""
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise KeyError(name)


@dataclass(frozen=True)
class Overrides:
    """Command-line flags; None means the flag was not given and the file decides."""

    listing_ttl: float | None = None
    allow_other: bool | None = None
    cache_dir: Path | None = None
    cache_max_size: str | None = None
    xattrs: bool | None = None


_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: ``4096``, ``"4096"``, ``"512MiB"``, ``"1.5G"``, ``"10GB"``.

    K, M, G and T are powers of 1024 whether written ``K``, ``KB`` or ``KiB`` (case-insensitive),
    because a cache size is a budget where the SI/binary difference only confuses.
    Fractions of a byte are dropped. Raises ValueError for anything else, negatives included.
    """
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    match = _SIZE_RE.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a size (use e.g. 10GiB, 512MiB, 1.5G or a number of bytes)")
    number, unit = match.groups()
    return int(Decimal(number) * _SIZE_UNITS[(unit or "").lower()])


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/artifactfs/config.toml``, else ``~/.config/artifactfs/config.toml``."""
    return _xdg_dir(os.environ if environ is None else environ, "XDG_CONFIG_HOME", ".config") / "config.toml"


def _xdg_dir(environ: Mapping[str, str], variable: str, fallback: str) -> Path:
    """Our directory under an XDG base; unset, empty or relative values are ignored, as the XDG spec says."""
    base = Path(environ.get(variable) or "~/" + fallback).expanduser()
    if not base.is_absolute():
        base = Path("~", fallback).expanduser()
    return base / "artifactfs"


def _error(*place: str, problem: str, fix: str) -> ConfigError:
    """The one way errors are built: ``place: place: problem (fix)``, always one line."""
    text = ": ".join([*place, f"{problem} ({fix})"])
    return ConfigError(text.replace("\r", "\\r").replace("\n", "\\n"))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path: tuple[str, ...]) -> str:
    """A key path as it would be written in TOML, quoting parts that need it."""
    return ".".join(p if _BARE_KEY.fullmatch(p) else json.dumps(p, ensure_ascii=False) for p in path)


def _shown(path: Path) -> str:
    """A file name for messages: as given, with the home directory written ``~``."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except (ValueError, RuntimeError):
        return str(path)


def _bad_name(name: str) -> bool:
    """Whether ``name`` cannot be a directory entry."""
    return name in ("", ".", "..") or "/" in name or "\0" in name


@dataclass(frozen=True)
class _Kind:
    """What a key's value must be: a test, and words and a fix for the error.

    ``fix`` may use ``{key}`` (the last part of the key) and ``{dotted}`` (the whole key).
    """

    what: str
    fix: str
    accepts: Callable[[Any], bool]


def _is_size(value: Any) -> bool:
    try:
        parse_size(value)
    except ValueError:
        return False
    return True


_SECONDS = _Kind("a number of seconds >= 0", "e.g. {key} = 60",
                 lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)
_TIMEOUT = _Kind("a number of seconds > 0", "e.g. {key} = 30",
                 lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)
_BOOL = _Kind("true or false", "e.g. {key} = false", lambda v: isinstance(v, bool))
_TEXT = _Kind("a non-empty string", 'e.g. {key} = "..."', lambda v: isinstance(v, str) and v.strip() != "")
_IDS = _Kind('a list of ids (non-empty strings without "/", not "." or "..")', 'e.g. {key} = ["id1", "id2"]',
             lambda v: isinstance(v, list) and all(isinstance(i, str) and not _bad_name(i) for i in v))
_SIZE = _Kind("a size or a number of bytes", 'e.g. {key} = "10GiB", "512MiB" or 1048576', _is_size)
_TABLE = _Kind("a table", "write it as a [{dotted}] section", lambda v: isinstance(v, dict))

SECONDS = _SECONDS
BOOL = _BOOL
TEXT = _TEXT
IDS = _IDS
"""The kinds a provider module may give its own keys (``ProviderSpec.options``)."""

_TOP_KEYS = {"mount": _TABLE, "cache": _TABLE, "providers": _TABLE}
_MOUNT_KEYS = {"listing_ttl": _SECONDS, "negative_ttl": _SECONDS, "allow_other": _BOOL, "timeout": _TIMEOUT,
               "xattrs": _BOOL}
_CACHE_KEYS = {"dir": _TEXT, "max_size": _SIZE}
_PROVIDER_KEYS = {"type": _TEXT, "base_url": _TEXT, "listing_ttl": _SECONDS}


@dataclass(frozen=True)
class Secret:
    """A credential a provider type needs: read from ``<stem>_env`` (default ``default_env``),
    ``<stem>_file`` or inline ``<stem>``. An optional one whose default variable is unset is None."""

    default_env: str
    required: bool = True
    inline_needs_private: bool = True


def _secret_keys(stem: str) -> dict[str, _Kind]:
    return {f"{stem}_env": _TEXT, f"{stem}_file": _TEXT, stem: _TEXT}


def _specs() -> Mapping[str, Any]:
    """The provider types and what each declares (imported here, late: providers import this module)."""
    from .providers import SPECS
    return SPECS


def provider_types() -> tuple[str, ...]:
    return tuple(_specs())


def _type_keys(spec: Any) -> dict[str, _Kind]:
    """The keys of one provider type beyond the common ones: its ids, credentials and options."""
    keys: dict[str, _Kind] = {**_secret_keys("token"), **dict(spec.options)}
    if spec.ids_key:
        keys[spec.ids_key] = _IDS
    for stem in spec.secrets:
        keys.update(_secret_keys(stem))
    return keys


def _first(*values: Any) -> Any:
    """The first value that is not None: a flag, else the file, else the default."""
    return next(v for v in values if v is not None)


def load_config(path: Path | None = None, overrides: Overrides = Overrides(),
                environ: Mapping[str, str] | None = None, *, require_file: bool = False) -> Config:
    """Read, validate and resolve the config; ``environ`` (default ``os.environ``) supplies variables.

    ``path=None`` means the default path; when that file is missing and not ``require_file``,
    the result has defaults and no providers (the caller decides whether that is an error).
    """
    loader, data, file = _open(path, environ, must_exist=path is not None or require_file)
    return loader.config(data, overrides, file)


def load_config_by_provider(path: Path | None = None, environ: Mapping[str, str] | None = None
                            ) -> tuple[Config, dict[str, ProviderConfig | ConfigError]]:
    """The config with the providers that load, and each provider's config or error, in file order.

    For ``doctor``, which reports every provider on its own line: one provider's missing token
    must not hide the others. The file must exist; a problem outside ``[providers]`` raises.
    """
    loader, data, file = _open(path, environ, must_exist=True)
    tables = data.get("providers")
    outcomes: dict[str, ProviderConfig | ConfigError] = {}
    for name, table in (tables.items() if isinstance(tables, dict) else ()):
        try:
            outcomes[name] = loader.config({**data, "providers": {name: table}}, Overrides(), file).providers[0]
        except ConfigError as exc:
            outcomes[name] = exc
    good = {name: tables[name] for name, outcome in outcomes.items() if isinstance(outcome, ProviderConfig)}
    # With every provider loaded, the file as it is: that also reports a [providers] that is no table.
    loadable = data if len(good) == len(outcomes) else {**data, "providers": good}
    return loader.config(loadable, Overrides(), file), outcomes


def _open(path: Path | None, environ: Mapping[str, str] | None, *,
          must_exist: bool) -> tuple["_Loader", dict[str, Any], Path | None]:
    """The loader for the file at ``path`` (default path if None), its data, and the file if read."""
    env = os.environ if environ is None else environ
    file = Path(path).expanduser() if path is not None else default_config_path(env)
    loaded = _read_toml(file, must_exist=must_exist)
    data, mode = loaded or ({}, 0)
    return _Loader(_shown(file), mode, env, file.absolute().parent), data, file if loaded else None


def _read_toml(file: Path, *, must_exist: bool) -> tuple[dict[str, Any], int] | None:
    """The parsed file and its permission bits, or None when it is missing and may be."""
    shown = _shown(file)
    try:
        with open(file, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            return tomllib.load(handle), mode
    except FileNotFoundError:
        if must_exist:
            raise _error(shown, problem="no such config file", fix="create it, see README 'Config'") from None
        return None
    except tomllib.TOMLDecodeError as exc:
        raise _error(shown, problem=f"invalid TOML: {exc}", fix="fix the syntax there") from None
    except UnicodeDecodeError:
        raise _error(shown, problem="is not UTF-8 text", fix="save it as UTF-8") from None
    except OSError as exc:
        raise _error(shown, problem=f"cannot be read: {exc.strerror}", fix="check its permissions") from None


@dataclass(frozen=True)
class _Loader:
    """Validation of one parsed file: knows its name, permissions, environment and directory."""

    shown: str
    mode: int
    environ: Mapping[str, str]
    base_dir: Path

    def fail(self, path: tuple[str, ...], problem: str, fix: str) -> ConfigError:
        """The error for the key at ``path`` of this file."""
        return _error(self.shown, _dotted(path), problem=problem, fix=fix)

    def check(self, table: dict[str, Any], schema: Mapping[str, _Kind], path: tuple[str, ...]) -> None:
        """Every key of ``table`` is in ``schema`` and its value is of the kind the schema says."""
        for key, value in table.items():
            where = (*path, key)
            kind = schema.get(key)
            if kind is None:
                what = "table" if isinstance(value, dict) else "key"
                raise self.fail(where, f"unknown {what}", f"allowed: {', '.join(schema)}")
            if not kind.accepts(value):
                raise self.fail(where, f"must be {kind.what}", kind.fix.format(key=key, dotted=_dotted(where)))

    def resolve(self, path: tuple[str, ...], raw: str) -> Path:
        """A path from the file at key ``path``: ``~`` expanded, relative to the file's directory."""
        try:
            return self.base_dir / Path(raw).expanduser()
        except RuntimeError:  # ~user of a user that does not exist
            raise self.fail(path, f"cannot expand {raw!r} (no such user)",
                            "write the path out, or use ~/ for your own home") from None

    def config(self, data: dict[str, Any], overrides: Overrides, file: Path | None) -> Config:
        """The whole file, checked table by table, with the flags applied."""
        self.check(data, _TOP_KEYS, ())
        mount, cache, providers = (data.get(key, {}) for key in _TOP_KEYS)
        self.check(mount, _MOUNT_KEYS, ("mount",))
        self.check(cache, _CACHE_KEYS, ("cache",))
        self.check(providers, dict.fromkeys(providers, _TABLE), ("providers",))
        mount_ttl = float(mount.get("listing_ttl", DEFAULT_LISTING_TTL))
        if overrides.cache_dir is not None:
            cache_dir = Path(overrides.cache_dir).expanduser().absolute()
        elif "dir" in cache:
            cache_dir = self.resolve(("cache", "dir"), cache["dir"])
        else:
            cache_dir = _xdg_dir(self.environ, "XDG_CACHE_HOME", ".cache")
        try:  # only the flag can fail here: the file's max_size was checked above
            max_size = parse_size(_first(overrides.cache_max_size, cache.get("max_size"), DEFAULT_CACHE_SIZE))
        except ValueError:
            raise _error("--cache-size", problem=f"{overrides.cache_max_size!r} is not a size",
                         fix="use e.g. 10GiB, 512MiB or a number of bytes") from None
        return Config(
            path=file,
            listing_ttl=float(_first(overrides.listing_ttl, mount_ttl)),
            negative_ttl=float(mount.get("negative_ttl", DEFAULT_NEGATIVE_TTL)),
            allow_other=bool(_first(overrides.allow_other, mount.get("allow_other"), False)),
            cache_dir=cache_dir,
            timeout=float(mount.get("timeout", DEFAULT_TIMEOUT)),
            xattrs=bool(_first(overrides.xattrs, mount.get("xattrs"), True)),
            cache_max_size=max_size,
            providers=tuple(self.provider(name, table, overrides.listing_ttl, mount_ttl)
                            for name, table in providers.items()),
        )

    def provider(self, name: str, table: dict[str, Any], flag_ttl: float | None,
                 mount_ttl: float) -> ProviderConfig:
        """One provider table: its type first, because the type decides which keys are allowed."""
        path = ("providers", name)
        specs = _specs()
        kind = table.get("type", name)
        if kind not in specs:
            if "type" in table:
                raise self.fail((*path, "type"), f"must be one of {', '.join(specs)}",
                                'e.g. type = "gumloop"')
            raise self.fail(path, "has no type and its name is not a type name",
                            f'add type = "..." with one of {", ".join(specs)}')
        if _bad_name(name):
            raise self.fail(path, "is not usable as a directory name",
                            'rename the table: not empty, not "." or "..", no "/" or NUL')
        spec = specs[kind]
        own = _type_keys(spec)
        for key in table:
            if key in own or key in _PROVIDER_KEYS:
                continue
            owners = [other for other, s in specs.items() if key in _type_keys(s)]
            if owners:
                raise self.fail((*path, key), f"is only for {' and '.join(owners)} providers, this one is {kind}",
                                f"remove {key}")
        self.check(table, _PROVIDER_KEYS | own, path)
        return ProviderConfig(
            name=name,
            type=kind,
            base_url=self.base_url(path, table.get("base_url", spec.default_base_url)),
            token=self.secret(path, table, "token", Secret(f"{kind.upper()}_API_KEY")),
            ids=tuple(dict.fromkeys(table.get(spec.ids_key, ()))) if spec.ids_key else (),
            listing_ttl=float(_first(flag_ttl, table.get("listing_ttl"), mount_ttl)),
            secrets={stem: self.secret(path, table, stem, secret) for stem, secret in spec.secrets.items()},
            options={key: table[key] for key in spec.options if key in table},
        )

    def base_url(self, path: tuple[str, ...], raw: str) -> str:
        """``raw`` without its trailing ``/`` if it is ``http(s)://host[:port][/path]``.

        The value is never echoed: a URL with a user name may hold a password.
        """
        url = raw.strip().rstrip("/")
        parts = urlsplit(url)
        try:
            port_ok = parts.port != 0
        except ValueError:
            port_ok = False
        problem = ("must start with http:// or https://" if parts.scheme not in ("http", "https")
                   else "has no host" if not parts.hostname
                   else "has an invalid port" if not port_ok
                   else "must not hold a user name or password" if "@" in parts.netloc
                   else "must not have a query or fragment" if "?" in url or "#" in url
                   else "must not contain spaces" if any(c.isspace() for c in url)
                   else None)
        if problem:
            raise self.fail((*path, "base_url"), problem, "use http(s)://host[:port][/path]")
        return url

    def secret(self, path: tuple[str, ...], table: dict[str, Any], stem: str, secret: Secret) -> Any:
        """A credential from exactly one of ``<stem>_env``, ``<stem>_file`` or inline ``<stem>``;
        None for an optional one that is not configured and whose default variable is unset."""
        env_key, file_key = f"{stem}_env", f"{stem}_file"
        given = [key for key in (env_key, file_key, stem) if key in table]
        if len(given) > 1:
            raise self.fail(path, f"{' and '.join(given)} are both set",
                            f"keep only one of {env_key}, {file_key}, {stem}")
        source = given[0] if given else env_key
        if source == stem:
            if secret.inline_needs_private and self.mode & PRIVATE_MASK:
                raise self.fail((*path, stem), f"an inline {stem} needs a private file, "
                                f"{self.shown} is readable by group/others",
                                f"chmod 600 {self.shown}, or use {env_key}")
            value, origin = table[stem].strip(), f"the inline {stem}"
        elif source == file_key:
            origin = f"{file_key} {table[file_key]}"
            value = self.secret_file(path, origin, table[file_key], f"or use {env_key}")
        else:
            variable = table.get(env_key, secret.default_env)
            value, origin = self.environ.get(variable, "").strip(), f"{env_key} {variable}"
            if not value:
                if not secret.required and not given:
                    return None
                raise self.fail(path, f"{origin} is not set", f"export it or use {file_key}")
        if not (value.isascii() and value.isprintable()):
            raise self.fail(path, f"{origin} holds control or non-ASCII characters", f"check the {stem}")
        return value

    def secret_file(self, path: tuple[str, ...], origin: str, raw: str, alternative: str) -> str:
        """The stripped text of file ``raw``, which only its owner may access."""
        try:
            with open(self.resolve(path, raw), "rb") as handle:
                if os.fstat(handle.fileno()).st_mode & PRIVATE_MASK:
                    raise self.fail(path, f"{origin} is readable by group/others", f"chmod 600 {raw}")
                value = handle.read().decode("utf-8").strip()
        except FileNotFoundError:
            raise self.fail(path, f"{origin} does not exist", f"create it with mode 600, {alternative}") from None
        except OSError as exc:
            raise self.fail(path, f"{origin} cannot be read: {exc.strerror}",
                            f"check its permissions, {alternative}") from None
        except UnicodeDecodeError:
            raise self.fail(path, f"{origin} is not UTF-8 text", "write only the value into it") from None
        if not value:
            raise self.fail(path, f"{origin} is empty", f"write the value into it, {alternative}")
        return value
