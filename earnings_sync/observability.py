"""Metric names and how domain results become metrics (Powertools Metrics, Embedded Metric Format).

The domain code only counts (`ConsumerTally`, `SyncReport`); handlers turn the counts into metrics
here, once per invocation. `parse_emf` reads the same EMF lines back, for the local runner's summary
and for tests, so what an operator sees in CloudWatch and what `earnings-sync local` prints agree.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

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
    SYNC_DURATION = "SyncDuration"
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
    DLQ_SENDS = "DlqSends"
    BATCH_DURATION = "BatchDuration"
    DYNAMODB_REQUESTS = "DynamoDBRequests"
    # stream consumer
    STREAM_RECORDS_PROCESSED = "StreamRecordsProcessed"
    STREAM_RECORD_FAILURES = "StreamRecordFailures"
    VALIDATION_PASSED = "ValidationPassed"
    VALIDATION_FAILED = "ValidationFailed"  # plus one ValidationFailed_<rule> per rule
    BOOKKEEPING_ONLY = "BookkeepingOnly"
    SUPERSEDED_REMOVED = "SupersededRemoved"
    SUPERSEDED_CONFLICTS = "SupersededConflicts"
    REGRESSIONS_RESTORED = "RegressionsRestored"
    REGRESSION_CONFLICTS = "RegressionConflicts"
    REMOVE_EVENTS = "RemoveEvents"
    STREAM_BATCH_DURATION = "StreamBatchDuration"
    STREAM_DYNAMODB_REQUESTS = "StreamDynamoDBRequests"
    # upcoming-earnings reads (GSI `upcoming-earnings-index`)
    UPCOMING_QUERIES = "UpcomingIndexQueries"
    UPCOMING_QUERY_DURATION = "UpcomingQueryDuration"
    UPCOMING_INDEX_FAILURES = "UpcomingIndexFailures"
    UPCOMING_SCAN_FALLBACKS = "UpcomingScanFallbacks"


REJECTED_PREFIX = f"{M.ROWS_REJECTED}_"
VALIDATION_FAILED_PREFIX = f"{M.VALIDATION_FAILED}_"


def emit_producer_metrics(metrics: Any, report: dict[str, Any]) -> None:
    """`report` is `SyncReport.as_dict()`."""
    metrics.add_metric(name=M.ROWS_READ, unit=MetricUnit.Count, value=report["rows"])
    metrics.add_metric(name=M.ROWS_REJECTED, unit=MetricUnit.Count, value=report["rejected_total"])
    for reason, count in report["rejected"].items():
        metrics.add_metric(name=f"{REJECTED_PREFIX}{reason}", unit=MetricUnit.Count, value=count)
    metrics.add_metric(name=M.DUPLICATE_ROWS, unit=MetricUnit.Count, value=report["duplicates"])
    metrics.add_metric(name=M.RECORDS_ENQUEUED, unit=MetricUnit.Count, value=report["records_enqueued"])
    metrics.add_metric(name=M.MESSAGES_ENQUEUED, unit=MetricUnit.Count, value=report["messages_sent"])
    metrics.add_metric(name=M.ENQUEUE_FAILURES, unit=MetricUnit.Count, value=len(report["failed_messages"]))
    metrics.add_metric(name=M.SEND_RETRIES, unit=MetricUnit.Count, value=report["send_retries"])
    metrics.add_metric(name=M.SYNC_DURATION, unit=MetricUnit.Milliseconds, value=report["duration_ms"])


def emit_consumer_metrics(metrics: Any, tally: Any, duration_ms: float) -> None:
    """`tally` is a `ConsumerTally`."""
    add = metrics.add_metric
    add(name=M.MESSAGES_PROCESSED, unit=MetricUnit.Count, value=tally.messages)
    add(name=M.MESSAGES_FAILED, unit=MetricUnit.Count, value=tally.messages_failed)
    add(name=M.RECORDS_RECEIVED, unit=MetricUnit.Count, value=tally.records)
    add(name=M.RECORDS_WRITTEN, unit=MetricUnit.Count, value=tally.inserted + tally.updated)
    add(name=M.RECORDS_INSERTED, unit=MetricUnit.Count, value=tally.inserted)
    add(name=M.RECORDS_UPDATED, unit=MetricUnit.Count, value=tally.updated)
    add(name=M.RECORDS_UNCHANGED, unit=MetricUnit.Count, value=tally.unchanged)
    add(name=M.STALE_SYNC_SKIPPED, unit=MetricUnit.Count, value=tally.stale)
    add(name=M.WRITE_FAILURES, unit=MetricUnit.Count, value=tally.messages_failed + tally.poison_records)
    add(name=M.WRITE_RETRIES, unit=MetricUnit.Count, value=tally.retries)
    add(name=M.RETRY_EXHAUSTED, unit=MetricUnit.Count, value=tally.retry_exhausted)
    add(name=M.LOST_RACES, unit=MetricUnit.Count, value=tally.lost_races)
    add(name=M.POISON_RECORDS, unit=MetricUnit.Count, value=tally.poison_records)
    add(name=M.UNDECODABLE_MESSAGES, unit=MetricUnit.Count, value=tally.undecodable_messages)
    add(name=M.DLQ_SENDS, unit=MetricUnit.Count, value=tally.dlq_sends)
    add(name=M.DYNAMODB_REQUESTS, unit=MetricUnit.Count, value=sum(tally.requests.values()))
    for kind, count in sorted(tally.requests.items()):
        add(name=f"{M.DYNAMODB_REQUESTS}_{kind}", unit=MetricUnit.Count, value=count)
    add(name=M.BATCH_DURATION, unit=MetricUnit.Milliseconds, value=round(duration_ms, 1))


def emit_stream_metrics(metrics: Any, tally: Any, duration_ms: float) -> None:
    """`tally` is a `stream.StreamTally`; one ValidationFailed_<rule> per rule seen."""
    add = metrics.add_metric
    add(name=M.STREAM_RECORDS_PROCESSED, unit=MetricUnit.Count, value=tally.records)
    add(name=M.STREAM_RECORD_FAILURES, unit=MetricUnit.Count, value=tally.failures)
    add(name=M.VALIDATION_PASSED, unit=MetricUnit.Count, value=tally.validation_passed)
    add(name=M.VALIDATION_FAILED, unit=MetricUnit.Count, value=tally.validation_failed)
    for rule, count in sorted(tally.violations.items()):
        add(name=f"{VALIDATION_FAILED_PREFIX}{rule}", unit=MetricUnit.Count, value=count)
    add(name=M.BOOKKEEPING_ONLY, unit=MetricUnit.Count, value=tally.bookkeeping_only)
    add(name=M.SUPERSEDED_REMOVED, unit=MetricUnit.Count, value=tally.superseded_removed)
    add(name=M.SUPERSEDED_CONFLICTS, unit=MetricUnit.Count, value=tally.superseded_conflicts)
    add(name=M.REGRESSIONS_RESTORED, unit=MetricUnit.Count, value=tally.regressions_restored)
    add(name=M.REGRESSION_CONFLICTS, unit=MetricUnit.Count, value=tally.regression_conflicts)
    add(name=M.REMOVE_EVENTS, unit=MetricUnit.Count, value=tally.removes)
    add(name=M.STREAM_DYNAMODB_REQUESTS, unit=MetricUnit.Count, value=sum(tally.requests.values()))
    for kind, count in sorted(tally.requests.items()):
        add(name=f"{M.STREAM_DYNAMODB_REQUESTS}_{kind}", unit=MetricUnit.Count, value=count)
    add(name=M.STREAM_BATCH_DURATION, unit=MetricUnit.Milliseconds, value=round(duration_ms, 1))


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
        unit = MetricUnit.Milliseconds if name == M.UPCOMING_QUERY_DURATION else MetricUnit.Count
        metrics.add_metric(name=name, unit=unit, value=value)


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
