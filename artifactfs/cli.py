"""Command line: parse arguments, print one-line errors, choose exit codes. No FUSE, no HTTP."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from .config import ConfigError, Overrides, load_config
from .logsetup import LEVELS, setup_logging

PROG = "artifactfs"


class UsageError(Exception):
    """Bad command-line input: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Read-only FUSE file system for AI-agent artifacts.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    mount = commands.add_parser("mount", help="mount the configured providers")
    mount.add_argument("mountpoint", type=Path)
    mount.add_argument("-c", "--config", type=Path, help="config file (default ~/.config/artifactfs/config.toml)")
    mount.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    mount.add_argument("--allow-other", action="store_true", default=None, help="let other users read the mount")
    mount.add_argument("--listing-ttl", type=_seconds, metavar="SECONDS", help="seconds a listing is trusted")
    mount.add_argument("--cache-dir", type=Path, metavar="DIR")
    mount.add_argument("--cache-size", metavar="SIZE", help="e.g. 10GiB")
    mount.add_argument("--no-xattrs", dest="xattrs", action="store_false", default=None,
                       help="answer no extended attributes (faster ls -l)")
    _add_logging(mount)

    unmount = commands.add_parser("unmount", help="unmount (also a stale mount)")
    unmount.add_argument("mountpoint", type=Path)

    cache = commands.add_parser("cache", help="inspect, empty or fill the disk cache")
    actions = cache.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for name, text in (("stats", "bytes, files and hit ratio"), ("clear", "empty the cache")):
        action = actions.add_parser(name, help=text)
        action.add_argument("-c", "--config", type=Path)
        action.add_argument("--cache-dir", type=Path, metavar="DIR")
    fill = actions.add_parser("prefetch", help="download files or subtrees of a live mount")
    fill.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    fill.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    doctor = commands.add_parser("doctor", help="check FUSE, the config, tokens and providers")
    doctor.add_argument("-c", "--config", type=Path, help="config file (default ~/.config/artifactfs/config.toml)")

    demo = commands.add_parser("demo", help="mount the bundled emulator with sample artifacts")
    demo.add_argument("mountpoint", type=Path, nargs="?", default=Path("artifacts-demo"))
    _add_logging(demo)
    return parser


def _add_logging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LEVELS, default="info")
    parser.add_argument("--log-file", type=Path, metavar="FILE")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
        return _dispatch(args, args_list)
    except (UsageError, ConfigError) as exc:
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        return 130
    except _CommandError as exc:
        return _fail(str(exc), 1)
    except Exception as exc:  # noqa: BLE001 - a user sees one line, never a traceback
        logging.getLogger("artifactfs").debug("unexpected error", exc_info=True)
        return _fail(f"unexpected error: {type(exc).__name__}: {exc}", 1)


class _CommandError(Exception):
    """A command that could not do its job: one line, exit 1."""


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    from .mount import MountError

    try:
        if args.command == "mount":
            return _mount(args, argv)
        if args.command == "unmount":
            from .mount import unmount
            unmount(args.mountpoint)
            return 0
        if args.command == "cache":
            return _cache(args)
        if args.command == "doctor":
            from .doctor import run_doctor
            return run_doctor(args.config)
        if args.command == "demo":
            from .demo import run_demo
            setup_logging(args.log_level, args.log_file)
            return run_demo(args.mountpoint)
    except MountError as exc:
        raise _CommandError(str(exc)) from None
    raise UsageError(f"unknown command {args.command}")


def _cache(args: argparse.Namespace) -> int:
    from . import blockcache
    from .prefetch import prefetch
    from .status import human_size

    if args.action == "prefetch":
        try:
            files, size = prefetch(args.paths, progress=not args.quiet)
        except OSError as exc:
            raise _CommandError(str(exc)) from None
        print(f"prefetched {files} files, {human_size(size)}")
        return 0
    directory = args.cache_dir or load_config(args.config, require_file=args.config is not None).cache_dir
    directory = directory.expanduser()
    if args.action == "clear":
        print(f"cleared {directory}: freed {human_size(blockcache.clear(directory))}")
        return 0
    stats = blockcache.read_stats(directory)
    print(f"cache:     {directory}\nbytes:     {human_size(stats.bytes)} ({stats.bytes} B)\n"
          f"files:     {stats.files}\nblocks:    {stats.blocks}\nunpacked:  {stats.trees} archives\n"
          f"hit ratio: {stats.hit_ratio:.1%} ({stats.hits} hits, {stats.misses} misses)")
    return 0


def _mount(args: argparse.Namespace, argv: list[str]) -> int:
    from .mount import check_mountpoint, notify_ready_fd, run_foreground, start_background

    overrides = Overrides(listing_ttl=args.listing_ttl, allow_other=args.allow_other,
                          cache_dir=args.cache_dir, cache_max_size=args.cache_size, xattrs=args.xattrs)
    config = load_config(args.config, overrides, require_file=args.config is not None)
    if not config.providers:
        where = config.path or args.config or "~/.config/artifactfs/config.toml"
        raise UsageError(f"{where}: no providers configured (add a [providers.NAME] table; see README 'Config')")
    mountpoint = args.mountpoint.expanduser().absolute()
    if not args.foreground:
        check_mountpoint(mountpoint)
        log_file = args.log_file or config.cache_dir / "artifactfs.log"
        start_background([sys.executable, "-m", "artifactfs", *argv, "--foreground"], log_file)
        return 0
    report = notify_ready_fd()
    setup_logging(args.log_level, args.log_file)
    try:
        run_foreground(config, mountpoint, on_ready=lambda: report("ready"))
    except Exception as exc:
        report(f"error: {exc}")
        raise
    return 0
