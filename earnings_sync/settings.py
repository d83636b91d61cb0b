"""One typed settings object, read from the environment the template (or the local runner) sets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    table_name: str = "earningsCalendar"
    queue_url: str = ""
    dlq_url: str = ""
    max_receive_count: int = 5
    alphavantage_api_key: str = ""
    alphavantage_api_key_parameter: str = ""
    alphavantage_horizon: str = "3month"
    alphavantage_url: str = "https://www.alphavantage.co/query"
    http_timeout_seconds: float = 20.0
    http_attempts: int = 3
    max_records_per_message: int = 25
    max_payload_bytes: int = 256 * 1024
    aws_max_attempts: int = 8  # boto3 "standard" retry mode: exponential backoff with jitter
    write_attempts: int = 8  # our own loop for UnprocessedItems/UnprocessedKeys, lost races, PutEvents' failed entries
    write_mode: Literal["batch", "conditional"] = "batch"  # README, "Write path"
    ledger_table: str = ""  # the completeness ledger (docs/ledger.md); empty: not recorded
    ledger_retention_days: int = 35  # outlives the DLQ's 14 days, so late replays still net out
    event_bus_name: str = ""  # where the stream consumer publishes change events (name or ARN); empty: none
    sync_watch_hours: float = 26.0  # the sync monitor's window (earnings_sync/sync_watch.py)
    sync_incomplete_after_minutes: float = 60.0  # a sync not complete this long after it started is incomplete
    allow_path_events: bool = False  # `{"path": ...}` producer events: the local runner and CLI only, never on Lambda

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every field maps to its upper-case environment variable (TABLE_NAME, QUEUE_URL, ...)."""
        environ = os.environ if environ is None else environ
        values = {
            field: environ[field.upper()]
            for field in cls.__struct_fields__
            if environ.get(field.upper(), "") != ""
        }
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid configuration: {exc}") from exc
