"""A sync on a deployed stack, started and followed to completion (`earnings-sync sync`).

The stack is found by name with one CloudFormation DescribeStacks: its status, its
`InputBucketName` parameter and its `ProducerFunctionName` / `SyncLedgerTableName` outputs. A file
is uploaded to the input bucket and the producer invoked with `{"s3": {"bucket", "key"}}`; an
AlphaVantage sync invokes it with the daily rule's own `{"source": "alphavantage"}`.

The producer is invoked here, synchronously, rather than left to an S3 notification: template.yaml
wires none, because the input bucket is the operator's own and lives outside the stack. A
synchronous invocation also answers with the sync's id, and a sync that fails (not a calendar,
AlphaVantage refusing the key, messages not sent) is reported at once instead of after a timeout.

Then the sync's ledger (ledger.SyncLedger.report, one Query of the sync's partition) is read every
few seconds until the sync is complete, or settled short of it (aborted, records waiting in the
DLQ, messages never enqueued: nothing more will happen without an operator), or the time is up.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from earnings_sync.ledger import LedgerReport, SyncLedger
from earnings_sync.records import printable

PRODUCER_OUTPUT = "ProducerFunctionName"
LEDGER_OUTPUT = "SyncLedgerTableName"
INPUT_BUCKET_PARAMETER = "InputBucketName"
SCHEDULE_EVENT: Mapping[str, str] = {"source": "alphavantage"}  # what the DailySync rule sends
KEY_PREFIX = "earnings-sync/"
# Statuses in which the stack's resources may be missing or on their way out.
UNUSABLE_STATUSES = frozenset(
    {
        "CREATE_IN_PROGRESS",
        "CREATE_FAILED",
        "ROLLBACK_IN_PROGRESS",
        "ROLLBACK_FAILED",
        "ROLLBACK_COMPLETE",
        "DELETE_IN_PROGRESS",
        "DELETE_FAILED",
        "DELETE_COMPLETE",
        "REVIEW_IN_PROGRESS",
    }
)


class StackError(Exception):
    """The stack cannot take a sync (missing, not deployed, no input bucket, outputs missing): the caller's to fix."""


class SyncFailed(Exception):
    """The producer's invocation failed, or its sync cannot be followed: the sync did not run as asked."""


@dataclass(frozen=True)
class DeployedStack:
    """What a sync needs of a deployed stack, by physical name."""

    name: str
    status: str
    producer_function: str
    ledger_table: str
    input_bucket: str | None  # None: deployed without InputBucketName, so no file can be synced


@dataclass(frozen=True)
class StartedSync:
    """A sync the producer ran: its id, what it read, and its answer (producer.SyncReport.as_dict)."""

    sync_id: str
    source: str
    producer: dict[str, Any]
    uploaded: str | None = None  # s3://bucket/key of the uploaded file


@dataclass(frozen=True)
class FollowedSync:
    report: LedgerReport
    timed_out: bool
    seconds: float


def _error_code(exc: BaseException) -> str:
    return str(((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code", ""))


def describe_stack(cloudformation: Any, name: str) -> DeployedStack:
    """The stack's producer, ledger table and input bucket; StackError when it cannot take a sync."""
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if _error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            raise StackError(f"stack {printable(name)} does not exist") from exc
        raise
    if not stacks:
        raise StackError(f"stack {printable(name)} does not exist")
    stack = stacks[0]
    status = str(stack.get("StackStatus", ""))
    if status in UNUSABLE_STATUSES:
        raise StackError(f"stack {printable(name)} is {status}: deploy it first")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}
    missing = [key for key in (PRODUCER_OUTPUT, LEDGER_OUTPUT) if not outputs.get(key)]
    if missing:
        raise StackError(
            f"stack {printable(name)} has no output {', '.join(missing)}: is it an earnings-sync stack (template.yaml)?"
        )
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters") or []}
    return DeployedStack(
        name=name,
        status=status,
        producer_function=outputs[PRODUCER_OUTPUT],
        ledger_table=outputs[LEDGER_OUTPUT],
        input_bucket=parameters.get(INPUT_BUCKET_PARAMETER) or None,
    )


def upload_key(path: Path, now: dt.datetime) -> str:
    """`earnings-sync/20250719T055841Z-calendar.csv`: one object per upload, named by when and what."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name).strip("_") or "calendar.csv"
    return f"{KEY_PREFIX}{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{name}"


def invoke_producer(lambda_client: Any, function: str, event: Mapping[str, Any]) -> StartedSync:
    """One synchronous invocation; SyncFailed when the function failed or its answer names no recorded sync."""
    payload = json.dumps(event).encode()
    response = lambda_client.invoke(FunctionName=function, InvocationType="RequestResponse", Payload=payload)
    raw = response["Payload"].read()
    try:
        answer = json.loads(raw or b"null")
    except ValueError:
        answer = None
    if response.get("FunctionError"):
        detail = answer if isinstance(answer, dict) else {}
        kind = detail.get("errorType") or response["FunctionError"]
        message = detail.get("errorMessage") or "no error message"
        raise SyncFailed(f"the producer ({function}) failed: {kind}: {message}")
    if not isinstance(answer, dict) or not isinstance(answer.get("sync_id"), str):
        shown = printable(raw[:200].decode("utf-8", "replace"))
        raise SyncFailed(f"the producer ({function}) answered without a sync id: {shown}")
    if answer.get("ledger") != "recorded":
        raise SyncFailed(
            f"sync {answer['sync_id']}: the producer could not record its manifest in the ledger "
            f"({answer.get('ledger')}), so its completeness cannot be followed"
        )
    return StartedSync(sync_id=answer["sync_id"], source=str(answer.get("source", "")), producer=answer)


def sync_file(stack: DeployedStack, path: Path, key: str, *, s3: Any, lambda_client: Any) -> StartedSync:
    """Upload `path` to the stack's input bucket as `key`, then have the producer sync that object."""
    if stack.input_bucket is None:
        raise StackError(
            f"stack {stack.name} has no input bucket (its {INPUT_BUCKET_PARAMETER} parameter is empty), so its producer "
            f"may read no file: deploy it with {INPUT_BUCKET_PARAMETER}=<your bucket>, or sync from AlphaVantage"
        )
    try:
        with path.open("rb") as body:
            s3.put_object(Bucket=stack.input_bucket, Key=key, Body=body)
    except ClientError as exc:
        if _error_code(exc) == "NoSuchBucket":
            raise StackError(f"the input bucket {stack.input_bucket} of stack {stack.name} does not exist") from exc
        raise
    started = invoke_producer(lambda_client, stack.producer_function, {"s3": {"bucket": stack.input_bucket, "key": key}})
    return StartedSync(started.sync_id, started.source, started.producer, uploaded=f"s3://{stack.input_bucket}/{key}")


def sync_alphavantage(stack: DeployedStack, *, lambda_client: Any) -> StartedSync:
    """What the daily schedule does, now."""
    return invoke_producer(lambda_client, stack.producer_function, SCHEDULE_EVENT)


def settled(report: LedgerReport) -> bool:
    """Nothing more will change without an operator: complete, aborted, or every enqueued message has an outcome."""
    return report.complete or bool(report.aborted) or (report.manifest and report.missing == 0)


def progress_line(report: LedgerReport) -> str:
    return (
        f"sync {report.sync_id}: {report.accounted_rows:,} of {report.rows:,} rows accounted for, "
        f"{report.messages_with_outcome:,} of {report.messages:,} messages done"
    )


def follow_ledger(
    ledger: SyncLedger,
    sync_id: str,
    *,
    timeout: float,
    interval: float = 2.0,
    on_report: Callable[[LedgerReport], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> FollowedSync:
    """Read the sync's ledger until it is settled or `timeout` seconds have passed (the last report either way)."""
    started = clock()
    while True:
        report = ledger.report(sync_id)
        if on_report is not None:
            on_report(report)
        waited = clock() - started
        if settled(report):
            return FollowedSync(report, timed_out=False, seconds=waited)
        if waited >= timeout:
            return FollowedSync(report, timed_out=True, seconds=waited)
        sleep(min(interval, timeout - waited))


def unfinished(followed: FollowedSync, timeout: float) -> str:
    """One line: why a followed sync is not complete, naming what is missing."""
    report = followed.report
    state = f"is not complete after {timeout:g} s" if followed.timed_out else "ended incomplete"
    return f"sync {report.sync_id} {state}: " + "; ".join(report.problems() or [report.status])
