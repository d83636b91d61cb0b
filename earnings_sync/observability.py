"""Metric names and how domain results become metrics (Powertools Metrics, Embedded Metric Format).

The domain code only counts (`ConsumerTally`, `SyncReport`); handlers turn the counts into metrics
here, once per invocation. `parse_emf` reads the same EMF lines back, for the local runner's summary
and for tests, so what an operator sees in CloudWatch and what `earnings-sync local` prints agree.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
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


REJECTED_PREFIX = f"{M.ROWS_REJECTED}_"


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
    add(name=M.BATCH_DURATION, unit=MetricUnit.Milliseconds, value=round(duration_ms, 1))


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
