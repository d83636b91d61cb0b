"""boto3 clients configured once: SDK retries in "standard" mode (exponential backoff + jitter)."""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3
from botocore.config import Config


@functools.lru_cache(maxsize=32)
def _cached_client(service: str, endpoint_url: str | None, region: str | None, max_attempts: int) -> Any:
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # total, like AWS_MAX_ATTEMPTS
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=20,
    )
    return boto3.session.Session().client(service, endpoint_url=endpoint_url, region_name=region, config=config)


def client(service: str, *, max_attempts: int = 8, endpoint_url: str | None = None) -> Any:
    """A reused client per (service, endpoint, region): Lambda keeps it warm across invocations.

    The endpoint comes from the standard AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> variables
    (boto3 reads them itself) unless given; they are part of the cache key so a process that moves
    between endpoints (tests, the local runner) never talks to a stale one.
    """
    env_endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL")
    # Without the variables (an operator's shell), the profile's region applies, as in the AWS CLI.
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or boto3.session.Session().region_name or "us-east-1"
    return _cached_client(service, endpoint_url or env_endpoint, region, max_attempts)
