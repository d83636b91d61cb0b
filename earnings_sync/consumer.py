"""Consumer domain logic: one SQS message → conflict-safe upsert, poison records → DLQ with reasons.

How a message can end (README, "Poison records and the DLQ"):
- every record written/confirmed/skipped as stale → success, the message is deleted;
- some records invalid or refused by DynamoDB for good → those records go to the DLQ in one
  message with a reason per record, the rest are written, and the source message succeeds;
- the body is not a sync message at all → it goes to the DLQ verbatim with the decode error;
- its sync metadata cannot be trusted (an unknown schema version `v`, a `synced_at` that is not a
  real UTC time or lies in the future, a `sync_id` of another form or for another time) → it goes
  to the DLQ verbatim with the reason, and nothing is written: no item, no ledger outcome;
- throttling outlives the retries → the message is reported as a batch item failure and SQS
  delivers it again; on its last allowed receive (maxReceiveCount) the consumer moves it to the DLQ
  itself, so the reason is recorded (SQS's own redrive would keep no reason);
- a DLQ send that fails → the message is reported as failed, so nothing is ever dropped.

What went to the DLQ (`undecodable_messages`, `invalid_messages`, `retry_exhausted`,
`poison_records`) is counted once the DLQ send succeeded, so a failed send never counts.

When the message is done, its outcome — one letter per record — goes to the completeness ledger
(`earnings_sync.ledger`) before any DLQ send: the first completion of a message is the one counted,
and a ledger write that fails keeps the message for a retry like any other failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from earnings_sync import dlq
from earnings_sync.calendar_table import CalendarTable, RetryableWriteError
from earnings_sync.ledger import EXHAUSTED, OUTCOME_CODES, POISON, MessageOutcome, SyncLedger, replay_token
from earnings_sync.messages import RawSyncMessage, decode_envelope, decode_record, metadata_problem
from earnings_sync.records import EarningsRecord
from earnings_sync.sync_identity import Clock, utc_now
from earnings_sync.upsert import UpsertResult, WriteMode, check_write_mode, upsert_records

MAX_NOTED_KEYS = 50  # keys kept per invocation for the handler's conflict log line: counts are exact


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
    invalid_messages: int = 0  # sync metadata refused (version, synced_at, sync_id)
    retries: int = 0
    retry_exhausted: int = 0
    lost_races: int = 0
    dlq_sends: int = 0
    ledger_recorded: int = 0  # message outcomes recorded in the ledger (first completions)
    ledger_repeats: int = 0  # completions whose outcome was already recorded (redeliveries)
    ledger_failures: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    stale_keys: list[tuple[str, str]] = field(default_factory=list)  # the first MAX_NOTED_KEYS, for the log

    def add_result(self, result: UpsertResult) -> None:
        self.inserted += result.outcomes["inserted"]
        self.updated += result.outcomes["updated"]
        self.unchanged += result.outcomes["unchanged"]
        self.stale += result.outcomes["stale"]
        self.retries += result.retries
        self.lost_races += result.lost_races
        self.stale_keys.extend(result.stale_keys[: max(0, MAX_NOTED_KEYS - len(self.stale_keys))])
        for kind, count in result.requests.items():
            self.requests[kind] = self.requests.get(kind, 0) + count


@dataclass
class MessageContext:
    message_id: str
    receive_count: int
    attributes: dict[str, Any] = field(default_factory=dict)


class MessageConsumer:
    """Everything the consumer handler does for one message, with its adapters passed in."""

    def __init__(
        self,
        table: CalendarTable,
        sqs: Any,
        dlq_url: str,
        max_receive_count: int,
        ledger: SyncLedger | None = None,
        *,
        write_mode: WriteMode = "batch",
        now: Clock = utc_now,
    ) -> None:
        self.table = table
        self.write_mode = check_write_mode(write_mode)  # README, "Write path"
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.max_receive_count = max_receive_count
        self.ledger = ledger
        self.now = now  # bounds a message's synced_at (sync_identity.MAX_CLOCK_SKEW)

    def process(self, body: str, context: MessageContext, tally: ConsumerTally) -> None:
        tally.messages += 1
        try:
            envelope = decode_envelope(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._dead_letter(body, "undecodable", f"not a sync message: {exc}", "", context, tally)
            tally.undecodable_messages += 1
            return
        problem = metadata_problem(envelope, self.now)
        if problem is not None:
            self._dead_letter(body, "invalid_metadata", f"invalid sync metadata: {problem}", "", context, tally)
            tally.invalid_messages += 1
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
            upsert_records(self.table, records, envelope.sync_id, envelope.synced_at, result, write_mode=self.write_mode)
        except RetryableWriteError as exc:
            tally.add_result(result)
            if context.receive_count < self.max_receive_count:
                tally.messages_failed += 1
                raise MessageFailed(f"{exc} (receive {context.receive_count} of {self.max_receive_count})") from exc
            self._record(envelope, EXHAUSTED * len(envelope.records), context, tally)
            self._dead_letter(body, "retries_exhausted", str(exc), envelope.sync_id, context, tally)
            tally.retry_exhausted += 1
            return
        tally.add_result(result)
        failures.extend(dlq.RecordFailure(positions[i], reason) for i, reason in result.poison)
        codes = ["?"] * len(envelope.records)  # "?" would be a bug: the ledger reports it
        for failure in failures:
            codes[failure.index] = POISON
        for i, outcome in result.by_index.items():
            codes[positions[i]] = OUTCOME_CODES[outcome]
        self._record(envelope, "".join(codes), context, tally)
        if failures:
            failures.sort(key=lambda f: f.index)
            origin = envelope.record_positions()
            letter = dlq.DeadLetter(
                sync_id=envelope.sync_id,
                synced_at=envelope.synced_at,
                records=[envelope.records[f.index] for f in failures],
                failures=[dlq.RecordFailure(i, f.reason) for i, f in enumerate(failures)],
                seq=envelope.seq if origin is not None else None,
                positions=[origin[f.index] for f in failures] if origin is not None else None,
            )
            summary = failures[0].reason if len(failures) == 1 else f"{len(failures)} records: {failures[0].reason}"
            self._dead_letter(msgspec.json.encode(letter).decode(), "poison", summary, envelope.sync_id, context, tally)
            tally.poison_records += len(failures)

    def _record(self, envelope: RawSyncMessage, codes: str, context: MessageContext, tally: ConsumerTally) -> None:
        """The message's outcome into the ledger; a message without `seq` predates the ledger."""
        positions = envelope.record_positions()
        if self.ledger is None or positions is None:
            return
        outcome = MessageOutcome(
            sync_id=envelope.sync_id,
            seq=envelope.seq or 0,
            codes=codes,
            positions=envelope.positions,
            replay=replay_token(context.attributes),
            message_id=context.message_id,
            receive_count=context.receive_count,
        )
        try:
            first = self.ledger.record_outcome(outcome)
        except (ClientError, BotoCoreError) as exc:
            tally.ledger_failures += 1
            tally.messages_failed += 1
            raise MessageFailed(f"could not record the outcome in the ledger: {exc}") from exc
        finally:
            tally.requests["LedgerPutItem"] = tally.requests.get("LedgerPutItem", 0) + 1
        if first:
            tally.ledger_recorded += 1
        else:
            tally.ledger_repeats += 1

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
