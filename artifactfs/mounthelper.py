"""``mount.fuse.artifactfs``: lets ``mount``, ``/etc/fstab`` and systemd mount artifactfs.

mount(8) runs ``/sbin/mount.fuse.artifactfs SOURCE MOUNTPOINT [-n] [-s] [-v] [-f] -o OPTIONS``
for ``-t fuse.artifactfs``. The source is a free word (``artifactfs``); the options map to the
flags of ``artifactfs mount MOUNTPOINT`` (background mode, so mount(8) returns once the mount is
live). Options that mount(8), fstab or systemd add for themselves are accepted and ignored.
"""

from __future__ import annotations

import sys
from typing import Sequence

from . import cli

PROG = "mount.fuse.artifactfs"

VALUE_OPTIONS = {"config": "--config", "listing_ttl": "--listing-ttl", "cache_dir": "--cache-dir",
                 "cache_size": "--cache-size", "log_file": "--log-file", "log_level": "--log-level"}
FLAG_OPTIONS = {"allow_other": "--allow-other", "no_xattrs": "--no-xattrs"}
IGNORED_OPTIONS = frozenset({
    "rw", "ro", "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "nofail",
    "_netdev", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "async", "sync", "atime",
    "noatime", "relatime", "norelatime", "strictatime", "diratime", "nodiratime", "loud", "silent",
})
IGNORED_PREFIXES = ("x-", "comment=", "fsname=", "subtype=")
"""``x-systemd.*``/``x-gvfs-*`` and the like are for mount(8) and systemd, not for us."""


class OptionError(Exception):
    """An ``-o`` option this helper does not know: one line, exit 2."""


def translate_options(options: str) -> list[str]:
    """``config=/etc/a.toml,allow_other,_netdev`` → ``["--config", "/etc/a.toml", "--allow-other"]``."""
    flags: list[str] = []
    for option in filter(None, options.split(",")):
        name, has_value, value = option.partition("=")
        if option in IGNORED_OPTIONS or option.startswith(IGNORED_PREFIXES):
            continue
        if name in VALUE_OPTIONS and has_value and value:
            flags += [VALUE_OPTIONS[name], value]
        elif name in FLAG_OPTIONS and not has_value:
            flags.append(FLAG_OPTIONS[name])
        else:
            known = ", ".join([*(f"{k}=..." for k in VALUE_OPTIONS), *FLAG_OPTIONS])
            raise OptionError(f"unknown option {option!r} (artifactfs options: {known})")
    return flags


def mount_argv(argv: Sequence[str]) -> list[str] | None:
    """The ``artifactfs`` arguments for mount(8)'s helper arguments; None in fake mode (``-f``)."""
    positional: list[str] = []
    flags: list[str] = []
    fake = False
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            flags += translate_options(next(args, ""))
        elif arg.startswith("-o"):
            flags += translate_options(arg[2:])
        elif arg == "-f":
            fake = True
        elif arg in ("-n", "-s", "-v"):
            continue
        elif arg.startswith("-"):
            raise OptionError(f"unknown argument {arg!r} (usage: {PROG} SOURCE MOUNTPOINT [-o OPTIONS])")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise OptionError(f"usage: {PROG} SOURCE MOUNTPOINT [-o OPTIONS] (got {len(positional)} arguments)")
    return None if fake else ["mount", positional[1], *flags]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = mount_argv(sys.argv[1:] if argv is None else argv)
    except OptionError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    return 0 if args is None else cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
