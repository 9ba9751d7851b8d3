"""``artifactfs doctor``: checks what a mount needs, one line per check, each failure with its fix.

The order is the order a mount meets things: FUSE on this machine, the config, each provider's
credentials and one cheap authenticated request to it, the cache directory. A provider whose
table is wrong is that provider's FAIL line, not the end of the report. Tokens are never
printed: a failure names the variable, file or key it came from.

The probe requests are the cheapest authenticated call of each API, as each provider module
declares it (``ProviderSpec.probe``). Where the probe names an id and none is configured, a
made-up id is asked for: auth is checked before the lookup, so a 404 proves that the API is
reachable and the token accepted, and a 401/403 that it is refused.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote

import httpx

from .config import Config, ConfigError, ProviderConfig, load_config_by_provider
from .errors import AccessDenied, NotFound, error_for_status
from .httpclient import url_path
from .providers import SPECS, api_url
from .status import human_size
from .transport import ssl_context

FUSE_DEVICE = "/dev/fuse"
FUSE_CONF = Path("/etc/fuse.conf")
PROBE_TIMEOUT = 10.0
PLACEHOLDER_ID = "artifactfs-doctor-probe"


@dataclass(frozen=True)
class Check:
    """One result: ``ok``/``FAIL``, what was checked, what was found, and how to fix a failure."""

    ok: bool
    what: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok' if self.ok else 'FAIL':<4}  {self.what}: {self.detail}"
        return f"{text}; fix: {self.fix}" if self.fix else text


def run_doctor(config_path: Path | None, out: Callable[[str], None] = print) -> int:
    """Print every check as it completes; 1 if any failed, else 0."""
    failed = False
    for check in _checks(config_path):
        out(check.line())
        failed |= not check.ok
    return 1 if failed else 0


def _checks(config_path: Path | None) -> Iterator[Check]:
    yield check_fuse_device()
    yield check_fusermount()
    try:
        config, providers = load_config_by_provider(config_path)
    except ConfigError as exc:
        yield Check(False, "config", str(exc))
        return
    count = len(providers)
    yield (Check(True, "config", f"{config.path} ({count} provider{'' if count == 1 else 's'})") if count
           else Check(False, "config", f"{config.path}: no providers configured",
                      "add a [providers.NAME] table, see README 'Config'"))
    if config.allow_other:
        yield check_allow_other()
    for name, provider in providers.items():
        if isinstance(provider, ConfigError):
            yield Check(False, name, str(provider))
            continue
        extra = [stem.replace("_", " ") for stem, value in provider.secrets.items() if value]
        yield Check(True, name, "token present" + (f" with {', '.join(extra)}" if extra else ""))
        yield check_provider(provider)
    yield check_cache_dir(config)


def check_fuse_device() -> Check:
    if not os.path.exists(FUSE_DEVICE):
        return Check(False, FUSE_DEVICE, "missing",
                     "sudo apt-get install fuse3 && sudo modprobe fuse; in a container: "
                     "--device /dev/fuse --cap-add SYS_ADMIN")
    try:
        os.close(os.open(FUSE_DEVICE, os.O_RDWR))
    except OSError as exc:
        return Check(False, FUSE_DEVICE, f"cannot be opened: {exc.strerror}",
                     f"sudo chmod 666 {FUSE_DEVICE} (fuse3's default mode)")
    return Check(True, FUSE_DEVICE, "present and openable")


def check_fusermount() -> Check:
    path = shutil.which("fusermount3")
    if path is None:
        return Check(False, "fusermount3", "not found on PATH", "sudo apt-get install fuse3")
    if os.geteuid() != 0 and not os.stat(path).st_mode & stat.S_ISUID:
        return Check(False, "fusermount3", f"{path} is not setuid root, so users cannot mount",
                     f"sudo chmod u+s {path}")
    return Check(True, "fusermount3", path)


def check_allow_other() -> Check:
    """Non-root mounts may use ``allow_other`` only if the admin allowed it in /etc/fuse.conf."""
    if os.geteuid() == 0:
        return Check(True, "allow_other", "running as root, /etc/fuse.conf not needed")
    try:
        allowed = any(line.strip() == "user_allow_other" for line in FUSE_CONF.read_text().splitlines())
    except OSError:
        allowed = False
    if allowed:
        return Check(True, "allow_other", f"user_allow_other is set in {FUSE_CONF}")
    return Check(False, "allow_other", f"needs user_allow_other in {FUSE_CONF}",
                 f"echo user_allow_other | sudo tee -a {FUSE_CONF}, or set allow_other = false")


def check_provider(provider: ProviderConfig) -> Check:
    """One authenticated request; the line says what was asked and what it proves."""
    spec = SPECS[provider.type]
    probe = spec.probe
    item = (provider.ids[0] if provider.ids else PLACEHOLDER_ID) if "{id}" in probe.path else None
    url = api_url(provider) + probe.path.format(id=quote(item or "", safe=""))
    asked = f"GET {url_path(url)}"
    started = time.monotonic()
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT, follow_redirects=False, verify=ssl_context()) as client:
            resp = client.get(url, params={**probe.params, **spec.params(provider)}, headers=spec.headers(provider))
    except httpx.HTTPError as exc:
        return Check(False, provider.name, f"{asked}: cannot connect ({type(exc).__name__}: {exc})",
                     f"check the network and providers.{provider.name}.base_url")
    answer = f"{asked} -> HTTP {resp.status_code} in {(time.monotonic() - started) * 1000:.0f} ms"
    try:
        body = resp.json()
    except ValueError:
        body = None
    error = (spec.classify(resp.status_code, body) if spec.classify else None) or (
        None if resp.is_success else error_for_status(resp.status_code))
    if error is None:
        return Check(True, provider.name, f"answers ({answer})")
    if issubclass(error, AccessDenied):
        credentials = " and ".join(["token", *(s.replace("_", " ") for s in spec.secrets)])
        return Check(False, provider.name, f"the API refused the credentials ({answer})",
                     f"check the {credentials} of providers.{provider.name}")
    if error is NotFound and item == PLACEHOLDER_ID:
        return Check(True, provider.name, f"answers and accepts the token ({answer} for a made-up id; "
                     f"no {spec.ids_key} configured)")
    if error is NotFound and item is not None:
        return Check(False, provider.name, f"{item} not found ({answer})",
                     f"check providers.{provider.name}.{spec.ids_key}")
    return Check(False, provider.name, f"the API failed ({answer})",
                 f"retry later, or check providers.{provider.name}.base_url")


def check_cache_dir(config: Config) -> Check:
    directory = config.cache_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        return Check(False, "cache dir", f"{directory}: {exc.strerror or exc}",
                     "choose a writable one with [cache] dir or --cache-dir")
    return Check(True, "cache dir", f"{directory} is writable ({human_size(free)} free)")
