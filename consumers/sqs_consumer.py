"""Consumer Lambda: SQS batch → conflict-safe upsert, with partial batch failure reporting."""

from __future__ import annotations

import os
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from earnings_sync import aws
from earnings_sync.calendar_table import CalendarTable
from earnings_sync.consumer import ConsumerTally, MessageConsumer, MessageContext, MessageFailed
from earnings_sync.ledger import SyncLedger
from earnings_sync.observability import NAMESPACE, SERVICE, emit_consumer_metrics, emit_memory_metrics
from earnings_sync.settings import Settings

logger = Logger(service=os.getenv("POWERTOOLS_SERVICE_NAME", SERVICE))
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE), service=os.getenv("POWERTOOLS_SERVICE_NAME", SERVICE))
# A batch where every message failed is reported item by item too, so metrics still flush.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
MAX_LOGGED_SYNC_IDS = 10


def build_consumer(settings: Settings) -> MessageConsumer:
    dynamodb = aws.client("dynamodb", max_attempts=settings.aws_max_attempts)
    table = CalendarTable(dynamodb, settings.table_name, attempts=settings.write_attempts)
    ledger = SyncLedger(dynamodb, settings.ledger_table, retention_days=settings.ledger_retention_days) if settings.ledger_table else None
    return MessageConsumer(
        table, aws.client("sqs"), settings.dlq_url, settings.max_receive_count, ledger, write_mode=settings.write_mode
    )


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    consumer = build_consumer(Settings.from_env())
    tally = ConsumerTally()
    sync_ids: dict[str, None] = {}  # ordered set: which syncs this batch carried

    def record_handler(record: SQSRecord) -> None:
        attributes = record.raw_event.get("messageAttributes") or {}
        sync_id = (attributes.get("sync_id") or {}).get("stringValue", "")
        sync_ids[sync_id] = None
        logger.append_keys(message_id=record.message_id, sync_id=sync_id)
        context_ = MessageContext(
            message_id=record.message_id,
            receive_count=int(record.attributes.approximate_receive_count or 1),
            attributes=attributes,
        )
        try:
            consumer.process(record.body, context_, tally)
        except MessageFailed as exc:
            logger.warning("message failed, SQS will deliver it again", extra={"reason": str(exc), "receive_count": context_.receive_count})
            raise

    started = time.perf_counter()
    with aws.counting_throttles(consumer.table.client, consumer.sqs) as throttles:
        try:
            response = process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            logger.remove_keys(["message_id", "sync_id"])
            emit_consumer_metrics(metrics, tally, duration_ms, throttles.count)
            memory = emit_memory_metrics(metrics, context)
    if tally.stale or tally.lost_races:
        # Conflicts are expected (replays, redeliveries, concurrent syncs): counts and a few keys.
        logger.info(
            "conflicts resolved",
            extra={
                "stale_skipped": tally.stale,
                "stale_keys": [list(key) for key in tally.stale_keys],
                "lost_races": tally.lost_races,
            },
        )
    logger.info(
        "batch processed",
        extra={
            "messages": tally.messages,
            "sync_ids": list(sync_ids)[:MAX_LOGGED_SYNC_IDS],
            "failed": len(response.get("batchItemFailures", [])),
            "inserted": tally.inserted,
            "updated": tally.updated,
            "unchanged": tally.unchanged,
            "stale_skipped": tally.stale,
            "poison_records": tally.poison_records,
            "invalid_messages": tally.invalid_messages,
            "dlq_sends": tally.dlq_sends,
            "retries": tally.retries,
            "retry_exhausted": tally.retry_exhausted,
            "throttles": throttles.count,
            "duration_ms": round(duration_ms, 1),
            **memory,
        },
    )
    return response
