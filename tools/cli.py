"""The `maas` command line: one subcommand per tools/ module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes `register(subparsers)`, which adds its subcommand with
# `set_defaults(func=...)`; func(args) returns the exit code.
_SUBCOMMAND_MODULES = (
    "tools.export_cli",
    "tools.models",
    "tools.up",
    "tools.infer",
    "tools.explain_cli",
    "tools.chat",
    "tools.bench",
)


class CliError(Exception):
    """An error printed as one line, with a non-zero exit code and no traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand whose module is present."""
    parser = argparse.ArgumentParser(prog="maas", description="Model-as-a-Service tools")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `maas` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"maas {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run through the importable module, so `CliError` raised by subcommands is the
    # same class `main` catches (under -m this file is also loaded as __main__).
    from tools.cli import main as _main

    sys.exit(_main())
