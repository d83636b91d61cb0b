"""Metric names, and how domain results become metrics (Powertools Metrics, Embedded Metric Format)
and log lines.

The domain code only counts (`ConsumerTally`, `SyncReport`); handlers turn the counts into metrics
and log lines here, once per invocation (`ConsumerBatchLog`, `StreamBatchLog`, `UpcomingLog`;
the producer's `SyncLog` lives with its report in producer.py), so what each function reports is
tested without Lambda. `parse_emf` reads the same EMF lines back, for the local runner's summary
and for tests, so what an operator sees in CloudWatch and what `earnings-sync local` prints agree.

`METRICS` declares every metric once (unit, emitting handlers, meaning, dimensions): the emit
functions take their units from it and refuse undeclared names, and the template checks and
docs/operations.md are tested against it, so an alarm can only watch a metric the code emits.
"""

from __future__ import annotations

import json
import resource
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

if TYPE_CHECKING:  # types only: a function loads the domain modules it runs, no others
    from earnings_sync.consumer import ConsumerTally, MessageContext
    from earnings_sync.stream import StreamTally
    from earnings_sync.upcoming import UpcomingResult

NAMESPACE = "EarningsSync"
SERVICE = "earnings-sync"


class M(StrEnum):
    # producer
    ROWS_READ = "RowsRead"
    ROWS_REJECTED = "RowsRejected"  # plus one RowsRejected_<reason> per reason
    DUPLICATE_ROWS = "DuplicateRows"
    RECORDS_ENQUEUED = "RecordsEnqueued"
    MESSAGES_ENQUEUED = "MessagesEnqueued"
    ENQUEUE_FAILURES = "EnqueueFailures"
    SEND_RETRIES = "SendRetries"
    UPSTREAM_ERRORS = "UpstreamErrors"
    SYNC_ABORTED = "SyncAborted"
    SYNC_DURATION = "SyncDuration"
    SEND_THROTTLES = "SendThrottles"
    # consumer
    MESSAGES_PROCESSED = "MessagesProcessed"
    MESSAGES_FAILED = "MessagesFailed"
    RECORDS_RECEIVED = "RecordsReceived"
    RECORDS_WRITTEN = "RecordsWritten"
    RECORDS_INSERTED = "RecordsInserted"
    RECORDS_UPDATED = "RecordsUpdated"
    RECORDS_UNCHANGED = "RecordsUnchanged"
    STALE_SYNC_SKIPPED = "StaleSyncSkipped"
    WRITE_FAILURES = "WriteFailures"
    WRITE_RETRIES = "WriteRetries"
    RETRY_EXHAUSTED = "RetryExhausted"
    LOST_RACES = "ConditionalWriteConflicts"
    POISON_RECORDS = "PoisonRecords"
    UNDECODABLE_MESSAGES = "UndecodableMessages"
    INVALID_MESSAGES = "InvalidMessages"
    DLQ_SENDS = "DlqSends"
    LEDGER_OUTCOMES = "LedgerOutcomesRecorded"
    LEDGER_REPEATS = "LedgerOutcomesRepeated"
    LEDGER_WRITE_FAILURES = "LedgerWriteFailures"
    BATCH_DURATION = "BatchDuration"
    DYNAMODB_REQUESTS = "DynamoDBRequests"
    THROTTLES = "Throttles"
    # stream consumer
    STREAM_RECORDS_PROCESSED = "StreamRecordsProcessed"
    STREAM_RECORD_FAILURES = "StreamRecordFailures"
    VALIDATION_PASSED = "ValidationPassed"
    VALIDATION_FAILED = "ValidationFailed"  # plus one ValidationFailed_<rule> per rule
    BOOKKEEPING_ONLY = "BookkeepingOnly"
    INITIAL_LOAD_UNSETTLED = "InitialLoadUnsettled"
    SUPERSEDED_REMOVED = "SupersededRemoved"
    SUPERSEDED_CONFLICTS = "SupersededConflicts"
    REGRESSIONS_RESTORED = "RegressionsRestored"
    REGRESSION_CONFLICTS = "RegressionConflicts"
    REMOVE_EVENTS = "RemoveEvents"
    STREAM_BATCH_DURATION = "StreamBatchDuration"
    STREAM_DYNAMODB_REQUESTS = "StreamDynamoDBRequests"
    STREAM_THROTTLES = "StreamThrottles"
    CHANGE_EVENTS_PUBLISHED = "ChangeEventsPublished"  # plus one ChangeEventsPublished_<type> per detail-type
    CHANGE_EVENT_PUBLISH_FAILURES = "ChangeEventPublishFailures"
    # upcoming-earnings reads (GSI `upcoming-earnings-index`)
    UPCOMING_QUERIES = "UpcomingIndexQueries"
    UPCOMING_QUERY_DURATION = "UpcomingQueryDuration"
    UPCOMING_INDEX_FAILURES = "UpcomingIndexFailures"
    UPCOMING_SCAN_FALLBACKS = "UpcomingScanFallbacks"
    UPCOMING_REQUESTS = "UpcomingRequests"
    UPCOMING_REQUEST_FAILURES = "UpcomingRequestFailures"
    UPCOMING_THROTTLES = "UpcomingThrottles"
    # sync monitor (the ledger asked on a schedule)
    SYNCS_COMPLETE = "SyncsComplete"
    SYNCS_INCOMPLETE = "SyncsIncomplete"
    SYNC_COMPLETIONS = "SyncCompletions"
    # every handler
    MEMORY_USED = "MemoryUsedMB"
    MEMORY_UTILIZATION = "MemoryUtilization"
    COLD_START = "ColdStart"  # added by Powertools (capture_cold_start_metric), in a blob of its own


class Handler(StrEnum):
    """Where each Lambda's handler lives: template.yaml's `Handler` is `<module>.lambda_handler`."""

    PRODUCER = "producers.app"
    CONSUMER = "consumers.sqs_consumer"
    STREAM_CONSUMER = "consumers.stream_consumer"
    UPCOMING = "queries.upcoming_query"
    SYNC_MONITOR = "queries.sync_monitor"


# Powertools puts `service` (POWERTOOLS_SERVICE_NAME) on every metric and we add no default
# dimension, so each EMF blob declares exactly this set; an alarm must name exactly the same set
# (CloudWatch matches dimension sets exactly) or it watches a metric nobody publishes.
DIMENSIONS: tuple[str, ...] = ("service",)
COLD_START_DIMENSIONS: tuple[str, ...] = ("function_name", "service")  # Powertools' cold-start blob

_P, _C, _S, _U = Handler.PRODUCER, Handler.CONSUMER, Handler.STREAM_CONSUMER, Handler.UPCOMING
_W = Handler.SYNC_MONITOR
_COUNT, _MS = MetricUnit.Count, MetricUnit.Milliseconds


@dataclass(frozen=True)
class MetricSpec:
    """One metric as published: `per` names the key of its `<name>_<key>` variants, if any."""

    name: str
    unit: MetricUnit
    emitted_by: tuple[Handler, ...]
    description: str
    per: str | None = None
    dimensions: tuple[str, ...] = DIMENSIONS


_SPECS = (
    # producer
    MetricSpec(M.ROWS_READ, _COUNT, (_P,), "CSV data rows read in a sync"),
    MetricSpec(M.ROWS_REJECTED, _COUNT, (_P,), "rows that did not validate, in total and per reason", per="reason"),
    MetricSpec(M.DUPLICATE_ROWS, _COUNT, (_P,), "rows replaced by a later row with the same key"),
    MetricSpec(M.RECORDS_ENQUEUED, _COUNT, (_P,), "records that reached the queue"),
    MetricSpec(M.MESSAGES_ENQUEUED, _COUNT, (_P,), "messages that reached the queue"),
    MetricSpec(M.ENQUEUE_FAILURES, _COUNT, (_P,), "messages still not sent after retries (the sync failed)"),
    MetricSpec(M.SEND_RETRIES, _COUNT, (_P,), "SendMessageBatch retries (SDK retries + resent Failed entries)"),
    MetricSpec(M.SEND_THROTTLES, _COUNT, (_P,), "throttled SQS/S3/SSM/ledger responses, retried ones included"),
    MetricSpec(M.UPSTREAM_ERRORS, _COUNT, (_P,), "the source is not the calendar (an AlphaVantage error reply, or a file/object that is not the CSV)"),
    MetricSpec(M.SYNC_ABORTED, _COUNT, (_P,), "syncs stopped part-way by an unexpected error (manifest marked aborted: ledger incomplete)"),
    MetricSpec(M.SYNC_DURATION, _MS, (_P,), "ms for a whole sync"),
    # consumer
    MetricSpec(M.MESSAGES_PROCESSED, _COUNT, (_C,), "messages handled"),
    MetricSpec(M.MESSAGES_FAILED, _COUNT, (_C,), "messages reported in batchItemFailures (SQS delivers them again)"),
    MetricSpec(M.RECORDS_RECEIVED, _COUNT, (_C,), "records in the messages handled"),
    MetricSpec(M.RECORDS_WRITTEN, _COUNT, (_C,), "content writes (= RecordsInserted + RecordsUpdated): write successes"),
    MetricSpec(M.RECORDS_INSERTED, _COUNT, (_C,), "new items"),
    MetricSpec(M.RECORDS_UPDATED, _COUNT, (_C,), "items whose content changed"),
    MetricSpec(M.RECORDS_UNCHANGED, _COUNT, (_C,), "records already in the table: only lastSyncDate moved forward, or nothing"),
    MetricSpec(M.STALE_SYNC_SKIPPED, _COUNT, (_C,), "records older than the stored item, skipped (conflict resolved for the newer sync)"),
    MetricSpec(M.LOST_RACES, _COUNT, (_C,), "conditional writes that lost a race and were decided again"),
    MetricSpec(M.WRITE_FAILURES, _COUNT, (_C,), "failed messages + poison records"),
    MetricSpec(M.WRITE_RETRIES, _COUNT, (_C,), "SDK retries + UnprocessedKeys/UnprocessedItems retries"),
    MetricSpec(M.THROTTLES, _COUNT, (_C,), "throttled DynamoDB/SQS responses, retried ones included"),
    MetricSpec(
        M.RETRY_EXHAUSTED, _COUNT, (_C,),
        "messages moved to the DLQ on their last receive, retries used up (counted once the DLQ send succeeded)",
    ),
    MetricSpec(M.POISON_RECORDS, _COUNT, (_C,), "records sent to the DLQ because they can never be written"),
    MetricSpec(M.UNDECODABLE_MESSAGES, _COUNT, (_C,), "message bodies that are not sync messages (sent to the DLQ verbatim)"),
    MetricSpec(
        M.INVALID_MESSAGES, _COUNT, (_C,),
        "sync messages whose version, synced_at or sync_id is refused (sent to the DLQ whole, nothing written)",
    ),
    MetricSpec(M.DLQ_SENDS, _COUNT, (_C,), "DLQ messages sent by the consumer"),
    MetricSpec(M.LEDGER_OUTCOMES, _COUNT, (_C,), "message outcomes recorded in the completeness ledger (first completions)"),
    MetricSpec(M.LEDGER_REPEATS, _COUNT, (_C,), "completed messages whose outcome was already in the ledger (redeliveries)"),
    MetricSpec(M.LEDGER_WRITE_FAILURES, _COUNT, (_P, _C), "ledger writes that failed (manifest: sync not provable; outcome: message retried)"),
    MetricSpec(M.DYNAMODB_REQUESTS, _COUNT, (_C,), "DynamoDB requests spent by a batch, in total and per kind", per="kind"),
    MetricSpec(M.BATCH_DURATION, _MS, (_C,), "ms per SQS batch"),
    # stream consumer
    MetricSpec(M.STREAM_RECORDS_PROCESSED, _COUNT, (_S,), "stream records handled"),
    MetricSpec(M.STREAM_RECORD_FAILURES, _COUNT, (_S,), "stream records that raised (Lambda retries from them)"),
    MetricSpec(M.VALIDATION_PASSED, _COUNT, (_S,), "new or changed items that pass the consistency rules"),
    MetricSpec(M.VALIDATION_FAILED, _COUNT, (_S,), "items that break a consistency rule, in total and per rule", per="rule"),
    MetricSpec(M.BOOKKEEPING_ONLY, _COUNT, (_S,), "MODIFY records that only moved lastSyncDate/sync_id"),
    MetricSpec(M.INITIAL_LOAD_UNSETTLED, _COUNT, (_S,), "records of the only sync ever registered: nothing older to supersede, no Query"),
    MetricSpec(M.SUPERSEDED_REMOVED, _COUNT, (_S,), "items deleted because the same fiscal period moved to another date"),
    MetricSpec(M.SUPERSEDED_CONFLICTS, _COUNT, (_S,), "superseded deletes skipped because a newer write got there first"),
    MetricSpec(M.REGRESSIONS_RESTORED, _COUNT, (_S,), "items put back after a write carried an older lastSyncDate"),
    MetricSpec(M.REGRESSION_CONFLICTS, _COUNT, (_S,), "restores skipped because the item moved on"),
    MetricSpec(M.REMOVE_EVENTS, _COUNT, (_S,), "REMOVE records seen"),
    MetricSpec(M.STREAM_DYNAMODB_REQUESTS, _COUNT, (_S,), "DynamoDB requests spent by a stream batch, in total and per kind", per="kind"),
    MetricSpec(M.STREAM_THROTTLES, _COUNT, (_S,), "throttled DynamoDB responses, retried ones included"),
    MetricSpec(M.STREAM_BATCH_DURATION, _MS, (_S,), "ms per stream batch"),
    MetricSpec(
        M.CHANGE_EVENTS_PUBLISHED, _COUNT, (_S,),
        "change events published to EventBridge, in total and per detail-type (Scheduled, Rescheduled, Updated)",
        per="type",
    ),
    MetricSpec(
        M.CHANGE_EVENT_PUBLISH_FAILURES, _COUNT, (_S,),
        "change events still not published after the retries (their stream records are retried)",
    ),
    # upcoming-earnings reads
    MetricSpec(M.UPCOMING_REQUESTS, _COUNT, (_U,), "valid requests served or failed"),
    MetricSpec(M.UPCOMING_REQUEST_FAILURES, _COUNT, (_U,), "requests that failed outright (throttled, or the fallback failed too)"),
    MetricSpec(M.UPCOMING_QUERIES, _COUNT, (_U,), "GSI Query calls that succeeded"),
    MetricSpec(M.UPCOMING_INDEX_FAILURES, _COUNT, (_U,), "requests whose GSI Query failed and fell back to a Scan"),
    MetricSpec(M.UPCOMING_SCAN_FALLBACKS, _COUNT, (_U,), "requests answered by the Scan fallback"),
    MetricSpec(M.UPCOMING_QUERY_DURATION, _MS, (_U,), "ms per request (all its queries, or the fallback)"),
    MetricSpec(M.UPCOMING_THROTTLES, _COUNT, (_U,), "throttled DynamoDB responses, retried ones included"),
    # sync monitor
    MetricSpec(M.SYNCS_COMPLETE, _COUNT, (_W,), "syncs registered in the last 26 h whose ledger is complete"),
    MetricSpec(M.SYNCS_INCOMPLETE, _COUNT, (_W,), "syncs registered in the last 26 h, started over an hour ago, ledger not complete"),
    MetricSpec(M.SYNC_COMPLETIONS, _COUNT, (_W,), "syncs whose ledger became complete since the last run (each counted once)"),
    # every handler
    MetricSpec(M.MEMORY_USED, MetricUnit.Megabytes, tuple(Handler), "peak resident memory of the execution environment (ru_maxrss)"),
    MetricSpec(M.MEMORY_UTILIZATION, MetricUnit.Percent, tuple(Handler), "MemoryUsedMB as a percentage of the function's MemorySize"),
    MetricSpec(M.COLD_START, _COUNT, tuple(Handler), "first invocation of an execution environment", dimensions=COLD_START_DIMENSIONS),
)
METRICS: Mapping[str, MetricSpec] = {spec.name: spec for spec in _SPECS}


def spec_for(name: str) -> MetricSpec:
    """The declaration behind a metric name, `<name>_<key>` variants included; KeyError if none."""
    if name in METRICS:
        return METRICS[name]
    for spec in _SPECS:
        if spec.per is not None and name.startswith(f"{spec.name}_") and len(name) > len(spec.name) + 1:
            return spec
    raise KeyError(f"metric {name!r} is not declared in observability.METRICS")


def add_metric(metrics: Any, name: str, value: float) -> None:
    """add_metric with the declared unit: an undeclared name fails here, in tests, not in CloudWatch."""
    metrics.add_metric(name=name, unit=spec_for(name).unit, value=value)


REJECTED_PREFIX = f"{M.ROWS_REJECTED}_"
VALIDATION_FAILED_PREFIX = f"{M.VALIDATION_FAILED}_"


def emit_producer_metrics(metrics: Any, report: dict[str, Any], throttles: int = 0) -> None:
    """`report` is `SyncReport.as_dict()`; `throttles` from `aws.counting_throttles`."""
    add_metric(metrics, M.ROWS_READ, report["rows"])
    add_metric(metrics, M.ROWS_REJECTED, report["rejected_total"])
    for reason, count in report["rejected"].items():
        add_metric(metrics, f"{REJECTED_PREFIX}{reason}", count)
    add_metric(metrics, M.DUPLICATE_ROWS, report["duplicates"])
    add_metric(metrics, M.RECORDS_ENQUEUED, report["records_enqueued"])
    add_metric(metrics, M.MESSAGES_ENQUEUED, report["messages_sent"])
    add_metric(metrics, M.ENQUEUE_FAILURES, len(report["failed_messages"]))
    add_metric(metrics, M.SEND_RETRIES, report["send_retries"])
    add_metric(metrics, M.SEND_THROTTLES, throttles)
    add_metric(metrics, M.LEDGER_WRITE_FAILURES, int(str(report.get("ledger", "")).startswith("failed")))
    add_metric(metrics, M.SYNC_ABORTED, int(bool(report.get("aborted"))))
    add_metric(metrics, M.SYNC_DURATION, report["duration_ms"])


def emit_consumer_metrics(metrics: Any, tally: Any, duration_ms: float, throttles: int = 0) -> None:
    """`tally` is a `ConsumerTally`; `throttles` from `aws.counting_throttles`."""
    add_metric(metrics, M.MESSAGES_PROCESSED, tally.messages)
    add_metric(metrics, M.MESSAGES_FAILED, tally.messages_failed)
    add_metric(metrics, M.RECORDS_RECEIVED, tally.records)
    add_metric(metrics, M.RECORDS_WRITTEN, tally.inserted + tally.updated)
    add_metric(metrics, M.RECORDS_INSERTED, tally.inserted)
    add_metric(metrics, M.RECORDS_UPDATED, tally.updated)
    add_metric(metrics, M.RECORDS_UNCHANGED, tally.unchanged)
    add_metric(metrics, M.STALE_SYNC_SKIPPED, tally.stale)
    add_metric(metrics, M.WRITE_FAILURES, tally.messages_failed + tally.poison_records)
    add_metric(metrics, M.WRITE_RETRIES, tally.retries)
    add_metric(metrics, M.THROTTLES, throttles)
    add_metric(metrics, M.RETRY_EXHAUSTED, tally.retry_exhausted)
    add_metric(metrics, M.LOST_RACES, tally.lost_races)
    add_metric(metrics, M.POISON_RECORDS, tally.poison_records)
    add_metric(metrics, M.UNDECODABLE_MESSAGES, tally.undecodable_messages)
    add_metric(metrics, M.INVALID_MESSAGES, tally.invalid_messages)
    add_metric(metrics, M.DLQ_SENDS, tally.dlq_sends)
    add_metric(metrics, M.LEDGER_OUTCOMES, tally.ledger_recorded)
    add_metric(metrics, M.LEDGER_REPEATS, tally.ledger_repeats)
    add_metric(metrics, M.LEDGER_WRITE_FAILURES, tally.ledger_failures)
    add_metric(metrics, M.DYNAMODB_REQUESTS, sum(tally.requests.values()))
    for kind, count in sorted(tally.requests.items()):
        add_metric(metrics, f"{M.DYNAMODB_REQUESTS}_{kind}", count)
    add_metric(metrics, M.BATCH_DURATION, round(duration_ms, 1))


def emit_stream_metrics(metrics: Any, tally: Any, duration_ms: float, throttles: int = 0) -> None:
    """`tally` is a `stream.StreamTally`; one ValidationFailed_<rule> per rule seen."""
    add_metric(metrics, M.STREAM_RECORDS_PROCESSED, tally.records)
    add_metric(metrics, M.STREAM_RECORD_FAILURES, tally.failures)
    add_metric(metrics, M.VALIDATION_PASSED, tally.validation_passed)
    add_metric(metrics, M.VALIDATION_FAILED, tally.validation_failed)
    for rule, count in sorted(tally.violations.items()):
        add_metric(metrics, f"{VALIDATION_FAILED_PREFIX}{rule}", count)
    add_metric(metrics, M.BOOKKEEPING_ONLY, tally.bookkeeping_only)
    add_metric(metrics, M.INITIAL_LOAD_UNSETTLED, tally.initial_load_unsettled)
    add_metric(metrics, M.SUPERSEDED_REMOVED, tally.superseded_removed)
    add_metric(metrics, M.SUPERSEDED_CONFLICTS, tally.superseded_conflicts)
    add_metric(metrics, M.REGRESSIONS_RESTORED, tally.regressions_restored)
    add_metric(metrics, M.REGRESSION_CONFLICTS, tally.regression_conflicts)
    add_metric(metrics, M.REMOVE_EVENTS, tally.removes)
    add_metric(metrics, M.STREAM_DYNAMODB_REQUESTS, sum(tally.requests.values()))
    for kind, count in sorted(tally.requests.items()):
        add_metric(metrics, f"{M.STREAM_DYNAMODB_REQUESTS}_{kind}", count)
    add_metric(metrics, M.STREAM_THROTTLES, throttles)
    add_metric(metrics, M.STREAM_BATCH_DURATION, round(duration_ms, 1))
    emit_change_event_metrics(metrics, tally)


def emit_change_event_metrics(metrics: Any, tally: Any) -> None:
    """ChangeEventsPublished in total and per detail-type (its short name), and the publish failures."""
    from earnings_sync.change_events import METRIC_KEYS  # the stream consumer's domain, loaded with it

    add_metric(metrics, M.CHANGE_EVENTS_PUBLISHED, sum(tally.events_published.values()))
    for detail_type, count in sorted(tally.events_published.items()):
        add_metric(metrics, f"{M.CHANGE_EVENTS_PUBLISHED}_{METRIC_KEYS[detail_type]}", count)
    add_metric(metrics, M.CHANGE_EVENT_PUBLISH_FAILURES, tally.event_publish_failures)


def change_events_by_type(totals: Mapping[str, float]) -> dict[str, int]:
    """ChangeEventsPublished_<type> metrics (e.g. from `parse_emf`) → {type: count}, zero counts dropped."""
    prefix = f"{M.CHANGE_EVENTS_PUBLISHED}_"
    return {name[len(prefix):]: int(value) for name, value in sorted(totals.items()) if name.startswith(prefix) and value}


def upcoming_metrics(result: Any) -> dict[str, float]:
    """`result` is an `upcoming.UpcomingResult`: the figures a Lambda would emit, by metric name."""
    return {
        M.UPCOMING_QUERIES.value: result.queries,
        M.UPCOMING_QUERY_DURATION.value: round(result.duration_ms, 1),
        M.UPCOMING_INDEX_FAILURES.value: result.index_failures,
        M.UPCOMING_SCAN_FALLBACKS.value: int(result.fallback_used),
    }


def emit_upcoming_metrics(metrics: Any, result: Any) -> None:
    for name, value in upcoming_metrics(result).items():
        add_metric(metrics, name, value)


def emit_upcoming_request(metrics: Any, *, failed: bool, throttles: int = 0) -> None:
    """One per valid request, answered or not: the denominator of the GSI failure-rate alarm."""
    add_metric(metrics, M.UPCOMING_REQUESTS, 1)
    add_metric(metrics, M.UPCOMING_REQUEST_FAILURES, int(failed))
    add_metric(metrics, M.UPCOMING_THROTTLES, throttles)


def emit_sync_watch_metrics(metrics: Any, watch: Any) -> None:
    """`watch` is a `sync_watch.SyncWatch`: published on every run, zeros included, so a gap in
    `SyncCompletions` means the monitor did not run (the missing-sync alarm breaches on it)."""
    add_metric(metrics, M.SYNCS_COMPLETE, watch.count("complete"))
    add_metric(metrics, M.SYNCS_INCOMPLETE, watch.count("incomplete"))
    add_metric(metrics, M.SYNC_COMPLETIONS, watch.completions)


def memory_used_mb() -> float:
    """Peak resident memory of this process: what Lambda compares with MemorySize (kB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def emit_memory_metrics(metrics: Any, context: Any) -> dict[str, float]:
    """MemoryUsedMB, and MemoryUtilization against the context's limit (text in the real runtime).

    Returns the figures for the handler's log line.
    """
    used = round(memory_used_mb(), 1)
    figures = {"memory_used_mb": used}
    add_metric(metrics, M.MEMORY_USED, used)
    limit = float(getattr(context, "memory_limit_in_mb", 0) or 0)
    if limit > 0:
        figures["memory_utilization"] = round(100 * used / limit, 1)
        add_metric(metrics, M.MEMORY_UTILIZATION, figures["memory_utilization"])
    return figures


def validation_failures_by_rule(totals: Mapping[str, float]) -> dict[str, int]:
    """ValidationFailed_<rule> metrics (e.g. from `parse_emf`) → {rule: count}, zero counts dropped."""
    return {
        name[len(VALIDATION_FAILED_PREFIX):]: int(value)
        for name, value in sorted(totals.items())
        if name.startswith(VALIDATION_FAILED_PREFIX) and value
    }


def parse_emf(lines: Iterable[str]) -> Counter[str]:
    """Sum every metric value found in EMF JSON lines (other lines are ignored)."""
    totals: Counter[str] = Counter()
    for line in lines:
        line = line.strip()
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        for directive in blob.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive.get("Metrics", []):
                value = blob.get(metric["Name"], 0)
                totals[metric["Name"]] += sum(value) if isinstance(value, list) else value
    return totals


def requests_by_kind(totals: Mapping[str, float]) -> dict[str, int]:
    """DynamoDB requests by kind (BatchGetItem, BatchWriteItem, PutItem, ...), consumer and stream
    consumer together, from `DynamoDBRequests_<kind>` / `StreamDynamoDBRequests_<kind>` metrics."""
    found: dict[str, int] = {}
    for prefix in (f"{M.DYNAMODB_REQUESTS}_", f"{M.STREAM_DYNAMODB_REQUESTS}_"):
        for name, value in totals.items():
            if name.startswith(prefix) and value:
                kind = name[len(prefix):]
                found[kind] = found.get(kind, 0) + int(value)
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------- log lines
# What the consumers and the upcoming function log, shaped here next to their metrics so a test can
# read it without Lambda: every line joinable by sync id (and message id in the consumer), counts and
# a few keys, never an item's content. `logger` is a Powertools Logger (or anything with its methods).

MAX_LOGGED_SYNC_IDS = 10  # syncs named on a batch line


def _failed_items(response: Mapping[str, Any]) -> int:
    return len(response.get("batchItemFailures", []))


class ConsumerBatchLog:
    """The consumer's lines for one SQS batch: each message's ids on every line logged while it is
    handled, conflicts as counts and a few keys, one summary line. `tally` feeds the metrics."""

    def __init__(self, logger: Any, tally: ConsumerTally) -> None:
        self.logger = logger
        self.tally = tally
        self.sync_ids: dict[str, None] = {}  # ordered set: which syncs this batch carried

    def message(self, message: MessageContext) -> None:
        """A message about to be handled: its ids go on every line logged until the next one."""
        sync_id = (message.attributes.get("sync_id") or {}).get("stringValue", "")
        self.sync_ids[sync_id] = None
        self.logger.append_keys(message_id=message.message_id, sync_id=sync_id)

    def message_failed(self, exc: BaseException, message: MessageContext) -> None:
        extra = {"reason": str(exc), "receive_count": message.receive_count}
        self.logger.warning("message failed, SQS will deliver it again", extra=extra)

    def finished(self, response: Mapping[str, Any], throttles: int, duration_ms: float, memory: Mapping[str, float]) -> None:
        tally = self.tally
        if tally.stale or tally.lost_races:
            # Conflicts are expected (replays, redeliveries, concurrent syncs): counts and a few keys.
            self.logger.info(
                "conflicts resolved",
                extra={
                    "stale_skipped": tally.stale,
                    "stale_keys": [list(key) for key in tally.stale_keys],
                    "lost_races": tally.lost_races,
                },
            )
        self.logger.info(
            "batch processed",
            extra={
                "messages": tally.messages,
                "sync_ids": list(self.sync_ids)[:MAX_LOGGED_SYNC_IDS],
                "failed": _failed_items(response),
                "inserted": tally.inserted,
                "updated": tally.updated,
                "unchanged": tally.unchanged,
                "stale_skipped": tally.stale,
                "poison_records": tally.poison_records,
                "invalid_messages": tally.invalid_messages,
                "dlq_sends": tally.dlq_sends,
                "retries": tally.retries,
                "retry_exhausted": tally.retry_exhausted,
                "throttles": throttles,
                "duration_ms": round(duration_ms, 1),
                **memory,
            },
        )


def _change_sync_id(change: Mapping[str, Any]) -> str:
    """The sync that made this change (new image; old image for a REMOVE): joins the producer's logs."""
    image = change.get("NewImage") or change.get("OldImage") or {}
    return str((image.get("sync_id") or {}).get("S", ""))


class StreamBatchLog:
    """The stream consumer's lines for one batch: a line per failed record and per item that breaks
    a rule, what was tidied (keys only), one summary line. `tally` feeds the metrics."""

    def __init__(self, logger: Any, tally: StreamTally, key_of: Callable[[Mapping[str, Any]], tuple[str, str]]) -> None:
        self.logger = logger
        self.tally = tally
        self.key_of = key_of  # an item's (asset_symbol, earnings_date) from a record's `Keys`
        self.sync_ids: dict[str, None] = {}  # ordered set: which syncs' writes this batch carried

    def record(self, raw_record: Mapping[str, Any]) -> None:
        """`raw_record` is one stream record as Lambda delivers it."""
        self.sync_ids[_change_sync_id(raw_record.get("dynamodb") or {})] = None

    def record_failed(self, raw_record: Mapping[str, Any], exc: BaseException) -> None:
        """Counted as a failure; the line names the record (sequence number, key, sync), never its images.
        A record deferred after an earlier failure (`stream.RecordDeferred`) is counted by the processor
        and shown on the summary line only."""
        from earnings_sync.stream import RecordDeferred  # the stream consumer's own module, loaded with it

        if isinstance(exc, RecordDeferred):
            return
        self.tally.failures += 1
        change = raw_record.get("dynamodb") or {}
        self.logger.warning(
            "stream record failed, Lambda will retry from it",
            extra={
                "sequence_number": change.get("SequenceNumber"),
                "event_name": raw_record.get("eventName"),
                "key": list(self.key_of(change.get("Keys") or {})),
                "sync_id": _change_sync_id(change),
                "error": f"{type(exc).__name__}: {exc}"[:300],
            },
        )

    def finished(self, response: Mapping[str, Any], throttles: int, duration_ms: float, memory: Mapping[str, float]) -> None:
        tally = self.tally
        for key, rules in tally.invalid:
            self.logger.warning("item breaks consistency rules", extra={"key": list(key), "rules": rules})
        if tally.event_publish_failures:
            self.logger.warning(
                "change events not published, Lambda will retry their records",
                extra={"unpublished": tally.event_publish_failures, "error": tally.publish_error},
            )
        if tally.removed or tally.restored:
            self.logger.info(
                "table tidied",
                extra={"superseded_removed": [list(k) for k in tally.removed], "regressions_restored": [list(k) for k in tally.restored]},
            )
        self.logger.info(
            "stream batch processed",
            extra={
                "records": tally.records,
                "sync_ids": list(self.sync_ids)[:MAX_LOGGED_SYNC_IDS],
                "failed": _failed_items(response),
                "validation_passed": tally.validation_passed,
                "validation_failed": dict(tally.violations),
                "bookkeeping_only": tally.bookkeeping_only,
                "superseded_removed": tally.superseded_removed,
                "superseded_conflicts": tally.superseded_conflicts,
                "regressions_restored": tally.regressions_restored,
                "removes": tally.removes,
                "deferred": tally.deferred,
                "events_published": dict(tally.events_published),
                "throttles": throttles,
                "duration_ms": round(duration_ms, 1),
                **memory,
            },
        )


class UpcomingLog:
    """The upcoming-earnings function's line and request metrics for each way a request ends."""

    def __init__(self, logger: Any, metrics: Any) -> None:
        self.logger = logger
        self.metrics = metrics

    def invalid(self, exc: ValueError) -> dict[str, str]:
        """The caller's mistake, found before any query: not a GSI failure, no request metric."""
        self.logger.warning("invalid upcoming request", extra={"error": str(exc)})
        return {"error": str(exc)}

    def failed(self, exc: BaseException, throttles: int) -> None:
        emit_upcoming_request(self.metrics, failed=True, throttles=throttles)
        self.logger.error("upcoming query failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300], "throttles": throttles})

    def answered(self, result: UpcomingResult, throttles: int, memory: Mapping[str, float]) -> dict[str, Any]:
        """Metrics and the line of an answered request (the items are not logged); returns the answer."""
        emit_upcoming_request(self.metrics, failed=False, throttles=throttles)
        emit_upcoming_metrics(self.metrics, result)
        answer = result.as_dict()
        self.logger.info(
            "upcoming query answered",
            extra={**{k: v for k, v in answer.items() if k != "items"}, "throttles": throttles, **memory},
        )
        return answer
