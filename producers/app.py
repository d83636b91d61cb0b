"""Producer Lambda: one invocation = one sync of the earnings calendar into the queue."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from earnings_sync import aws
from earnings_sync.observability import NAMESPACE, SERVICE, M, emit_producer_metrics
from earnings_sync.producer import EnqueueError, sync_from_event
from earnings_sync.records import EarningsRecord, Rejection, UpstreamError
from earnings_sync.settings import Settings

logger = Logger(service=os.getenv("POWERTOOLS_SERVICE_NAME", SERVICE))
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE), service=os.getenv("POWERTOOLS_SERVICE_NAME", SERVICE))
MAX_LOGGED_REJECTIONS = 100


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()
    logged = 0

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

    try:
        report = sync_from_event(
            event,
            settings,
            sqs=aws.client("sqs", max_attempts=settings.aws_max_attempts),
            s3=aws.client("s3") if ("s3" in event or "Records" in event) else None,
            ssm=aws.client("ssm") if settings.alphavantage_api_key_parameter else None,
            on_rejection=on_rejection,
            on_duplicate=on_duplicate,
        )
    except UpstreamError as exc:
        metrics.add_metric(name=M.UPSTREAM_ERRORS, unit=MetricUnit.Count, value=1)
        logger.error("upstream error, nothing enqueued", extra={"kind": exc.kind, "upstream_message": exc.message})
        raise
    except EnqueueError as exc:
        summary = exc.report.as_dict()
        emit_producer_metrics(metrics, summary)
        logger.error("sync incomplete: messages not sent", extra={"sync": summary})
        raise
    summary = report.as_dict()
    logger.append_keys(sync_id=report.sync_id)
    emit_producer_metrics(metrics, summary)
    logger.info("sync enqueued", extra={"sync": {k: v for k, v in summary.items() if k != "rejections"}})
    return summary
