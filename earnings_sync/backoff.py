"""Backoff between our own retries (unprocessed DynamoDB work, SQS sends, AlphaVantage requests)."""

from __future__ import annotations

import random
from collections.abc import Iterable


def backoff_delays(attempts: int, base: float = 0.05, cap: float = 5.0) -> Iterable[float]:
    """Exponential backoff with full jitter (the AWS architecture blog's recommendation)."""
    for attempt in range(attempts):
        yield random.uniform(0, min(cap, base * 2**attempt))
