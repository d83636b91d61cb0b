"""stack_sync without AWS: the stack's description read, the producer's answers judged, the ledger followed."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from earnings_sync.ledger import LedgerReport
from earnings_sync.stack_sync import (
    DeployedStack,
    FollowedSync,
    StackError,
    SyncFailed,
    describe_stack,
    follow_ledger,
    invoke_producer,
    settled,
    sync_file,
    unfinished,
    upload_key,
)
from earnings_sync_local.template import load_template
from tests.helpers import FakeClock

OUTPUTS = [
    {"OutputKey": "ProducerFunctionName", "OutputValue": "stack-ProducerFunction-1"},
    {"OutputKey": "SyncLedgerTableName", "OutputValue": "earningsCalendar-sync-ledger"},
]


def described(status: str = "UPDATE_COMPLETE", outputs: list[dict[str, str]] = OUTPUTS, bucket: str = "drops") -> dict[str, Any]:
    return {
        "Stacks": [
            {
                "StackName": "s",
                "CreationTime": dt.datetime(2025, 7, 1, tzinfo=dt.UTC),
                "StackStatus": status,
                "Parameters": [{"ParameterKey": "InputBucketName", "ParameterValue": bucket}],
                "Outputs": outputs,
            }
        ]
    }


def stack_from(response: dict[str, Any]) -> DeployedStack:
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    with Stubber(cloudformation) as stub:  # checks the response against the API's own shapes
        stub.add_response("describe_stacks", response, {"StackName": "s"})
        return describe_stack(cloudformation, "s")


def test_the_stack_gives_its_producer_ledger_table_and_input_bucket() -> None:
    assert stack_from(described()) == DeployedStack("s", "UPDATE_COMPLETE", "stack-ProducerFunction-1", "earningsCalendar-sync-ledger", "drops")
    assert stack_from(described(bucket="")).input_bucket is None


def test_the_outputs_read_are_outputs_of_the_template() -> None:
    assert {o["OutputKey"] for o in OUTPUTS} <= set(load_template()["Outputs"])
    assert "InputBucketName" in load_template()["Parameters"]


@pytest.mark.parametrize("status", ["ROLLBACK_COMPLETE", "DELETE_IN_PROGRESS", "CREATE_IN_PROGRESS", "REVIEW_IN_PROGRESS"])
def test_a_stack_whose_resources_may_be_missing_is_refused(status: str) -> None:
    with pytest.raises(StackError, match=f"stack s is {status}: deploy it first"):
        stack_from(described(status))


def test_a_stack_without_the_outputs_is_not_taken_for_one_of_ours() -> None:
    with pytest.raises(StackError, match="has no output SyncLedgerTableName: is it an earnings-sync stack"):
        stack_from(described(outputs=OUTPUTS[:1]))


def test_other_cloudformation_errors_are_left_to_the_caller() -> None:
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    with Stubber(cloudformation) as stub:
        stub.add_client_error("describe_stacks", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(cloudformation.exceptions.ClientError, match="AccessDenied"):
            describe_stack(cloudformation, "s")


def test_upload_keys_are_named_by_time_and_file_and_safe_as_keys() -> None:
    at = dt.datetime(2025, 7, 19, 7, 58, 41, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert upload_key(Path("/x/calendar.csv"), at) == "earnings-sync/20250719T055841Z-calendar.csv"
    assert upload_key(Path("my calendar (2).csv"), at) == "earnings-sync/20250719T055841Z-my_calendar_2_.csv"
    assert upload_key(Path("???"), at) == "earnings-sync/20250719T055841Z-calendar.csv"


class ScriptedLambda:
    def __init__(self, payload: bytes, function_error: str | None = None) -> None:
        self.payload, self.function_error = payload, function_error

    def invoke(self, **_: Any) -> dict[str, Any]:
        response: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(self.payload)}
        if self.function_error:
            response["FunctionError"] = self.function_error
        return response


def test_a_failed_invocation_says_what_failed() -> None:
    error = json.dumps({"errorMessage": "cannot read s3://b/k: NoSuchKey", "errorType": "SourceError"}).encode()
    with pytest.raises(SyncFailed, match=r"^the producer \(p\) failed: SourceError: cannot read s3://b/k: NoSuchKey$"):
        invoke_producer(ScriptedLambda(error, "Unhandled"), "p", {})
    with pytest.raises(SyncFailed, match=r"failed: Unhandled: no error message"):  # a runtime crash may answer nothing usable
        invoke_producer(ScriptedLambda(b"", "Unhandled"), "p", {})


def test_an_answer_without_a_sync_or_without_its_manifest_cannot_be_followed() -> None:
    with pytest.raises(SyncFailed, match="answered without a sync id: null"):
        invoke_producer(ScriptedLambda(b"null"), "p", {})
    unrecorded = json.dumps({"sync_id": "20250719T060000000000Z-3f9a1c2b", "ledger": "failed: AccessDeniedException: no"}).encode()
    with pytest.raises(SyncFailed, match=r"could not record its manifest in the ledger \(failed: AccessDeniedException: no\)"):
        invoke_producer(ScriptedLambda(unrecorded), "p", {})


def test_a_file_needs_the_stacks_input_bucket() -> None:
    stack = DeployedStack("s", "CREATE_COMPLETE", "p", "l", None)
    with pytest.raises(StackError, match=r"stack s has no input bucket \(its InputBucketName parameter is empty\)"):
        sync_file(stack, Path("x.csv"), "k", s3=None, lambda_client=None)


# ------------------------------------------------------------------------------ following the ledger


def report(*, missing: int = 0, inserted: int = 0, manifest: bool = True, **fields: Any) -> LedgerReport:
    return LedgerReport(
        sync_id="s1", manifest=manifest, rows=10, records=10, messages=1, messages_with_outcome=1,
        inserted=inserted, missing=missing, missing_seqs=[(0, missing)] if missing else [], **fields,
    )  # fmt: skip


class ScriptedLedger:
    """Hands out the given reports in turn, the last one for ever."""

    def __init__(self, *reports: LedgerReport) -> None:
        self.reports = list(reports)
        self.reads = 0

    def report(self, sync_id: str) -> LedgerReport:
        self.reads += 1
        return self.reports.pop(0) if len(self.reports) > 1 else self.reports[0]


def test_the_ledger_is_read_until_the_sync_is_complete() -> None:
    clock = FakeClock()
    ledger = ScriptedLedger(report(missing=10), report(missing=4, inserted=6), report(inserted=10))
    seen: list[str] = []
    followed = follow_ledger(ledger, "s1", timeout=60, interval=2, clock=clock, sleep=clock.sleep, on_report=lambda r: seen.append(r.status))  # type: ignore[arg-type]
    assert followed.report.complete and not followed.timed_out and followed.seconds == 4
    assert clock.sleeps == [2, 2] and seen == ["incomplete", "incomplete", "complete"]


def test_a_sync_still_missing_records_is_given_up_on_at_the_timeout() -> None:
    clock = FakeClock()
    ledger = ScriptedLedger(report(missing=10))
    followed = follow_ledger(ledger, "s1", timeout=5, interval=2, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert followed.timed_out and clock.sleeps == [2, 2, 1] and ledger.reads == 4  # the last read at the deadline
    line = unfinished(followed, 5)
    assert line.startswith("sync s1 is not complete after 5 s: 10 record(s) in 1 message(s) have no outcome yet") and "seq 0 (10)" in line


@pytest.mark.parametrize(
    ("stuck", "why"),
    [
        (report(inserted=9, in_dlq={"poison": 1}, dlq_seqs=[(0, 1)]), "wait in the DLQ"),
        (report(inserted=3, missing=7, aborted="stopped after line 4 of x.csv"), "sync aborted by the producer"),
        (report(inserted=5, not_enqueued=5, unsent_seqs=[(1, 5)]), "were never enqueued"),
    ],
)
def test_a_sync_nothing_more_will_happen_to_is_not_waited_for(stuck: LedgerReport, why: str) -> None:
    clock = FakeClock()
    followed = follow_ledger(ScriptedLedger(stuck), "s1", timeout=600, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert settled(stuck) and not stuck.complete
    assert not followed.timed_out and clock.sleeps == []
    assert unfinished(followed, 600).startswith("sync s1 ended incomplete: ") and why in unfinished(followed, 600)


def test_a_sync_without_its_manifest_is_waited_for() -> None:
    assert not settled(report(manifest=False))
    assert unfinished(FollowedSync(report(manifest=False), True, 1.0), 1).count("no manifest") == 1
