"""Deploy template.yaml to LocalStack with CloudFormation (SAM transform), for the end-to-end tests.

The template itself is deployed, not a copy: it is parsed with `earnings_sync_local.template`, only the
functions' `CodeUri` is pointed at a zip uploaded to S3, and the per-run names come in as stack
parameters. Host mode runs the functions with the project's venv, so the zip holds only our three
packages; LocalStack in Docker runs them in AWS's python3.11 image, so there the zip is `make
package`'s `build/lambda` (code and dependencies), picked when `/_localstack/info` says Docker.

    stack = deploy_stack("http://127.0.0.1:4566", parameters={"TableName": "t-1"})
    stack.outputs["QueueUrl"]; stack.client("sqs"); stack.delete()

`connect(endpoint)` gives clients for any other LocalStack work.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localstack_client.session import Session

from earnings_sync_local.template import DEFAULT_TEMPLATE, SERVERLESS_FUNCTION, load_template

ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("earnings_sync", "producers", "consumers", "queries")
PACKAGED_CODE = ROOT / "build" / "lambda"
REGION = "us-east-1"
FAILED_STATES = {"CREATE_FAILED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_COMPLETE"}
# A test stack is throwaway: its tables without deletion protection, so they can be deleted after
# the stack (the template retains them on delete: DeletionPolicy Retain).
TEST_STACK_PARAMETERS = {"TableDeletionProtection": "false"}
RETAINED_TABLE_OUTPUTS = ("TableName", "SyncLedgerTableName")


class DeployError(Exception):
    """The stack did not reach CREATE_COMPLETE; the message carries its events."""


def connect(endpoint: str) -> Session:
    """A boto3-style client factory bound to `endpoint`, whatever AWS_ENDPOINT_URL says (moto tests set it)."""
    saved = os.environ.pop("AWS_ENDPOINT_URL", None)  # localstack-client would prefer it over the host
    try:
        return Session(
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name=REGION,
            localstack_host=urllib.parse.urlsplit(endpoint).netloc,
        )
    finally:
        if saved is not None:
            os.environ["AWS_ENDPOINT_URL"] = saved


def localstack_info(endpoint: str, timeout: float = 5) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}/_localstack/info", timeout=timeout) as response:
        return json.load(response)


def code_zip(directories: Iterable[Path]) -> bytes:
    """Zip the given package folders (or a whole `make package` folder), without bytecode."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for directory in directories:
            base = directory.parent if directory.name in CODE_PACKAGES else directory
            for path in sorted(directory.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    archive.write(path, path.relative_to(base).as_posix())
    return buffer.getvalue()


def lambda_code(endpoint: str) -> bytes:
    """Our packages for host mode; `build/lambda` (with dependencies) for LocalStack in Docker."""
    explicit = os.environ.get("EARNINGS_SYNC_E2E_CODE_DIR")
    if explicit:
        return code_zip([Path(explicit)])
    if localstack_info(endpoint).get("is_docker"):
        if not (PACKAGED_CODE / "aws_lambda_powertools").is_dir():
            raise DeployError("LocalStack runs in Docker: its functions need dependencies; run `make package` first")
        return code_zip([PACKAGED_CODE])
    return code_zip([ROOT / name for name in CODE_PACKAGES])


def template_body(template_path: Path, bucket: str, key: str) -> str:
    """template.yaml as JSON (long-form intrinsics), every function's CodeUri set to the zip."""
    template = load_template(template_path)
    code_uri = {"Bucket": bucket, "Key": key}
    function_globals = template.get("Globals", {}).get("Function", {})
    if "CodeUri" in function_globals:
        function_globals["CodeUri"] = code_uri
    for resource in template["Resources"].values():
        if resource.get("Type") == SERVERLESS_FUNCTION and "CodeUri" in resource.get("Properties", {}):
            resource["Properties"]["CodeUri"] = code_uri
    return json.dumps(template)


def stack_events(cloudformation: Any, stack_name: str) -> str:
    try:
        events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
    except Exception as exc:  # noqa: BLE001 - only for the error message
        return f"(no stack events: {exc})"
    return "\n".join(
        f"  {e['Timestamp']:%H:%M:%S} {e['LogicalResourceId']:<28} {e['ResourceStatus']:<18} {e.get('ResourceStatusReason', '')}"
        for e in reversed(events)
    )


@dataclass
class DeployedStack:
    endpoint: str
    name: str
    parameters: dict[str, str]
    outputs: dict[str, str]
    code_bucket: str
    seconds: float
    _clients: Session = field(repr=False)

    def client(self, service: str) -> Any:
        return self._clients.client(service)

    def delete(self, timeout: float = 60) -> None:
        """Delete the stack, the tables it retains and the code bucket; LocalStack has no reset, so
        nothing may linger."""
        cloudformation = self.client("cloudformation")
        cloudformation.delete_stack(StackName=self.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = cloudformation.describe_stacks(StackName=self.name)["Stacks"][0]["StackStatus"]
            except cloudformation.exceptions.ClientError:
                break
            if status in {"DELETE_COMPLETE", "DELETE_FAILED"}:
                break
            time.sleep(0.5)
        self.delete_retained_tables()
        empty_bucket(self.client("s3"), self.code_bucket, delete=True)

    def retained_tables(self) -> list[str]:
        """The stack's tables: from its outputs, or, when it failed before it had any, from the
        TableName it was given (the ledger's name follows from it)."""
        if all(output in self.outputs for output in RETAINED_TABLE_OUTPUTS):
            return [self.outputs[output] for output in RETAINED_TABLE_OUTPUTS]
        base = self.parameters.get("TableName")
        return [base, f"{base}-sync-ledger"] if base else []

    def delete_retained_tables(self) -> None:
        dynamodb = self.client("dynamodb")
        for table_name in self.retained_tables():
            with contextlib.suppress(dynamodb.exceptions.ResourceNotFoundException):
                dynamodb.delete_table(TableName=table_name)


def empty_bucket(s3: Any, bucket: str, *, delete: bool = False) -> None:
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        if delete:
            s3.delete_bucket(Bucket=bucket)
    except s3.exceptions.NoSuchBucket:
        pass


def _wait_until_ready(stack: DeployedStack, timeout: float) -> None:
    """Functions Active and their event source mappings Enabled, so the first event is not lost."""
    lam = stack.client("lambda")
    deadline = time.monotonic() + timeout
    for key in ("ProducerFunctionName", "ConsumerFunctionName", "StreamConsumerFunctionName"):
        if key not in stack.outputs:
            continue
        name = stack.outputs[key]
        while True:
            configuration = lam.get_function_configuration(FunctionName=name)
            mappings = lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
            if configuration["State"] == "Active" and all(m["State"] == "Enabled" for m in mappings):
                break
            if configuration["State"] == "Failed" or time.monotonic() > deadline:
                states = [m["State"] for m in mappings]
                raise DeployError(f"{name}: function {configuration['State']}, mappings {states} after {timeout:.0f}s")
            time.sleep(0.5)


def deploy_stack(
    endpoint: str,
    *,
    parameters: Mapping[str, str] | None = None,
    name: str | None = None,
    template_path: Path = DEFAULT_TEMPLATE,
    timeout: float = 120,
) -> DeployedStack:
    """Create the stack (unique name), wait for CREATE_COMPLETE and ready functions, read Outputs."""
    started = time.perf_counter()
    suffix = uuid.uuid4().hex[:10]
    name = name or f"earnings-sync-e2e-{suffix}"
    ls = connect(endpoint)
    s3, cloudformation = ls.client("s3"), ls.client("cloudformation")
    bucket, key = f"{name}-code", f"lambda-{suffix}.zip"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=lambda_code(endpoint))
    params = {**TEST_STACK_PARAMETERS, **(parameters or {})}
    stack = DeployedStack(endpoint, name, params, {}, bucket, 0.0, ls)
    try:
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=template_body(Path(template_path), bucket, key),
            Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in params.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        deadline = time.monotonic() + timeout
        while True:
            description = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
            status = description["StackStatus"]
            if status == "CREATE_COMPLETE":
                break
            if status in FAILED_STATES or time.monotonic() > deadline:
                raise DeployError(
                    f"stack {name} is {status} ({description.get('StackStatusReason', '')}); events:\n"
                    + stack_events(cloudformation, name)
                )
            time.sleep(0.5)
        stack.outputs = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}
        _wait_until_ready(stack, timeout=max(10.0, deadline - time.monotonic()))
    except BaseException:
        stack.delete()
        raise
    stack.seconds = time.perf_counter() - started
    return stack
