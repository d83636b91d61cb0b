"""Smoke test of the LocalStack setup (localstack/hostmode.sh or docker compose).

Runs against the `localstack_endpoint` fixture (tests/e2e/conftest.py: LOCALSTACK_ENDPOINT, or host
mode started for the run). Proves that DynamoDB (+ stream), SQS with a
DLQ, and Lambda with LocalStack's real SQS event source mapping (ReportBatchItemFailures) work.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
import zipfile

import boto3
import pytest

pytestmark = pytest.mark.e2e

ENDPOINT: str | None = None  # set by the `stack` fixture from `localstack_endpoint`
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")

HANDLER_SOURCE = '''
import json, os
import boto3

TABLE = os.environ["TABLE_NAME"]
dynamodb = boto3.client("dynamodb")


def handler(event, context):
    print(json.dumps({"smoke_marker": "emf-like-line", "records": len(event.get("Records", []))}))
    if "Records" not in event:  # direct invoke
        if event.get("raise"):
            raise ValueError("asked to fail")
        return {"echo": event, "function_name": context.function_name,
                "remaining_ms": context.get_remaining_time_in_millis()}
    failures = []
    for record in event["Records"]:
        body = json.loads(record["body"])
        if body.get("fail"):
            print("rejecting", record["messageId"])
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        dynamodb.put_item(TableName=TABLE, Item={
            "pk": {"S": body["id"]},
            "request_id": {"S": context.aws_request_id},
        })
    return {"batchItemFailures": failures}
'''


def _client(service: str):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _zip(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("smoke_app/__init__.py", "")
        archive.writestr("smoke_app/handler.py", source)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stack(localstack_endpoint):
    global ENDPOINT
    ENDPOINT = localstack_endpoint
    suffix = uuid.uuid4().hex[:10]
    ddb, sqs, lam, iam = (_client(s) for s in ("dynamodb", "sqs", "lambda", "iam"))
    names = {"table": f"smoke-{suffix}", "queue": f"smoke-{suffix}", "dlq": f"smoke-{suffix}-dlq",
             "function": f"smoke-{suffix}", "role": f"smoke-{suffix}"}
    cleanup = []
    try:
        table = ddb.create_table(
            TableName=names["table"],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]
        cleanup.append(lambda: ddb.delete_table(TableName=names["table"]))
        ddb.get_waiter("table_exists").wait(TableName=names["table"], WaiterConfig={"Delay": 1})

        dlq_url = sqs.create_queue(QueueName=names["dlq"])["QueueUrl"]
        cleanup.append(lambda: sqs.delete_queue(QueueUrl=dlq_url))
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=names["queue"],
            Attributes={
                "VisibilityTimeout": "5",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"}),
            },
        )["QueueUrl"]
        cleanup.append(lambda: sqs.delete_queue(QueueUrl=queue_url))
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

        role_arn = iam.create_role(
            RoleName=names["role"],
            AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            }),
        )["Role"]["Arn"]
        cleanup.append(lambda: iam.delete_role(RoleName=names["role"]))

        lam.create_function(
            FunctionName=names["function"],
            Runtime="python3.11",
            Handler="smoke_app.handler.handler",
            Role=role_arn,
            Code={"ZipFile": _zip(HANDLER_SOURCE)},
            Timeout=5,
            MemorySize=256,
            Environment={"Variables": {"TABLE_NAME": names["table"]}},
        )
        cleanup.append(lambda: lam.delete_function(FunctionName=names["function"]))
        lam.get_waiter("function_active_v2").wait(FunctionName=names["function"], WaiterConfig={"Delay": 1})

        mapping_uuid = lam.create_event_source_mapping(
            EventSourceArn=queue_arn,
            FunctionName=names["function"],
            BatchSize=10,
            FunctionResponseTypes=["ReportBatchItemFailures"],
        )["UUID"]
        cleanup.append(lambda: lam.delete_event_source_mapping(UUID=mapping_uuid))
        _wait_for(lambda: lam.get_event_source_mapping(UUID=mapping_uuid)["State"] == "Enabled",
                  timeout=30, what="event source mapping to be Enabled")

        yield {**names, "queue_url": queue_url, "dlq_url": dlq_url,
               "stream_arn": table["LatestStreamArn"]}
    finally:
        for undo in reversed(cleanup):
            try:
                undo()
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass


def test_direct_invoke_returns_result_and_reports_errors(stack):
    lam = _client("lambda")
    ok = lam.invoke(FunctionName=stack["function"], Payload=json.dumps({"hello": "world"}))
    assert "FunctionError" not in ok
    body = json.loads(ok["Payload"].read())
    assert body["echo"] == {"hello": "world"}
    assert body["function_name"] == stack["function"]
    assert 0 < body["remaining_ms"] <= 5000

    failed = lam.invoke(FunctionName=stack["function"], Payload=json.dumps({"raise": True}))
    assert failed["FunctionError"] == "Unhandled"
    error = json.loads(failed["Payload"].read())
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "asked to fail"


def test_sqs_mapping_runs_function_and_redrives_failures_to_dlq(stack):
    sqs, ddb = _client("sqs"), _client("dynamodb")
    good_ids = [f"item-{i}" for i in range(3)]
    entries = [{"Id": str(i), "MessageBody": json.dumps({"id": item})} for i, item in enumerate(good_ids)]
    entries.append({"Id": "bad", "MessageBody": json.dumps({"id": "bad", "fail": True})})
    sent = sqs.send_message_batch(QueueUrl=stack["queue_url"], Entries=entries)
    assert not sent.get("Failed")

    def items_written():
        found = [ddb.get_item(TableName=stack["table"], Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
                 for pk in good_ids]
        return all(found) and found
    items = _wait_for(items_written, timeout=60, what="the function to write the items")
    assert all(item["request_id"]["S"] for item in items)

    def dead_letters():
        messages = sqs.receive_message(QueueUrl=stack["dlq_url"], MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]
    dead = _wait_for(dead_letters, timeout=60, what="the failing message to reach the DLQ")
    assert dead == [{"id": "bad", "fail": True}]

    streams = _client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=stack["stream_arn"])["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(StreamArn=stack["stream_arn"], ShardId=shard["ShardId"],
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    inserted = {r["dynamodb"]["Keys"]["pk"]["S"] for r in records if r["eventName"] == "INSERT"}
    assert inserted >= set(good_ids)


def test_function_output_reaches_cloudwatch_logs(stack):
    _client("lambda").invoke(FunctionName=stack["function"], Payload=b"{}")
    logs = _client("logs")
    group = f"/aws/lambda/{stack['function']}"

    def logged_lines():
        try:
            events = logs.filter_log_events(logGroupName=group)["events"]
        except logs.exceptions.ResourceNotFoundException:
            return None
        text = "".join(e["message"] for e in events)
        return "START RequestId" in text and '"smoke_marker": "emf-like-line"' in text and text
    text = _wait_for(logged_lines, timeout=30, what=f"function logs in {group}")
    assert "REPORT RequestId" in text
