"""Command-line entry point: ``realtime-face [COMMAND] ...`` (the default command is ``run``).

Each command lives in its own module of this package and exposes ``register(subparsers)``; heavy
imports happen inside the handlers so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from realtime import __version__
from realtime.errors import UserError

COMMAND_MODULES: tuple[str, ...] = ("run", "doctor", "bench", "models", "record", "session", "report",
                                    "refine", "reconstruct")
"""Modules of ``realtime.cli`` that register a sub-command (the first is the default)."""

DEFAULT_COMMAND = "run"

log = logging.getLogger("realtime")


def build_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser and the names of its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="realtime-face",
        description="Real-time 3D face reconstruction from a webcam, video or image.",
    )
    parser.add_argument("--version", action="version", version=f"realtime-face {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"realtime.cli.{name}")
        module.register(sub)
    return parser, set(sub.choices)


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _with_default_command(argv: list[str], commands: set[str]) -> list[str]:
    """Insert ``run`` unless the first non-global argument names a command (or asks for help/version)."""
    globals_ = {"-v", "-vv", "--verbose", "-q", "--quiet"}
    i = 0
    while i < len(argv) and argv[i] in globals_:
        i += 1
    if i < len(argv) and (argv[i] in commands or argv[i] in {"-h", "--help", "--version"}):
        return argv
    return [*argv[:i], DEFAULT_COMMAND, *argv[i:]]


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    args = parser.parse_args(_with_default_command(args_list, commands))
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"realtime-face: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("realtime-face: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
