"""The consumer Lambda handler with real SQS events from moto, and the table it writes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from consumers import sqs_consumer
from earnings_sync import aws as aws_clients
from earnings_sync.calendar_table import CalendarTable, item_to_plain
from earnings_sync.dlq import DeadLetter
from earnings_sync.messages import SyncMessage, encode_message
from earnings_sync.observability import M
from earnings_sync.records import EarningsRecord
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.sqs_mapping import SqsEventSource
from tests.helpers import Faults, dynamodb_error, sync_id_for

OLD, NEW = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z"
OLD_ID, NEW_ID = sync_id_for(OLD), sync_id_for(NEW)


def rec(symbol: str, estimate: str | None = "1.00", date: str = "2025-08-01") -> EarningsRecord:
    return EarningsRecord(symbol, date, f"{symbol} Inc", "2025-06-30", estimate, "USD")


def body(records: list[EarningsRecord], synced_at: str = NEW, sync_id: str | None = None) -> str:
    return encode_message(SyncMessage(sync_id=sync_id or sync_id_for(synced_at), synced_at=synced_at, records=records))


class Harness:
    """Sends real messages, receives them as Lambda would and invokes the real handler."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.sqs = env["sqs"]
        self.resources = env["resources"]
        self.table = CalendarTable(env["dynamodb"], self.resources.table_name)
        self.source = SqsEventSource(
            self.sqs,
            self.resources.queue_url,
            self.resources.queue_arn,
            sqs_consumer.lambda_handler,
            batch_size=self.resources.consumer_batch_size,
            report_batch_item_failures=True,
            function_name="ConsumerFunction",
            timeout_seconds=self.resources.consumer_timeout,
        )

    def send(self, *bodies: str) -> None:
        for text in bodies:
            self.sqs.send_message(QueueUrl=self.resources.queue_url, MessageBody=text,
                                  MessageAttributes={"sync_id": {"DataType": "String", "StringValue": NEW_ID}})

    def receive_event(self, receive_count: int | None = None) -> dict:
        messages = self.sqs.receive_message(QueueUrl=self.resources.queue_url, MaxNumberOfMessages=10,
                                            AttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
        event = self.source.build_event(messages)
        if receive_count is not None:
            for record in event["Records"]:
                record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
        return event

    def call(self, event: dict) -> tuple[dict, Any]:
        result, metrics, error = invoke(sqs_consumer.lambda_handler, event, LambdaContext("ConsumerFunction", 30))
        assert error is None, error
        return result, metrics

    def item(self, symbol: str, date: str = "2025-08-01") -> dict[str, Any] | None:
        found = self.table.get((symbol, date))
        return item_to_plain(found) if found else None

    def dlq_messages(self) -> list[dict]:
        return self.sqs.receive_message(QueueUrl=self.resources.dlq_url, MaxNumberOfMessages=10,
                                        MessageAttributeNames=["All"]).get("Messages", [])


@pytest.fixture
def harness(handler_env: dict[str, Any]) -> Harness:
    return Harness(handler_env)


def test_batch_is_written_and_metrics_are_emitted(harness: Harness) -> None:
    harness.send(body([rec("A"), rec("B", None)]), body([rec("C")]))
    result, metrics = harness.call(harness.receive_event())
    assert result == {"batchItemFailures": []}
    assert harness.item("A")["estimate"] == Decimal("1.00")
    assert harness.item("B")["estimate"] is None and harness.item("B")["lastSyncDate"] == NEW
    assert metrics[M.RECORDS_INSERTED] == 3 and metrics[M.MESSAGES_PROCESSED] == 2
    assert metrics[M.WRITE_FAILURES] == 0 and metrics[M.BATCH_DURATION] > 0


def test_redelivery_and_duplicates_change_nothing(harness: Harness) -> None:
    message = body([rec("A", "2.00")])
    harness.send(message, message)
    _, metrics = harness.call(harness.receive_event())
    assert metrics[M.RECORDS_INSERTED] == 1 and metrics[M.RECORDS_UNCHANGED] == 1
    harness.send(message)
    _, metrics = harness.call(harness.receive_event())
    assert metrics[M.RECORDS_UNCHANGED] == 1 and metrics[M.RECORDS_WRITTEN] == 0
    assert harness.item("A")["estimate"] == Decimal("2.00")


def test_out_of_order_delivery_keeps_the_newer_sync(harness: Harness) -> None:
    harness.send(body([rec("A", "2.00")], NEW, NEW_ID))
    harness.call(harness.receive_event())
    harness.send(body([rec("A", "1.00"), rec("B", "1.00")], OLD, OLD_ID))
    _, metrics = harness.call(harness.receive_event())
    assert metrics[M.STALE_SYNC_SKIPPED] == 1 and metrics[M.RECORDS_INSERTED] == 1
    assert harness.item("A")["estimate"] == Decimal("2.00") and harness.item("A")["sync_id"] == NEW_ID
    assert harness.item("B")["lastSyncDate"] == OLD  # a key only the older sync knows is still written


def test_poison_record_goes_to_the_dlq_with_its_reason_and_spares_its_neighbours(harness: Harness) -> None:
    good = json.loads(body([rec("A"), rec("B")]))
    good["records"].insert(1, {**good["records"][0], "asset_symbol": "C", "earnings_date": "2025-13-01"})
    harness.send(json.dumps(good))
    result, metrics = harness.call(harness.receive_event())
    assert result == {"batchItemFailures": []}
    assert harness.item("A") and harness.item("B")
    assert metrics[M.POISON_RECORDS] == 1 and metrics[M.DLQ_SENDS] == 1
    [letter] = harness.dlq_messages()
    attrs = letter["MessageAttributes"]
    assert attrs["failure_kind"]["StringValue"] == "poison"
    assert "bad_report_date" in attrs["failure_reason"]["StringValue"]
    assert attrs["sync_id"]["StringValue"] == NEW_ID
    dead = msgspec.json.decode(letter["Body"], type=DeadLetter)
    assert [json.loads(bytes(r))["asset_symbol"] for r in dead.records] == ["C"]
    assert dead.failures[0].index == 0 and "2025-13-01" in dead.failures[0].reason


def test_undecodable_body_is_dead_lettered_verbatim(harness: Harness) -> None:
    harness.send("this is not json", body([rec("A")]))
    result, metrics = harness.call(harness.receive_event())
    assert result == {"batchItemFailures": []}
    assert metrics[M.UNDECODABLE_MESSAGES] == 1 and harness.item("A")
    [letter] = harness.dlq_messages()
    assert letter["Body"] == "this is not json"
    assert letter["MessageAttributes"]["failure_kind"]["StringValue"] == "undecodable"


def test_throttled_message_is_reported_as_a_batch_item_failure(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no SDK retries: the throttle reaches our code at once
    harness.send(body([rec("A")]), body([rec("B")]), body([rec("C")]))
    event = harness.receive_event()
    client = aws_clients.client("dynamodb", max_attempts=1)
    # the second message's read is throttled, the first and third go through
    Faults(client, "dynamodb", "BatchGetItem", [None, dynamodb_error("ProvisionedThroughputExceededException")])
    result, metrics = harness.call(event)
    assert result == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    assert harness.item("A") and harness.item("C") and harness.item("B") is None
    assert metrics[M.MESSAGES_FAILED] == 1 and metrics[M.RETRY_EXHAUSTED] == 0


def test_last_receive_moves_the_message_to_the_dlq_with_the_reason(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    harness.send(body([rec("A")]))
    event = harness.receive_event(receive_count=harness.resources.max_receive_count)
    Faults(aws_clients.client("dynamodb", max_attempts=1), "dynamodb", "BatchGetItem", [dynamodb_error("ThrottlingException")])
    result, metrics = harness.call(event)
    assert result == {"batchItemFailures": []}
    assert metrics[M.RETRY_EXHAUSTED] == 1
    [letter] = harness.dlq_messages()
    assert letter["MessageAttributes"]["failure_kind"]["StringValue"] == "retries_exhausted"
    assert "ThrottlingException" in letter["MessageAttributes"]["failure_reason"]["StringValue"]
    assert letter["MessageAttributes"]["receive_count"]["StringValue"] == str(harness.resources.max_receive_count)
    assert msgspec.json.decode(letter["Body"], type=SyncMessage).records == [rec("A")]


def test_a_failed_dlq_send_keeps_the_message(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLQ_URL", harness.resources.dlq_url + "-missing")
    harness.send("not a sync message")
    event = harness.receive_event()
    result, metrics = harness.call(event)
    assert result == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert metrics[M.MESSAGES_FAILED] == 1 and metrics[M.DLQ_SENDS] == 0


def test_whole_batch_failing_is_reported_item_by_item(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    harness.send(body([rec("A")]), body([rec("B")]))
    event = harness.receive_event()
    Faults(aws_clients.client("dynamodb", max_attempts=1), "dynamodb", "BatchGetItem", [dynamodb_error("ThrottlingException")] * 2)
    result, _ = harness.call(event)
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(r["messageId"] for r in event["Records"])


def test_persistent_failure_reaches_the_dlq_through_redelivery(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mapping redelivers until maxReceiveCount; the last receive dead-letters with a reason."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    harness.send(body([rec("A")]))
    faults = Faults(aws_clients.client("dynamodb", max_attempts=1), "dynamodb", "BatchGetItem",
                    [dynamodb_error("ProvisionedThroughputExceededException")] * 20)
    stats = harness.source.drain()
    assert stats.invocations == harness.resources.max_receive_count == faults.injected
    assert stats.failed_deliveries == harness.resources.max_receive_count - 1
    assert harness.source.in_flight() == 0
    [letter] = harness.dlq_messages()
    assert letter["MessageAttributes"]["failure_kind"]["StringValue"] == "retries_exhausted"
