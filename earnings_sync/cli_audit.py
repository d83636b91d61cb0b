"""`earnings-sync audit`: every consistency rule over the whole table (logic in audit.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from earnings_sync.cli_table import add_table_arguments, on_table, sync_failures


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="check every item against the consistency rules; --fix deletes superseded dates",
        description=(
            "Scan the table and report every item that breaks a consistency rule, and every (symbol, fiscal "
            "period) with more than one report date. Dry run by default; --fix deletes the superseded dates "
            "(conditionally). Exit code 1 while findings remain, 2 for bad arguments or files, a missing table or no access."
        ),
    )
    parser.add_argument("--fix", action="store_true", help="delete superseded items (default: report only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_table_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from earnings_sync.audit import audit_table, format_report

    report, summary = on_table(args, lambda client, table: audit_table(client, table, fix=args.fix))
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    failures = sync_failures(summary)
    for line in failures:
        print(f"earnings-sync audit: {line}", file=sys.stderr)
    return 1 if failures or report.remaining else 0
