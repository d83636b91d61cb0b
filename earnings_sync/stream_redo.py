"""Redo what the stream consumer gave up on, from the on-failure records in `StreamFailureQueue`.

Why it matters: the batch write path (BatchWriteItem takes no condition) can let an older sync's write
land over a newer one when two writers race. The stream consumer sees that MODIFY (new `lastSyncDate`
older than the old one) and puts the newer image back. When the stream mapping gives up on a batch
(retries or record age exhausted), nothing restores it, and `earnings-sync audit` cannot see it
either: the item is well-formed, only older than it should be, and the newer image exists only in
the stream record. The mapping sends one on-failure record per batch it skipped: the stream, the
shard and the first and last sequence numbers.

For each on-failure record, the range is read again from the stream (GetShardIterator
AT_SEQUENCE_NUMBER from its first sequence number, GetRecords until its last) and every record goes
through the stream consumer's own `StreamProcessor.process`. That is safe at any later time: a
regression is put back only while the item still carries the regressed `lastSyncDate`, a superseded
date is deleted only while it still carries the `lastSyncDate` that was read, and a newer write in
between always wins. The message is deleted only once its whole range was processed. Given a
change publisher, the records' change events are published too, each under the `change_id` it had
(or would have had) the first time: consumers that saw it before drop the duplicate.

DynamoDB Streams keeps records 24 hours. A range read after that is lost (`TrimmedDataAccessException`,
or the shard is gone): it is reported with `LOST_RANGE_ADVICE` and its message stays in the queue
unless the operator asks to discard lost ranges after acting on the advice.

The ranges of one receive (up to ten messages) are read shard by shard in stream order: when the
consumer was down, the mapping gave up on every batch and the ranges tile the shard, so a reader goes
on from one range to the next instead of seeking each (`ShardReader`); the redone messages are
deleted together.

Messages are received with a visibility timeout and held until the run ends: the ones not deleted
(malformed, lost, failed, or all of them in a dry run) are made visible again at the end, so the
alarm on the queue stays raised until the repair is done.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from earnings_sync import consistency
from earnings_sync.calendar_table import CalendarTable
from earnings_sync.change_events import ChangePublisher, ChangePublishError
from earnings_sync.queue_scan import QueueScan
from earnings_sync.stream import StreamProcessor, StreamTally

DEFAULT_VISIBILITY_TIMEOUT = 300  # seconds a received message stays hidden while its range is redone
RECEIVE_LIMIT = 10  # SQS ReceiveMessage maximum
READ_LIMIT = 1000  # GetRecords maximum
MAX_EMPTY_PAGES = 25  # GetRecords may answer empty pages before reaching old records of an open shard
ITERATOR_RENEWALS = 3  # an iterator expires 15 minutes after it was issued
GAP_BUDGET = READ_LIMIT  # records of no range a reader goes through before it seeks the next range

SHARD_ID = re.compile(r"^shardId-[A-Za-z0-9_.-]{1,56}$")
SEQUENCE_NUMBER = re.compile(r"^[0-9]{1,40}$")

LOST_RANGE_ADVICE = (
    "The stream keeps records 24 hours, so these records cannot be redone. What they may have left "
    "behind: (1) a regression, an item holding an older sync's content and lastSyncDate after a newer "
    "sync wrote it: the next sync whose snapshot lists the key rewrites it, because the conflict rules "
    "let any newer sync replace an older lastSyncDate (run a sync now rather than wait for the schedule); "
    "a key that no later snapshot lists keeps the older content: replay the newer sync's messages if the "
    "DLQ still holds them, or run that sync's snapshot again with its own synced_at. (2) A superseded "
    "date left next to its rescheduled one: `earnings-sync audit --fix` removes it. (3) An item that "
    "breaks a consistency rule: `earnings-sync audit` lists it. Then delete these messages "
    "(`earnings-sync stream redo --discard-lost`)."
)

Outcome = str  # "redone", "would_redo", "lost", "malformed", "failed"


class RedoError(Exception):
    """Something the operator has to settle before anything can be redone (table, stream, queue)."""


class MalformedFailureRecord(Exception):
    """The message is not an on-failure record of this table's stream: it is reported and kept."""


class RangeLost(Exception):
    """The stream no longer holds the range: trimmed after 24 hours, or its shard is gone."""


def _error_code(exc: Exception) -> str:
    return str(((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code", ""))


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


# --------------------------------------------------------------------------- where things are


@dataclass(frozen=True)
class TableStream:
    table_name: str
    table_arn: str
    stream_arn: str  # the table's latest stream

    def owns(self, stream_arn: str) -> bool:
        """A stream of this table: the latest one, or an earlier one still readable for 24 hours."""
        return stream_arn.startswith(f"{self.table_arn}/stream/")


def table_stream(dynamodb: Any, table_name: str) -> TableStream:
    try:
        table = dynamodb.describe_table(TableName=table_name)["Table"]
    except ClientError as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            raise RedoError(f"no such table: {table_name}") from exc
        raise
    stream_arn = table.get("LatestStreamArn")
    if not stream_arn:
        raise RedoError(f"table {table_name} has no stream: there is nothing to redo")
    return TableStream(table_name, table["TableArn"], stream_arn)


def failure_queue_arn(lambda_client: Any, stream_arn: str) -> str:
    """The on-failure destination of the event source mapping that reads this stream."""
    destinations: dict[str, None] = {}
    for page in lambda_client.get_paginator("list_event_source_mappings").paginate(EventSourceArn=stream_arn):
        for mapping in page.get("EventSourceMappings", []):
            destination = ((mapping.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination") or ""
            if destination.startswith("arn:") and destination.split(":")[2:3] == ["sqs"]:
                destinations[destination] = None
    if len(destinations) != 1:
        found = f": {', '.join(destinations)}" if destinations else ""
        raise RedoError(
            f"{len(destinations)} on-failure queue(s) found for the event source mappings of {stream_arn}{found}; "
            "name the stream failure queue (QUEUE)"
        )
    return next(iter(destinations))


# --------------------------------------------------------------------------- the on-failure record


@dataclass(frozen=True)
class FailureRange:
    """`DDBStreamBatchInfo` of a Lambda on-failure record: the records the mapping skipped."""

    stream_arn: str
    shard_id: str
    start: str
    end: str
    batch_size: int | None
    condition: str  # RetryAttemptsExhausted, RecordAgeExceeded, …
    first_arrival: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream_arn": self.stream_arn,
            "shard_id": self.shard_id,
            "start_sequence_number": self.start,
            "end_sequence_number": self.end,
            "batch_size": self.batch_size,
            "condition": self.condition,
            "first_arrival": self.first_arrival,
        }


def parse_failure_record(body: str, stream: TableStream) -> FailureRange:
    """The range a message names, or MalformedFailureRecord saying why it cannot be used."""
    try:
        record = json.loads(body)
    except ValueError as exc:
        raise MalformedFailureRecord("not JSON") from exc
    info = record.get("DDBStreamBatchInfo") if isinstance(record, dict) else None
    if not isinstance(info, dict):
        other = [k for k in ("KinesisBatchInfo", "SQSBatchInfo") if isinstance(record, dict) and k in record]
        kind = f" ({other[0]})" if other else ""
        raise MalformedFailureRecord(f"not a DynamoDB stream on-failure record: no DDBStreamBatchInfo{kind}")
    values = {name: info.get(name) for name in ("streamArn", "shardId", "startSequenceNumber", "endSequenceNumber")}
    missing = [name for name, value in values.items() if not isinstance(value, str) or not value]
    if missing:
        raise MalformedFailureRecord(f"DDBStreamBatchInfo lacks {', '.join(missing)}")
    if not stream.owns(values["streamArn"]):
        raise MalformedFailureRecord(f"another stream's record: {values['streamArn'][:200]}")
    if not SHARD_ID.match(values["shardId"]):
        raise MalformedFailureRecord(f"not a shard id: {values['shardId'][:80]!r}")
    start, end = values["startSequenceNumber"], values["endSequenceNumber"]
    if not SEQUENCE_NUMBER.match(start) or not SEQUENCE_NUMBER.match(end):
        raise MalformedFailureRecord("sequence numbers are not decimal numbers")
    if int(start) > int(end):
        raise MalformedFailureRecord("startSequenceNumber is after endSequenceNumber")
    batch_size = info.get("batchSize")
    context = record.get("requestContext")
    condition = context.get("condition") if isinstance(context, dict) else None
    arrival = info.get("approximateArrivalOfFirstRecord")
    return FailureRange(
        stream_arn=values["streamArn"],
        shard_id=values["shardId"],
        start=start,
        end=end,
        batch_size=batch_size if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0 else None,
        condition=condition if isinstance(condition, str) else "",
        first_arrival=arrival if isinstance(arrival, str) else None,
    )


# --------------------------------------------------------------------------- reading the range


def _sequence(record: Mapping[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


def _raise_classified(exc: ClientError | ParamValidationError) -> NoReturn:
    """Stream errors that say the range is gone, or that the record names no readable position;
    anything else (access, throttling, the endpoint) is raised as it is."""
    if isinstance(exc, ParamValidationError):
        raise MalformedFailureRecord(f"the stream API refuses this position: {' '.join(str(exc).split())[:200]}") from exc
    code = _error_code(exc)
    if code == "TrimmedDataAccessException":
        raise RangeLost("trimmed: the stream no longer holds these records (it keeps them 24 hours)") from exc
    if code == "ResourceNotFoundException":
        raise RangeLost("the shard or the stream no longer exists (shards are deleted 24 hours after they close)") from exc
    if code in ("ValidationException", "InvalidArgumentException"):
        message = str(exc.response["Error"].get("Message") or code)
        raise MalformedFailureRecord(f"the stream refuses this position: {message[:200]}") from exc
    raise exc


class ShardReader:
    """Reads ranges of one shard, asked in increasing order, as one forward pass where it can.

    When the stream consumer was down, the mapping gave up on every batch and the ranges tile the
    shard: each range starts right after the previous one, so the reader goes on from where the last
    range ended instead of seeking again. A range that starts far ahead (more than GAP_BUDGET records
    of no range in between), or behind what was already read, gets a seek of its own.
    """

    def __init__(self, streams: Any, stream_arn: str, shard_id: str) -> None:
        self.streams = streams
        self.stream_arn = stream_arn
        self.shard_id = shard_id
        self.iterator: str | None = None
        self.pending: deque[dict[str, Any]] = deque()  # read from the stream, not handed out yet
        self.passed: int | None = None  # the highest sequence number handed out or skipped
        self.fetched: str | None = None  # the last sequence number read from the stream
        self.open = False  # an iterator or read records to go on from

    def _seek(self, start: str) -> None:
        self.pending, self.passed, self.fetched = deque(), None, None
        self.open = False
        self.iterator = self._iterator({"ShardIteratorType": "AT_SEQUENCE_NUMBER", "SequenceNumber": start})
        self.open = True

    def _iterator(self, position: dict[str, str]) -> str | None:
        try:
            response = self.streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=self.shard_id, **position)
        except (ClientError, ParamValidationError) as exc:
            _raise_classified(exc)
        return response.get("ShardIterator")

    def _fetch(self, limit: int, start: str) -> int:
        """One GetRecords into `pending`; returns how many records it brought."""
        renewals = 0
        while True:
            try:
                response = self.streams.get_records(ShardIterator=self.iterator, Limit=limit)
                break
            except ClientError as exc:
                if _error_code(exc) != "ExpiredIteratorException" or renewals >= ITERATOR_RENEWALS:
                    _raise_classified(exc)
                renewals += 1
                position = (
                    {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self.fetched}
                    if self.fetched is not None
                    else {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "SequenceNumber": start}
                )
                self.iterator = self._iterator(position)
        page = response.get("Records", [])
        if page:
            self.pending.extend(page)
            self.fetched = page[-1]["dynamodb"]["SequenceNumber"]
        self.iterator = response.get("NextShardIterator")  # None: the shard is closed and read to its end
        return len(page)

    def read(self, failure: FailureRange, limit: int = READ_LIMIT) -> list[dict[str, Any]]:
        """Every stream record of the range, in order; RangeLost unless its first and last are found.

        The range is the batch the mapping gave up on: consecutive records of one shard, the first
        and the last named by their sequence numbers, so finding both means none in between is missing.
        """
        start, end = int(failure.start), int(failure.end)
        try:
            if not self.open or self.passed is None or self.passed >= start:
                self._seek(failure.start)
            records: list[dict[str, Any]] = []
            skipped = empty_pages = 0
            while True:
                while self.pending and _sequence(self.pending[0]) <= end:
                    record = self.pending.popleft()
                    self.passed = _sequence(record)
                    if self.passed >= start:
                        records.append(record)
                    else:
                        skipped += 1
                if (self.pending or records and _sequence(records[-1]) == end) or self.iterator is None:
                    break  # past the end of the range, or the shard has no more
                if skipped > GAP_BUDGET and not records:
                    self._seek(failure.start)
                    skipped = 0
                empty_pages = 0 if self._fetch(limit, failure.start) else empty_pages + 1
                if empty_pages >= MAX_EMPTY_PAGES:
                    break  # an open shard with nothing more to read
        except (RangeLost, MalformedFailureRecord):
            self.open = False  # the next range seeks for itself
            raise
        if not records or _sequence(records[0]) != start:
            raise RangeLost("the range's first record is not in the stream")
        if _sequence(records[-1]) != end:
            raise RangeLost("the range's last record is not in the stream")
        return records


# --------------------------------------------------------------------------- the report


@dataclass
class RedoItem:
    """What happened to one failure-queue message."""

    message_id: str
    outcome: Outcome
    reason: str = ""
    failure: FailureRange | None = None
    records: int = 0
    regressions: int = 0  # MODIFY records in the range whose new image is older than the old one
    tally: StreamTally | None = None
    deleted: bool = False

    def as_dict(self) -> dict[str, Any]:
        tally = self.tally
        return {
            "message_id": self.message_id,
            "outcome": self.outcome,
            "reason": self.reason or None,
            "range": self.failure.as_dict() if self.failure else None,
            "records": self.records,
            "regressions": self.regressions,
            "regressions_restored": tally.regressions_restored if tally else 0,
            "regression_conflicts": tally.regression_conflicts if tally else 0,
            "superseded_removed": tally.superseded_removed if tally else 0,
            "superseded_conflicts": tally.superseded_conflicts if tally else 0,
            "validation_failed": tally.validation_failed if tally else 0,
            "change_events_published": sum(tally.events_published.values()) if tally else 0,
            "violations": dict(sorted(tally.violations.items())) if tally else {},
            "restored": [list(key) for key in tally.restored] if tally else [],
            "removed": [list(key) for key in tally.removed] if tally else [],
            "invalid": [{"key": list(key), "rules": rules} for key, rules in tally.invalid] if tally else [],
            "deleted": self.deleted,
        }


@dataclass
class RedoReport:
    queue_url: str
    table_name: str
    stream_arn: str
    dry_run: bool
    discard_lost: bool = False
    items: list[RedoItem] = field(default_factory=list)
    aborted: str = ""  # why the run stopped before the queue was read to its end
    released: int = 0  # messages made visible again at the end
    release_failed: int = 0

    def count(self, outcome: Outcome) -> int:
        return sum(item.outcome == outcome for item in self.items)

    def total(self, name: str) -> int:
        return sum(getattr(item.tally, name) for item in self.items if item.tally is not None)

    @property
    def ok(self) -> bool:
        """Every range redone (or would be), nothing malformed, lost or failed, the run not stopped."""
        return not self.aborted and all(item.outcome in ("redone", "would_redo") for item in self.items)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "queue_url": self.queue_url,
            "table": self.table_name,
            "stream_arn": self.stream_arn,
            "messages": len(self.items),
            "redone": self.count("redone"),
            "would_redo": self.count("would_redo"),
            "lost": self.count("lost"),
            "malformed": self.count("malformed"),
            "failed": self.count("failed"),
            "records": sum(item.records for item in self.items),
            "regressions": sum(item.regressions for item in self.items),
            "regressions_restored": self.total("regressions_restored"),
            "regression_conflicts": self.total("regression_conflicts"),
            "superseded_removed": self.total("superseded_removed"),
            "validation_failed": self.total("validation_failed"),
            "change_events_published": sum(sum(i.tally.events_published.values()) for i in self.items if i.tally is not None),
            "deleted": sum(item.deleted for item in self.items),
            "released": self.released,
            "aborted": self.aborted or None,
            "lost_range_advice": LOST_RANGE_ADVICE if self.count("lost") else None,
            "items": [item.as_dict() for item in self.items],
        }


# --------------------------------------------------------------------------- the run


def redo_stream_failures(
    sqs: Any,
    table: CalendarTable,
    streams: Any,
    queue_url: str,
    stream: TableStream,
    *,
    dry_run: bool = False,
    discard_lost: bool = False,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
    wait_seconds: int = 2,
    progress: Callable[[RedoReport], None] | None = None,
    publisher: ChangePublisher | None = None,
) -> RedoReport:
    """Read the failure queue to its end and redo every range the stream still holds; `table` is
    the gateway of the table whose stream it is (`stream`), `publisher` where change events go
    (None: none are published).

    A failed AWS call while a range is redone stops the run (it would most likely fail again for
    the next one): that message and every other not deleted are made visible again.
    """
    report = RedoReport(queue_url, stream.table_name, stream.stream_arn, dry_run, discard_lost)
    scan = QueueScan(sqs, queue_url, visibility_timeout=visibility_timeout, wait_seconds=wait_seconds)
    try:
        while not report.aborted:
            try:
                messages = scan.next(RECEIVE_LIMIT)
            except (ClientError, BotoCoreError) as exc:
                if not report.items:
                    raise  # nothing done yet: the queue cannot be read at all
                report.aborted = f"reading the queue: {_one_line(exc)}"
                break
            if not messages:
                break
            _redo_batch(table, streams, stream, messages, report, scan, publisher)
            if progress is not None:
                progress(report)
    finally:
        report.released, report.release_failed = scan.release()
    return report


def _redo_batch(
    table: CalendarTable,
    streams: Any,
    stream: TableStream,
    messages: list[dict[str, Any]],
    report: RedoReport,
    scan: QueueScan,
    publisher: ChangePublisher | None = None,
) -> None:
    """One receive's messages: their ranges read shard by shard in stream order, then deleted together."""
    ranges: list[tuple[FailureRange, dict[str, Any]]] = []
    for message in messages:
        try:
            ranges.append((parse_failure_record(message.get("Body", ""), stream), message))
        except MalformedFailureRecord as exc:
            report.items.append(RedoItem(message["MessageId"], "malformed", str(exc)))
    ranges.sort(key=lambda pair: (pair[0].stream_arn, pair[0].shard_id, int(pair[0].start)))
    readers: dict[tuple[str, str], ShardReader] = {}
    done: list[tuple[RedoItem, dict[str, Any]]] = []  # to delete from the queue
    for index, (failure, message) in enumerate(ranges):
        if report.aborted:
            break
        shard = (failure.stream_arn, failure.shard_id)
        reader = readers.setdefault(shard, ShardReader(streams, *shard))
        # Contiguous ranges are read together: ask for the records of this range and the next ones.
        sizes = [f.batch_size for f, _ in ranges[index:] if (f.stream_arn, f.shard_id) == shard]
        limit = min(READ_LIMIT, sum(size or READ_LIMIT for size in sizes))
        item = _redo_range(table, reader, failure, limit, message["MessageId"], report, publisher)
        report.items.append(item)
        if item.outcome == "redone" or (item.outcome == "lost" and report.discard_lost and not report.dry_run):
            done.append((item, message))
    _delete(scan, done)


def _redo_range(
    table: CalendarTable,
    reader: ShardReader,
    failure: FailureRange,
    limit: int,
    message_id: str,
    report: RedoReport,
    publisher: ChangePublisher | None = None,
) -> RedoItem:
    item = RedoItem(message_id=message_id, outcome="failed", failure=failure)
    try:
        records = reader.read(failure, limit)
    except MalformedFailureRecord as exc:
        item.outcome, item.reason = "malformed", str(exc)
        return item
    except RangeLost as exc:
        item.outcome, item.reason = "lost", str(exc)
        return item
    except (ClientError, BotoCoreError) as exc:
        item.reason = report.aborted = f"reading the stream: {_one_line(exc)}"
        return item
    item.records = len(records)
    item.regressions = sum(
        r.get("eventName") == "MODIFY"
        and consistency.is_regression(r["dynamodb"].get("OldImage") or {}, r["dynamodb"].get("NewImage") or {})
        for r in records
    )
    if report.dry_run:
        item.outcome = "would_redo"
        return item
    # One processor per range, as one per invocation in the Lambda: its per-symbol cache holds the
    # items read for this range only. No `sole_sync`: settling a sync's records when it is the only
    # one finds nothing older to delete, so skipping it only saves a Query.
    processor = StreamProcessor(table, publisher=publisher)
    item.tally = StreamTally()
    try:
        for record in records:
            processor.process(record, item.tally)
    except (ClientError, BotoCoreError, ValueError, ChangePublishError) as exc:
        item.reason = report.aborted = f"redoing the range: {_one_line(exc)}"
        return item
    if processor.finish({}, item.tally)["batchItemFailures"]:
        item.reason = report.aborted = f"publishing its change events: {item.tally.publish_error}"
        return item
    item.outcome = "redone"
    return item


def _delete(scan: QueueScan, done: list[tuple[RedoItem, dict[str, Any]]]) -> None:
    """DeleteMessageBatch; a message that stays queued is redone again by the next run, which changes nothing."""
    for first in range(0, len(done), RECEIVE_LIMIT):
        chunk = done[first : first + RECEIVE_LIMIT]
        try:
            response = scan.sqs.delete_message_batch(
                QueueUrl=scan.url,
                Entries=[{"Id": str(i), "ReceiptHandle": scan.handle(m["MessageId"])} for i, (_, m) in enumerate(chunk)],
            )
        except (ClientError, BotoCoreError) as exc:
            for item, _ in chunk:
                item.reason = f"not deleted from the queue: {_one_line(exc)}"
            continue
        deleted = {entry["Id"] for entry in response.get("Successful", [])}
        failed = {entry["Id"]: entry for entry in response.get("Failed", [])}
        for i, (item, message) in enumerate(chunk):
            if str(i) in deleted:
                item.deleted = True
                scan.forget(message["MessageId"])
            else:
                why = failed.get(str(i), {})
                item.reason = f"not deleted from the queue: {why.get('Code', 'no answer')} {why.get('Message', '')}".strip()


# --------------------------------------------------------------------------- text output


def format_report(report: RedoReport, max_lines: int = 50) -> str:
    dry = " (dry run: nothing written or deleted)" if report.dry_run else ""
    lines = [f"stream redo: {report.queue_url} → table {report.table_name}{dry}"]
    if not report.items:
        lines.append("the failure queue has no visible messages: nothing to redo")
    else:
        verb = "would redo" if report.dry_run else "redone"
        done = report.count("would_redo") if report.dry_run else report.count("redone")
        lines.append(
            f"{len(report.items):,} message(s): {verb} {done:,}, lost {report.count('lost'):,}, "
            f"malformed {report.count('malformed'):,}, failed {report.count('failed'):,}"
        )
        records = sum(item.records for item in report.items)
        regressions = sum(item.regressions for item in report.items)
        summary = f"records {records:,}, regressions found {regressions:,}"
        if not report.dry_run:
            summary += (
                f", restored {report.total('regressions_restored'):,} (already moved on {report.total('regression_conflicts'):,})"
                f", superseded removed {report.total('superseded_removed'):,}, validation failed {report.total('validation_failed'):,}"
                f", change events published {report.as_dict()['change_events_published']:,}"
            )
        lines.append(summary)
    for item in report.items[:max_lines]:
        where = ""
        if item.failure is not None:
            where = f"  shard {item.failure.shard_id} {item.failure.start}..{item.failure.end}"
        detail = f"  records {item.records}, regressions {item.regressions}" if item.records else ""
        if item.tally is not None:
            detail += f", restored {item.tally.regressions_restored}, superseded removed {item.tally.superseded_removed}"
            if item.tally.validation_failed:
                detail += f", validation failed {item.tally.validation_failed} ({', '.join(sorted(item.tally.violations))})"
        reason = f"  ({item.reason})" if item.reason else ""
        kept = "" if item.deleted or item.outcome in ("redone", "would_redo") else "  [kept in the queue]"
        lines.append(f"  {item.outcome:<10} {item.message_id}{where}{detail}{reason}{kept}")
    if len(report.items) > max_lines:
        lines.append(f"  … {len(report.items) - max_lines} more (--json lists all)")
    if report.aborted:
        lines.append(f"stopped: {report.aborted}; the messages not redone are back in the queue")
    if report.count("lost"):
        lines.append(LOST_RANGE_ADVICE)
    if report.count("malformed"):
        lines.append("malformed messages are not on-failure records of this table's stream: look at them and delete them by hand")
    return "\n".join(lines)
