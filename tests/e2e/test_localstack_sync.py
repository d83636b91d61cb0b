"""`earnings-sync sync --stack NAME` against a stack deployed from template.yaml on LocalStack.

The command finds everything itself from the stack's name (CloudFormation), uploads the file, has
the deployed producer sync it, and follows the ledger while LocalStack's SQS mapping runs the
consumer; the test then checks the ledger and the table it reports on, and the exit code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from earnings_sync.calendar_table import CalendarTable
from earnings_sync.ledger import SyncLedger
from earnings_sync_cli.main import main as cli
from tests.e2e.localstack_stack import DeployedStack, deploy_stack, empty_bucket, localstack_info
from tests.helpers import FakeAlphaVantage

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "earnings_calendar_2025-07.csv"
ROWS = 80
TIMEOUT = "180"


@pytest.fixture(scope="module")
def stack(localstack_endpoint: str) -> Iterator[tuple[DeployedStack, str]]:
    suffix = uuid.uuid4().hex[:10]
    input_bucket = f"earnings-sync-e2e-sync-{suffix}"
    deployed = deploy_stack(
        localstack_endpoint,
        parameters={"TableName": f"earningsCalendar-e2e-sync-{suffix}", "InputBucketName": input_bucket},
    )
    deployed.client("s3").create_bucket(Bucket=input_bucket)
    try:
        yield deployed, input_bucket
    finally:
        empty_bucket(deployed.client("s3"), input_bucket, delete=True)
        deployed.delete()


def calendar_text(rows: int) -> str:
    """The header and the first `rows` rows of the real snapshot."""
    return "\n".join(SAMPLE.read_text(encoding="utf-8").splitlines()[: rows + 1]) + "\n"


def outcome(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return json.loads(capsys.readouterr().out)


def test_sync_uploads_a_file_and_exits_0_once_the_ledger_is_complete(
    stack: tuple[DeployedStack, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed, input_bucket = stack
    calendar = tmp_path / "calendar.csv"
    calendar.write_text(calendar_text(ROWS), encoding="utf-8")

    code = cli(["sync", "--stack", deployed.name, str(calendar), "--endpoint-url", deployed.endpoint, "--timeout", TIMEOUT, "--json"])
    result = outcome(capsys)
    assert code == 0, result
    assert result["complete"] is True and result["uploaded"].startswith(f"s3://{input_bucket}/earnings-sync/")
    sync_id = result["sync"]["sync_id"]
    report = SyncLedger(deployed.client("dynamodb"), deployed.outputs["SyncLedgerTableName"]).report(sync_id)
    assert report.complete and (report.rows, report.written) == (ROWS, ROWS)
    items = list(CalendarTable(deployed.client("dynamodb"), deployed.outputs["TableName"]).all_items())
    assert len(items) == ROWS and {item["sync_id"]["S"] for item in items} == {sync_id}


def test_sync_alphavantage_runs_what_the_schedule_runs(
    stack: tuple[DeployedStack, str], capsys: pytest.CaptureFixture[str]
) -> None:
    deployed, _ = stack
    if localstack_info(deployed.endpoint).get("is_docker"):
        pytest.skip("the functions run in containers: they cannot reach a stand-in AlphaVantage on this host's loopback")
    lam, producer = deployed.client("lambda"), deployed.outputs["ProducerFunctionName"]
    variables = lam.get_function_configuration(FunctionName=producer)["Environment"]["Variables"]
    deployed.client("ssm").put_parameter(
        Name=variables["ALPHAVANTAGE_API_KEY_PARAMETER"], Value="E2EKEY", Type="SecureString", Overwrite=True
    )
    with FakeAlphaVantage(calendar_text(30).encode()) as alphavantage:
        lam.update_function_configuration(FunctionName=producer, Environment={"Variables": {**variables, "ALPHAVANTAGE_URL": alphavantage.url}})
        lam.get_waiter("function_updated_v2").wait(FunctionName=producer, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        code = cli(["sync", "--stack", deployed.name, "--alphavantage", "--endpoint-url", deployed.endpoint, "--timeout", TIMEOUT, "--json"])
    result = outcome(capsys)
    assert code == 0, result
    assert result["sync"]["source"] == "alphavantage:3month" and result["sync"]["complete"] and result["sync"]["rows"] == 30
    assert alphavantage.queries[0]["apikey"] == ["E2EKEY"] and result["uploaded"] is None
