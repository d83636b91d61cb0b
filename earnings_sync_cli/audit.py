"""`earnings-sync audit`: every consistency rule over the whole table (logic in audit.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from earnings_sync.ledger import SyncLedger
from earnings_sync_cli.errors import UsageError
from earnings_sync_cli.tables import add_table_arguments, on_table, sync_failures


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="check every item against the consistency rules; --fix deletes superseded and future-dated items",
        description=(
            "Scan the table and report every item that breaks a consistency rule, every (symbol, fiscal "
            "period) with more than one report date, every item whose lastSyncDate lies in the future, and "
            "every item whose sync the sync registry (in the ledger table) does not know. Dry run by default; "
            "--fix deletes the superseded dates and the future-dated items (conditionally). Exit code 1 while "
            "findings remain, 2 for bad arguments or files, a missing table or no access."
        ),
    )
    parser.add_argument("--fix", action="store_true", help="delete superseded and future-dated items (default: report only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_table_arguments(parser)
    parser.add_argument(
        "--ledger-table",
        metavar="NAME",
        help="ledger table holding the sync registry (default: LEDGER_TABLE, else <table>-sync-ledger)",
    )
    parser.set_defaults(func=run)


def ledger_table(args: argparse.Namespace, table: str) -> str:
    """The ledger next to `table`: as the stack names it, unless --ledger-table or LEDGER_TABLE says otherwise."""
    if args.csv:
        return f"{table}-sync-ledger"  # the emulator's, whatever the environment says
    return args.ledger_table or os.environ.get("LEDGER_TABLE") or f"{table}-sync-ledger"


def run(args: argparse.Namespace) -> int:
    # lazy: they load botocore; keeps the CLI's start fast
    from earnings_sync.audit import audit_table, format_report
    from earnings_sync.calendar_table import CalendarTable

    def audit(client: Any, table: str) -> Any:
        ledger = SyncLedger(client, ledger_table(args, table))
        return audit_table(CalendarTable(client, table), fix=args.fix, ledger=ledger)

    if args.csv and args.ledger_table:
        raise UsageError("--csv builds its own tables on the embedded emulator: drop --ledger-table")
    report, summary = on_table(args, audit)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    failures = sync_failures(summary)
    for line in failures:
        print(f"earnings-sync audit: {line}", file=sys.stderr)
    return 1 if failures or report.remaining else 0
