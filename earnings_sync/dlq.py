"""What the pipeline puts in the dead-letter queue, and why, so operators can filter and replay."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

FailureKind = Literal["poison", "retries_exhausted", "undecodable", "invalid_metadata"]
FAILURE_KINDS: tuple[FailureKind, ...] = ("poison", "retries_exhausted", "undecodable", "invalid_metadata")

# Message attributes every DLQ message written by the pipeline carries.
ATTR_KIND = "failure_kind"
ATTR_REASON = "failure_reason"
ATTR_SYNC_ID = "sync_id"
ATTR_SOURCE_MESSAGE_ID = "source_message_id"
ATTR_FAILED_AT = "failed_at"
ATTR_RECEIVE_COUNT = "receive_count"
ATTR_REPLAY_COUNT = "replay_count"
MAX_REASON_CHARS = 1000


class RecordFailure(msgspec.Struct, frozen=True):
    """Why one record of a DLQ message failed; `index` points into the message's `records`."""

    index: int
    reason: str


class DeadLetter(msgspec.Struct, frozen=True):
    """A DLQ body: a valid sync message (replayable as is) plus the reason for each record.

    `seq` and `positions` (each record's index in that message) keep the records traceable to the
    message they came from, so the completeness ledger can net a replay against that message.
    """

    sync_id: str
    synced_at: str
    records: list[msgspec.Raw]
    failures: list[RecordFailure]
    v: int = 1
    seq: int | None = None
    positions: list[int] | None = None


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def failure_attributes(
    kind: FailureKind,
    reason: str,
    *,
    sync_id: str = "",
    source_message_id: str = "",
    receive_count: int = 0,
    carried: dict[str, Any] | None = None,
) -> dict[str, dict[str, str]]:
    """Attributes for a DLQ message; `carried` keeps the source message's own attributes."""
    attributes = {
        name: {"DataType": a["DataType"] if "DataType" in a else a["dataType"],
               "StringValue": a["StringValue"] if "StringValue" in a else a.get("stringValue", "")}
        for name, a in (carried or {}).items()
        if (a.get("DataType") or a.get("dataType", "")).startswith(("String", "Number"))
    }
    attributes.update(
        {
            ATTR_KIND: _string(kind),
            ATTR_REASON: _string(reason[:MAX_REASON_CHARS] or "unknown"),
            ATTR_FAILED_AT: _string(utc_now()),
        }
    )
    if sync_id:
        attributes[ATTR_SYNC_ID] = _string(sync_id)
    if source_message_id:
        attributes[ATTR_SOURCE_MESSAGE_ID] = _string(source_message_id)
    if receive_count:
        attributes[ATTR_RECEIVE_COUNT] = {"DataType": "Number", "StringValue": str(receive_count)}
    return attributes


def send_dead_letter(sqs: Any, dlq_url: str, body: str, attributes: dict[str, dict[str, str]]) -> str:
    """Send one DLQ message; raises on failure so the caller keeps the source message for a retry."""
    response = sqs.send_message(QueueUrl=dlq_url, MessageBody=body, MessageAttributes=attributes)
    return response["MessageId"]
