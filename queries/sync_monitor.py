"""Sync monitor Lambda: on a schedule, asks the completeness ledger whether the newest syncs
completed (earnings_sync/sync_watch.py) and publishes `SyncsComplete`, `SyncsIncomplete` and
`SyncCompletions`, which the missing-sync and incomplete-sync alarms watch. The event (EventBridge's
scheduled event) carries nothing it needs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from earnings_sync import aws
from earnings_sync.lambda_setup import observed_function
from earnings_sync.ledger import SyncLedger
from earnings_sync.observability import emit_memory_metrics
from earnings_sync.settings import Settings
from earnings_sync.sync_identity import utc_now
from earnings_sync.sync_watch import SyncWatchLog, watch_syncs

observed = observed_function()
logger, metrics = observed.logger, observed.metrics


def build_ledger(settings: Settings) -> SyncLedger:
    if not settings.ledger_table:
        raise ValueError("LEDGER_TABLE is not set: the sync monitor reads the completeness ledger")
    return SyncLedger(aws.client("dynamodb", max_attempts=settings.aws_max_attempts), settings.ledger_table)


@observed.handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()
    watch_log = SyncWatchLog(logger, metrics)
    try:
        watch = watch_syncs(
            build_ledger(settings),
            utc_now(),
            window=dt.timedelta(hours=settings.sync_watch_hours),
            grace=dt.timedelta(minutes=settings.sync_incomplete_after_minutes),
        )
    except Exception as exc:
        watch_log.failed(exc)
        raise
    finally:
        memory = emit_memory_metrics(metrics, context)
    return watch_log.watched(watch, memory)
