"""The ``defacto`` command line: argv → typed config → call. Nothing else imports this package
(but for the ``stream/app.py`` entry shim).

Input problems end the command with one clear line (``defacto: error: ...``) and exit code 2,
whether the parser finds them (a bad or out-of-range option value) or a loader or config does;
bad *rows* in ping files never stop a run: they are counted, written to the reject file and
summarized in one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stream.contract import InputError

OFFLINE_COMMANDS = ("replay", "calibrate")
"""Subcommands whose parser (and run) needs none of the live and demo modules."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser for all subcommands; for ``command`` in :data:`OFFLINE_COMMANDS`,
    one that knows only that subcommand (it parses that subcommand's arguments as the whole
    parser does, without importing the live and demo modules: ~0.3 s of a replay's start)."""
    from stream.cli.offline import add_calibrate_parser, add_replay_parser
    from stream.cli.options import Parser

    parser = Parser(
        prog="defacto",
        description="Live de facto population from anonymized mobile-network pings.")
    sub = parser.add_subparsers(dest="command", required=True)
    if command in OFFLINE_COMMANDS:
        adders: tuple[Callable[[Any], Any], ...] = (
            add_replay_parser if command == "replay" else add_calibrate_parser,)
    else:
        from stream.cli.demo import add_demo_parser
        from stream.cli.live import (
            add_dashboard_parser,
            add_produce_parser,
            add_simulate_parser,
            add_worker_parser,
        )

        adders = (add_replay_parser, add_calibrate_parser, add_simulate_parser,
                  add_produce_parser, add_worker_parser, add_dashboard_parser, add_demo_parser)
    for add in adders:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``defacto`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"defacto: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("defacto: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
