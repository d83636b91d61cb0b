"""`earnings-sync` command line: a thin layer over the core package.

Every command runs through `run_command`, which holds the exit-code contract (errors.py): 0 done,
1 a sync or check failed, 2 bad usage or input, 130 interrupted, and a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from earnings_sync_cli import audit as cli_audit
from earnings_sync_cli import dlq as cli_dlq
from earnings_sync_cli import errors as cli_errors
from earnings_sync_cli import ledger as cli_ledger
from earnings_sync_cli import local as cli_local
from earnings_sync_cli import stream as cli_stream
from earnings_sync_cli import sync as cli_sync
from earnings_sync_cli import upcoming as cli_upcoming
from earnings_sync_cli.errors import EXIT_INTERRUPTED, one_line


def _add_debug(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--debug", action="store_true", default=default, help="on an error, show the Python stack instead of one line")
    for action in parser._actions:  # every subcommand takes it too, after its own name
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):
                _add_debug(subparser, argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earnings-sync",
        description="Keep an earnings calendar in DynamoDB.",
        epilog="Exit codes: 0 done, 1 a sync or check failed, 2 bad usage or input, 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    cli_local.register(commands)
    cli_dlq.register(commands)
    cli_upcoming.register(commands)
    cli_audit.register(commands)
    cli_ledger.register(commands)
    cli_stream.register(commands)
    cli_sync.register(commands)
    _add_debug(parser, False)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """`earnings-sync ledger`, `earnings-sync dlq peek`: the prefix of the command's messages."""
    return " ".join(["earnings-sync", *(part for part in (args.command, getattr(args, "dlq_command", None), getattr(args, "stream_command", None)) if part)])


def run_command(args: argparse.Namespace) -> int:
    """The one place a command's errors become an exit code and a line on stderr (`--debug`: the stack)."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{command_name(args)}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        described = cli_errors.describe(exc)
        if described is None:  # a bug: its traceback is the report
            raise
        code, message = described
        sys.stdout.flush()
        print(f"{command_name(args)}: {one_line(message)}", file=sys.stderr)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
