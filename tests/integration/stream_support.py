"""Reading the table's real stream (moto's dynamodbstreams) and feeding it to the stream handler."""

from __future__ import annotations

import io
from typing import Any

import boto3

from consumers import stream_consumer
from earnings_sync.calendar_table import CalendarTable, key_of, record_to_item
from earnings_sync.records import EarningsRecord
from earnings_sync.upsert import upsert_records
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.pipeline import routed_logs
from earnings_sync_local.stream_mapping import DynamoDBStreamEventSource

T1, T2, T3 = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z", "2025-07-20T06:00:00.000000Z"


class StreamReader:
    """Every stream record written since the last `take`, as the Lambda event the mapping builds."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.arn = env["resources"].stream_arn
        self.streams = boto3.client("dynamodbstreams", region_name="us-east-1", endpoint_url=env["endpoint"])
        self.source = DynamoDBStreamEventSource(
            self.streams,
            self.arn,
            stream_consumer.lambda_handler,
            batch_size=100,
            bisect_on_error=False,
            maximum_retry_attempts=0,
            maximum_record_age_seconds=-1,
            report_batch_item_failures=True,
            function_name="StreamConsumerFunction",
            timeout_seconds=60,
        )
        self.position: str | None = None

    def take(self) -> list[dict]:
        (shard,) = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        if self.position is None:
            where = {"ShardIteratorType": "TRIM_HORIZON"}
        else:
            where = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self.position}
        iterator = self.streams.get_shard_iterator(StreamArn=self.arn, ShardId=shard["ShardId"], **where)["ShardIterator"]
        records = self.streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
        if records:
            self.position = records[-1]["dynamodb"]["SequenceNumber"]
        return records

    def event(self) -> dict:
        return self.source.build_event(self.take())


def call_handler(event: dict) -> tuple[dict, Any, str]:
    """Invoke the real stream handler: (response, EMF metric totals, its log lines)."""
    logs = io.StringIO()
    with routed_logs(stream_consumer.logger, logs):
        result, metrics, error = invoke(stream_consumer.lambda_handler, event, LambdaContext("StreamConsumerFunction", 60))
    assert error is None, error
    return result, metrics, logs.getvalue()


def rec(symbol: str, date: str, fiscal: str = "2025-06-30", estimate: str | None = "1.00") -> EarningsRecord:
    return EarningsRecord(symbol, date, f"{symbol} Inc", fiscal, estimate, "USD")


class Table:
    def __init__(self, env: dict[str, Any]) -> None:
        self.client = env["dynamodb"]
        self.name = env["resources"].table_name
        self.table = CalendarTable(self.client, self.name)

    def sync(self, synced_at: str, *records: EarningsRecord) -> None:
        result = upsert_records(self.table, list(records), f"sync-{synced_at[:10]}", synced_at)
        assert not result.poison

    def put(self, record: EarningsRecord, synced_at: str, **extra: dict) -> None:
        """A write around the conflict rules (by hand, a future batch path)."""
        self.client.put_item(TableName=self.name, Item={**record_to_item(record, f"sync-{synced_at[:10]}", synced_at), **extra})

    def keys(self) -> set[tuple[str, str]]:
        return {key_of(i) for i in self.table.all_items()}

    def last_sync(self, symbol: str, date: str) -> str | None:
        item = self.table.get((symbol, date))
        return item["lastSyncDate"]["S"] if item else None
