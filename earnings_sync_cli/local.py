"""`earnings-sync local`: the whole pipeline on the embedded emulator, and its summary (the run is
earnings_sync_local.pipeline's; showing it is this module's)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from earnings_sync.ledger import headline
from earnings_sync_cli import embedded
from earnings_sync_cli.errors import EXIT_FAILED, EXIT_OK
from earnings_sync_cli.tables import check_input_files, check_output_paths, sync_failures

if TYPE_CHECKING:
    from earnings_sync_local.pipeline import LocalSummary, RunningEmulator, SyncSummary


def register(subparsers: Any) -> None:
    local = subparsers.add_parser(
        "local",
        help="run the whole pipeline on an embedded AWS emulator",
        description="Run each CSV as a successive sync: producer → SQS → consumer → table, on moto. Every file and "
        "output path is checked first; a sync that fails stops the run, and the files it did not sync are named.",
    )
    local.add_argument("csv", nargs="+", help="AlphaVantage EARNINGS_CALENDAR CSV files, oldest first")
    local.add_argument("--export", metavar="FILE", help="write the final table as JSON Lines")
    local.add_argument("--events", metavar="FILE", help="write every change event published, as a rule target receives it, as JSON Lines")
    local.add_argument("--json", action="store_true", help="print the summary as JSON")
    local.add_argument("--log-file", metavar="FILE", help="append the handlers' structured logs here")
    local.add_argument("--serve", action="store_true", help="keep the emulator up after the syncs (for `earnings-sync dlq`) until Ctrl-C")
    local.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_input_files(args.csv)
    check_output_paths({"--export": args.export, "--events": args.events, "--log-file": args.log_file}, inputs=args.csv)
    log_stream = open(args.log_file, "a", encoding="utf-8") if args.log_file else None  # noqa: SIM115

    def show(summary: LocalSummary) -> None:
        print(json.dumps(summary.as_dict(), indent=2) if args.json else format_summary(summary), flush=True)

    def serve(summary: LocalSummary, emulator: RunningEmulator) -> None:
        show(summary)
        emulator.serve(sys.stdout)

    try:
        summary = embedded.run_local(
            args.csv, export=args.export, log_stream=log_stream, on_ready=serve if args.serve else None, events=args.events
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


def format_summary(summary: LocalSummary) -> str:
    """A run as a table, one row per sync with its details under it, then the totals and verdicts."""
    synced = len(summary.files or summary.syncs) - len(summary.unsynced)
    done = f"{len(summary.syncs)} sync(s)" if summary.ok else f"{synced} of {len(summary.files or summary.syncs)} file(s) synced"
    lines = [f"earnings-sync local: {done} in {summary.seconds:.1f} s on {summary.endpoint} (moto)"]
    header = f"{'#':>2} {'file':<28} {'rows':>7} {'rejected':>8} {'dup':>4} {'messages':>8} {'written':>8} {'unchanged':>9} {'stale':>6} {'poison':>6} {'dlq':>4} {'time':>7}"
    lines.append(header)
    for number, sync in enumerate(summary.syncs, start=1):
        lines.extend(_sync_lines(number, sync))
    lines.append(
        f"table items: {summary.table_items:,}   DLQ messages: {summary.dlq_messages:,}"
        + (f"   stream failures: {summary.stream_failure_messages:,}" if summary.stream_failure_messages else "")
    )
    if summary.unsynced:
        lines.append("NOT synced: " + ", ".join(summary.unsynced) + (" (stopped after the failed sync)" if summary.not_run else ""))
    if summary.complete is not None:
        lines.append("ledger: every sync complete" if summary.complete else "ledger: NOT every sync is complete (see above)")
    if summary.export:
        lines.append(f"exported to {summary.export}")
    if summary.events_file:
        lines.append(f"change events written to {summary.events_file}")
    return "\n".join(lines)


def _sync_lines(number: int, sync: SyncSummary) -> list[str]:
    """One sync's row of the summary table, and the lines that explain it."""
    name = os.path.basename(sync.file)
    name = name if len(name) <= 28 else "…" + name[-27:]
    lines = [
        f"{number:>2} {name:<28} {sync.rows:>7,} {sum(sync.rejected.values()):>8,} {sync.duplicates:>4,} "
        f"{sync.messages:>8,} {sync.written:>8,} {sync.unchanged:>9,} {sync.stale_skipped:>6,} "
        f"{sync.poison_records:>6,} {sync.dlq_messages:>4,} {sync.seconds:>6.1f}s"
    ]
    if sync.written:
        lines.append(f"   {'':<28} inserted {sync.inserted:,}, updated {sync.updated:,}")
    for reason, count in sorted(sync.rejected.items()):
        where = [str(r["line"]) for r in sync.rejections if r["reason"] == reason][:5]
        lines.append(f"   rejected {reason}: {count:,} (lines {', '.join(where)}{', …' if count > len(where) else ''})")
    if sync.stream_records:
        lines.append(
            f"   stream: {sync.stream_records:,} records, validation passed {sync.validation_passed:,}, "
            f"failed {sum(sync.validation_failed.values()):,}, bookkeeping-only {sync.bookkeeping_only:,}, "
            f"superseded removed {sync.superseded_removed:,}, regressions restored {sync.regressions_restored:,}"
            + (f", skipped {sync.stream_records_skipped:,}" if sync.stream_records_skipped else "")
        )
    for rule, count in sorted(sync.validation_failed.items()):
        lines.append(f"   validation failed {rule}: {count:,}")
    if sync.events or sync.event_publish_failures:
        published = ", ".join(f"{kind} {count:,}" for kind, count in sync.events.items()) or "none"
        failed = f"; {sync.event_publish_failures:,} publish failure(s), retried" if sync.event_publish_failures else ""
        received = f"; {sync.events_received:,} received by the tap" if sync.events_received is not None else ""
        lines.append(f"   change events published: {sum(sync.events.values()):,} ({published}){failed}{received}")
    if sync.dynamodb_requests:
        spent = ", ".join(f"{kind} {count:,}" for kind, count in sync.dynamodb_requests.items())
        lines.append(f"   DynamoDB requests: {sum(sync.dynamodb_requests.values()):,} ({spent})")
    if sync.ledger is not None:
        lines.append(f"   {headline(sync.ledger)}")
        lines.extend(f"     {problem}" for problem in sync.ledger.problems())
    if sync.error:
        lines.append(f"   ERROR: {sync.error}")
    return lines
