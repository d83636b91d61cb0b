"""boto3 clients configured once: SDK retries in "standard" mode (exponential backoff + jitter)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError


class ConnectAttemptLimit:
    """`needs-retry` handler that ends the retries of an endpoint that cannot be reached.

    Throttling keeps the client's full budget of attempts; a refused or timed-out connection gives
    up after `attempts`, so a command pointed at a dead endpoint says so at once instead of backing
    off through every attempt. Registered first, it raises the connection error itself: that is the
    only answer every botocore version takes as "do not retry".
    """

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts

    def __call__(self, attempts: int = 0, caught_exception: BaseException | None = None, **_: Any) -> None:
        if isinstance(caught_exception, (EndpointConnectionError, ConnectTimeoutError)) and attempts >= self.attempts:
            raise caught_exception
        return None


@functools.lru_cache(maxsize=32)
def _cached_client(
    service: str,
    endpoint_url: str | None,
    region: str | None,
    max_attempts: int,
    connect_attempts: int | None = None,
    read_timeout: int = 30,
) -> Any:
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # total, like AWS_MAX_ATTEMPTS
        connect_timeout=5,
        read_timeout=read_timeout,
        max_pool_connections=20,
    )
    made = boto3.session.Session().client(service, endpoint_url=endpoint_url, region_name=region, config=config)
    if connect_attempts is not None:
        # On the service's own event, ahead of the SDK's retry handler (registered there too).
        event = f"needs-retry.{made.meta.service_model.service_id.hyphenize()}"
        made.meta.events.register_first(event, ConnectAttemptLimit(connect_attempts))
    return made


def client(
    service: str,
    *,
    max_attempts: int = 8,
    endpoint_url: str | None = None,
    connect_attempts: int | None = None,
    read_timeout: int = 30,
) -> Any:
    """A reused client per (service, endpoint, region): Lambda keeps it warm across invocations.

    The endpoint comes from the standard AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> variables
    (boto3 reads them itself) unless given; they are part of the cache key so a process that moves
    between endpoints (tests, the local runner) never talks to a stale one. `connect_attempts` caps
    the attempts on an endpoint that refuses or times out the connection (the command line's
    clients); the handlers keep the SDK's retries for those too. `read_timeout` is for a call that
    answers late by design (a synchronous Lambda invocation lasts as long as the function runs).
    """
    env_endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL")
    # Without the variables (an operator's shell), the profile's region applies, as in the AWS CLI.
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or boto3.session.Session().region_name or "us-east-1"
    return _cached_client(service, endpoint_url or env_endpoint, region, max_attempts, connect_attempts, read_timeout)


# Error codes AWS services use for "slow down" (botocore's standard retry mode treats the same ones
# as throttling), plus HTTP 429 whatever the code.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ThrottledException",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)


class ThrottleCount:
    """Throttled responses seen by the clients it watches, the ones the SDK retried silently included:
    `WriteRetries`/`RetryAttempts` say how often a call was retried, not why."""

    def __init__(self) -> None:
        self.count = 0

    def observe(self, response: Any = None, **_: Any) -> None:
        """`needs-retry` handler: runs after every attempt; returning None leaves the decision to the SDK."""
        if response is None:  # a connection error: no reply to look at
            return None
        http, parsed = response
        code = str((parsed or {}).get("Error", {}).get("Code", ""))
        if code in THROTTLING_CODES or getattr(http, "status_code", None) == 429:
            self.count += 1
        return None


@contextlib.contextmanager
def counting_throttles(*clients: Any) -> Iterator[ThrottleCount]:
    """Count throttled responses of these clients while the block runs (one invocation).

    The clients are cached across invocations, so the handler is attached for the block only.
    """
    counter = ThrottleCount()
    watched = list(dict.fromkeys(c for c in clients if c is not None))
    for watched_client in watched:
        watched_client.meta.events.register("needs-retry", counter.observe)
    try:
        yield counter
    finally:
        for watched_client in watched:
            watched_client.meta.events.unregister("needs-retry", counter.observe)
