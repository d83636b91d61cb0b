"""Stream consumer Lambda: `earningsCalendar` change records → validation, superseded-date cleanup,
regression repair, change events on EventBridge; partial batch failures are reported by sequence number."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from earnings_sync import aws
from earnings_sync.calendar_table import CalendarTable
from earnings_sync.change_events import EventBridgePublisher
from earnings_sync.consistency import item_key
from earnings_sync.lambda_setup import batch_processor, observed_function
from earnings_sync.ledger import SyncLedger
from earnings_sync.observability import StreamBatchLog, emit_memory_metrics, emit_stream_metrics
from earnings_sync.settings import Settings
from earnings_sync.stream import StreamProcessor, StreamTally

observed = observed_function()
logger, metrics = observed.logger, observed.metrics
processor = batch_processor(EventType.DynamoDBStreams)


def build_processor(settings: Settings) -> StreamProcessor:
    client = aws.client("dynamodb", max_attempts=settings.aws_max_attempts)
    sole_sync = SyncLedger(client, settings.ledger_table).sole_sync() if settings.ledger_table else None
    publisher = None
    if settings.event_bus_name:
        events = aws.client("events", max_attempts=settings.aws_max_attempts)
        publisher = EventBridgePublisher(events, settings.event_bus_name, attempts=settings.write_attempts)
    return StreamProcessor(CalendarTable(client, settings.table_name), sole_sync, publisher=publisher)


@observed.handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    stream = build_processor(Settings.from_env())
    batch = StreamBatchLog(logger, StreamTally(), key_of=item_key)

    def record_handler(record: DynamoDBRecord) -> None:
        batch.record(record.raw_event)
        try:
            stream.process(record.raw_event, batch.tally)
        except Exception as exc:
            batch.record_failed(record.raw_event, exc)
            raise

    started = time.perf_counter()
    with aws.counting_throttles(stream.client) as throttles:
        try:
            response = process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
            response = stream.finish(response, batch.tally)  # the last events; records whose events did not go out
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            emit_stream_metrics(metrics, batch.tally, duration_ms, throttles.count)
            memory = emit_memory_metrics(metrics, context)
    batch.finished(response, throttles.count, duration_ms, memory)
    return response
