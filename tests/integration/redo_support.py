"""A regression the stream consumer gave up on, built on moto: the table, its real stream, the template's
stream mapping (Lambda's retry, bisect and on-failure rules) with a stream consumer that is down, and
the alarm on the failure queue as template.yaml declares it."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import boto3

from earnings_sync.calendar_table import CalendarTable, key_of, record_to_item
from earnings_sync.records import EarningsRecord
from earnings_sync.stream_redo import TableStream, table_stream
from earnings_sync.upsert import upsert_records
from earnings_sync_local.stream_mapping import DynamoDBStreamEventSource, StreamDrainStats
from earnings_sync_local.template import DLQ_ID, QUEUE_ID, STREAM_FAILURE_QUEUE_ID, load_template
from tests.faults.injectors import StreamConsumerDown

T1, T2 = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z"
REGRESSED = ("AAPL", "2025-07-31")
MOVED_FROM, MOVED_TO = ("IBM", "2025-07-23"), ("IBM", "2025-07-24")
ALARM_ID = "StreamFailureQueueNotEmptyAlarm"
# CloudWatch's ComparisonOperator → (metric value, threshold) → fires
COMPARISONS = {
    "GreaterThanThreshold": operator.gt,
    "GreaterThanOrEqualToThreshold": operator.ge,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


def rec(symbol: str, date: str, estimate: str | None = "1.00", fiscal: str = "2025-06-30") -> EarningsRecord:
    return EarningsRecord(symbol, date, f"{symbol} Inc", fiscal, estimate, "USD")


class Scene:
    """The table from template.yaml on moto, written around the conflict rules where a race would."""

    def __init__(self, env: Mapping[str, Any]) -> None:
        self.env = env
        self.dynamodb = env["dynamodb"]
        self.sqs = env["sqs"]
        self.resources = env["resources"]
        self.table_name = self.resources.table_name
        self.table = CalendarTable(self.dynamodb, self.table_name)
        self.streams = boto3.client("dynamodbstreams", region_name="us-east-1", endpoint_url=env["endpoint"])
        self.queue_url: str = self.resources.stream_failure_queue_url

    @property
    def stream(self) -> TableStream:
        return table_stream(self.dynamodb, self.table_name)

    def sync(self, synced_at: str, *records: EarningsRecord) -> None:
        result = upsert_records(self.table, list(records), f"sync-{synced_at[:10]}", synced_at)
        assert not result.poison

    def regress(self) -> None:
        """An older sync, a newer one (AAPL's estimate revised, IBM rescheduled), then the older
        sync's write of AAPL lands last, as on the batch path when the two race."""
        self.sync(T1, rec(*REGRESSED), rec(*MOVED_FROM), rec("MSFT", "2025-07-29"))
        self.sync(T2, rec(*REGRESSED, estimate="2.00"), rec(*MOVED_TO), rec("MSFT", "2025-07-29"))
        self.dynamodb.put_item(TableName=self.table_name, Item=record_to_item(rec(*REGRESSED), "sync-2025-07-18", T1))

    def stream_consumer_gives_up(self) -> StreamDrainStats:
        """The template's stream mapping delivers to a consumer that is down until it gives up."""
        from consumers import stream_consumer

        source = DynamoDBStreamEventSource.from_mapping(self.resources.stream_mapping, self.streams, stream_consumer.lambda_handler, self.sqs)
        down = StreamConsumerDown(source)
        stats = source.drain()
        assert down.invocations > 0
        assert stats.skipped_records == stats.records > 0 and stats.on_failure_messages > 0
        return stats

    def item(self, key: tuple[str, str]) -> dict[str, Any] | None:
        return self.table.get(key)

    def estimate_and_sync(self, key: tuple[str, str]) -> tuple[Decimal, str]:
        item = self.item(key)
        assert item is not None, key
        return Decimal(item["estimate"]["N"]), item["lastSyncDate"]["S"]

    def keys(self) -> set[tuple[str, str]]:
        return {key_of(i) for i in self.table.all_items()}

    def queue_depth(self) -> tuple[int, int]:
        """(visible, in flight) messages of the failure queue."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def watched_queue_url(alarm: Mapping[str, Any], resources: Any) -> str:
    """The emulator's queue behind the alarm's QueueName dimension (`!GetAtt <Queue>.QueueName`)."""
    (dimension,) = alarm["Properties"]["Dimensions"]
    assert dimension["Name"] == "QueueName", dimension
    logical_id, attribute = dimension["Value"]["Fn::GetAtt"]
    assert attribute == "QueueName"
    queues = {STREAM_FAILURE_QUEUE_ID: resources.stream_failure_queue_url, DLQ_ID: resources.dlq_url, QUEUE_ID: resources.queue_url}
    return queues[logical_id]


def failure_alarm_fires(sqs: Any, resources: Any) -> bool:
    """Whether `StreamFailureQueueNotEmptyAlarm`'s condition holds now, read from template.yaml."""
    alarm = load_template()["Resources"][ALARM_ID]
    properties = alarm["Properties"]
    assert (properties["Namespace"], properties["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    url = watched_queue_url(alarm, resources)
    visible = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
    return bool(COMPARISONS[properties["ComparisonOperator"]](visible, float(properties["Threshold"])))
