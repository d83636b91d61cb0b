"""Pure parts of the DLQ replay: durations, the token bucket, filters, what gets sent back."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError

from earnings_sync import dlq
from earnings_sync.messages import decode_envelope, decode_record, encode_records
from earnings_sync.records import EarningsRecord
from earnings_sync.replay import (
    UNKNOWN_KIND,
    ReplayFilter,
    TokenBucket,
    _unsupported,
    parse_duration,
    parse_message,
    replay_attributes,
    replay_body,
)
from tests.helpers import FakeClock

NOW = dt.datetime(2025, 7, 20, 12, 0, tzinfo=dt.UTC)


def received(body: str, attributes: dict[str, Any] | None = None, sent_ms: int | None = None) -> dict[str, Any]:
    """A ReceiveMessage entry."""
    message: dict[str, Any] = {"MessageId": "m-1", "ReceiptHandle": "rh-1", "Body": body, "Attributes": {}}
    if attributes is not None:
        message["MessageAttributes"] = {
            name: {"DataType": value["DataType"], "StringValue": value["StringValue"]} for name, value in attributes.items()
        }
    if sent_ms is not None:
        message["Attributes"]["SentTimestamp"] = str(sent_ms)
    return message


def letter_body(*records: EarningsRecord) -> str:
    letter = dlq.DeadLetter(
        sync_id="sync-a",
        synced_at="2025-07-19T06:00:00.000000Z",
        records=encode_records(records),
        failures=[dlq.RecordFailure(i, f"invalid record: bad_report_date #{i}") for i in range(len(records))],
    )
    return msgspec.json.encode(letter).decode()


def rec(symbol: str, date: str = "2025-08-01") -> EarningsRecord:
    return EarningsRecord(symbol, date, f"{symbol} Inc", "2025-06-30", "1.00", "USD")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("3d", 259200), ("1w", 604800), (" 2H ", 7200)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "2x", "1h foo", "-5m"])
def test_parse_duration_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_token_bucket_allows_one_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, clock=clock, sleep=clock.sleep)
    assert bucket.batch_size == 5
    for _ in range(4):
        bucket.acquire(5)
    assert clock.sleeps == pytest.approx([1.0, 1.0, 1.0])  # 20 messages at 5/s after a burst of 5
    clock.now += 10  # idle time refills only up to the burst
    bucket.acquire(5)
    bucket.acquire(1)
    assert len(clock.sleeps) == 4 and clock.sleeps[-1] == pytest.approx(0.2)


def test_token_bucket_below_one_per_second_sends_singly() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0.5, clock=clock, sleep=clock.sleep)
    assert bucket.batch_size == 1
    for _ in range(3):
        bucket.acquire(1)
    assert clock.sleeps == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError):
        bucket.acquire(2)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_a_fast_bucket_batches_by_ten() -> None:
    assert TokenBucket(100).batch_size == 10


def test_parse_message_reads_what_the_pipeline_recorded() -> None:
    attributes = dlq.failure_attributes("poison", "invalid record: bad_report_date", sync_id="sync-a", receive_count=2)
    attributes[dlq.ATTR_FAILED_AT] = {"DataType": "String", "StringValue": "2025-07-20T09:00:00.000000Z"}
    attributes[dlq.ATTR_REPLAY_COUNT] = {"DataType": "Number", "StringValue": "3"}
    message = parse_message(received(letter_body(rec("AAPL"), rec("MSFT")), attributes))
    assert (message.kind, message.sync_id, message.symbols) == ("poison", "sync-a", ("AAPL", "MSFT"))
    assert (message.receive_count, message.replay_count) == (2, 3)
    assert message.age(NOW) == dt.timedelta(hours=3)
    assert [f.index for f in message.record_failures] == [0, 1]
    assert message.as_dict(NOW)["record_failures"][1]["symbol"] == "MSFT"


def test_parse_message_without_failure_attributes_falls_back_to_the_body_and_sent_time() -> None:
    sent = NOW - dt.timedelta(minutes=10)
    body = msgspec.json.encode({"sync_id": "sync-b", "synced_at": "x", "records": [{"asset_symbol": "IBM"}]}).decode()
    message = parse_message(received(body, sent_ms=int(sent.timestamp() * 1000)))
    assert (message.kind, message.sync_id, message.symbols, message.reason) == (UNKNOWN_KIND, "sync-b", ("IBM",), "")
    assert message.age(NOW) == dt.timedelta(minutes=10)
    junk = parse_message(received("<html>"))
    assert not junk.decodable and junk.symbols == () and junk.age(NOW) is None


def test_filter_criteria_all_apply() -> None:
    attributes = dlq.failure_attributes("poison", "2 records: invalid record", sync_id="sync-a")
    attributes[dlq.ATTR_FAILED_AT] = {"DataType": "String", "StringValue": "2025-07-20T10:00:00.000000Z"}
    message = parse_message(received(letter_body(rec("AAPL"), rec("TSLA")), attributes))
    assert ReplayFilter().is_empty and ReplayFilter().matches(message, NOW)
    assert ReplayFilter(symbol="tsla", sync_id="sync-a", kind="poison").matches(message, NOW)
    assert ReplayFilter(reason="BAD_REPORT_DATE #1").matches(message, NOW)  # a per-record reason
    assert not ReplayFilter(symbol="IBM").matches(message, NOW)
    assert not ReplayFilter(symbol="TSLA", kind="undecodable").matches(message, NOW)
    assert ReplayFilter(min_age=dt.timedelta(hours=2)).matches(message, NOW)
    assert not ReplayFilter(min_age=dt.timedelta(hours=2, seconds=1)).matches(message, NOW)
    assert not ReplayFilter(max_age=dt.timedelta(hours=1)).matches(message, NOW)
    no_age = parse_message(received("junk"))
    assert not ReplayFilter(max_age=dt.timedelta(days=1)).matches(no_age, NOW)


def test_replay_body_is_a_sync_message_the_consumer_decodes() -> None:
    message = parse_message(received(letter_body(rec("AAPL"), rec("MSFT"))))
    body = replay_body(message)
    assert "failures" not in msgspec.json.decode(body)
    envelope = decode_envelope(body)
    assert envelope.sync_id == "sync-a" and [decode_record(r).asset_symbol for r in envelope.records] == ["AAPL", "MSFT"]
    assert replay_body(parse_message(received("not json"))) == "not json"


def test_replay_attributes_keep_history_and_count_replays() -> None:
    attributes = dlq.failure_attributes("poison", "why", sync_id="sync-a", receive_count=1)
    first = replay_attributes(parse_message(received("{}", attributes)))
    assert first[dlq.ATTR_REPLAY_COUNT] == {"DataType": "Number", "StringValue": "1"}
    assert first[dlq.ATTR_KIND]["StringValue"] == "poison" and first[dlq.ATTR_SYNC_ID]["StringValue"] == "sync-a"
    second = replay_attributes(parse_message(received("{}", first)))
    assert second[dlq.ATTR_REPLAY_COUNT]["StringValue"] == "2"


def error(code: str, message: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "StartMessageMoveTask")


def test_unsupported_operation_is_told_apart_from_real_errors() -> None:
    assert _unsupported(error("UnknownOperationException", "", 400))
    assert _unsupported(error("500", "<!doctype html>\n<html lang=en><title>500 Internal Server Error</title>", 500))
    assert _unsupported(error("InternalFailure", "API action not yet implemented", 501))
    assert not _unsupported(error("AccessDenied", "not authorized to perform sqs:StartMessageMoveTask", 403))
    assert not _unsupported(error("InternalError", "try again", 500))
