"""The sample events in events/ (for `sam local invoke -e events/<file>.json <Function>`), each run
through the handler template.yaml names for its function, on the emulator, with the outcome the
README documents for it.

The events are used as they are written; only the SQS batch's queue ARN is pointed at the emulator's
queue. What makes them real is checked too: the SQS bodies are the producer's own message format,
the stream images are the table's own item codec, the schedule event is the rule's Input.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import boto3
import msgspec
import pytest

from earnings_sync import consistency
from earnings_sync.calendar_table import CalendarTable, item_to_plain, key_of, record_to_item
from earnings_sync.ledger import SyncLedger
from earnings_sync.messages import SyncMessage, encode_message
from earnings_sync.observability import M
from earnings_sync.producer import message_attributes
from earnings_sync.records import EarningsRecord
from earnings_sync.upsert import upsert_records
from earnings_sync_local import template
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.pipeline import import_handler
from tests.conftest import ROOT, SAMPLE_CSV
from tests.helpers import FakeAlphaVantage

EVENTS = ROOT / "events"
# Each sample event and the function (template.yaml logical id) it is written for.
SAMPLES = {
    "producer-schedule.json": "ProducerFunction",
    "producer-s3-notification.json": "ProducerFunction",
    "consumer-sqs-batch.json": "ConsumerFunction",
    "stream-consumer-batch.json": "StreamConsumerFunction",
    "upcoming-query.json": "UpcomingFunction",
}
API_KEY = "SAMPLEKEY123"


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def run(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, function_id: str, event: dict[str, Any]) -> tuple[Any, Any, BaseException | None]:
    """Invoke the function's handler (template.yaml's `Handler`) with the environment the template gives it."""
    resources = env["resources"]
    for name, value in resources.environments[function_id].items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    _, handler = import_handler(resources, function_id)
    return invoke(handler, event, LambdaContext(function_id, 60))


def messages_in(sqs: Any, url: str) -> list[SyncMessage]:
    found: list[SyncMessage] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        found.extend(msgspec.json.decode(m["Body"], type=SyncMessage) for m in batch)
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    return found


def sample_rows(count: int) -> bytes:
    lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    return ("\n".join(lines[: count + 1]) + "\n").encode()


def record_of(image: dict[str, Any]) -> tuple[EarningsRecord, str, str]:
    """A stream image read back as (the record, its sync_id, its synced_at)."""
    plain = item_to_plain(image)
    fields = {name: plain.get(name) for name in EarningsRecord.__struct_fields__}
    fields["estimate"] = None if plain["estimate"] is None else str(plain["estimate"])
    return EarningsRecord(**fields), plain["sync_id"], plain["lastSyncDate"]


def queue_records(event: dict[str, Any]) -> list[EarningsRecord]:
    return [record for r in event["Records"] for record in msgspec.json.decode(r["body"], type=SyncMessage).records]


# --------------------------------------------------------------------------------- the samples


def test_every_sample_is_valid_json_for_a_function_the_template_defines(aws: dict[str, Any]) -> None:
    assert sorted(path.name for path in EVENTS.glob("*.json")) == sorted(SAMPLES)
    handlers = aws["resources"].handlers
    for name, function_id in SAMPLES.items():
        assert isinstance(load(name), dict), name
        assert function_id in handlers, f"{name}: {function_id} is not a function of template.yaml"


def test_the_schedule_sample_is_what_the_daily_rule_delivers() -> None:
    producer = template.load_template()["Resources"]["ProducerFunction"]["Properties"]
    assert load("producer-schedule.json") == json.loads(producer["Events"]["DailySync"]["Properties"]["Input"])


def test_the_sqs_sample_holds_the_producers_own_messages() -> None:
    for record in load("consumer-sqs-batch.json")["Records"]:
        message = msgspec.json.decode(record["body"], type=SyncMessage)
        assert encode_message(message) == record["body"]  # exactly what the producer would send
        attributes = message_attributes(message.sync_id, message.synced_at, len(message.records))
        assert {name: (value["stringValue"], value["dataType"]) for name, value in record["messageAttributes"].items()} == {
            name: (value["StringValue"], value["DataType"]) for name, value in attributes.items()
        }
        assert record["attributes"]["ApproximateReceiveCount"] == "1" and record["eventSource"] == "aws:sqs"


def test_the_stream_sample_images_are_the_tables_own_items_after_the_sqs_samples_sync() -> None:
    queued = {record.key: record for record in queue_records(load("consumer-sqs-batch.json"))}
    for record in load("stream-consumer-batch.json")["Records"]:
        change = record["dynamodb"]
        assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES" and record["eventSource"] == "aws:dynamodb"
        for image in (change["NewImage"], change.get("OldImage")):
            if image is None:
                continue
            assert record_to_item(*record_of(image)) == image
            assert consistency.validate_item(image, change["Keys"]) == []
        old = change.get("OldImage")
        if old is not None:  # what the SQS sample's sync wrote
            assert record_of(old)[0] == queued[record_of(old)[0].key]


# --------------------------------------------------------------------------- through the handlers


@pytest.fixture
def alphavantage() -> Iterator[FakeAlphaVantage]:
    with FakeAlphaVantage(sample_rows(40)) as fake:
        yield fake


def test_the_schedule_event_syncs_the_calendar_from_alphavantage(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, alphavantage: FakeAlphaVantage
) -> None:
    environment = aws["resources"].environments["ProducerFunction"]
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=aws["endpoint"])
    ssm.put_parameter(Name=environment["ALPHAVANTAGE_API_KEY_PARAMETER"], Value=API_KEY, Type="SecureString")
    monkeypatch.setenv("ALPHAVANTAGE_URL", alphavantage.url)
    report, metrics, error = run(aws, monkeypatch, "ProducerFunction", load("producer-schedule.json"))
    assert error is None
    assert report["source"] == f"alphavantage:{environment['ALPHAVANTAGE_HORIZON']}"
    assert (report["rows"], report["records_enqueued"], report["ledger"]) == (40, 40, "recorded")
    (query,) = alphavantage.queries
    assert query["apikey"] == [API_KEY] and query["function"] == ["EARNINGS_CALENDAR"] and query["horizon"] == ["3month"]
    assert API_KEY not in json.dumps(report)
    assert sum(len(m.records) for m in messages_in(aws["sqs"], aws["resources"].queue_url)) == metrics[M.RECORDS_ENQUEUED] == 40


def test_the_s3_notification_syncs_the_uploaded_object_under_its_decoded_key(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    event = load("producer-s3-notification.json")
    notified = event["Records"][0]["s3"]
    bucket, key = notified["bucket"]["name"], urllib.parse.unquote_plus(notified["object"]["key"])
    assert key == "calendars/earnings calendar 2025-07-19.csv"  # a notification's key arrives URL-encoded
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=aws["endpoint"])
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=sample_rows(30))
    report, _, error = run(aws, monkeypatch, "ProducerFunction", event)
    assert error is None
    assert report["source"] == f"s3://{bucket}/{key}" and (report["rows"], report["records_enqueued"]) == (30, 30)
    messages = messages_in(aws["sqs"], aws["resources"].queue_url)
    assert {m.sync_id for m in messages} == {report["sync_id"]} and sum(len(m.records) for m in messages) == 30


def consume_sample_batch(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Any]:
    """The SQS sample through the consumer, its queue ARN the emulator's."""
    event = load("consumer-sqs-batch.json")
    for record in event["Records"]:
        record["eventSourceARN"] = aws["resources"].queue_arn
    response, metrics, error = run(aws, monkeypatch, "ConsumerFunction", event)
    assert error is None
    return response, metrics


def test_the_sqs_batch_is_written_and_each_message_recorded_in_the_ledger(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    response, metrics = consume_sample_batch(aws, monkeypatch)
    assert response == {"batchItemFailures": []}
    event = load("consumer-sqs-batch.json")
    records = queue_records(event)
    table = CalendarTable(aws["dynamodb"], aws["resources"].table_name)
    stored = {key_of(item): item_to_plain(item) for item in table.all_items()}
    assert set(stored) == {record.key for record in records}
    assert all(stored[r.key]["company_name"] == r.company_name and stored[r.key]["lastSyncDate"] == "2025-07-19T06:00:00.000000Z" for r in records)
    assert metrics[M.RECORDS_INSERTED] == len(records) == 9
    sync_id = event["Records"][0]["messageAttributes"]["sync_id"]["stringValue"]
    report = SyncLedger(aws["dynamodb"], aws["resources"].tables["SyncLedgerTable"]).report(sync_id)
    assert (report.messages_with_outcome, report.inserted) == (2, 9)  # no manifest here: only the consumer's half


def test_the_stream_batch_removes_the_rescheduled_date_and_validates_the_changes(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    event = load("stream-consumer-batch.json")
    table = CalendarTable(aws["dynamodb"], aws["resources"].table_name)
    # The table as the two syncs the sample describes left it: the older one is the SQS sample's,
    # then the newer one wrote every NewImage (the rescheduled date's old item is still there).
    consume_sample_batch(aws, monkeypatch)
    for record in event["Records"]:
        written, sync_id, synced_at = record_of(record["dynamodb"]["NewImage"])
        upsert_records(table, [written], sync_id, synced_at)
    assert ("AA", "2025-10-15") in {key_of(item) for item in table.all_items()}
    response, metrics, error = run(aws, monkeypatch, "StreamConsumerFunction", event)
    assert error is None and response == {"batchItemFailures": []}
    keys = {key_of(item) for item in table.all_items()}
    assert ("AA", "2025-10-15") not in keys and {("AA", "2025-10-22"), ("A", "2025-08-19"), ("AAPL", "2025-07-31")} <= keys
    assert metrics[M.SUPERSEDED_REMOVED] == 1
    assert metrics[M.VALIDATION_PASSED] == 2 and metrics.get(M.VALIDATION_FAILED, 0) == 0  # the INSERT and the revision


def test_the_query_request_answers_the_reports_in_its_window(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    consume_sample_batch(aws, monkeypatch)
    request = load("upcoming-query.json")
    answer, metrics, error = run(aws, monkeypatch, "UpcomingFunction", request)
    assert error is None and "error" not in answer
    in_window = sorted(
        (r.earnings_date, r.asset_symbol) for r in queue_records(load("consumer-sqs-batch.json")) if request["from"] <= r.earnings_date <= request["to"]
    )
    assert [(item["earnings_date"], item["asset_symbol"]) for item in answer["items"]] == in_window
    assert len(in_window) == 6 and answer["next_token"] is None
    assert metrics[M.UPCOMING_REQUESTS] == 1


def test_the_readme_lists_every_sample_with_its_function() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, function_id in SAMPLES.items():
        assert f"| `{name}` | `{function_id}` |" in readme, name
