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

from stream.decode import child_start

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
        from stream.cli.local import add_local_parser

        adders = (add_replay_parser, add_calibrate_parser, add_simulate_parser,
                  add_produce_parser, add_worker_parser, add_dashboard_parser, add_demo_parser,
                  add_local_parser)
    for add in adders:
        add(sub)
    return parser


def reads_in_a_process(argv: Sequence[str]) -> bool:
    """Whether a run of ``argv`` will likely read its ping files in a second process: ``replay``
    or ``calibrate`` with ``--reader process``, or ``auto`` (the default) with
    :data:`~stream.decode.child_start.PROCESS_MIN_BYTES` or more in the files ``argv`` names,
    and no help asked for. The command then starts that process before its own imports
    (:func:`stream.decode.child_start.start_spare`). A guess from the words alone, standard
    library only; the run decides, and drops the process if it reads in threads."""
    words = list(argv)
    if not words or words[0] not in OFFLINE_COMMANDS or {"-h", "--help"} & set(words):
        return False
    reader = "auto"
    for i, word in enumerate(words):
        if word.startswith("--reader="):
            reader = word.partition("=")[2]
        elif word == "--reader" and i + 1 < len(words):
            reader = words[i + 1]
    if reader == "thread":
        return False
    return reader == "process" or \
        child_start.input_bytes(words[1:]) >= child_start.PROCESS_MIN_BYTES


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``defacto`` console script; returns the exit code. Run as the command
    (``argv`` None), ``replay`` and ``calibrate`` start their reading process first
    (:func:`reads_in_a_process`): its imports overlap this process's."""
    try:
        if argv is None:
            argv = sys.argv[1:]
            if reads_in_a_process(argv):
                child_start.start_spare()
        argv = list(argv)
        from stream.contract import InputError

        args = build_parser(argv[0] if argv else None).parse_args(argv)
        try:
            return int(args.func(args))
        except InputError as exc:
            print(f"defacto: error: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:  # (its imports included)
        print("defacto: interrupted", file=sys.stderr)
        return 130
    finally:
        child_start.drop_spare()


__all__ = ["build_parser", "main", "reads_in_a_process"]
