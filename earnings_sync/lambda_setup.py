"""The Powertools plumbing every Lambda entry point shares, set up here once.

Each entry point calls these at import time and keeps what they return as module globals, so
Lambda reuses them across invocations of one execution environment, and a second copy of a handler
module (a second environment) gets its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics

from earnings_sync.observability import NAMESPACE, SERVICE

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

LambdaHandler = TypeVar("LambdaHandler", bound=Callable[..., Any])


@dataclass(frozen=True)
class ObservedFunction:
    """One Lambda function's Logger and Metrics, and the decorator that wires them to its handler."""

    logger: Logger
    metrics: Metrics

    def handler(self, function: LambdaHandler) -> LambdaHandler:
        """Metrics flushed after every invocation, raised or not, with the cold-start metric; the
        context's fields on every log line and the previous invocation's keys cleared."""
        with_context = self.logger.inject_lambda_context(clear_state=True)(function)
        return self.metrics.log_metrics(capture_cold_start_metric=True)(with_context)


def observed_function() -> ObservedFunction:
    """Logger and Metrics named by POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE, as the
    template sets them (defaults: the service and namespace every alarm and dashboard names)."""
    service = os.getenv("POWERTOOLS_SERVICE_NAME", SERVICE)
    namespace = os.getenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    return ObservedFunction(Logger(service=service), Metrics(namespace=namespace, service=service))


def batch_processor(event_type: EventType) -> BatchProcessor:
    """Partial batch failures for SQS or DynamoDB streams. A batch where every record failed is
    reported record by record too (not raised), so the handler still logs and flushes its metrics."""
    # Imported on use: the producer and the query function never load the batch utilities, a large
    # part of a consumer's cold start.
    from aws_lambda_powertools.utilities.batch import BatchProcessor

    return BatchProcessor(event_type=event_type, raise_on_entire_batch_failure=False)
