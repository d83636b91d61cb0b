"""Where the table-reading commands (`upcoming`, `audit`) find their table.

With `--csv FILE ...` the files are first run as successive syncs on the embedded emulator (the
whole pipeline, stream consumer included, as `earnings-sync local` does) and the command reads the
table that produced. Otherwise it reads a deployed table: the endpoint comes from `--endpoint-url`
or the standard AWS settings (AWS_ENDPOINT_URL, AWS_PROFILE, AWS_REGION), the name from `--table`,
TABLE_NAME, or `earningsCalendar`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
DEFAULT_TABLE = "earningsCalendar"


class UsageError(Exception):
    """Bad command-line input: printed, exit code 2."""


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv",
        nargs="+",
        action="extend",
        metavar="FILE",
        help="run these calendar CSVs as successive syncs on the embedded emulator first, and read that table",
    )
    parser.add_argument("--endpoint-url", metavar="URL", help="DynamoDB endpoint (default: AWS_ENDPOINT_URL or AWS)")
    parser.add_argument("--table", metavar="NAME", help=f"table name (default: TABLE_NAME or {DEFAULT_TABLE})")


def check_csv_arguments(args: argparse.Namespace, built: str = "its own table") -> None:
    """--csv builds tables on the embedded emulator: no endpoint or table may be named, files must exist."""
    if args.endpoint_url or args.table:
        raise UsageError(f"--csv builds {built} on the embedded emulator: drop --endpoint-url/--table")
    for path in args.csv:
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {path}")


def on_table(args: argparse.Namespace, work: Callable[[Any, str], T]) -> tuple[T, Any]:
    """Run `work(dynamodb_client, table_name)` on the table the arguments name.

    Returns its result and, with --csv, the local run's `LocalSummary` (else None).
    """
    from earnings_sync import aws

    if not args.csv:
        table = args.table or os.environ.get("TABLE_NAME") or DEFAULT_TABLE
        return work(aws.client("dynamodb", endpoint_url=args.endpoint_url), table), None

    from earnings_sync.local import run_local

    check_csv_arguments(args)
    outcome: list[T] = []

    def ready(summary: Any, emulator: Any) -> None:
        outcome.append(work(aws.client("dynamodb"), emulator.resources.table_name))

    summary = run_local(args.csv, progress_stream=sys.stderr, on_ready=ready)
    if not outcome:  # pragma: no cover - run_local always calls on_ready once the emulator is up
        raise RuntimeError("the local run ended before the table could be read")
    return outcome[0], summary


def sync_errors(summary: Any) -> list[str]:
    """Errors of a --csv run's syncs, one line each."""
    if summary is None:
        return []
    return [f"{sync.file}: {sync.error}" for sync in summary.syncs if sync.error]
