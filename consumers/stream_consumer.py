"""Stream consumer Lambda: `earningsCalendar` change records → validation, superseded-date cleanup,
regression repair; partial batch failures are reported by sequence number."""

from __future__ import annotations

import os
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from earnings_sync import aws
from earnings_sync.calendar_table import CalendarTable
from earnings_sync.consistency import item_key
from earnings_sync.ledger import SyncLedger
from earnings_sync.observability import NAMESPACE, SERVICE, emit_memory_metrics, emit_stream_metrics
from earnings_sync.settings import Settings
from earnings_sync.stream import StreamProcessor, StreamTally

logger = Logger(service=os.getenv("POWERTOOLS_SERVICE_NAME", SERVICE))
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE), service=os.getenv("POWERTOOLS_SERVICE_NAME", SERVICE))
# A batch where every record failed is reported record by record too, so metrics still flush.
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
MAX_LOGGED_SYNC_IDS = 10


def _sync_id(change: dict[str, Any]) -> str:
    """The sync that made this change (new image; old image for a REMOVE): joins the producer's logs."""
    image = change.get("NewImage") or change.get("OldImage") or {}
    return str((image.get("sync_id") or {}).get("S", ""))


def build_processor(settings: Settings) -> StreamProcessor:
    client = aws.client("dynamodb", max_attempts=settings.aws_max_attempts)
    sole_sync = SyncLedger(client, settings.ledger_table).sole_sync() if settings.ledger_table else None
    return StreamProcessor(CalendarTable(client, settings.table_name), sole_sync)


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    stream = build_processor(Settings.from_env())
    tally = StreamTally()
    sync_ids: dict[str, None] = {}  # ordered set: which syncs' writes this batch carried

    def record_handler(record: DynamoDBRecord) -> None:
        change = record.raw_event.get("dynamodb") or {}
        sync_ids[_sync_id(change)] = None
        try:
            stream.process(record.raw_event, tally)
        except Exception as exc:
            tally.failures += 1
            logger.warning(
                "stream record failed, Lambda will retry from it",
                extra={
                    "sequence_number": change.get("SequenceNumber"),
                    "event_name": record.raw_event.get("eventName"),
                    "key": list(item_key(change.get("Keys") or {})),
                    "sync_id": _sync_id(change),
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                },
            )
            raise

    started = time.perf_counter()
    with aws.counting_throttles(stream.client) as throttles:
        try:
            response = process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            emit_stream_metrics(metrics, tally, duration_ms, throttles.count)
            memory = emit_memory_metrics(metrics, context)
    for key, rules in tally.invalid:
        logger.warning("item breaks consistency rules", extra={"key": list(key), "rules": rules})
    if tally.removed or tally.restored:
        logger.info(
            "table tidied",
            extra={"superseded_removed": [list(k) for k in tally.removed], "regressions_restored": [list(k) for k in tally.restored]},
        )
    logger.info(
        "stream batch processed",
        extra={
            "records": tally.records,
            "sync_ids": list(sync_ids)[:MAX_LOGGED_SYNC_IDS],
            "failed": len(response.get("batchItemFailures", [])),
            "validation_passed": tally.validation_passed,
            "validation_failed": dict(tally.violations),
            "bookkeeping_only": tally.bookkeeping_only,
            "superseded_removed": tally.superseded_removed,
            "superseded_conflicts": tally.superseded_conflicts,
            "regressions_restored": tally.regressions_restored,
            "removes": tally.removes,
            "throttles": throttles.count,
            "duration_ms": round(duration_ms, 1),
            **memory,
        },
    )
    return response
