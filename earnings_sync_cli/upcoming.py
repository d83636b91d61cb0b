"""`earnings-sync upcoming`: who reports between two dates (logic in upcoming.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from earnings_sync_cli.tables import UsageError, add_table_arguments, on_table, sync_failures


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "upcoming",
        help="list earnings reports between two dates (GSI upcoming-earnings-index)",
        description=(
            "List the items whose earnings_date is in [--from, --to], ordered by date then symbol: one Query "
            "per day on upcoming-earnings-index, or a filtered Scan of the table if the index fails."
        ),
    )
    parser.add_argument("--from", dest="date_from", required=True, metavar="YYYY-MM-DD", help="first report day")
    parser.add_argument("--to", dest="date_to", required=True, metavar="YYYY-MM-DD", help="last report day (inclusive)")
    parser.add_argument("--limit", type=_positive, metavar="N", help="at most N items; prints a token for the next page")
    parser.add_argument("--page-size", type=_positive, default=100, metavar="N", help="items per request (default 100)")
    parser.add_argument("--token", metavar="TOKEN", help="continue after a previous page (its next_token)")
    parser.add_argument("--json", action="store_true", help="print items, token and metrics as JSON")
    add_table_arguments(parser)
    parser.set_defaults(func=run)


def to_json(payload: Any) -> str:
    """Estimates stay exact JSON numbers (Decimal text), as in `local --export`."""
    import msgspec

    encoded = msgspec.json.Encoder(decimal_format="number").encode(payload)
    return msgspec.json.format(encoded, indent=2).decode()


def format_items(items: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'date':<10}  {'symbol':<10} {'time':<11} {'estimate':>9} {'cur':<3}  {'fiscal end':<10}  name"]
    for item in items:
        estimate = "" if item.get("estimate") is None else str(item["estimate"])
        lines.append(
            f"{item['earnings_date']:<10}  {item['asset_symbol']:<10} {item.get('time_of_the_day') or '':<11} "
            f"{estimate:>9} {item.get('currency', ''):<3}  {item.get('fiscal_date_ending', ''):<10}  {item.get('company_name', '')}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    # lazy: they load botocore and Powertools; keeps the CLI's start fast
    from earnings_sync.calendar_table import CalendarTable
    from earnings_sync.observability import upcoming_metrics
    from earnings_sync.upcoming import check_request, upcoming_earnings

    request = {"limit": args.limit, "page_size": args.page_size, "start_token": args.token}
    try:  # before any table is read or built
        check_request(args.date_from, args.date_to, **request)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc

    def query(client: Any, table: str) -> Any:
        return upcoming_earnings(CalendarTable(client, table), args.date_from, args.date_to, **request)

    result, summary = on_table(args, query)
    metrics = upcoming_metrics(result)
    if args.json:
        print(to_json({**result.as_dict(), "metrics": metrics}))
    else:
        lines = format_items(result.items)
        lines.append(
            f"{len(result.items):,} item(s); {result.queries:,} index quer{'y' if result.queries == 1 else 'ies'}"
            + (f", scan fallback ({result.fallback_reason})" if result.fallback_used else "")
            + f"; {result.duration_ms:.0f} ms"
        )
        lines.append("metrics: " + ", ".join(f"{name}={value:g}" for name, value in metrics.items()))
        if result.next_token:
            lines.append(f"more: --token {result.next_token}")
        print("\n".join(lines))
    failures = sync_failures(summary)
    for line in failures:
        print(f"earnings-sync upcoming: {line}", file=sys.stderr)
    return 1 if failures else 0
