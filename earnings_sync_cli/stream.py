"""`earnings-sync stream redo`: redo the stream ranges the stream consumer gave up on (logic in stream_redo.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from earnings_sync_cli.errors import UsageError
from earnings_sync_cli.progress import Progress
from earnings_sync_cli.tables import client

DEFAULT_TABLE = "earningsCalendar"
MAX_VISIBILITY_TIMEOUT = 43_200  # SQS maximum, 12 hours


def register(subparsers: Any) -> None:
    """Add `stream redo` to the top-level parser."""
    stream = subparsers.add_parser(
        "stream",
        help="repair what the stream consumer gave up on",
        description="Work on the table's DynamoDB stream. See docs/operations.md, StreamFailureQueueNotEmptyAlarm.",
    )
    commands = stream.add_subparsers(dest="stream_command", required=True)
    redo = commands.add_parser(
        "redo",
        help="re-read the failure queue's stream ranges and redo the stream consumer's work on them",
        description=(
            "For every on-failure record in the stream failure queue, read its sequence-number range from the "
            "table's stream again and run the stream consumer's checks over it: regressions are put back, "
            "superseded dates removed, invalid items counted. A message is deleted only when its whole range "
            "was redone. The stream keeps records 24 hours: older ranges are reported as lost, with what to do. "
            "Exit code 0 when everything was redone (or the queue is empty), 1 when something was not, 2 on "
            "bad input."
        ),
    )
    redo.add_argument(
        "queue",
        nargs="?",
        metavar="QUEUE",
        help="the stream failure queue's name, URL or ARN (default: the on-failure destination of the "
        "event source mapping that reads the table's stream)",
    )
    redo.add_argument("--table", metavar="NAME", help=f"the table whose stream it is (default: TABLE_NAME or {DEFAULT_TABLE})")
    redo.add_argument("--endpoint-url", metavar="URL", help="AWS endpoint (default: AWS_ENDPOINT_URL, the profile, or AWS)")
    redo.add_argument("--dry-run", action="store_true", help="read the ranges and list what would be redone; write and delete nothing")
    redo.add_argument(
        "--discard-lost",
        action="store_true",
        help="delete the messages whose range the stream no longer holds (after acting on the advice printed for them)",
    )
    redo.add_argument(
        "--visibility-timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="how long received messages stay hidden from other readers while the run works (default 300)",
    )
    redo.add_argument(
        "--event-bus",
        metavar="NAME",
        help="publish the redone records' change events on this EventBridge bus, name or ARN (default: EVENT_BUS_NAME; "
        "none without it). Consumers deduplicate by change_id.",
    )
    redo.add_argument("--json", action="store_true", help="print the report as JSON")
    redo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Errors follow the command line's one contract (errors.py): look-ups first, so a wrong endpoint,
    table or queue is exit 2 before any work; an AWS error while redoing is exit 1."""
    # lazy: they load botocore; keeps the CLI's start fast
    from earnings_sync import stream_redo
    from earnings_sync.calendar_table import CalendarTable
    from earnings_sync.change_events import EventBridgePublisher
    from earnings_sync.replay import queue_url

    visibility = stream_redo.DEFAULT_VISIBILITY_TIMEOUT if args.visibility_timeout is None else args.visibility_timeout
    if not 1 <= visibility <= MAX_VISIBILITY_TIMEOUT:
        raise UsageError(f"--visibility-timeout must be between 1 and {MAX_VISIBILITY_TIMEOUT} seconds")
    table = args.table or os.environ.get("TABLE_NAME") or DEFAULT_TABLE
    dynamodb, sqs = client("dynamodb", args.endpoint_url), client("sqs", args.endpoint_url)
    try:
        stream = stream_redo.table_stream(dynamodb, table)
        if args.queue:
            url = queue_url(sqs, args.queue)
        else:
            url = queue_url(sqs, stream_redo.failure_queue_arn(client("lambda", args.endpoint_url), stream.stream_arn))
    except stream_redo.RedoError as exc:
        raise UsageError(str(exc)) from exc
    sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])  # exists, and we may read it
    bus = args.event_bus or os.environ.get("EVENT_BUS_NAME")
    publisher = EventBridgePublisher(client("events", args.endpoint_url), bus) if bus and not args.dry_run else None

    display = Progress(sys.stderr)  # silent unless stderr is a terminal
    try:
        report = stream_redo.redo_stream_failures(
            sqs,
            CalendarTable(dynamodb, table),
            client("dynamodbstreams", args.endpoint_url),
            url,
            stream,
            dry_run=args.dry_run,
            discard_lost=args.discard_lost,
            visibility_timeout=visibility,
            progress=lambda r: display.show(f"read {len(r.items):,} message(s), redone {r.count('redone'):,}"),
            publisher=publisher,
        )
    finally:
        display.done()
    print(json.dumps(report.as_dict(), indent=2) if args.json else stream_redo.format_report(report))
    return 0 if report.ok else 1
