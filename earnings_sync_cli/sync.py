"""`earnings-sync sync --stack NAME (FILE | --alphavantage)`: a sync on a deployed stack, followed to
completion in its ledger (logic in stack_sync.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any, NamedTuple

from earnings_sync_cli.errors import EXIT_FAILED, UsageError, one_line, where
from earnings_sync_cli.progress import Progress
from earnings_sync_cli.tables import check_input_files, client

DEFAULT_TIMEOUT = 600.0
DEFAULT_INTERVAL = 2.0
# A synchronous invocation answers when the function returns: up to Lambda's 15-minute maximum.
INVOKE_READ_TIMEOUT = 15 * 60 + 30


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sync",
        help="run a sync on a deployed stack and follow its ledger until it is complete",
        description=(
            "Find the stack with CloudFormation, start a sync (FILE: upload it to the stack's input bucket and have "
            "the producer read it; --alphavantage: what the daily schedule does), then read the sync's ledger until "
            "every row is accounted for. Exit code 0 when the sync is complete, 1 when it failed or is not complete "
            "in time (the message names what is missing), 2 for bad arguments, a missing stack or no access."
        ),
    )
    parser.add_argument("--stack", required=True, metavar="NAME", help="the deployed stack's name (samconfig.toml: earnings-sync)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", metavar="FILE", help="a calendar CSV to sync (the stack needs InputBucketName)")
    source.add_argument("--alphavantage", action="store_true", help="fetch the calendar from AlphaVantage, as the schedule does")
    parser.add_argument("--key", metavar="KEY", help="the upload's object key (default: earnings-sync/<UTC time>-<file name>)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the sync to complete (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"time between two reads of the ledger (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("--endpoint-url", metavar="URL", help="AWS endpoint (default: AWS_ENDPOINT_URL, the profile, or AWS)")
    parser.set_defaults(func=run)


class StackClients(NamedTuple):
    cloudformation: Any
    lambda_: Any
    s3: Any
    dynamodb: Any


def stack_clients(endpoint_url: str | None) -> StackClients:
    """The invocation is made once: a retry after a late answer would start a second sync."""
    return StackClients(
        client("cloudformation", endpoint_url),
        client("lambda", endpoint_url, max_attempts=1, read_timeout=INVOKE_READ_TIMEOUT),
        client("s3", endpoint_url),
        client("dynamodb", endpoint_url),
    )


def _check(args: argparse.Namespace) -> None:
    if not all(math.isfinite(value) and value > 0 for value in (args.timeout, args.interval)):
        raise UsageError("--timeout and --interval must be positive numbers of seconds")
    if args.key is not None and (not args.file or not args.key.strip()):
        raise UsageError("--key names the uploaded FILE's object: give a FILE and a non-empty key")
    if args.file:
        check_input_files([args.file])


def _stack(clients: StackClients, name: str) -> Any:
    from earnings_sync import stack_sync  # lazy: loads botocore; keeps the CLI's start fast

    try:
        return stack_sync.describe_stack(clients.cloudformation, name)
    except stack_sync.StackError as exc:
        raise UsageError(f"{exc} at {where(clients.cloudformation)}") from exc


def _start(args: argparse.Namespace, stack: Any, clients: StackClients, display: Progress) -> Any:
    """Upload and invoke, or invoke: the producer's synchronous answer names the sync."""
    from earnings_sync import stack_sync

    try:
        if args.alphavantage:
            display.show(f"stack {stack.name}: the producer is fetching the calendar from AlphaVantage…")
            return stack_sync.sync_alphavantage(stack, lambda_client=clients.lambda_)
        path = Path(args.file)
        key = args.key or stack_sync.upload_key(path, dt.datetime.now(dt.UTC))
        display.show(one_line(f"stack {stack.name}: uploading {path.name}, the producer is syncing it…"))
        return stack_sync.sync_file(stack, path, key, s3=clients.s3, lambda_client=clients.lambda_)
    except stack_sync.StackError as exc:  # no input bucket, or it does not exist
        raise UsageError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    """Checks and look-ups first (exit 2), then the sync (exit 1 when it fails or is not complete in time)."""
    from earnings_sync import stack_sync
    from earnings_sync.ledger import SyncLedger

    _check(args)
    clients = stack_clients(args.endpoint_url)
    stack = _stack(clients, args.stack)
    display = Progress(sys.stderr)  # silent unless stderr is a terminal
    try:
        try:
            started = _start(args, stack, clients, display)
        finally:
            display.done()
    except stack_sync.SyncFailed as exc:
        return _failed(args, str(exc), {"stack": stack.name, "complete": False, "error": str(exc)})
    if not args.json:
        print(one_line(_started_line(stack.name, started)), flush=True)
    try:
        followed = stack_sync.follow_ledger(
            SyncLedger(clients.dynamodb, stack.ledger_table),
            started.sync_id,
            timeout=args.timeout,
            interval=args.interval,
            on_report=lambda report: display.show(stack_sync.progress_line(report)),
        )
    finally:
        display.done()
    return _outcome(args, stack.name, started, followed)


def _outcome(args: argparse.Namespace, stack: str, started: Any, followed: Any) -> int:
    from earnings_sync import stack_sync
    from earnings_sync.ledger import format_report

    outcome = {
        "stack": stack,
        "complete": followed.report.complete,
        "timed_out": followed.timed_out,
        "waited_seconds": round(followed.seconds, 1),
        "uploaded": started.uploaded,
        "producer": started.producer,
        "sync": followed.report.as_dict(),
    }
    if followed.report.complete:
        print(json.dumps(outcome, indent=2) if args.json else format_report(followed.report))
        return 0
    if not args.json:
        print(format_report(followed.report))
    return _failed(args, stack_sync.unfinished(followed, args.timeout), outcome)


def _started_line(stack: str, started: Any) -> str:
    producer = started.producer
    return (
        f"sync {started.sync_id} started on stack {stack} from {started.uploaded or started.source}: "
        f"{producer.get('rows', 0):,} rows, {producer.get('messages_sent', 0):,} message(s) enqueued"
    )


def _failed(args: argparse.Namespace, message: str, outcome: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(outcome, indent=2))
    sys.stdout.flush()
    print(f"earnings-sync sync: {one_line(message)}", file=sys.stderr)
    return EXIT_FAILED
