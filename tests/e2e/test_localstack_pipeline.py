"""The deployed pipeline on LocalStack: template.yaml through CloudFormation, real event source mappings.

One stack per module (tests/e2e/localstack_stack.py): the producer is invoked like the schedule
would, with an S3 source; LocalStack's SQS mapping runs the consumer and its DynamoDB stream mapping
runs the stream consumer. The resulting table must equal what `run_local` (moto, the same handlers
called in-process) produces from the same CSVs.

Measured on LocalStack 2026.3 host mode: Lambda EMF lines reach CloudWatch Logs, but LocalStack
does not turn them into CloudWatch metrics (ListMetrics stays empty), so the metrics test reads the
EMF lines in the function's log group, which is what CloudWatch extracts on AWS.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from earnings_sync import dlq
from earnings_sync.calendar_table import item_to_plain
from earnings_sync.messages import SCHEMA_VERSION
from earnings_sync.observability import M, parse_emf
from earnings_sync.producer import message_attributes, new_sync_identity
from earnings_sync.records import EarningsRecord
from earnings_sync_cli.main import main as cli
from earnings_sync_local.pipeline import run_local
from tests.change_event_support import assert_valid
from tests.e2e.event_routes import EventRoutes
from tests.e2e.localstack_stack import DeployedStack, deploy_stack, empty_bucket

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "earnings_calendar_2025-07.csv"
SAMPLE_ROWS = 120  # of the real AlphaVantage snapshot: enough for several batches, quick on LocalStack
REJECTED_ROW = "OOPS,Broken Co,2025-08-27,2025-07-31,1.0.0,USD"
# The second snapshot: one date moved within its fiscal period, one estimate revised, one row gone,
# one symbol new.
RESCHEDULED = ("AA", "2025-10-15", "2025-10-22")
REVISED = ("A,Agilent Technologies Inc,2025-08-19,2025-07-31,1.37,USD", "A,Agilent Technologies Inc,2025-08-19,2025-07-31,1.40,USD")
DROPPED = "AABVF,AABVF,2025-09-11,2025-07-31,,USD"
ADDED = "ZNEWCO,Znew Holdings,2025-09-15,2025-06-30,0.12,USD"
QUIET_TIMEOUT = 120.0

T = TypeVar("T")
Key = tuple[str, str]


def wait_for(probe: Callable[[], T], what: str, timeout: float = QUIET_TIMEOUT, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Pipeline:
    """The deployed stack plus the probes the tests need."""

    def __init__(self, stack: DeployedStack, input_bucket: str, routes: EventRoutes) -> None:
        self.stack = stack
        self.routes = routes
        self.input_bucket = input_bucket
        self.outputs = stack.outputs
        self.table_name = stack.outputs["TableName"]
        self.s3, self.sqs, self.lam = stack.client("s3"), stack.client("sqs"), stack.client("lambda")
        self.dynamodb, self.streams = stack.client("dynamodb"), stack.client("dynamodbstreams")
        self.logs, self.cloudwatch = stack.client("logs"), stack.client("cloudwatch")
        self.synced_at: list[str] = []  # the syncs run so far, oldest first

    # -- actions -------------------------------------------------------------------------------
    def sync(self, csv: Path) -> dict[str, Any]:
        """Upload the CSV and invoke the deployed producer with an S3 source, as an operator would."""
        key = f"{len(self.synced_at) + 1}-{csv.name}"
        self.s3.put_object(Bucket=self.input_bucket, Key=key, Body=csv.read_bytes())
        response = self.lam.invoke(
            FunctionName=self.outputs["ProducerFunctionName"],
            Payload=json.dumps({"s3": {"bucket": self.input_bucket, "key": key}}),
        )
        report = json.loads(response["Payload"].read())
        assert "FunctionError" not in response, report
        self.synced_at.append(report["synced_at"])
        return report

    # -- probes --------------------------------------------------------------------------------
    def table(self) -> dict[Key, dict[str, Any]]:
        items: dict[Key, dict[str, Any]] = {}
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=self.table_name, ConsistentRead=True):
            for item in page["Items"]:
                plain = item_to_plain(item)
                items[(plain["asset_symbol"], plain["earnings_date"])] = plain
        return items

    def queue_busy(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return sum(
            int(attributes.get(name, 0))
            for name in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")
        )

    def stream_record_count(self) -> int:
        """Every record in the table's stream so far (all shards, from the trim horizon)."""
        arn = self.outputs["TableStreamArn"]
        total = 0
        for shard in self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            iterator = self.streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while iterator:
                response = self.streams.get_records(ShardIterator=iterator, Limit=1000)
                total += len(response["Records"])
                if not response["Records"]:
                    break
                iterator = response.get("NextShardIterator")
        return total

    def log_messages(self, function_output: str) -> list[str]:
        group = f"/aws/lambda/{self.outputs[function_output]}"
        messages: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": group}
        while True:
            try:
                response = self.logs.filter_log_events(**kwargs)
            except self.logs.exceptions.ResourceNotFoundException:
                return messages
            messages.extend(line for event in response["events"] for line in event["message"].splitlines())
            if not response.get("nextToken"):
                return messages
            kwargs["nextToken"] = response["nextToken"]

    def stream_metrics(self) -> Any:
        return parse_emf(self.log_messages("StreamConsumerFunctionName"))

    def wait_quiet(self, timeout: float = QUIET_TIMEOUT) -> dict[Key, dict[str, Any]]:
        """Until the queue is empty with nothing in flight, the stream consumer has seen every stream
        record (its StreamRecordsProcessed metric), and the table reads the same twice; returns it."""
        previous: dict[Key, dict[str, Any]] | None = None

        def quiet() -> dict[Key, dict[str, Any]] | None:
            nonlocal previous
            if self.queue_busy(self.outputs["QueueUrl"]):
                previous = None
                return None
            if self.stream_metrics()[M.STREAM_RECORDS_PROCESSED] < self.stream_record_count():
                previous = None
                return None
            table = self.table()
            settled = table if table == previous else None
            previous = table
            return settled

        return wait_for(quiet, "the pipeline to go quiet", timeout=timeout, interval=1.0)


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pipeline(localstack_endpoint: str) -> Iterator[Pipeline]:
    suffix = uuid.uuid4().hex[:10]
    input_bucket = f"earnings-sync-e2e-input-{suffix}"
    stack = deploy_stack(
        localstack_endpoint,
        parameters={
            "TableName": f"earningsCalendar-e2e-{suffix}",  # unique per run: LocalStack has no reset
            "InputBucketName": input_bucket,  # the producer's s3:GetObject statement
            "MaxReceiveCount": "2",  # the replay test waits for SQS's own redrive
            "LogLevel": "INFO",
        },
    )
    stack.client("s3").create_bucket(Bucket=input_bucket)
    routes = None
    try:
        routes = EventRoutes.create(stack)  # before the first sync: subscribers see every event
        yield Pipeline(stack, input_bucket, routes)
    finally:
        if routes is not None:
            routes.delete()
        empty_bucket(stack.client("s3"), input_bucket, delete=True)
        stack.delete()


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1 : SAMPLE_ROWS + 1]
    assert REVISED[0] in rows and DROPPED in rows
    symbol, old_date, new_date = RESCHEDULED
    (moved,) = [row for row in rows if row.startswith(f"{symbol},") and f",{old_date}," in row]
    second = [
        REVISED[1] if row == REVISED[0] else moved.replace(f",{old_date},", f",{new_date},") if row == moved else row
        for row in rows
        if row != DROPPED
    ]
    folder = tmp_path_factory.mktemp("snapshots")
    first_csv, second_csv = folder / "calendar-1.csv", folder / "calendar-2.csv"
    first_csv.write_text("\n".join([header, *rows, REJECTED_ROW]) + "\n", encoding="utf-8")
    second_csv.write_text("\n".join([header, *second, ADDED]) + "\n", encoding="utf-8")
    return first_csv, second_csv


@pytest.fixture(scope="module")
def first_sync(pipeline: Pipeline, snapshots: tuple[Path, Path]) -> dict[str, Any]:
    report = pipeline.sync(snapshots[0])
    pipeline.wait_quiet()
    return report


@pytest.fixture(scope="module")
def second_sync(pipeline: Pipeline, snapshots: tuple[Path, Path], first_sync: dict[str, Any]) -> dict[str, Any]:
    report = pipeline.sync(snapshots[1])
    symbol, old_date, _ = RESCHEDULED
    wait_for(lambda: (symbol, old_date) not in pipeline.table(), "the stream consumer to remove the superseded date")
    pipeline.wait_quiet()
    return report


def reference_table(csvs: list[Path], tmp_path: Path) -> tuple[dict[Key, dict[str, Any]], list[str]]:
    """The table `run_local` builds from the same snapshots, and its syncs' timestamps."""
    export = tmp_path / "reference.jsonl"
    summary = run_local([str(path) for path in csvs], export=str(export))
    assert summary.ok, summary.as_dict()
    rows = [json.loads(line, parse_float=Decimal, parse_int=Decimal) for line in export.read_text().splitlines()]
    return {(r["asset_symbol"], r["earnings_date"]): r for r in rows}, [s.synced_at for s in summary.syncs]


def comparable(table: dict[Key, dict[str, Any]], synced_at: list[str]) -> dict[Key, dict[str, Any]]:
    """Content attributes as they are; `lastSyncDate` as the number of the sync it names; no sync ids."""
    order = {moment: number for number, moment in enumerate(synced_at, start=1)}
    return {
        key: {
            **{name: value for name, value in item.items() if name not in {"sync_id", "lastSyncDate"}},
            "sync": order.get(item.get("lastSyncDate"), item.get("lastSyncDate")),
        }
        for key, item in table.items()
    }


# --------------------------------------------------------------------------------------- tests


def test_a_sync_through_the_deployed_stack_matches_the_local_reference(
    pipeline: Pipeline, snapshots: tuple[Path, Path], first_sync: dict[str, Any], tmp_path: Path
) -> None:
    assert (first_sync["rows"], first_sync["records_enqueued"]) == (SAMPLE_ROWS + 1, SAMPLE_ROWS)
    assert first_sync["rejected"] == {"bad_estimate": 1}
    expected, expected_syncs = reference_table([snapshots[0]], tmp_path)
    actual = pipeline.table()
    assert len(actual) == SAMPLE_ROWS
    assert comparable(actual, pipeline.synced_at[:1]) == comparable(expected, expected_syncs)
    assert pipeline.queue_busy(pipeline.outputs["DLQUrl"]) == 0


def test_a_rescheduled_date_replaces_the_old_item_and_the_table_matches_the_reference(
    pipeline: Pipeline, snapshots: tuple[Path, Path], second_sync: dict[str, Any], tmp_path: Path
) -> None:
    symbol, old_date, new_date = RESCHEDULED
    actual = pipeline.table()
    assert (symbol, old_date) not in actual
    assert actual[(symbol, new_date)]["fiscal_date_ending"] == "2025-09-30"
    assert actual[(symbol, new_date)]["lastSyncDate"] == second_sync["synced_at"]
    assert actual[("A", "2025-08-19")]["estimate"] == Decimal("1.40")
    assert actual[("AABVF", "2025-09-11")]["lastSyncDate"] == pipeline.synced_at[0]  # not in the second snapshot
    expected, expected_syncs = reference_table(list(snapshots), tmp_path)
    assert (symbol, old_date) not in expected  # the local runner's stream consumer did the same
    assert comparable(actual, pipeline.synced_at) == comparable(expected, expected_syncs)
    assert pipeline.stream_metrics()[M.SUPERSEDED_REMOVED] >= 1
    assert pipeline.queue_busy(pipeline.outputs["StreamFailureQueueUrl"]) == 0


def test_change_events_reach_a_subscribers_rules_through_the_bus(
    pipeline: Pipeline, first_sync: dict[str, Any], second_sync: dict[str, Any]
) -> None:
    """The README's example rule gets the one move and nothing else; a catch-all rule gets one
    Earnings Scheduled per item of the first sync, then the second sync's move, revision and new
    symbol; every event validates against its schema."""
    routes = pipeline.routes
    expected_all = SAMPLE_ROWS + 3

    def arrived() -> bool | None:
        routes.take("all")
        routes.take("rescheduled")
        return len(routes.received["all"]) >= expected_all and len(routes.received["rescheduled"]) >= 1 or None

    wait_for(arrived, "the change events to reach the subscriber's queues")
    time.sleep(2)  # anything more would have arrived by now
    routes.take("all")
    routes.take("rescheduled")
    every, rescheduled = routes.received["all"], routes.received["rescheduled"]
    assert assert_valid(every) == expected_all and assert_valid(rescheduled) == 1
    assert {e["source"] for e in every} == {"earnings-sync"}
    first, second = pipeline.synced_at[:2]
    by_sync: dict[str, list[tuple[str, str]]] = {first: [], second: []}
    for event in every:
        by_sync[event["detail"]["synced_at"]].append((event["detail-type"], event["detail"]["asset_symbol"]))
    assert len(by_sync[first]) == SAMPLE_ROWS and {kind for kind, _ in by_sync[first]} == {"Earnings Scheduled"}
    symbol, old_date, new_date = RESCHEDULED
    assert sorted(by_sync[second]) == sorted(
        [("Earnings Rescheduled", symbol), ("Earnings Updated", "A"), ("Earnings Scheduled", ADDED.split(",")[0])]
    )
    (moved,) = rescheduled
    assert (moved["detail-type"], moved["detail"]["asset_symbol"]) == ("Earnings Rescheduled", symbol)
    assert (moved["detail"]["earnings_date"], moved["detail"]["previous_earnings_date"]) == (new_date, old_date)
    (updated,) = [e for e in every if e["detail-type"] == "Earnings Updated"]
    assert updated["detail"]["changed"] == {"estimate": {"old": 1.37, "new": 1.4}}
    assert len({e["detail"]["change_id"] for e in every}) == expected_all


def test_stream_consumer_validation_metrics_reach_cloudwatch(pipeline: Pipeline, first_sync: dict[str, Any]) -> None:
    # An item written around the pipeline (by hand, by a future batch path) with a broken currency.
    key = {"asset_symbol": {"S": "ZBADCUR"}, "earnings_date": {"S": "2025-09-01"}}
    sync_id, synced_at = new_sync_identity()
    pipeline.dynamodb.put_item(
        TableName=pipeline.table_name,
        Item={
            **key,
            "company_name": {"S": "Bad Currency Inc"},
            "fiscal_date_ending": {"S": "2025-06-30"},
            "estimate": {"N": "0.5"},
            "currency": {"S": "dollars"},
            "lastSyncDate": {"S": synced_at},
            "sync_id": {"S": sync_id},
        },
    )
    try:
        totals = wait_for(
            lambda: (t := pipeline.stream_metrics())[f"{M.VALIDATION_FAILED}_bad_currency"] >= 1 and t,
            "ValidationFailed_bad_currency in the stream consumer's logs",
        )
        assert totals[M.VALIDATION_FAILED] >= 1
        assert totals[M.VALIDATION_PASSED] >= SAMPLE_ROWS  # every item of the first sync was an INSERT

        lines = pipeline.log_messages("StreamConsumerFunctionName")
        blobs = [json.loads(line) for line in lines if line.startswith("{") and '"_aws"' in line]
        definitions = {
            metric["Name"]: (directive["Namespace"], metric["Unit"])
            for blob in blobs
            for directive in blob["_aws"]["CloudWatchMetrics"]
            for metric in directive["Metrics"]
        }
        assert definitions[M.VALIDATION_PASSED] == ("EarningsSync", "Count")
        assert definitions[f"{M.VALIDATION_FAILED}_bad_currency"] == ("EarningsSync", "Count")
        warnings = [json.loads(line) for line in lines if '"item breaks consistency rules"' in line]
        assert any(w["key"] == ["ZBADCUR", "2025-09-01"] and w["rules"] == ["bad_currency"] for w in warnings)

        # On AWS, CloudWatch turns these lines into metrics. LocalStack (community) does not: when a
        # version starts doing it, the figures must agree with the lines.
        extracted = pipeline.cloudwatch.list_metrics(Namespace="EarningsSync", MetricName=M.VALIDATION_PASSED)["Metrics"]
        if extracted:
            assert extracted[0]["MetricName"] == M.VALIDATION_PASSED
    finally:
        pipeline.dynamodb.delete_item(TableName=pipeline.table_name, Key=key)


def _take_dead_letter(pipeline: Pipeline, sync_id: str) -> dict[str, Any] | None:
    """Receive the DLQ message of one sync and delete it; the others are made visible again."""
    url = pipeline.outputs["DLQUrl"]
    messages = pipeline.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=10, WaitTimeSeconds=1
    ).get("Messages", [])
    found = None
    for message in messages:
        attributes = message.get("MessageAttributes", {})
        if attributes.get(dlq.ATTR_SYNC_ID, {}).get("StringValue") == sync_id and found is None:
            found = message
            pipeline.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        else:
            pipeline.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return found


def _record(symbol: str, date: str = "2025-09-10") -> EarningsRecord:
    return EarningsRecord(symbol, date, f"{symbol} Corp", "2025-06-30", "0.25", "USD")


def _send(pipeline: Pipeline, records: list[Any]) -> str:
    """One sync message straight onto the queue, as the producer would send it; returns the sync id."""
    sync_id, synced_at = new_sync_identity()
    plain = [json.loads(msgspec.json.encode(r)) if isinstance(r, EarningsRecord) else r for r in records]
    envelope = {"sync_id": sync_id, "synced_at": synced_at, "records": plain, "v": SCHEMA_VERSION}
    pipeline.sqs.send_message(
        QueueUrl=pipeline.outputs["QueueUrl"],
        MessageBody=json.dumps(envelope),
        MessageAttributes=message_attributes(sync_id, synced_at, len(records)),
    )
    return sync_id


def test_a_poison_record_goes_to_the_dlq_with_its_reason_and_its_neighbours_are_written(pipeline: Pipeline) -> None:
    bad = {**json.loads(msgspec.json.encode(_record("ZPOISB"))), "earnings_date": "2025-02-30"}
    sync_id = _send(pipeline, [_record("ZPOISA"), bad, _record("ZPOISC")])

    wait_for(lambda: {("ZPOISA", "2025-09-10"), ("ZPOISC", "2025-09-10")} <= set(pipeline.table()), "the valid records")
    dead = wait_for(lambda: _take_dead_letter(pipeline, sync_id), "the poison record in the DLQ", timeout=60)
    attributes = {name: value["StringValue"] for name, value in dead["MessageAttributes"].items()}
    assert attributes[dlq.ATTR_KIND] == "poison"
    assert attributes[dlq.ATTR_REASON].startswith("invalid record") and "2025-02-30" in attributes[dlq.ATTR_REASON]
    letter = msgspec.json.decode(dead["Body"], type=dlq.DeadLetter)
    assert letter.sync_id == sync_id
    assert [msgspec.json.decode(raw) for raw in letter.records] == [bad]
    assert [f.index for f in letter.failures] == [0]
    assert not any(symbol == "ZPOISB" for symbol, _ in pipeline.table())
    assert pipeline.queue_busy(pipeline.outputs["QueueUrl"]) == 0


def _set_consumer_table(pipeline: Pipeline, table_name: str) -> None:
    name = pipeline.outputs["ConsumerFunctionName"]
    variables = pipeline.lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    pipeline.lam.update_function_configuration(FunctionName=name, Environment={"Variables": {**variables, "TABLE_NAME": table_name}})
    pipeline.lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def _dead_sync_ids(pipeline: Pipeline) -> set[str]:
    """Sync ids of the DLQ's messages, read without consuming them."""
    url = pipeline.outputs["DLQUrl"]
    messages = pipeline.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=5, WaitTimeSeconds=1
    ).get("Messages", [])
    for message in messages:
        pipeline.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return {m.get("MessageAttributes", {}).get(dlq.ATTR_SYNC_ID, {}).get("StringValue", "") for m in messages}


def test_dlq_replay_restores_dead_lettered_messages_once_the_cause_is_fixed(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_url, dlq_url = pipeline.outputs["QueueUrl"], pipeline.outputs["DLQUrl"]
    endpoint = ["--endpoint-url", pipeline.stack.endpoint, "--json"]
    visibility = pipeline.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    # The cause: the consumer is configured with a table that does not exist. Every delivery fails,
    # and after MaxReceiveCount receives SQS's redrive policy moves the message to the DLQ. A short
    # visibility timeout makes the redeliveries quick.
    _set_consumer_table(pipeline, f"{pipeline.table_name}-missing")
    pipeline.sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "1"})
    try:
        first, second = _send(pipeline, [_record("ZREPLA")]), _send(pipeline, [_record("ZREPLB")])
        wait_for(lambda: {first, second} <= _dead_sync_ids(pipeline), "both messages in the DLQ", timeout=90)
        assert not {("ZREPLA", "2025-09-10"), ("ZREPLB", "2025-09-10")} & set(pipeline.table())
    finally:
        _set_consumer_table(pipeline, pipeline.table_name)  # the fix
        pipeline.sqs.set_queue_attributes(QueueUrl=queue_url, Attributes=visibility)

    # Client-side replay of one sync only: it is consumed again and written; the other one waits.
    assert cli(["dlq", "replay", dlq_url, "--sync-id", first, *endpoint]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["matched"], report["replayed"], report["target_url"]) == (1, 1, queue_url)
    assert report["items"][0]["kind"] == "unknown"  # moved by SQS's redrive: no reason recorded
    wait_for(lambda: ("ZREPLA", "2025-09-10") in pipeline.table(), "the replayed record in the table")
    assert ("ZREPLB", "2025-09-10") not in pipeline.table()
    assert second in _dead_sync_ids(pipeline)

    # Native replay (StartMessageMoveTask): SQS moves the rest back to the source queue.
    assert cli(["dlq", "replay", dlq_url, "--native", *endpoint]) == 0
    assert json.loads(capsys.readouterr().out)["task_handle"]
    dlq_arn = pipeline.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    wait_for(
        lambda: [t for t in pipeline.sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"] if t["Status"] == "COMPLETED"],
        "the message move task to complete",
        timeout=60,
    )
    wait_for(lambda: ("ZREPLB", "2025-09-10") in pipeline.table(), "the natively replayed record in the table")
    pipeline.wait_quiet()
    assert pipeline.queue_busy(dlq_url) == 0
