"""The producer Lambda handler: sources, message shape, upstream errors and send failures, on moto."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import msgspec
import pytest

from earnings_sync import aws as aws_clients
from earnings_sync.messages import SyncMessage
from earnings_sync.observability import M
from earnings_sync.records import NotACalendarError, UpstreamError
from earnings_sync.sources import SourceError
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from producers import app
from tests.conftest import SAMPLE_CSV, csv_text
from tests.helpers import Faults, http_response

ROWS = [
    "A,Agilent Technologies Inc,2025-08-19,2025-07-31,1.37,USD",
    "AA,Alcoa Corp,2025-10-15,2025-09-30,0.2737,USD",
    "AA,Alcoa Corp,2026-01-20,2025-12-31,0.5,USD",
    "BAD,Bad Co,2025-08-19,2025-07-31,not-a-number,USD",
    "A,Agilent Technologies Inc,2025-08-19,2025-07-31,1.40,USD",
]


def drain(sqs: Any, url: str) -> list[dict]:
    messages: list[dict] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])


def run(event: dict) -> tuple[Any, Any, BaseException | None]:
    return invoke(app.lambda_handler, event, LambdaContext("ProducerFunction", 300))


def test_local_file_sync_enqueues_every_record_once(handler_env: dict[str, Any], tmp_path: Any) -> None:
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*ROWS, newline="\r\n"))
    report, metrics, error = run({"path": str(path)})
    assert error is None
    assert report["rows"] == 5 and report["records"] == 3 and report["duplicates"] == 1
    assert report["rejected"] == {"bad_estimate": 1}
    assert report["rejections"] == [{"line": 5, "reason": "bad_estimate", "detail": "estimate 'not-a-number'"}]
    messages = drain(handler_env["sqs"], handler_env["resources"].queue_url)
    assert len(messages) == report["messages_sent"] == 1
    decoded = msgspec.json.decode(messages[0]["Body"], type=SyncMessage)
    assert decoded.sync_id == report["sync_id"] and decoded.synced_at == report["synced_at"]
    assert {(r.asset_symbol, r.earnings_date): r.estimate for r in decoded.records} == {
        ("A", "2025-08-19"): "1.4",  # the later duplicate row won, its estimate in canonical form
        ("AA", "2025-10-15"): "0.2737",
        ("AA", "2026-01-20"): "0.5",
    }
    assert messages[0]["MessageAttributes"]["record_count"]["StringValue"] == "3"
    assert metrics[M.ROWS_READ] == 5 and metrics[f"{M.ROWS_REJECTED}_bad_estimate"] == 1
    assert metrics[M.RECORDS_ENQUEUED] == 3 and metrics[M.DUPLICATE_ROWS] == 1


def test_sample_sync_messages_hold_at_most_25_records_and_whole_symbols(handler_env: dict[str, Any]) -> None:
    report, _, error = run({"path": str(SAMPLE_CSV), "synced_at": "2025-07-19T06:00:00.000000Z"})
    assert error is None and report["synced_at"] == "2025-07-19T06:00:00.000000Z"
    messages = drain(handler_env["sqs"], handler_env["resources"].queue_url)
    decoded = [msgspec.json.decode(m["Body"], type=SyncMessage) for m in messages]
    assert all(len(m.records) <= 25 for m in decoded)
    assert sum(len(m.records) for m in decoded) == report["records_enqueued"] == 10285
    homes: dict[str, set[int]] = {}
    for index, message in enumerate(decoded):
        for record in message.records:
            homes.setdefault(record.asset_symbol, set()).add(index)
    assert all(len(h) == 1 for h in homes.values())


def test_s3_object_source(handler_env: dict[str, Any]) -> None:
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=handler_env["endpoint"])
    s3.create_bucket(Bucket="calendar-drops")
    s3.put_object(Bucket="calendar-drops", Key="2025/07/19.csv", Body=csv_text(*ROWS[:3]).encode())
    notification = {"Records": [{"s3": {"bucket": {"name": "calendar-drops"}, "object": {"key": "2025/07/19.csv"}}}]}
    report, _, error = run(notification)
    assert error is None and report["source"] == "s3://calendar-drops/2025/07/19.csv" and report["records_enqueued"] == 3
    _, _, error = run({"s3": {"bucket": "calendar-drops", "key": "missing.csv"}})
    assert isinstance(error, SourceError) and "missing.csv" in str(error)


class FakeAlphaVantage:
    """Stands in for the HTTPS endpoint (urllib's opener), recording the URLs it was asked for."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.urls: list[str] = []

    def __call__(self, url: str, timeout: float) -> io.BytesIO:
        self.urls.append(url)
        return io.BytesIO(self.body)


def test_alphavantage_key_from_ssm_and_upstream_json_enqueues_nothing(handler_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from earnings_sync import producer as producer_module
    from earnings_sync.settings import Settings

    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=handler_env["endpoint"])
    ssm.put_parameter(Name="/earnings-sync/alphavantage-api-key", Value="SECRETKEY42", Type="SecureString")
    settings = Settings.from_env({"QUEUE_URL": handler_env["resources"].queue_url,
                                  "ALPHAVANTAGE_API_KEY_PARAMETER": "/earnings-sync/alphavantage-api-key"})
    sqs = handler_env["sqs"]

    ok = FakeAlphaVantage(csv_text(*ROWS[:2]).encode())
    report = producer_module.sync_from_event({"source": "alphavantage"}, settings, sqs=sqs, ssm=ssm, opener=ok)
    assert report.records_enqueued == 2 and report.source == "alphavantage:3month"
    assert "apikey=SECRETKEY42" in ok.urls[0] and "function=EARNINGS_CALENDAR" in ok.urls[0]

    drain(sqs, handler_env["resources"].queue_url)
    limited = FakeAlphaVantage(json.dumps({"Information": "Your key SECRETKEY42 reached 25 requests per day."}).encode())
    with pytest.raises(UpstreamError) as caught:
        producer_module.sync_from_event({}, settings, sqs=sqs, ssm=ssm, opener=limited)
    assert "25 requests per day" in str(caught.value) and "SECRETKEY42" not in str(caught.value)
    assert drain(sqs, handler_env["resources"].queue_url) == []


def test_handler_not_a_calendar_fails_the_invocation_and_counts_it(handler_env: dict[str, Any], tmp_path: Any) -> None:
    path = tmp_path / "quota.csv"
    path.write_text("symbol,name,reportDate,fiscalDateEnding,estimate,currency\r\nI,n,f,o,r,m,a\r\n")
    _, metrics, error = run({"path": str(path)})
    assert isinstance(error, NotACalendarError) and not isinstance(error, UpstreamError)  # a file is not upstream
    assert error.kind == "quota_row" and str(path) in str(error) and "upstream" not in str(error)
    assert metrics[M.UPSTREAM_ERRORS] == 1
    assert drain(handler_env["sqs"], handler_env["resources"].queue_url) == []


def test_failed_entries_are_resent_and_nothing_is_duplicated(handler_env: dict[str, Any], tmp_path: Any) -> None:
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*[f"S{i},Co {i},2025-08-19,2025-07-31,1,USD" for i in range(300)]))
    sqs = aws_clients.client("sqs", max_attempts=8)

    def all_failed(request: Any) -> Any:
        entries = json.loads(request.body)["Entries"]
        return http_response(200, {"Successful": [], "Failed": [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "try again"} for e in entries]})

    faults = Faults(sqs, "sqs", "SendMessageBatch", [all_failed])
    report, metrics, error = run({"path": str(path)})
    assert error is None and faults.injected == 1
    assert report["send_retries"] >= 1 and report["messages_sent"] == report["messages"] == 12
    messages = drain(handler_env["sqs"], handler_env["resources"].queue_url)
    records = [r for m in messages for r in msgspec.json.decode(m["Body"], type=SyncMessage).records]
    assert len(records) == len({r.key for r in records}) == 300


def test_entries_that_keep_failing_are_reported_not_dropped(handler_env: dict[str, Any], tmp_path: Any) -> None:
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*ROWS[:3]))
    sqs = aws_clients.client("sqs", max_attempts=8)

    def sender_fault(request: Any) -> Any:
        entries = json.loads(request.body)["Entries"]
        return http_response(200, {"Successful": [], "Failed": [{"Id": e["Id"], "SenderFault": True, "Code": "InvalidParameterValue", "Message": "bad"} for e in entries]})

    Faults(sqs, "sqs", "SendMessageBatch", [sender_fault])
    _, metrics, error = run({"path": str(path)})
    from earnings_sync.producer import EnqueueError

    assert isinstance(error, EnqueueError)
    assert error.report.failed_messages == [{"seq": 0, "records": 3, "error": "bad", "body_bytes": error.report.failed_messages[0]["body_bytes"]}]
    assert metrics[M.ENQUEUE_FAILURES] == 1 and metrics[M.RECORDS_ENQUEUED] == 0


def test_missing_file_is_a_clear_error(handler_env: dict[str, Any]) -> None:
    _, _, error = run({"path": "/nonexistent/calendar.csv"})
    assert isinstance(error, SourceError) and "/nonexistent/calendar.csv" in str(error)
