"""Producer Lambda: one invocation = one sync of the earnings calendar into the queue."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from earnings_sync import aws
from earnings_sync.ledger import SyncLedger
from earnings_sync.observability import NAMESPACE, SERVICE, M, add_metric, emit_memory_metrics, emit_producer_metrics
from earnings_sync.producer import EnqueueError, SyncAborted, SyncReport, sync_from_event
from earnings_sync.records import EarningsRecord, NotACalendarError, Rejection, UpstreamError
from earnings_sync.settings import Settings
from earnings_sync.sources import SourceError

logger = Logger(service=os.getenv("POWERTOOLS_SERVICE_NAME", SERVICE))
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE), service=os.getenv("POWERTOOLS_SERVICE_NAME", SERVICE))
MAX_LOGGED_REJECTIONS = 100
MAX_LOGGED_FAILURES = 20  # failed messages listed in the error line; all of them are counted


def _loggable(summary: dict[str, Any]) -> dict[str, Any]:
    """The report without the per-row rejections (each was logged on its own) and with a capped
    list of failed messages, so one log line stays readable whatever the sync did."""
    shown = {k: v for k, v in summary.items() if k not in ("rejections", "failed_messages")}
    failed = summary.get("failed_messages") or []
    if failed:
        shown["failed_messages"] = failed[:MAX_LOGGED_FAILURES]
        shown["failed_messages_total"] = len(failed)
    return shown


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()
    logged = 0

    def on_start(report: SyncReport) -> None:
        logger.append_keys(sync_id=report.sync_id)
        logger.info("sync started", extra={"source": report.source, "synced_at": report.synced_at})

    def on_rejection(rejection: Rejection) -> None:
        nonlocal logged
        if logged < MAX_LOGGED_REJECTIONS:  # all of them are counted; the first ones are logged
            logger.warning("row rejected", extra={"line": rejection.line, "reason": rejection.reason, "detail": rejection.detail})
        logged += 1

    def on_duplicate(earlier: EarningsRecord, later: EarningsRecord) -> None:
        logger.info(
            "duplicate key in snapshot, later row wins",
            extra={"key": list(later.key), "fiscal_periods": [earlier.fiscal_date_ending, later.fiscal_date_ending]},
        )

    sqs = aws.client("sqs", max_attempts=settings.aws_max_attempts)
    s3 = aws.client("s3") if isinstance(event, dict) and ("s3" in event or "Records" in event) else None
    ssm = aws.client("ssm") if settings.alphavantage_api_key_parameter else None
    ledger = None
    if settings.ledger_table:
        dynamodb = aws.client("dynamodb", max_attempts=settings.aws_max_attempts)
        ledger = SyncLedger(dynamodb, settings.ledger_table, retention_days=settings.ledger_retention_days)
    try:
        with aws.counting_throttles(sqs, s3, ssm, ledger.client if ledger else None) as throttles:
            try:
                report = sync_from_event(
                    event, settings, sqs=sqs, s3=s3, ssm=ssm,
                    on_start=on_start, on_rejection=on_rejection, on_duplicate=on_duplicate, ledger=ledger,
                )
            except NotACalendarError as exc:  # AlphaVantage's error replies and files/objects that are no calendar
                add_metric(metrics, M.UPSTREAM_ERRORS, 1)
                if isinstance(exc, UpstreamError):
                    logger.error("upstream error, nothing enqueued", extra={"kind": exc.kind, "upstream_message": exc.message})
                else:
                    logger.error("not an earnings calendar, nothing enqueued", extra={"kind": exc.kind, "problem": exc.message})
                raise
            except SourceError as exc:
                logger.error("source unavailable, nothing enqueued", extra={"problem": str(exc)})
                raise
            except EnqueueError as exc:
                summary = exc.report.as_dict()
                emit_producer_metrics(metrics, summary, throttles.count)
                logger.error("sync incomplete: messages not sent", extra={"sync": _loggable(summary), "throttles": throttles.count})
                raise
            except SyncAborted as exc:
                summary = exc.report.as_dict()
                emit_producer_metrics(metrics, summary, throttles.count)
                logger.error("sync aborted", extra={"reason": exc.report.aborted, "sync": _loggable(summary), "throttles": throttles.count})
                raise
    finally:
        memory = emit_memory_metrics(metrics, context)
    summary = report.as_dict()
    emit_producer_metrics(metrics, summary, throttles.count)
    logger.info("sync enqueued", extra={"sync": _loggable(summary), "throttles": throttles.count, **memory})
    return summary
