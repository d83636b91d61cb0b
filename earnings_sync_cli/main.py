"""`earnings-sync` command line: a thin layer over the core package.

Every command runs through `run_command`, which holds the exit-code contract (cli_errors.py): 0 done,
1 a sync or check failed, 2 bad usage or input, 130 interrupted, and a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from earnings_sync_cli import audit as cli_audit
from earnings_sync_cli import dlq as cli_dlq
from earnings_sync_cli import errors as cli_errors
from earnings_sync_cli import ledger as cli_ledger
from earnings_sync_cli import stream as cli_stream
from earnings_sync_cli import upcoming as cli_upcoming
from earnings_sync_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, one_line


def _cmd_local(args: argparse.Namespace) -> int:
    from earnings_sync_cli.tables import check_input_files, check_output_paths, sync_failures
    from earnings_sync_local.pipeline import LocalSummary, RunningEmulator, format_summary, run_local

    check_input_files(args.csv)
    check_output_paths({"--export": args.export, "--log-file": args.log_file}, inputs=args.csv)
    log_stream = open(args.log_file, "a", encoding="utf-8") if args.log_file else None  # noqa: SIM115

    def show(summary: LocalSummary) -> None:
        print(json.dumps(summary.as_dict(), indent=2) if args.json else format_summary(summary), flush=True)

    def serve(summary: LocalSummary, emulator: RunningEmulator) -> None:
        show(summary)
        emulator.serve(sys.stdout)

    try:
        summary = run_local(
            args.csv, export=args.export, progress_stream=sys.stderr, log_stream=log_stream, on_ready=serve if args.serve else None
        )
    finally:
        if log_stream is not None:
            log_stream.close()
    if not args.serve:
        show(summary)
    failures = sync_failures(summary)
    for line in failures:
        print(f"earnings-sync local: {line}", file=sys.stderr)
    if summary.complete is False and not failures:
        print("earnings-sync local: the ledger does not account for every row (see the summary)", file=sys.stderr)
    return EXIT_FAILED if failures or summary.complete is False else EXIT_OK


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

    local = commands.add_parser(
        "local",
        help="run the whole pipeline on an embedded AWS emulator",
        description="Run each CSV as a successive sync: producer → SQS → consumer → table, on moto. Every file and "
        "output path is checked first; a sync that fails stops the run, and the files it did not sync are named.",
    )
    local.add_argument("csv", nargs="+", help="AlphaVantage EARNINGS_CALENDAR CSV files, oldest first")
    local.add_argument("--export", metavar="FILE", help="write the final table as JSON Lines")
    local.add_argument("--json", action="store_true", help="print the summary as JSON")
    local.add_argument("--log-file", metavar="FILE", help="append the handlers' structured logs here")
    local.add_argument("--serve", action="store_true", help="keep the emulator up after the syncs (for `earnings-sync dlq`) until Ctrl-C")
    local.set_defaults(func=_cmd_local)
    cli_dlq.register(commands)
    cli_upcoming.register(commands)
    cli_audit.register(commands)
    cli_ledger.register(commands)
    cli_stream.register(commands)
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
