"""Consumer domain logic: one SQS message → conflict-safe upsert, poison records → DLQ with reasons.

How a message can end (README, "Poison records and the DLQ"):
- every record written/confirmed/skipped as stale → success, the message is deleted;
- some records invalid or refused by DynamoDB for good → those records go to the DLQ in one
  message with a reason per record, the rest are written, and the source message succeeds;
- the body is not a sync message at all → it goes to the DLQ verbatim with the decode error;
- throttling outlives the retries → the message is reported as a batch item failure and SQS
  delivers it again; on its last allowed receive (maxReceiveCount) the consumer moves it to the DLQ
  itself, so the reason is recorded (SQS's own redrive would keep no reason);
- a DLQ send that fails → the message is reported as failed, so nothing is ever dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from earnings_sync import dlq
from earnings_sync.messages import decode_envelope, decode_record
from earnings_sync.records import EarningsRecord
from earnings_sync.table import EarningsTable, RetryableWriteError, UpsertResult


class MessageFailed(Exception):
    """Raised so the batch processor reports this message in batchItemFailures."""


@dataclass
class ConsumerTally:
    """Counts for one invocation; the handler turns them into metrics, the local runner into a summary."""

    messages: int = 0
    messages_failed: int = 0
    records: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    poison_records: int = 0
    undecodable_messages: int = 0
    retries: int = 0
    retry_exhausted: int = 0
    lost_races: int = 0
    dlq_sends: int = 0
    requests: dict[str, int] = field(default_factory=dict)

    def add_result(self, result: UpsertResult) -> None:
        self.inserted += result.outcomes["inserted"]
        self.updated += result.outcomes["updated"]
        self.unchanged += result.outcomes["unchanged"]
        self.stale += result.outcomes["stale"]
        self.retries += result.retries
        self.lost_races += result.lost_races
        for kind, count in result.requests.items():
            self.requests[kind] = self.requests.get(kind, 0) + count


@dataclass
class MessageContext:
    message_id: str
    receive_count: int
    attributes: dict[str, Any] = field(default_factory=dict)


class MessageConsumer:
    """Everything the consumer handler does for one message, with its adapters passed in."""

    def __init__(self, table: EarningsTable, sqs: Any, dlq_url: str, max_receive_count: int) -> None:
        self.table = table
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.max_receive_count = max_receive_count

    def process(self, body: str, context: MessageContext, tally: ConsumerTally) -> None:
        tally.messages += 1
        try:
            envelope = decode_envelope(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            tally.undecodable_messages += 1
            self._dead_letter(body, "undecodable", f"not a sync message: {exc}", "", context, tally)
            return

        records: list[EarningsRecord] = []
        positions: list[int] = []
        failures: list[dlq.RecordFailure] = []
        for index, raw in enumerate(envelope.records):
            try:
                records.append(decode_record(raw))
                positions.append(index)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                failures.append(dlq.RecordFailure(index, f"invalid record: {exc}"))
        tally.records += len(envelope.records)

        result = UpsertResult()
        try:
            self.table.upsert_records(records, envelope.sync_id, envelope.synced_at, result)
        except RetryableWriteError as exc:
            tally.add_result(result)
            if context.receive_count < self.max_receive_count:
                tally.messages_failed += 1
                raise MessageFailed(f"{exc} (receive {context.receive_count} of {self.max_receive_count})") from exc
            tally.retry_exhausted += 1
            self._dead_letter(body, "retries_exhausted", str(exc), envelope.sync_id, context, tally)
            return
        tally.add_result(result)
        failures.extend(dlq.RecordFailure(positions[i], reason) for i, reason in result.poison)
        if failures:
            failures.sort(key=lambda f: f.index)
            tally.poison_records += len(failures)
            letter = dlq.DeadLetter(
                sync_id=envelope.sync_id,
                synced_at=envelope.synced_at,
                records=[envelope.records[f.index] for f in failures],
                failures=[dlq.RecordFailure(i, f.reason) for i, f in enumerate(failures)],
            )
            summary = failures[0].reason if len(failures) == 1 else f"{len(failures)} records: {failures[0].reason}"
            self._dead_letter(msgspec.json.encode(letter).decode(), "poison", summary, envelope.sync_id, context, tally)

    def _dead_letter(
        self,
        body: str,
        kind: dlq.FailureKind,
        reason: str,
        sync_id: str,
        context: MessageContext,
        tally: ConsumerTally,
    ) -> None:
        attributes = dlq.failure_attributes(
            kind,
            reason,
            sync_id=sync_id,
            source_message_id=context.message_id,
            receive_count=context.receive_count,
            carried=context.attributes,
        )
        try:
            dlq.send_dead_letter(self.sqs, self.dlq_url, body, attributes)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the message for a retry
            tally.messages_failed += 1
            raise MessageFailed(f"could not move {kind} input to the DLQ: {exc}") from exc
        tally.dlq_sends += 1
