"""Every handler path run against the emulator, with each AWS call it makes recorded: the calls must be
exactly `iam.OPERATIONS` (what template.yaml grants, tests/unit/test_template_checks.py), and the
metrics each handler publishes exactly the ones `observability.METRICS` declares for it.

Calls are attributed to a handler by walking the Python stack to its module, so the test's own set-up
calls and the emulator plumbing are not counted. The recorder wraps botocore's real call path; nothing
is stubbed but the few faults injected at the HTTP layer (tests/helpers.py) to reach the fallback paths.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient

from consumers import sqs_consumer, stream_consumer
from earnings_sync import aws as aws_clients
from earnings_sync.observability import METRICS, Handler, M, spec_for
from earnings_sync.records import UpstreamError
from earnings_sync_local import iam
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.sqs_mapping import SqsEventSource
from producers import app as producer_app
from queries import sync_monitor, upcoming_query
from tests.conftest import csv_text
from tests.helpers import Faults, dynamodb_error
from tests.integration.stream_support import StreamReader

MODULES = {handler.value: handler for handler in Handler}
FUNCTION_OF = {
    Handler.PRODUCER: "ProducerFunction",
    Handler.CONSUMER: "ConsumerFunction",
    Handler.STREAM_CONSUMER: "StreamConsumerFunction",
    Handler.UPCOMING: "UpcomingFunction",
    Handler.SYNC_MONITOR: "SyncMonitorFunction",
}
OLD, NEW = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z"


def _calling_handler() -> Handler | None:
    frame = sys._getframe(2)
    while frame is not None:
        handler = MODULES.get(frame.f_globals.get("__name__", ""))
        if handler is not None:
            return handler
        frame = frame.f_back
    return None


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[Handler, set[str]]:
    """handler -> {"<service>:<Operation>"} it called, through the real botocore path."""
    calls: dict[Handler, set[str]] = defaultdict(set)
    real_call = BaseClient._make_api_call

    def recording_call(client: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        handler = _calling_handler()
        if handler is not None:
            calls[handler].add(f"{client.meta.service_model.service_name}:{operation_name}")
        return real_call(client, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording_call)
    return calls


@pytest.fixture
def env(handler_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every function's environment from the template (they agree where they overlap)."""
    for function in FUNCTION_OF.values():
        for name, value in handler_env["resources"].environments.get(function, {}).items():
            monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    return handler_env


class Emitted:
    """Metric names each handler published, from the EMF it printed."""

    def __init__(self) -> None:
        self.names: dict[Handler, set[str]] = defaultdict(set)

    def call(self, handler: Handler, function: Any, event: Any, timeout: int = 30) -> tuple[Any, Counter[str], BaseException | None]:
        result, metrics, error = invoke(function, event, LambdaContext(FUNCTION_OF[handler], timeout))
        self.names[handler] |= set(metrics)
        return result, metrics, error

    def check(self, handler: Handler) -> None:
        published = {spec_for(name).name for name in self.names[handler]}  # KeyError: undeclared
        for name in published:
            assert handler in METRICS[name].emitted_by, f"{name} is published by {handler} but not declared for it"
        declared = {spec.name for spec in METRICS.values() if handler in spec.emitted_by} - {M.COLD_START}
        assert declared <= published, f"declared for {handler} but never published: {sorted(declared - published)}"


@pytest.fixture
def emitted() -> Emitted:
    return Emitted()


def rows(*specs: tuple[str, str, str]) -> str:
    return csv_text(*(f"{symbol},{symbol} Inc,{date},2025-06-30,{estimate},USD" for symbol, date, estimate in specs))


def consume(env: dict[str, Any], emitted: Emitted, *, extra_bodies: tuple[str, ...] = ()) -> Counter[str]:
    """Hand everything in the queue to the consumer handler, as the mapping would; metric totals."""
    resources, sqs = env["resources"], env["sqs"]
    for body in extra_bodies:
        sqs.send_message(QueueUrl=resources.queue_url, MessageBody=body)
    source = SqsEventSource(
        sqs, resources.queue_url, resources.queue_arn, sqs_consumer.lambda_handler,
        batch_size=resources.consumer_batch_size, report_batch_item_failures=True,
        function_name=FUNCTION_OF[Handler.CONSUMER], timeout_seconds=resources.consumer_timeout,
    )
    totals: Counter[str] = Counter()
    while True:
        messages = sqs.receive_message(QueueUrl=resources.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                       MessageAttributeNames=["All"]).get("Messages", [])
        if not messages:
            return totals
        response, metrics, error = emitted.call(Handler.CONSUMER, sqs_consumer.lambda_handler, source.build_event(messages))
        assert error is None, error
        totals.update(metrics)
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=resources.queue_url, ReceiptHandle=message["ReceiptHandle"])


def produce(emitted: Emitted, tmp_path: Path, text: str, synced_at: str) -> dict[str, Any]:
    path = tmp_path / f"{synced_at[:10]}.csv"
    path.write_text(text)
    report, _, error = emitted.call(Handler.PRODUCER, producer_app.lambda_handler, {"path": str(path), "synced_at": synced_at}, 300)
    assert error is None, error
    return report


@pytest.fixture
def alphavantage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local HTTP endpoint answering what AlphaVantage sends when the daily quota is used up."""

    class QuotaReached(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = json.dumps({"Information": "Your API key reached 25 requests per day."}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuotaReached)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield f"http://127.0.0.1:{server.server_address[1]}/query"
    server.shutdown()
    server.server_close()


def test_the_producer_calls_exactly_what_its_role_grants(
    env: dict[str, Any], recorded: dict[Handler, set[str]], emitted: Emitted, tmp_path: Path,
    alphavantage: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a file: SendMessageBatch (and the ledger's manifest)
    report = produce(emitted, tmp_path, rows(("AAA", "2025-08-01", "1.00"), ("BBB", "2025-08-02", "2.00")) + "BAD ROW\n", NEW)
    assert report["records_enqueued"] == 2 and report["rejected_total"] == 1
    # an S3 object: GetObject
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=env["endpoint"])
    s3.create_bucket(Bucket="calendar-drops")
    s3.put_object(Bucket="calendar-drops", Key="drop.csv", Body=rows(("CCC", "2025-08-03", "3.00")).encode())
    report, _, error = emitted.call(Handler.PRODUCER, producer_app.lambda_handler, {"s3": {"bucket": "calendar-drops", "key": "drop.csv"}}, 300)
    assert error is None and report["records_enqueued"] == 1
    # AlphaVantage with the key from SSM: GetParameter, then an upstream error
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=env["endpoint"])
    ssm.put_parameter(Name="/earnings-sync/alphavantage-api-key", Value="KEY42", Type="SecureString")
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY_PARAMETER", "/earnings-sync/alphavantage-api-key")
    monkeypatch.setenv("ALPHAVANTAGE_URL", alphavantage)
    _, metrics, error = emitted.call(Handler.PRODUCER, producer_app.lambda_handler, {"source": "alphavantage"}, 300)
    assert isinstance(error, UpstreamError) and metrics[M.UPSTREAM_ERRORS] == 1

    assert recorded[Handler.PRODUCER] == iam.OPERATIONS[Handler.PRODUCER]
    emitted.check(Handler.PRODUCER)


def test_the_consumer_calls_exactly_what_its_role_grants(
    env: dict[str, Any], recorded: dict[Handler, set[str]], emitted: Emitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # batch mode (the template's default): BatchGetItem + BatchWriteItem; a body that is no sync
    # message goes to the DLQ (SendMessage)
    produce(emitted, tmp_path, rows(("AAA", "2025-08-01", "1.00"), ("BBB", "2025-08-02", "2.00")), OLD)
    totals = consume(env, emitted, extra_bodies=("this is not a sync message",))
    assert totals[M.RECORDS_INSERTED] == 2 and totals[M.DLQ_SENDS] == 1
    # conditional mode: PutItem for changed content, UpdateItem for a confirmation, and a lost race
    # whose reply carries no item makes it re-read the item (GetItem)
    monkeypatch.setenv("WRITE_MODE", "conditional")
    produce(emitted, tmp_path, rows(("AAA", "2025-08-01", "1.50"), ("BBB", "2025-08-02", "2.00")), NEW)
    Faults(aws_clients.client("dynamodb"), "dynamodb", "PutItem", [dynamodb_error("ConditionalCheckFailedException")])
    totals = consume(env, emitted)
    assert totals[M.RECORDS_UPDATED] == 1 and totals[M.RECORDS_UNCHANGED] == 1 and totals[M.LOST_RACES] == 1
    # throttling that outlives every receive: RetryExhausted, counted Throttles
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "1")
    produce(emitted, tmp_path, rows(("DDD", "2025-08-04", "4.00")), NEW)
    Faults(aws_clients.client("dynamodb", max_attempts=1), "dynamodb", "BatchGetItem", [dynamodb_error("ThrottlingException")])
    totals = consume(env, emitted)
    assert totals[M.RETRY_EXHAUSTED] == 1 and totals[M.THROTTLES] == 1

    assert recorded[Handler.CONSUMER] == iam.OPERATIONS[Handler.CONSUMER]
    emitted.check(Handler.CONSUMER)


def test_the_stream_consumer_calls_exactly_what_its_role_grants(
    env: dict[str, Any], recorded: dict[Handler, set[str]], emitted: Emitted, tmp_path: Path,
) -> None:
    stream = StreamReader(env)
    produce(emitted, tmp_path, rows(("AAA", "2025-08-01", "1.00"), ("BBB", "2025-08-02", "2.00")), OLD)
    consume(env, emitted)
    # AAA moves to another date: the old one is superseded (Query + DeleteItem) ...
    produce(emitted, tmp_path, rows(("AAA", "2025-08-05", "1.00"), ("BBB", "2025-08-02", "2.00")), NEW)
    consume(env, emitted)
    # ... and a write around the rules puts an older sync over BBB: restored (PutItem)
    table = env["resources"].table_name
    item = env["dynamodb"].get_item(TableName=table, Key={"asset_symbol": {"S": "BBB"}, "earnings_date": {"S": "2025-08-02"}})["Item"]
    env["dynamodb"].put_item(TableName=table, Item={**item, "lastSyncDate": {"S": "2025-07-01T00:00:00.000000Z"}})
    _, metrics, error = emitted.call(Handler.STREAM_CONSUMER, stream_consumer.lambda_handler, stream.event(), 60)
    assert error is None, error
    assert metrics[M.SUPERSEDED_REMOVED] == 1 and metrics[M.REGRESSIONS_RESTORED] == 1
    assert metrics[M.VALIDATION_PASSED] >= 3

    assert recorded[Handler.STREAM_CONSUMER] == iam.OPERATIONS[Handler.STREAM_CONSUMER]
    emitted.check(Handler.STREAM_CONSUMER)


def test_the_upcoming_reader_calls_exactly_what_its_role_grants(
    env: dict[str, Any], recorded: dict[Handler, set[str]], emitted: Emitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    produce(emitted, tmp_path, rows(("AAA", "2025-08-01", "1.37"), ("BBB", "2025-08-02", "2.00")), NEW)
    consume(env, emitted)
    request = {"from": "2025-08-01", "to": "2025-08-03"}
    answer, metrics, error = emitted.call(Handler.UPCOMING, upcoming_query.lambda_handler, request)
    assert error is None and [(i["earnings_date"], i["asset_symbol"]) for i in answer["items"]] == [
        ("2025-08-01", "AAA"), ("2025-08-02", "BBB")
    ]
    assert answer["items"][0]["estimate"] == 1.37 and json.dumps(answer)  # plain JSON for the runtime
    assert metrics[M.UPCOMING_QUERIES] == 3 and metrics[M.UPCOMING_REQUESTS] == 1 and metrics[M.UPCOMING_SCAN_FALLBACKS] == 0
    # the index refuses the query: same answer from a Scan, counted as an index failure
    Faults(aws_clients.client("dynamodb"), "dynamodb", "Query", [dynamodb_error("ValidationException", "index is backfilling")])
    fallback, metrics, error = emitted.call(Handler.UPCOMING, upcoming_query.lambda_handler, request)
    def keys(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(i["earnings_date"], i["asset_symbol"]) for i in items]

    assert error is None and keys(fallback["items"]) == keys(answer["items"]) and fallback["fallback_used"] is True
    assert metrics[M.UPCOMING_INDEX_FAILURES] == 1 and metrics[M.UPCOMING_SCAN_FALLBACKS] == 1
    # throttled for good: the request fails and says so (no Scan); both attempts are counted
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    throttled = [dynamodb_error("ProvisionedThroughputExceededException")] * 2
    Faults(aws_clients.client("dynamodb", max_attempts=2), "dynamodb", "Query", throttled)
    _, metrics, error = emitted.call(Handler.UPCOMING, upcoming_query.lambda_handler, request)
    assert error is not None and metrics[M.UPCOMING_REQUEST_FAILURES] == 1 and metrics[M.UPCOMING_THROTTLES] == 2
    # a malformed request is answered, not counted as a GSI read
    answer, metrics, error = emitted.call(Handler.UPCOMING, upcoming_query.lambda_handler, {"from": "2025-08-01"})
    assert error is None and "to" in answer["error"] and metrics[M.UPCOMING_REQUESTS] == 0
    answer, _, error = emitted.call(Handler.UPCOMING, upcoming_query.lambda_handler, {**request, "limit": 5000})
    assert error is None and answer == {"error": f"limit must be between 1 and {upcoming_query.MAX_LIMIT}"}

    assert recorded[Handler.UPCOMING] == iam.OPERATIONS[Handler.UPCOMING]
    emitted.check(Handler.UPCOMING)


def test_the_sync_monitor_calls_exactly_what_its_role_grants(
    env: dict[str, Any], recorded: dict[Handler, set[str]], emitted: Emitted, tmp_path: Path,
) -> None:
    # a sync of now, not consumed yet: the registry's newest syncs and the sync's entries (Query)
    path = tmp_path / "now.csv"
    path.write_text(rows(("AAA", "2025-08-01", "1.00")))
    _, _, error = emitted.call(Handler.PRODUCER, producer_app.lambda_handler, {"path": str(path)}, 300)
    assert error is None, error
    watch, metrics, error = emitted.call(Handler.SYNC_MONITOR, sync_monitor.lambda_handler, {}, 60)
    assert error is None and watch["pending"] == 1 and metrics[M.SYNC_COMPLETIONS] == 0
    # consumed: the ledger is complete and the registry item is marked (UpdateItem), once
    consume(env, emitted)
    watch, metrics, error = emitted.call(Handler.SYNC_MONITOR, sync_monitor.lambda_handler, {}, 60)
    assert error is None and watch["complete"] == 1 and metrics[M.SYNC_COMPLETIONS] == 1

    assert recorded[Handler.SYNC_MONITOR] == iam.OPERATIONS[Handler.SYNC_MONITOR]
    emitted.check(Handler.SYNC_MONITOR)
