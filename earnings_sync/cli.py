"""`earnings-sync` command line: a thin layer over the core package."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from earnings_sync import cli_audit, cli_dlq, cli_ledger, cli_stream, cli_upcoming


def _cmd_local(args: argparse.Namespace) -> int:
    from earnings_sync.local import LocalSummary, RunningEmulator, format_summary, run_local

    for path in args.csv:
        if not os.path.isfile(path):
            print(f"earnings-sync: no such file: {path}", file=sys.stderr)
            return 2
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
    if not summary.ok:
        for sync in summary.syncs:
            if sync.error:
                print(f"earnings-sync: {sync.file}: {sync.error}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earnings-sync", description="Keep an earnings calendar in DynamoDB.")
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser(
        "local",
        help="run the whole pipeline on an embedded AWS emulator",
        description="Run each CSV as a successive sync: producer → SQS → consumer → table, on moto.",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
