"""`DynamoDBStreamEventSource`: Lambda's stream mapping rules over moto's real stream.

The handlers here are small recording functions with a rule for failing, so each test can state
exactly which records Lambda would deliver, retry, bisect and give up on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from earnings_sync_local.stream_mapping import DynamoDBStreamEventSource, StreamDrainStats, merge_stats


class Recorder:
    """A handler: records the symbols of every batch; `fail(symbols)` decides what fails."""

    def __init__(self, fail: Callable[[list[str]], Any] = lambda symbols: None) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail
        self.events: list[dict] = []

    def __call__(self, event: dict, context: Any) -> dict:
        symbols = [r["dynamodb"]["Keys"]["asset_symbol"]["S"] for r in event["Records"]]
        self.batches.append(symbols)
        self.events.append(event)
        outcome = self.fail(symbols)
        if isinstance(outcome, Exception):
            raise outcome
        failed = outcome or []
        by_symbol = {r["dynamodb"]["Keys"]["asset_symbol"]["S"]: r["dynamodb"]["SequenceNumber"] for r in event["Records"]}
        return {"batchItemFailures": [{"itemIdentifier": by_symbol.get(s, s)} for s in failed]}


@pytest.fixture
def env(aws: dict[str, Any]) -> dict[str, Any]:
    aws["streams"] = boto3.client("dynamodbstreams", region_name="us-east-1", endpoint_url=aws["endpoint"])
    return aws


def write(env: dict[str, Any], *symbols: str) -> None:
    for symbol in symbols:
        env["dynamodb"].put_item(
            TableName=env["resources"].table_name,
            Item={"asset_symbol": {"S": symbol}, "earnings_date": {"S": "2025-08-01"}, "n": {"N": "1"}},
        )


def source(env: dict[str, Any], handler: Recorder, **settings: Any) -> DynamoDBStreamEventSource:
    options: dict[str, Any] = {
        "batch_size": 4,
        "bisect_on_error": False,
        "maximum_retry_attempts": 2,
        "maximum_record_age_seconds": -1,
        "report_batch_item_failures": True,
        "function_name": "StreamConsumerFunction",
        "timeout_seconds": 60,
        "sqs": env["sqs"],
        "on_failure_url": env["resources"].stream_failure_queue_url,
    }
    options.update(settings)
    return DynamoDBStreamEventSource(env["streams"], env["resources"].stream_arn, handler, **options)


def on_failure_messages(env: dict[str, Any]) -> list[dict]:
    url = env["resources"].stream_failure_queue_url
    messages = env["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


SYMBOLS = [f"S{i}" for i in range(10)]


def test_batches_follow_the_batch_size_and_the_event_is_lambdas(env: dict[str, Any]) -> None:
    write(env, *SYMBOLS)
    handler = Recorder()
    stats = source(env, handler).drain()
    assert handler.batches == [SYMBOLS[0:4], SYMBOLS[4:8], SYMBOLS[8:10]]
    assert (stats.records, stats.invocations, stats.failed_invocations) == (10, 3, 0)
    record = handler.events[0]["Records"][0]
    assert record["eventSource"] == "aws:dynamodb" and record["eventName"] == "INSERT"
    assert record["eventSourceARN"] == env["resources"].stream_arn
    change = record["dynamodb"]
    assert change["Keys"] == {"asset_symbol": {"S": "S0"}, "earnings_date": {"S": "2025-08-01"}}
    assert change["NewImage"]["n"] == {"N": "1"} and "OldImage" not in change
    assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert isinstance(change["ApproximateCreationDateTime"], int) and change["SizeBytes"] > 0


def test_the_position_is_kept_between_drains(env: dict[str, Any]) -> None:
    handler = Recorder()
    mapping = source(env, handler)
    write(env, "A", "B")
    assert mapping.drain().records == 2
    assert mapping.drain().records == 0
    write(env, "C")
    env["dynamodb"].delete_item(TableName=env["resources"].table_name, Key={"asset_symbol": {"S": "A"}, "earnings_date": {"S": "2025-08-01"}})
    stats = mapping.drain()
    assert stats.records == 2 and handler.batches[-1] == ["C", "A"]
    assert [r["eventName"] for r in handler.events[-1]["Records"]] == ["INSERT", "REMOVE"]
    assert "OldImage" in handler.events[-1]["Records"][1]["dynamodb"]


def test_a_reported_failure_resumes_from_the_lowest_failed_record(env: dict[str, Any]) -> None:
    write(env, "A", "B", "C", "D")
    calls = {"n": 0}

    def fail_c_then_b_once(symbols: list[str]) -> list[str]:
        calls["n"] += 1
        return ["C", "B"] if calls["n"] == 1 else []

    handler = Recorder(fail_c_then_b_once)
    stats = source(env, handler).drain()
    assert handler.batches == [["A", "B", "C", "D"], ["B", "C", "D"]]  # A was checkpointed
    assert (stats.failed_invocations, stats.retries, stats.skipped_records) == (1, 1, 0)
    assert on_failure_messages(env) == []


def test_bisect_isolates_a_poison_record_and_only_it_goes_to_the_failure_queue(env: dict[str, Any]) -> None:
    write(env, "A", "B", "C", "D")
    handler = Recorder(lambda symbols: RuntimeError("boom") if "C" in symbols else None)
    mapping = source(env, handler, bisect_on_error=True)
    stats = mapping.drain()
    # [A B C D] fails → [A B] ok, [C D] fails → [C] fails 1 + 2 retries, [D] ok
    assert handler.batches == [["A", "B", "C", "D"], ["A", "B"], ["C", "D"], ["C"], ["C"], ["C"], ["D"]]
    assert stats.bisections == 2 and stats.skipped_records == 1 and stats.on_failure_messages == 1
    (message,) = on_failure_messages(env)
    info = message["DDBStreamBatchInfo"]
    c_sequence = handler.events[3]["Records"][0]["dynamodb"]["SequenceNumber"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == c_sequence
    assert info["batchSize"] == 1 and info["streamArn"] == env["resources"].stream_arn
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert message["responseContext"]["functionError"] == "Unhandled"
    assert mapping.drain().records == 0  # moved on for good


def test_without_bisect_the_whole_batch_is_given_up_after_the_retries(env: dict[str, Any]) -> None:
    write(env, "A", "B", "C", "D", "E")
    handler = Recorder(lambda symbols: RuntimeError("boom") if "B" in symbols else None)
    stats = source(env, handler, maximum_retry_attempts=1).drain()
    assert handler.batches == [["A", "B", "C", "D"], ["A", "B", "C", "D"], ["E"]]
    (message,) = on_failure_messages(env)
    assert message["DDBStreamBatchInfo"]["batchSize"] == 4 and stats.skipped_records == 4


def test_reported_failures_are_bisected_too_and_need_no_error(env: dict[str, Any]) -> None:
    write(env, "A", "B", "C", "D")
    handler = Recorder(lambda symbols: ["B"] if "B" in symbols else [])
    stats = source(env, handler, bisect_on_error=True, maximum_retry_attempts=0).drain()
    # A is checkpointed; [B C D] splits into [B] (given up at once: no retries) and [C D]
    assert handler.batches == [["A", "B", "C", "D"], ["B"], ["C", "D"]]
    (message,) = on_failure_messages(env)
    assert message["responseContext"]["functionError"] is None and stats.skipped_records == 1


def test_an_unusable_item_identifier_fails_the_whole_batch(env: dict[str, Any]) -> None:
    write(env, "A", "B")
    calls = {"n": 0}

    def unknown_once(symbols: list[str]) -> list[str]:
        calls["n"] += 1
        return ["not-a-sequence-number"] if calls["n"] == 1 else []

    handler = Recorder(unknown_once)
    source(env, handler).drain()
    assert handler.batches == [["A", "B"], ["A", "B"]]


def test_records_older_than_the_maximum_age_are_skipped_without_invoking(env: dict[str, Any]) -> None:
    write(env, "A", "B")
    handler = Recorder()
    far_future = lambda: 4_000_000_000.0  # noqa: E731 - year 2096
    stats = source(env, handler, maximum_record_age_seconds=3600, clock=far_future).drain()
    assert handler.batches == [] and stats.skipped_records == 2
    (message,) = on_failure_messages(env)
    assert message["requestContext"]["condition"] == "RecordAgeExceeded"
    assert message["DDBStreamBatchInfo"]["batchSize"] == 2


def test_built_from_the_template_mapping(env: dict[str, Any]) -> None:
    mapping = env["resources"].stream_mapping
    built = DynamoDBStreamEventSource.from_mapping(mapping, env["streams"], Recorder(), env["sqs"])
    assert (built.batch_size, built.bisect_on_error, built.maximum_retry_attempts) == (100, True, 3)
    assert built.maximum_record_age_seconds == 3600 and built.report_batch_item_failures
    assert built.on_failure_url == env["resources"].stream_failure_queue_url
    assert built.starting_position == "TRIM_HORIZON" and built.timeout_seconds == 60


def test_merge_stats_adds_counters() -> None:
    total, more = StreamDrainStats(records=1), StreamDrainStats(records=2, retries=1)
    more.metrics["X"] = 3
    merge_stats(total, more)
    assert (total.records, total.retries, total.metrics["X"]) == (3, 1, 3)


def test_unparsed_reads_deliver_the_same_events_as_the_sdk_and_its_errors(env: dict[str, Any]) -> None:
    from botocore.exceptions import ClientError

    write(env, *SYMBOLS)
    env["dynamodb"].delete_item(TableName=env["resources"].table_name, Key={"asset_symbol": {"S": "S3"}, "earnings_date": {"S": "2025-08-01"}})
    unparsed, parsed = Recorder(), Recorder()
    source(env, unparsed).drain()
    source(env, parsed, unparsed_reads=False).drain()
    assert unparsed.events == parsed.events
    assert [r["eventName"] for e in unparsed.events for r in e["Records"]][-1] == "REMOVE"
    assert all(type(r["dynamodb"]["ApproximateCreationDateTime"]) is int for e in unparsed.events for r in e["Records"])
    with pytest.raises(ClientError):  # a refused read still raises the SDK's error
        source(env, Recorder())._get_records("not-an-iterator")
