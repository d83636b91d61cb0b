"""Producer Lambda: one invocation = one sync of the earnings calendar into the queue."""

from __future__ import annotations

from typing import Any, NamedTuple

from aws_lambda_powertools.utilities.typing import LambdaContext

from earnings_sync import aws
from earnings_sync.lambda_setup import observed_function
from earnings_sync.ledger import SyncLedger
from earnings_sync.observability import emit_memory_metrics
from earnings_sync.producer import SyncLog, sync_from_event
from earnings_sync.settings import Settings

observed = observed_function()
logger, metrics = observed.logger, observed.metrics


class Adapters(NamedTuple):
    """What `sync_from_event` reads from and writes to, by its keyword names."""

    sqs: Any
    s3: Any
    ssm: Any
    ledger: SyncLedger | None

    def clients(self) -> tuple[Any, ...]:
        """Every client whose throttled responses the sync's metrics count."""
        return self.sqs, self.s3, self.ssm, self.ledger.client if self.ledger else None


def build_adapters(settings: Settings, event: Any) -> Adapters:
    """S3 only for an S3 event, SSM only when the API key is a parameter, the ledger only when configured."""
    sqs = aws.client("sqs", max_attempts=settings.aws_max_attempts)
    s3 = aws.client("s3") if isinstance(event, dict) and ("s3" in event or "Records" in event) else None
    ssm = aws.client("ssm") if settings.alphavantage_api_key_parameter else None
    ledger = None
    if settings.ledger_table:
        dynamodb = aws.client("dynamodb", max_attempts=settings.aws_max_attempts)
        ledger = SyncLedger(dynamodb, settings.ledger_table, retention_days=settings.ledger_retention_days)
    return Adapters(sqs, s3, ssm, ledger)


@observed.handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()
    adapters = build_adapters(settings, event)
    sync_log = SyncLog(logger, metrics)
    try:
        with aws.counting_throttles(*adapters.clients()) as throttles:
            try:
                report = sync_from_event(event, settings, **adapters._asdict(), **sync_log.callbacks())
            except Exception as exc:
                sync_log.failed(exc, throttles.count)
                raise
    finally:
        memory = emit_memory_metrics(metrics, context)
    return sync_log.enqueued(report, throttles.count, memory)
