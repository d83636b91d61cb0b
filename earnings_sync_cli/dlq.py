"""`earnings-sync dlq`: inspect the dead-letter queue and replay messages (logic in replay.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from earnings_sync.dlq import FAILURE_KINDS
from earnings_sync_cli.errors import UsageError, is_missing_queue, where
from earnings_sync_cli.progress import Progress
from earnings_sync_cli.tables import client

FORCE_HINT = "pass --force to read it anyway (receiving counts toward its messages' maxReceiveCount)"


def _sqs(args: argparse.Namespace, *, max_attempts: int = 8) -> Any:
    return client("sqs", args.endpoint_url, max_attempts=max_attempts)


def _dead_letter_queue(sqs: Any, args: argparse.Namespace) -> str:
    """The DLQ's URL; a queue that is not one is refused unless --force."""
    from earnings_sync import replay  # lazy: loads botocore; keeps the CLI's start fast

    try:
        return replay.dead_letter_queue(sqs, args.queue, force=args.force)
    except replay.NotADeadLetterQueue as exc:
        raise replay.NotADeadLetterQueue(f"{exc}; {FORCE_HINT}") from exc


@contextlib.contextmanager
def _naming_queue(sqs: Any, queue: str) -> Iterator[None]:
    """A queue that disappears, or a URL that never named one, is a usage error naming it."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if not is_missing_queue(exc):
            raise
        raise UsageError(f"no such queue: {queue} at {where(sqs)}") from exc


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _counts(title: str, counts: dict[str, int], top: int = 10) -> list[str]:
    lines = [f"by {title}:"]
    for name, count in list(counts.items())[:top]:
        lines.append(f"  {count:>6,}  {name if len(name) <= 110 else name[:109] + '…'}")
    if len(counts) > top:
        lines.append(f"  … {len(counts) - top} more (--json lists all)")
    return lines


def _cmd_stats(args: argparse.Namespace) -> int:
    from earnings_sync.replay import dlq_stats  # lazy: loads botocore; keeps the CLI's start fast

    if args.max_messages < 1:
        raise UsageError("--max-messages must be at least 1")
    sqs = _sqs(args)
    with _naming_queue(sqs, args.queue):
        stats = dlq_stats(sqs, _dead_letter_queue(sqs, args), max_messages=args.max_messages).as_dict()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    lines = [
        f"queue: {stats['queue_url']}",
        f"depth: {stats['visible']:,} visible, {stats['in_flight']:,} in flight, {stats['delayed']:,} delayed",
        f"read: {stats['scanned']:,} message(s){'' if stats['complete'] else ' (stopped at --max-messages)'}"
        f", {stats['undecodable']:,} undecodable, {stats['replayed_before']:,} already replayed before",
    ]
    if stats["oldest_message_id"]:
        lines.append(f"oldest: {format_age(stats['oldest_age_seconds'])} ago ({stats['oldest_message_id']})")
    if stats["in_flight"]:
        lines.append("note: in-flight messages are being read by someone else and were not counted below")
    for title, key in (("failure kind", "by_kind"), ("failure reason", "by_reason"), ("sync id", "by_sync_id")):
        if stats[key]:
            lines.extend(_counts(title, stats[key]))
    print("\n".join(lines))
    return 0


def _cmd_peek(args: argparse.Namespace) -> int:
    from earnings_sync.replay import peek_dlq, utc_now  # lazy: loads botocore; keeps the CLI's start fast

    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    now = utc_now()
    sqs = _sqs(args)
    with _naming_queue(sqs, args.queue):
        messages = [m.as_dict(now) for m in peek_dlq(sqs, _dead_letter_queue(sqs, args), limit=args.limit)]
    if args.json:
        print(json.dumps(messages, indent=2))
        return 0
    if not messages:
        print("the DLQ has no visible messages")
        return 0
    for m in messages:
        received = "?" if m["receive_count"] is None else m["receive_count"]
        print(
            f"{m['message_id']}  {m['kind']}  age {format_age(m['age_seconds'])}  "
            f"sync {m['sync_id'] or '-'}  received {received}x  replayed {m['replay_count']}x"
        )
        if m["decodable"]:
            symbols = ", ".join(m["symbols"][:20]) + (", …" if len(m["symbols"]) > 20 else "")
            print(f"  records ({m['records']}): {symbols}")
        else:
            print(f"  undecodable body: {m['body'][:200]!r}")
        print(f"  reason: {m['reason'] or '(no reason recorded)'}")
        for failure in m["record_failures"][:10]:
            print(f"    record {failure['index']} {failure['symbol']}: {failure['reason']}")
    print(f"{len(messages)} message(s) shown; they are still in the DLQ")
    return 0


def _print_report(report: Any) -> None:
    verb = "would replay" if report.dry_run else "replayed"
    print(f"{report.dlq_url} → {report.target_url}{' (dry run: nothing moved)' if report.dry_run else ''}")
    print(
        f"read {report.scanned:,}, matched {report.matched:,}, {verb} "
        f"{report.matched if report.dry_run else report.replayed:,}, send failed {report.send_failed:,}, "
        f"delete failed {report.delete_failed:,}, left in the DLQ {report.released:,}"
        + (f", throttled {report.throttled_seconds:.1f}s" if report.throttled_seconds else "")
    )
    for item in report.items[:50]:
        symbols = ",".join(item.symbols[:5]) + ("…" if len(item.symbols) > 5 else "")
        error = f"  ({item.error})" if item.error else ""
        print(f"  {item.outcome:<13} {item.message_id}  {item.kind}  sync {item.sync_id or '-'}  {symbols}{error}")
    if len(report.items) > 50:
        print(f"  … {len(report.items) - 50} more (--json lists all)")
    if report.limit_reached:
        print("stopped at --limit")
    if report.aborted:
        print(f"stopped: {report.aborted}")


def _cmd_replay(args: argparse.Namespace) -> int:
    from earnings_sync import replay  # lazy: loads botocore; keeps the CLI's start fast

    try:
        where = replay.ReplayFilter(
            symbol=args.symbol,
            sync_id=args.sync_id,
            reason=args.reason,
            kind=args.kind,
            min_age=replay.parse_duration(args.older_than) if args.older_than else None,
            max_age=replay.parse_duration(args.newer_than) if args.newer_than else None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.rate is not None and args.rate <= 0:
        raise UsageError("--rate must be positive")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.native:
        if not where.is_empty or args.limit is not None or args.dry_run:
            raise UsageError("--native moves every message: it cannot combine with filters, --limit or --dry-run")
        # One attempt: an endpoint without the operation must not be retried with backoff.
        sqs = _sqs(args, max_attempts=1)
        with _naming_queue(sqs, args.queue):
            if not args.to:  # SQS moves each message back to its source queue: there must be one
                try:
                    replay.dead_letter_queue(sqs, args.queue)
                except replay.NotADeadLetterQueue as exc:
                    raise replay.NotADeadLetterQueue(f"{exc}; name the queue to move its messages to with --to") from exc
            handle = replay.start_native_replay(sqs, args.queue, to=args.to, rate=args.rate)
        if args.json:
            print(json.dumps({"ok": True, "native": True, "task_handle": handle}, indent=2))
        else:
            print(f"started StartMessageMoveTask {handle}; follow it with `aws sqs list-message-move-tasks`")
        return 0
    display = Progress(sys.stderr)  # silent unless stderr is a terminal
    sqs = _sqs(args)
    with _naming_queue(sqs, args.queue):
        report = replay.replay_dlq(
            sqs,
            args.queue,
            to=args.to,
            where=where,
            limit=args.limit,
            rate=args.rate,
            dry_run=args.dry_run,
            progress=lambda r: display.show(f"read {r.scanned:,}, matched {r.matched:,}, replayed {r.replayed:,}, failed {r.send_failed:,}"),
        )
    display.done()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
    return 0 if report.ok else 1


def register(subparsers: Any) -> None:
    """Add `dlq stats|peek|replay` to the top-level parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("queue", metavar="QUEUE", help="the DLQ's name, URL or ARN")
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument(
        "--endpoint-url", metavar="URL", help="SQS endpoint (default: AWS_ENDPOINT_URL, the profile, or AWS)"
    )

    dlq = subparsers.add_parser(
        "dlq",
        help="inspect the dead-letter queue and replay messages",
        description="Find out why messages failed and send the right ones back. See docs/dlq.md.",
    )
    commands = dlq.add_subparsers(dest="dlq_command", required=True)

    stats = commands.add_parser("stats", parents=[common], help="depth, oldest age, counts by failure kind/reason/sync id")
    stats.add_argument("--max-messages", type=int, default=10_000, metavar="N", help="read at most N messages (default 10000)")
    stats.add_argument("--force", action="store_true", help="read QUEUE even if no queue's redrive policy points at it")
    stats.set_defaults(func=_cmd_stats)

    peek = commands.add_parser("peek", parents=[common], help="show messages without consuming them")
    peek.add_argument("--limit", type=int, default=10, metavar="N", help="show at most N messages (default 10)")
    peek.add_argument("--force", action="store_true", help="read QUEUE even if no queue's redrive policy points at it")
    peek.set_defaults(func=_cmd_peek)

    replay = commands.add_parser(
        "replay",
        parents=[common],
        help="send DLQ messages back to their source queue",
        description="Send first, delete from the DLQ after the send succeeded: nothing is lost, and a "
        "duplicate is harmless (the table's upsert rules). Without --to, the source queue is the one "
        "whose redrive policy points at the DLQ.",
    )
    replay.add_argument("--to", metavar="QUEUE", help="queue to replay into (name, URL or ARN)")
    replay.add_argument("--symbol", help="only messages with a record for this symbol")
    replay.add_argument("--sync-id", metavar="ID", help="only messages of this sync")
    replay.add_argument("--reason", metavar="TEXT", help="only messages whose failure reason contains TEXT")
    replay.add_argument("--kind", choices=[*FAILURE_KINDS, "unknown"], help="only this failure kind")
    replay.add_argument("--older-than", metavar="DURATION", help="only messages that failed at least this long ago (90s, 15m, 2h, 3d)")
    replay.add_argument("--newer-than", metavar="DURATION", help="only messages that failed at most this long ago")
    replay.add_argument("--limit", type=int, metavar="N", help="replay at most N messages")
    replay.add_argument("--rate", type=float, metavar="R", help="at most R messages per second")
    replay.add_argument("--dry-run", action="store_true", help="list what would be replayed; move nothing")
    replay.add_argument("--native", action="store_true", help="let SQS move everything (StartMessageMoveTask); no filters")
    replay.set_defaults(func=_cmd_replay)
