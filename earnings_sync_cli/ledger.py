"""`earnings-sync ledger`: is a sync complete, and if not, what is missing (logic in ledger.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from earnings_sync.ledger import LedgerReport, SyncLedger, format_report
from earnings_sync_cli import embedded
from earnings_sync_cli.tables import DEFAULT_TABLE, UsageError, check_csv_arguments, client, naming_table, sync_failures

RECENT = 10


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ledger",
        help="account for every CSV row of a sync: written, unchanged, stale, rejected, duplicate or in the DLQ",
        description=(
            "Read the completeness ledger of one or more syncs and say whether each is complete: every row "
            "written, unchanged, skipped as stale, rejected (with its reason) or a duplicate, and nothing in "
            "the DLQ, missing or never enqueued. Without SYNC_ID: the most recent syncs. Exit code 0 when "
            "every sync shown is complete, 1 otherwise, 2 for bad arguments or files, a missing table or no access."
        ),
    )
    parser.add_argument("sync_id", nargs="*", metavar="SYNC_ID", help="sync ids, as the producer reports them")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("--recent", type=int, default=RECENT, metavar="N", help=f"without SYNC_ID: the N newest syncs (default {RECENT})")
    parser.add_argument(
        "--csv",
        nargs="+",
        action="extend",
        metavar="FILE",
        help="run these calendar CSVs as successive syncs on the embedded emulator first, and report on them",
    )
    parser.add_argument("--endpoint-url", metavar="URL", help="DynamoDB endpoint (default: AWS_ENDPOINT_URL or AWS)")
    parser.add_argument(
        "--table",
        metavar="NAME",
        help=f"ledger table (default: LEDGER_TABLE, else <TABLE_NAME or {DEFAULT_TABLE}>-sync-ledger)",
    )
    parser.set_defaults(func=run)


def _reports(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """The reports to show, and (with --csv) the lines naming the files the local run did not sync."""
    if args.csv:
        check_csv_arguments(args, built="its own tables")
        summary = embedded.run_local(args.csv)
        found = {s.sync_id: s.ledger for s in summary.syncs if s.sync_id and s.ledger is not None}
        failures = sync_failures(summary)
        if not args.sync_id:
            return list(found.values()), failures
        return [found.get(sync_id) or LedgerReport(sync_id=sync_id) for sync_id in args.sync_id], failures
    table = args.table or os.environ.get("LEDGER_TABLE") or f"{os.environ.get('TABLE_NAME') or DEFAULT_TABLE}-sync-ledger"
    dynamodb = client("dynamodb", args.endpoint_url)
    ledger = SyncLedger(dynamodb, table)
    with naming_table(dynamodb, table):
        sync_ids = args.sync_id or [sync_id for _, sync_id in ledger.recent_syncs(args.recent)]
        if not sync_ids:
            raise UsageError(f"no sync recorded in {table}")
        return [ledger.report(sync_id) for sync_id in sync_ids], []


def run(args: argparse.Namespace) -> int:
    if args.recent < 1:
        raise UsageError("--recent must be at least 1")
    reports, failures = _reports(args)
    complete = not failures and all(report.complete for report in reports)
    if args.json:
        print(json.dumps({"complete": complete, "syncs": [report.as_dict() for report in reports]}, indent=2))
    elif reports:
        print("\n".join(format_report(report) for report in reports))
    for line in failures:
        print(f"earnings-sync ledger: {line}", file=sys.stderr)
    return 0 if complete else 1
