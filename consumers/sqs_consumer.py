"""Consumer Lambda: SQS batch → conflict-safe upsert, with partial batch failure reporting."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from earnings_sync import aws
from earnings_sync.calendar_table import CalendarTable
from earnings_sync.consumer import ConsumerTally, MessageConsumer, MessageContext, MessageFailed
from earnings_sync.lambda_setup import batch_processor, observed_function
from earnings_sync.ledger import SyncLedger
from earnings_sync.observability import ConsumerBatchLog, emit_consumer_metrics, emit_memory_metrics
from earnings_sync.settings import Settings

observed = observed_function()
logger, metrics = observed.logger, observed.metrics
processor = batch_processor(EventType.SQS)


def build_consumer(settings: Settings) -> MessageConsumer:
    dynamodb = aws.client("dynamodb", max_attempts=settings.aws_max_attempts)
    table = CalendarTable(dynamodb, settings.table_name, attempts=settings.write_attempts)
    ledger = SyncLedger(dynamodb, settings.ledger_table, retention_days=settings.ledger_retention_days) if settings.ledger_table else None
    return MessageConsumer(
        table, aws.client("sqs"), settings.dlq_url, settings.max_receive_count, ledger, write_mode=settings.write_mode
    )


def message_context(record: SQSRecord) -> MessageContext:
    """What the consumer needs of an SQS record besides its body."""
    return MessageContext(
        message_id=record.message_id,
        receive_count=int(record.attributes.approximate_receive_count or 1),
        attributes=record.raw_event.get("messageAttributes") or {},
    )


@observed.handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    consumer = build_consumer(Settings.from_env())
    batch = ConsumerBatchLog(logger, ConsumerTally())

    def record_handler(record: SQSRecord) -> None:
        message = message_context(record)
        batch.message(message)
        try:
            consumer.process(record.body, message, batch.tally)
        except MessageFailed as exc:
            batch.message_failed(exc, message)
            raise

    started = time.perf_counter()
    with aws.counting_throttles(consumer.table.client, consumer.sqs) as throttles:
        try:
            response = process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            logger.remove_keys(["message_id", "sync_id"])
            emit_consumer_metrics(metrics, batch.tally, duration_ms, throttles.count)
            memory = emit_memory_metrics(metrics, context)
    batch.finished(response, throttles.count, duration_ms, memory)
    return response
