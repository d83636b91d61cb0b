"""Forged sync metadata: what each hostile message or event must get, through the real handlers on moto.

`synced_at` decides which sync wins a key and `sync_id` names the sync in the ledger, so a message
whose metadata cannot be trusted goes to the DLQ whole, with the reason, and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from consumers import sqs_consumer
from earnings_sync import aws as aws_clients
from earnings_sync import dlq
from earnings_sync.calendar_table import CalendarTable, item_to_plain, record_to_item
from earnings_sync.ledger import SyncLedger
from earnings_sync.messages import SyncMessage, encode_message
from earnings_sync.observability import M
from earnings_sync.records import EarningsRecord
from earnings_sync.replay import replay_dlq
from earnings_sync.sync_identity import InvalidSyncMetadata, format_synced_at
from earnings_sync_cli import main as cli
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.sqs_mapping import SqsEventSource
from producers import app
from tests.conftest import csv_text
from tests.helpers import Faults, dynamodb_error, sync_id_for

FUTURE = "2999-01-01T00:00:00.000000Z"
BACKFILL = "2020-01-06T06:00:00.000000Z"
AAPL = EarningsRecord("AAPL", "2025-07-31", "Apple Inc", "2025-06-30", "1.42", "USD")
AAPL_ROW = "AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD"


class Pipeline:
    """The producer and consumer handlers with the queues, table and ledger the template describes."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env
        self.sqs, self.resources = env["sqs"], env["resources"]
        self.table = CalendarTable(env["dynamodb"], self.resources.table_name)
        self.ledger_name = self.resources.tables["SyncLedgerTable"]
        self.ledger = SyncLedger(env["dynamodb"], self.ledger_name)
        self.source = SqsEventSource(
            self.sqs, self.resources.queue_url, self.resources.queue_arn, sqs_consumer.lambda_handler,
            batch_size=10, report_batch_item_failures=True, function_name="ConsumerFunction", timeout_seconds=30,
        )

    def send(self, **fields: Any) -> str:
        """A message like the producer's (seq 0, one record), with `fields` forged into its body."""
        body = {"sync_id": sync_id_for("2025-07-19T06:00:00.000000Z"), "synced_at": "2025-07-19T06:00:00.000000Z",
                "records": [msgspec.to_builtins(AAPL)], "v": 1, "seq": 0, **fields}
        text = json.dumps(body)
        self.sqs.send_message(QueueUrl=self.resources.queue_url, MessageBody=text)
        return text

    def produce(self, path: Any, **event: Any) -> tuple[Any, Any, BaseException | None]:
        return invoke(app.lambda_handler, {"path": str(path), **event}, LambdaContext("ProducerFunction", 300))

    def items(self) -> list[dict[str, Any]]:
        return [item_to_plain(i) for i in self.table.all_items()]

    def ledger_items(self) -> list[dict[str, Any]]:
        return self.env["dynamodb"].scan(TableName=self.ledger_name)["Items"]

    def dlq_messages(self) -> list[dict[str, Any]]:
        return self.sqs.receive_message(QueueUrl=self.resources.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                        MessageAttributeNames=["All"]).get("Messages", [])


@pytest.fixture
def pipeline(handler_env: dict[str, Any]) -> Pipeline:
    return Pipeline(handler_env)


def refused_whole(pipeline: Pipeline, body: str, reason: str) -> None:
    """Drained once: dead-lettered verbatim with `reason`, counted, nothing written anywhere."""
    stats = pipeline.source.drain()
    assert stats.invocations == 1 and stats.failed_deliveries == 0  # no retry loop
    assert stats.metrics[M.INVALID_MESSAGES] == 1 and stats.metrics[M.DLQ_SENDS] == 1
    assert stats.metrics[M.RECORDS_RECEIVED] == stats.metrics[M.LEDGER_WRITE_FAILURES] == 0
    assert pipeline.items() == [] and pipeline.ledger_items() == []
    [letter] = pipeline.dlq_messages()
    attributes = letter["MessageAttributes"]
    assert letter["Body"] == body and attributes[dlq.ATTR_KIND]["StringValue"] == "invalid_metadata"
    assert reason in attributes[dlq.ATTR_REASON]["StringValue"]


def test_a_synced_at_far_in_the_future_is_refused_whole_and_writes_nothing(pipeline: Pipeline) -> None:
    body = pipeline.send(synced_at=FUTURE, sync_id=sync_id_for(FUTURE))
    refused_whole(pipeline, body, "synced_at '2999-01-01T00:00:00.000000Z' is in the future")


def test_after_a_refused_future_message_a_real_sync_is_not_skipped_as_stale(pipeline: Pipeline, tmp_path: Any) -> None:
    pipeline.send(synced_at=FUTURE, sync_id=sync_id_for(FUTURE), records=[{**msgspec.to_builtins(AAPL), "estimate": "9.99"}])
    pipeline.source.drain()
    path = tmp_path / "calendar.csv"
    path.write_text(csv_text(AAPL_ROW))
    report, _, error = pipeline.produce(path)
    assert error is None
    stats = pipeline.source.drain()
    assert stats.metrics[M.STALE_SYNC_SKIPPED] == 0 and stats.metrics[M.RECORDS_INSERTED] == 1
    [item] = pipeline.items()
    assert (item["estimate"], item["lastSyncDate"], item["sync_id"]) == (Decimal("1.42"), report["synced_at"], report["sync_id"])
    assert pipeline.ledger.report(report["sync_id"]).complete


def test_a_synced_at_that_is_not_a_time_is_refused(pipeline: Pipeline) -> None:
    body = pipeline.send(synced_at="~~~")
    refused_whole(pipeline, body, "synced_at '~~~' is not a UTC time like 2025-07-19T06:00:00.000000Z")


def test_an_empty_sync_id_is_refused_whole_without_a_ledger_failure_loop(pipeline: Pipeline) -> None:
    body = pipeline.send(sync_id="")
    refused_whole(pipeline, body, "sync_id '' is not a sync id like")


def test_a_sync_id_that_does_not_match_its_synced_at_is_refused(pipeline: Pipeline) -> None:
    body = pipeline.send(sync_id=sync_id_for("2025-07-20T06:00:00.000000Z"))
    refused_whole(pipeline, body, "does not match synced_at '2025-07-19T06:00:00.000000Z'")


def test_an_unknown_schema_version_is_refused(pipeline: Pipeline) -> None:
    body = pipeline.send(v=99)
    refused_whole(pipeline, body, "unknown schema version 99")


@pytest.mark.parametrize("synced_at", ["9999-99-99T99:99:99.999999Z", FUTURE, "", 1752904800])
def test_the_producer_refuses_a_bad_synced_at_from_its_event(pipeline: Pipeline, tmp_path: Any, synced_at: Any) -> None:
    path = tmp_path / "calendar.csv"
    path.write_text(csv_text(AAPL_ROW))
    report, _, error = pipeline.produce(path, synced_at=synced_at)
    assert report is None and isinstance(error, InvalidSyncMetadata)
    assert str(error).startswith("synced_at ") and "\n" not in str(error)
    depth = pipeline.sqs.get_queue_attributes(
        QueueUrl=pipeline.resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert depth["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert pipeline.ledger_items() == []  # no manifest, not even registered


def test_a_replayed_old_sync_message_is_still_accepted(pipeline: Pipeline) -> None:
    """A backfill or a DLQ replay of an old sync: no lower bound on synced_at."""
    old = encode_message(SyncMessage(sync_id=sync_id_for(BACKFILL), synced_at=BACKFILL, records=[AAPL], seq=0))
    pipeline.sqs.send_message(QueueUrl=pipeline.resources.dlq_url, MessageBody=old,
                              MessageAttributes=dlq.failure_attributes("retries_exhausted", "ThrottlingException", receive_count=5))
    assert replay_dlq(pipeline.sqs, pipeline.resources.dlq_url, to=pipeline.resources.queue_url, wait_seconds=0).replayed == 1
    stats = pipeline.source.drain()
    assert stats.metrics[M.RECORDS_INSERTED] == 1 and stats.metrics[M.INVALID_MESSAGES] == 0
    [item] = pipeline.items()
    assert (item["lastSyncDate"], item["sync_id"]) == (BACKFILL, sync_id_for(BACKFILL))


def test_a_replayed_invalid_message_is_checked_again(pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    body = pipeline.send(synced_at=FUTURE, sync_id=sync_id_for(FUTURE))
    pipeline.source.drain()
    assert cli.main(["dlq", "replay", pipeline.resources.dlq_url, "--kind", "invalid_metadata", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["replayed"] == 1
    stats = pipeline.source.drain()
    assert stats.metrics[M.INVALID_MESSAGES] == 1 and pipeline.items() == []
    [letter] = pipeline.dlq_messages()
    assert letter["Body"] == body and letter["MessageAttributes"][dlq.ATTR_REPLAY_COUNT]["StringValue"] == "1"
    assert letter["MessageAttributes"][dlq.ATTR_KIND]["StringValue"] == "invalid_metadata"


def test_retry_exhausted_is_not_counted_when_the_dlq_send_fails(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("DLQ_URL", pipeline.resources.dlq_url + "-missing")
    pipeline.send()
    messages = pipeline.sqs.receive_message(
        QueueUrl=pipeline.resources.queue_url, AttributeNames=["All"], MessageAttributeNames=["All"]
    )["Messages"]
    event = pipeline.source.build_event(messages)
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = str(pipeline.resources.max_receive_count)  # the last receive
    Faults(aws_clients.client("dynamodb", max_attempts=1), "dynamodb", "BatchGetItem", [dynamodb_error("ThrottlingException")])
    result, metrics, error = invoke(sqs_consumer.lambda_handler, event, LambdaContext("ConsumerFunction", 30))
    assert error is None
    assert result == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}  # failed, for a retry
    assert metrics[M.RETRY_EXHAUSTED] == 0 and metrics[M.DLQ_SENDS] == 0 and metrics[M.MESSAGES_FAILED] == 1


def test_the_audit_finds_future_and_unregistered_items_and_fix_removes_the_future_one(
    pipeline: Pipeline, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "calendar.csv"
    path.write_text(csv_text(AAPL_ROW, "MSFT,Microsoft Corp,2025-07-29,2025-06-30,3.35,USD"))
    _, _, error = pipeline.produce(path)
    assert error is None
    pipeline.source.drain()
    # Written around the consumer's checks, as a forger with table access (or an older consumer) could.
    msft = EarningsRecord("MSFT", "2025-07-29", "Microsoft Corp", "2025-06-30", "9.99", "USD")
    ibm = EarningsRecord("IBM", "2025-07-23", "IBM", "2025-06-30", "2.65", "USD")
    dynamodb, name = pipeline.env["dynamodb"], pipeline.resources.table_name
    dynamodb.put_item(TableName=name, Item=record_to_item(msft, sync_id_for(FUTURE), FUTURE))
    unregistered_at = format_synced_at(dt.datetime.now(dt.UTC))  # since the registry records ids: judged against it
    dynamodb.put_item(TableName=name, Item=record_to_item(ibm, sync_id_for(unregistered_at, 0xDEAD), unregistered_at))

    target = ["audit", "--endpoint-url", pipeline.env["endpoint"], "--table", name]  # LEDGER_TABLE names the registry
    assert cli.main([*target, "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["by_rule"] == {"future_sync_date": 1, "unregistered_sync": 1}
    assert {(f["rule"], tuple(f["key"])) for f in found["findings"]} == {
        ("future_sync_date", ("MSFT", "2025-07-29")), ("unregistered_sync", ("IBM", "2025-07-23")),
    }

    assert cli.main([*target, "--fix"]) == 1  # the unregistered item remains
    out = capsys.readouterr().out
    assert "deleted 1 future-dated item(s)" in out and "never deleted automatically" in out
    assert {(i["asset_symbol"], i["sync_id"]) for i in pipeline.items()} >= {("IBM", sync_id_for(unregistered_at, 0xDEAD))}
    assert "MSFT" not in {i["asset_symbol"] for i in pipeline.items()}

    report, _, error = pipeline.produce(path)  # the next real sync writes the key again
    assert error is None
    stats = pipeline.source.drain()
    assert stats.metrics[M.STALE_SYNC_SKIPPED] == 0
    msft_item = item_to_plain(pipeline.table.get(msft.key) or {})
    assert (msft_item["estimate"], msft_item["sync_id"]) == (Decimal("3.35"), report["sync_id"])
