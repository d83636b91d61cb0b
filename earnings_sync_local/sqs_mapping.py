"""Lambda's SQS event source mapping, locally: poll, invoke with a batch, settle what the handler reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from earnings_sync_local.lambda_runtime import REGION, LambdaContext, invoke


@dataclass
class DrainStats:
    invocations: int = 0
    deliveries: int = 0
    deleted: int = 0
    failed_deliveries: int = 0
    failed_invocations: int = 0
    metrics: Counter[str] = field(default_factory=Counter)


class SqsEventSource:
    """Lambda's SQS event source mapping, locally: poll, invoke with a batch, delete successes.

    Failed messages (reported in batchItemFailures, or the whole batch when the handler raises or
    the mapping lacks ReportBatchItemFailures) are made visible again at once instead of after the
    visibility timeout, so retries happen without waiting; SQS's RedrivePolicy then moves a message
    to the DLQ after maxReceiveCount receives, exactly as on AWS.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        handler: Callable[[dict, Any], Any],
        *,
        batch_size: int,
        report_batch_item_failures: bool,
        function_name: str,
        timeout_seconds: int,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.handler = handler
        self.batch_size = batch_size
        self.report_batch_item_failures = report_batch_item_failures
        self.function_name = function_name
        self.timeout_seconds = timeout_seconds

    def build_event(self, messages: list[dict]) -> dict:
        records = []
        for message in messages:
            attributes = message.get("MessageAttributes", {})
            records.append(
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": message.get("Attributes", {}),
                    "messageAttributes": {
                        name: {
                            "stringValue": value.get("StringValue"),
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": value["DataType"],
                        }
                        for name, value in attributes.items()
                    },
                    "md5OfBody": message.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": REGION,
                }
            )
        return {"Records": records}

    def poll_once(self, stats: DrainStats) -> int:
        """One receive + invoke + settle; returns how many messages were delivered."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        stats.invocations += 1
        stats.deliveries += len(messages)
        context = LambdaContext(self.function_name, self.timeout_seconds)
        result, metrics, error = invoke(self.handler, self.build_event(messages), context)
        stats.metrics.update(metrics)
        by_id = {m["MessageId"]: m for m in messages}
        if error is not None or not isinstance(result, dict):
            stats.failed_invocations += 1
            failed = set(by_id)
        else:
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            if failed and not self.report_batch_item_failures:
                failed = set(by_id)  # without the response type, Lambda retries the whole batch
        succeeded = [m for mid, m in by_id.items() if mid not in failed]
        for start in range(0, len(succeeded), 10):
            chunk = succeeded[start : start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        stats.deleted += len(succeeded)
        stats.failed_deliveries += len(failed)
        failed_messages = [by_id[mid] for mid in failed if mid in by_id]
        for start in range(0, len(failed_messages), 10):
            chunk = failed_messages[start : start + 10]
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(chunk)],
            )
        return len(messages)

    def in_flight(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, progress: Callable[[DrainStats], None] | None = None, max_invocations: int = 1_000_000) -> DrainStats:
        """Poll until the queue is empty (nothing visible, nothing in flight)."""
        stats = DrainStats()
        while stats.invocations < max_invocations:
            if self.poll_once(stats) == 0 and self.in_flight() == 0:
                break
            if progress is not None:
                progress(stats)
        return stats
