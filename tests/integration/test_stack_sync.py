"""`earnings-sync sync --stack NAME (FILE | --alphavantage)` on moto: the stack found with CloudFormation,
the file uploaded to S3, the ledger read from DynamoDB, all for real on the moto server.

Only Lambda is stood in for (moto runs functions in Docker): `FakeLambda.invoke` runs the producer
handler template.yaml names, in-process with the template's environment, and answers in Lambda's
Invoke shape; with `consume`, Lambda's SQS mapping then delivers the queue to the consumer. The
real Invoke, and the whole command against a stack deployed from template.yaml, run on LocalStack
(tests/e2e/test_localstack_sync.py).
"""

from __future__ import annotations

import io
import json
import traceback
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from earnings_sync import aws as aws_clients
from earnings_sync.calendar_table import CalendarTable
from earnings_sync_cli import sync as cli_sync
from earnings_sync_cli.main import main
from earnings_sync_local import template
from earnings_sync_local.emulator import free_port
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.pipeline import LocalPipeline, routed_logs
from producers import app as producer_app  # imported here, not first inside a test: its logger keeps no captured stream
from tests.conftest import SAMPLE_CSV
from tests.helpers import FakeAlphaVantage

STACK = "earnings-sync"
INPUT_BUCKET = "earnings-sync-input-test"
PRODUCER = "earnings-sync-ProducerFunction-Vb7Kq2LmN4xP"
API_KEY = "STACKKEY987"
ROWS = 60


class FakeLambda:
    """Lambda's Invoke of the stack's producer, run on the emulator (see the module docstring)."""

    def __init__(
        self, aws: dict[str, Any], *, consume: bool = True, environment: dict[str, str] | None = None, function_name: str = PRODUCER
    ) -> None:
        self.function_name = function_name
        self.pipeline = LocalPipeline(aws["resources"], aws["sqs"], dynamodb=aws["dynamodb"], environment=environment)
        self.consume = consume
        self.events: list[dict[str, Any]] = []
        self.logs = io.StringIO()  # the functions' log lines: CloudWatch Logs on AWS

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803 - boto3's names
        if FunctionName != self.function_name:
            error = {"Code": "ResourceNotFoundException", "Message": f"Function not found: {FunctionName}"}
            raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 404}}, "Invoke")
        assert InvocationType == "RequestResponse"
        event = json.loads(Payload)
        self.events.append(event)
        with self.pipeline.environ(), routed_logs(producer_app.logger, self.logs):
            result, _, error = invoke(self.pipeline.producer, event, LambdaContext(template.PRODUCER_ID, 300))
            if self.consume and error is None:
                self.pipeline.drain()
        response: dict[str, Any] = {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
        if error is not None:
            response["FunctionError"] = "Unhandled"
            result = {"errorMessage": str(error), "errorType": type(error).__name__, "stackTrace": traceback.format_tb(error.__traceback__)}
        response["Payload"] = io.BytesIO(json.dumps(result).encode())
        return response


def create_stack(aws: dict[str, Any], name: str = STACK, input_bucket: str = INPUT_BUCKET) -> None:
    """A CloudFormation stack on moto with template.yaml's outputs and parameter, naming the emulator's resources."""
    body = {
        "Parameters": {"InputBucketName": {"Type": "String", "Default": ""}},
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "ProducerFunctionName": {"Value": PRODUCER},
            "SyncLedgerTableName": {"Value": aws["resources"].tables["SyncLedgerTable"]},
        },
    }
    cloudformation = boto3.client("cloudformation", region_name="us-east-1", endpoint_url=aws["endpoint"])
    cloudformation.create_stack(
        StackName=name, TemplateBody=json.dumps(body), Parameters=[{"ParameterKey": "InputBucketName", "ParameterValue": input_bucket}]
    )


@pytest.fixture
def s3(aws: dict[str, Any]) -> Any:
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=aws["endpoint"])
    client.create_bucket(Bucket=INPUT_BUCKET)
    return client


def with_lambda(monkeypatch: pytest.MonkeyPatch, fake: FakeLambda) -> FakeLambda:
    """The command's own clients (CloudFormation, S3, DynamoDB at --endpoint-url), its Lambda client replaced."""
    built = cli_sync.stack_clients
    monkeypatch.setattr(cli_sync, "stack_clients", lambda endpoint_url: built(endpoint_url)._replace(lambda_=fake))
    return fake


@pytest.fixture
def calendar(tmp_path: Path) -> Path:
    lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "calendar 2025-07-19.csv"
    path.write_text("\n".join(lines[: ROWS + 1]) + "\n", encoding="utf-8")
    return path


def sync(aws: dict[str, Any], *args: str) -> int:
    return main(["sync", "--stack", STACK, *args, "--endpoint-url", aws["endpoint"], "--interval", "0.05"])


def test_a_file_is_uploaded_synced_and_followed_until_its_ledger_is_complete(
    aws: dict[str, Any], s3: Any, calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_stack(aws)
    fake = with_lambda(monkeypatch, FakeLambda(aws))
    assert sync(aws, str(calendar), "--json") == 0
    outcome = json.loads(capsys.readouterr().out)
    bucket, _, key = outcome["uploaded"].removeprefix("s3://").partition("/")
    assert bucket == INPUT_BUCKET and key.startswith("earnings-sync/") and key.endswith("-calendar_2025-07-19.csv")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == calendar.read_bytes()
    assert fake.events == [{"s3": {"bucket": bucket, "key": key}}]
    assert outcome["complete"] is True and outcome["timed_out"] is False
    assert outcome["sync"]["status"] == "complete" and outcome["sync"]["rows"] == outcome["sync"]["written"] == ROWS
    assert outcome["sync"]["sync_id"] == outcome["producer"]["sync_id"] and outcome["sync"]["source"] == outcome["uploaded"]
    assert len(list(CalendarTable(aws["dynamodb"], aws["resources"].table_name).all_items())) == ROWS


def test_the_text_output_names_the_sync_then_prints_the_ledger_verdict(
    aws: dict[str, Any], s3: Any, calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_stack(aws)
    with_lambda(monkeypatch, FakeLambda(aws))
    assert sync(aws, str(calendar), "--key", "drops/today.csv") == 0
    first, second, verdict, *_ = capsys.readouterr().out.splitlines()
    assert first.startswith("sync ") and f"started on stack {STACK} from s3://{INPUT_BUCKET}/drops/today.csv: {ROWS} rows" in first
    assert second.startswith(f"sync {first.split()[1]} (")  # format_report's first line: the same sync
    assert verdict.strip().startswith(f"ledger complete: {ROWS} rows = {ROWS} written")


def test_alphavantage_starts_what_the_schedule_starts(aws: dict[str, Any], s3: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    create_stack(aws)
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=aws["endpoint"])
    ssm.put_parameter(Name=aws["resources"].environments["ProducerFunction"]["ALPHAVANTAGE_API_KEY_PARAMETER"], Value=API_KEY, Type="SecureString")
    snapshot = "\n".join(SAMPLE_CSV.read_text(encoding="utf-8").splitlines()[:41]) + "\n"
    with FakeAlphaVantage(snapshot.encode()) as alphavantage:
        fake = with_lambda(monkeypatch, FakeLambda(aws, environment={"ALPHAVANTAGE_URL": alphavantage.url}))
        assert sync(aws, "--alphavantage", "--json") == 0
    outcome = json.loads(capsys.readouterr().out)
    assert fake.events == [{"source": "alphavantage"}] and outcome["uploaded"] is None
    assert outcome["complete"] is True and outcome["sync"]["source"] == "alphavantage:3month" and outcome["sync"]["rows"] == 40
    assert alphavantage.queries[0]["apikey"] == [API_KEY]
    assert s3.list_objects_v2(Bucket=INPUT_BUCKET).get("KeyCount") == 0


def test_a_refusal_from_alphavantage_fails_the_sync_in_one_line_without_the_key(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_stack(aws)
    ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=aws["endpoint"])
    ssm.put_parameter(Name="/earnings-sync/alphavantage-api-key", Value=API_KEY, Type="SecureString")
    refusal = json.dumps({"Information": f"Your API key {API_KEY} has reached the 25 requests per day limit."}).encode()
    with FakeAlphaVantage(refusal) as alphavantage:
        with_lambda(monkeypatch, FakeLambda(aws, environment={"ALPHAVANTAGE_URL": alphavantage.url}))
        assert sync(aws, "--alphavantage") == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"earnings-sync sync: the producer ({PRODUCER}) failed: UpstreamError: ") and "25 requests per day" in err
    assert API_KEY not in err


def test_a_sync_not_complete_in_time_exits_1_naming_what_is_missing(
    aws: dict[str, Any], s3: Any, calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_stack(aws)
    with_lambda(monkeypatch, FakeLambda(aws, consume=False))  # the messages stay in the queue
    assert sync(aws, str(calendar), "--timeout", "0.3") == 1
    out, err = capsys.readouterr()
    assert "ledger INCOMPLETE" in out
    (line,) = err.splitlines()
    assert "is not complete after 0.3 s" in line and f"{ROWS} record(s) in 3 message(s) have no outcome yet" in line
    assert "seq 0 (25), seq 1 (25), seq 2 (10)" in line


def test_a_stack_without_an_input_bucket_takes_no_file_and_nothing_is_invoked(
    aws: dict[str, Any], calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_stack(aws, input_bucket="")
    fake = with_lambda(monkeypatch, FakeLambda(aws))
    assert sync(aws, str(calendar)) == 2
    err = capsys.readouterr().err
    assert f"stack {STACK} has no input bucket (its InputBucketName parameter is empty)" in err and "AlphaVantage" in err
    assert fake.events == []


def test_an_input_bucket_that_does_not_exist_is_named(
    aws: dict[str, Any], calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_stack(aws)  # its InputBucketName names a bucket nobody created
    fake = with_lambda(monkeypatch, FakeLambda(aws))
    assert sync(aws, str(calendar)) == 2
    assert f"the input bucket {INPUT_BUCKET} of stack {STACK} does not exist" in capsys.readouterr().err
    assert fake.events == []


def test_a_missing_stack_is_a_usage_error_naming_it_and_where_it_was_looked_for(
    aws: dict[str, Any], calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with_lambda(monkeypatch, FakeLambda(aws))
    assert sync(aws, str(calendar)) == 2
    assert capsys.readouterr().err == f"earnings-sync sync: stack {STACK} does not exist at {aws['endpoint']} (us-east-1)\n"


def test_a_producer_the_stack_names_but_lambda_does_not_know_is_a_usage_error(
    aws: dict[str, Any], s3: Any, calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_stack(aws)
    with_lambda(monkeypatch, FakeLambda(aws, function_name="another-function"))
    assert sync(aws, str(calendar)) == 2
    assert "not found (Invoke): Function not found: earnings-sync-ProducerFunction-" in capsys.readouterr().err


def test_a_file_that_is_not_a_calendar_is_refused_before_the_stack_is_read(
    aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "quota.json"
    path.write_text('{"Information": "rate limit"}\n')
    fake = with_lambda(monkeypatch, FakeLambda(aws))
    assert sync(aws, str(path)) == 2  # no stack exists either: the file is what is named
    assert "quota.json" in capsys.readouterr().err and fake.events == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timeout", "0"], "--timeout and --interval must be positive"),
        (["--timeout", "nan"], "--timeout and --interval must be positive"),
        (["--alphavantage", "--key", "x.csv"], "--key names the uploaded FILE's object"),
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--stack", STACK, *(argv if "--alphavantage" in argv else [*argv, "--alphavantage"])]) == 2
    assert message in capsys.readouterr().err


def test_the_invocation_waits_for_the_producer_and_is_never_retried() -> None:
    lambda_client = cli_sync.stack_clients("http://127.0.0.1:1").lambda_
    assert lambda_client.meta.config.read_timeout > 900  # Lambda's longest run
    assert lambda_client.meta.config.retries["total_max_attempts"] == 1  # a retry would start a second sync


def test_an_endpoint_that_cannot_be_reached_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    assert main(["sync", "--stack", STACK, "--alphavantage", "--endpoint-url", closed]) == 2
    assert capsys.readouterr().err == f"earnings-sync sync: cannot reach {closed}: check --endpoint-url, AWS_ENDPOINT_URL and AWS_REGION\n"


def test_no_credentials_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty-aws-config"
    empty.write_text("")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    aws_clients._cached_client.cache_clear()
    try:
        assert main(["sync", "--stack", STACK, "--alphavantage"]) == 2
    finally:
        aws_clients._cached_client.cache_clear()
    assert capsys.readouterr().err.startswith("earnings-sync sync: no AWS credentials: set AWS_PROFILE")
