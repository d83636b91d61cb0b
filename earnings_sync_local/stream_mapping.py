"""Lambda's DynamoDB stream event source mapping, locally, over the `dynamodbstreams` API.

`DynamoDBStreamEventSource` reads every shard of the table's stream (parents before children) from
the mapping's StartingPosition, invokes the handler with Lambda's DynamoDB event shape in batches of
the template's BatchSize, and applies the mapping's failure settings the way Lambda documents them:

* ReportBatchItemFailures: the records before the lowest reported sequence number are done (the
  checkpoint moves to just before it); the rest of the batch is retried. An empty or unknown
  `itemIdentifier` fails the whole batch, as on Lambda.
* A handler error (or, without ReportBatchItemFailures, any failure) fails the whole batch.
* BisectBatchOnFunctionError: a failed batch of more than one record is split in two and each half
  is retried on its own (splitting does not use up retries), so a bad record ends up alone.
* MaximumRetryAttempts / MaximumRecordAgeInSeconds: when exhausted / exceeded, the batch is skipped
  and, with an OnFailure destination, a record describing it (shard and sequence-number range, no
  data) is sent there.

The checkpoint per shard survives between `drain` calls, so each sync's drain sees only the records
written since the previous one. Retries happen at once (no backoff): the point is the semantics.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from earnings_sync_local.lambda_runtime import FAKE_ACCOUNT, REGION, LambdaContext, invoke

UNLIMITED_RETRIES_CAP = 100  # -1 means "until the record expires" on Lambda; locally it must end
READ_LIMIT = 1000  # GetRecords' maximum


@dataclass
class StreamDrainStats:
    records: int = 0  # stream records read
    invocations: int = 0
    failed_invocations: int = 0  # the handler raised or reported failed records
    retries: int = 0
    bisections: int = 0
    skipped_records: int = 0  # given up on: retries exhausted or too old
    on_failure_messages: int = 0
    metrics: Counter[str] = field(default_factory=Counter)


def _epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value)


class DynamoDBStreamEventSource:
    """One stream → one handler, with Lambda's checkpoint, retry, bisect and on-failure rules."""

    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        handler: Callable[[dict, Any], Any],
        *,
        batch_size: int,
        bisect_on_error: bool,
        maximum_retry_attempts: int,
        maximum_record_age_seconds: int,
        report_batch_item_failures: bool,
        function_name: str,
        timeout_seconds: int,
        starting_position: str = "TRIM_HORIZON",
        sqs: Any = None,
        on_failure_url: str | None = None,
        clock: Callable[[], float] = time.time,
        unparsed_reads: bool = True,
    ) -> None:
        self.streams = streams
        self.stream_arn = stream_arn
        self.handler = handler
        self.batch_size = batch_size
        self.bisect_on_error = bisect_on_error
        self.maximum_retry_attempts = maximum_retry_attempts
        self.maximum_record_age_seconds = maximum_record_age_seconds
        self.report_batch_item_failures = report_batch_item_failures
        self.function_name = function_name
        self.timeout_seconds = timeout_seconds
        self.starting_position = starting_position
        self.sqs = sqs
        self.on_failure_url = on_failure_url
        self.clock = clock
        self.unparsed_reads = unparsed_reads
        self.checkpoints: dict[str, str] = {}  # shard id -> last settled sequence number
        self.finished: set[str] = set()  # closed shards read to their end

    @classmethod
    def from_mapping(cls, mapping: Any, streams: Any, handler: Callable[[dict, Any], Any], sqs: Any = None) -> DynamoDBStreamEventSource:
        """Built from `template.StreamMapping`: every setting as the template gives it."""
        return cls(
            streams,
            mapping.stream_arn,
            handler,
            batch_size=mapping.batch_size,
            bisect_on_error=mapping.bisect_on_error,
            maximum_retry_attempts=mapping.maximum_retry_attempts,
            maximum_record_age_seconds=mapping.maximum_record_age_seconds,
            report_batch_item_failures="ReportBatchItemFailures" in mapping.function_response_types,
            function_name=mapping.function_logical_id,
            timeout_seconds=mapping.function_timeout,
            starting_position=mapping.starting_position,
            sqs=sqs,
            on_failure_url=mapping.on_failure_url,
        )

    # -- reading -------------------------------------------------------------------------------
    def shards(self) -> list[dict]:
        """Every shard of the stream, a parent always before its children."""
        shards: list[dict] = []
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self.streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last
        known = {s["ShardId"] for s in shards}
        ordered: list[dict] = []
        placed: set[str] = set()
        while len(ordered) < len(shards):
            ready = [s for s in shards if s["ShardId"] not in placed and (s.get("ParentShardId") not in known or s["ParentShardId"] in placed)]
            if not ready:  # a cycle cannot happen on AWS; keep the listing order rather than loop
                ready = [s for s in shards if s["ShardId"] not in placed]
            for shard in ready:
                ordered.append(shard)
                placed.add(shard["ShardId"])
        return ordered

    def _read(self, shard_id: str) -> tuple[list[dict], bool]:
        """Records after the shard's checkpoint, and whether the shard is closed and read to its end."""
        if shard_id in self.checkpoints:
            position = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self.checkpoints[shard_id]}
        else:
            position = {"ShardIteratorType": self.starting_position}
        iterator = self.streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=shard_id, **position)["ShardIterator"]
        records: list[dict] = []
        while iterator:
            response = self._get_records(iterator)
            page = response.get("Records", [])
            records.extend(page)
            iterator = response.get("NextShardIterator")
            if not page:
                break
        return records, iterator is None

    def _get_records(self, iterator: str) -> dict:
        """GetRecords as Lambda's poller reads it: JSON, no SDK model parsing (on the emulator that is
        most of a read's cost). Any answer but 200 goes through the client for its proper error."""
        endpoint = getattr(self.streams.meta, "endpoint_url", None)
        if self.unparsed_reads and endpoint and endpoint.startswith("http://127.0.0.1:"):
            request = urllib.request.Request(
                endpoint,
                data=json.dumps({"ShardIterator": iterator, "Limit": READ_LIMIT}).encode(),
                headers={
                    "Content-Type": "application/x-amz-json-1.0",
                    "X-Amz-Target": "DynamoDBStreams_20120810.GetRecords",
                    "Authorization": f"AWS4-HMAC-SHA256 Credential=local/20250101/{self.streams.meta.region_name}/dynamodb/aws4_request, SignedHeaders=host, Signature=local",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    return json.loads(answer.read())
            except urllib.error.HTTPError:
                pass
        return self.streams.get_records(ShardIterator=iterator, Limit=READ_LIMIT)

    def build_event(self, records: Sequence[dict]) -> dict:
        """Lambda's DynamoDB stream event for these records (GetRecords shape → Lambda shape)."""
        out = []
        for record in records:
            change = dict(record["dynamodb"])
            if "ApproximateCreationDateTime" in change:
                change["ApproximateCreationDateTime"] = int(_epoch(change["ApproximateCreationDateTime"]))
            out.append(
                {
                    "eventID": record.get("eventID", uuid.uuid4().hex),
                    "eventName": record["eventName"],
                    "eventVersion": record.get("eventVersion", "1.1"),
                    "eventSource": "aws:dynamodb",
                    "awsRegion": record.get("awsRegion", REGION),
                    "dynamodb": change,
                    "eventSourceARN": self.stream_arn,
                }
            )
        return {"Records": out}

    # -- delivering ----------------------------------------------------------------------------
    def poll_once(self, stats: StreamDrainStats) -> int:
        """Read every shard once and deliver what was new; returns how many records were read."""
        read = 0
        for shard in self.shards():
            shard_id = shard["ShardId"]
            if shard_id in self.finished:
                continue
            records, closed = self._read(shard_id)
            read += len(records)
            stats.records += len(records)
            for start in range(0, len(records), self.batch_size):
                self._settle(shard_id, records[start : start + self.batch_size], self._retry_budget(), stats)
            if closed:
                self.finished.add(shard_id)
        return read

    def drain(self, progress: Callable[[StreamDrainStats], None] | None = None, max_polls: int = 10_000) -> StreamDrainStats:
        """Deliver until a pass over the stream finds nothing new (the handler's own writes included)."""
        stats = StreamDrainStats()
        for _ in range(max_polls):
            if self.poll_once(stats) == 0:
                break
            if progress is not None:
                progress(stats)
        return stats

    def _retry_budget(self) -> int:
        return self.maximum_retry_attempts if self.maximum_retry_attempts >= 0 else UNLIMITED_RETRIES_CAP

    def _checkpoint(self, shard_id: str, record: dict) -> None:
        self.checkpoints[shard_id] = record["dynamodb"]["SequenceNumber"]

    def _expired(self, batch: list[dict]) -> int:
        """How many leading records are older than MaximumRecordAgeInSeconds (-1: none ever)."""
        if self.maximum_record_age_seconds < 0:
            return 0
        oldest_allowed = self.clock() - self.maximum_record_age_seconds
        count = 0
        for record in batch:
            created = record["dynamodb"].get("ApproximateCreationDateTime")
            if created is None or _epoch(created) >= oldest_allowed:
                break
            count += 1
        return count

    def _settle(self, shard_id: str, batch: list[dict], retries_left: int, stats: StreamDrainStats) -> None:
        """Deliver `batch` until every record succeeded or was given up on; the checkpoint follows."""
        invocations = 0
        while batch:
            expired = self._expired(batch)
            if expired:
                self._give_up(shard_id, batch[:expired], "RecordAgeExceeded", invocations, None, stats)
                batch = batch[expired:]
                continue
            invocations += 1
            stats.invocations += 1
            context = LambdaContext(self.function_name, self.timeout_seconds)
            result, metrics, error = invoke(self.handler, self.build_event(batch), context)
            stats.metrics.update(metrics)
            failed_from = self._failed_from(batch, result, error)
            if failed_from is None:
                self._checkpoint(shard_id, batch[-1])
                return
            stats.failed_invocations += 1
            if failed_from > 0:
                self._checkpoint(shard_id, batch[failed_from - 1])
                batch = batch[failed_from:]
            if self.bisect_on_error and len(batch) > 1:
                stats.bisections += 1
                middle = len(batch) // 2
                self._settle(shard_id, batch[:middle], retries_left, stats)
                self._settle(shard_id, batch[middle:], retries_left, stats)
                return
            if retries_left <= 0:
                function_error = "Unhandled" if error is not None else None
                self._give_up(shard_id, batch, "RetryAttemptsExhausted", invocations, function_error, stats)
                return
            retries_left -= 1
            stats.retries += 1

    def _failed_from(self, batch: list[dict], result: Any, error: BaseException | None) -> int | None:
        """Index of the first record to retry, None when the whole batch succeeded."""
        if error is not None:
            return 0
        if not self.report_batch_item_failures:
            return None
        failures = result.get("batchItemFailures") if isinstance(result, dict) else None
        if not failures:
            return None
        positions = {record["dynamodb"]["SequenceNumber"]: index for index, record in enumerate(batch)}
        indexes = []
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not identifier or identifier not in positions:
                return 0  # Lambda treats an unusable identifier as a failure of the whole batch
            indexes.append(positions[identifier])
        return min(indexes)

    def _give_up(
        self,
        shard_id: str,
        records: list[dict],
        condition: str,
        invocations: int,
        function_error: str | None,
        stats: StreamDrainStats,
    ) -> None:
        """Skip these records, telling the OnFailure destination which ones (as Lambda does)."""
        stats.skipped_records += len(records)
        self._checkpoint(shard_id, records[-1])
        if self.sqs is None or not self.on_failure_url:
            return
        first, last = records[0]["dynamodb"], records[-1]["dynamodb"]

        def iso(value: Any) -> str | None:
            if value is None:
                return None
            return dt.datetime.fromtimestamp(_epoch(value), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        body = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"arn:aws:lambda:{REGION}:{FAKE_ACCOUNT}:function:{self.function_name}",
                "condition": condition,
                "approximateInvokeCount": invocations,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": function_error},
            "version": "1.0",
            "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": iso(first.get("ApproximateCreationDateTime")),
                "approximateArrivalOfLastRecord": iso(last.get("ApproximateCreationDateTime")),
                "batchSize": len(records),
                "streamArn": self.stream_arn,
            },
        }
        self.sqs.send_message(QueueUrl=self.on_failure_url, MessageBody=json.dumps(body))
        stats.on_failure_messages += 1


def merge_stats(total: Any, more: Any) -> Any:
    """Add one drain's counters (ints and Counters of a stats dataclass) into another's, which may
    be of a subclass with counters of its own (`local.PipelineDrain`)."""
    for item in fields(more):
        value = getattr(more, item.name)
        if isinstance(value, Counter):
            getattr(total, item.name).update(value)
        elif isinstance(value, int):
            setattr(total, item.name, getattr(total, item.name) + value)
    return total
