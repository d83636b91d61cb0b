"""The SQS message contract between producer and consumer, and how records are packed into it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from earnings_sync.records import EarningsRecord, record_problem
from earnings_sync.sync_identity import Clock, InvalidSyncMetadata, check_identity, utc_now

MAX_RECORDS_PER_MESSAGE = 25  # one BatchWriteItem's worth
MAX_ENTRIES_PER_BATCH = 10  # SendMessageBatch limit
MAX_PAYLOAD_BYTES = 256 * 1024  # the smallest limit among AWS, LocalStack and moto
SCHEMA_VERSION = 1


class SyncMessage(msgspec.Struct, frozen=True, omit_defaults=False):
    """One SQS message: up to 25 records of one sync, with the sync's identity and timestamp.

    `seq` numbers the sync's messages from 0 so the completeness ledger can match each message's
    outcome to the producer's manifest; it is optional, so bodies without it are still accepted.
    """

    sync_id: str
    synced_at: str  # UTC, fixed-width ISO-8601 (`2025-07-19T06:00:00.000000Z`): compares as text
    records: list[EarningsRecord]
    v: int = SCHEMA_VERSION
    seq: int | None = None


class RawSyncMessage(msgspec.Struct, frozen=True):
    """Envelope decoded without validating records, so one bad record cannot sink its neighbours.

    `positions` is present only on a replay of part of a message (a DLQ message of poison records):
    each record's index in the original message `seq`, so the ledger counts it where it belongs.
    """

    sync_id: str
    synced_at: str
    records: list[msgspec.Raw]
    v: int = SCHEMA_VERSION
    seq: int | None = None
    positions: list[int] | None = None

    def record_positions(self) -> list[int] | None:
        """Each record's index in message `seq`; None when it cannot be told (no seq, bad positions)."""
        if self.seq is None:
            return None
        if self.positions is None:
            return list(range(len(self.records)))
        if len(self.positions) != len(self.records):
            return None
        return list(self.positions)


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(RawSyncMessage)
_record_decoder = msgspec.json.Decoder(EarningsRecord)


def encode_message(message: SyncMessage) -> str:
    return _encoder.encode(message).decode()


def decode_envelope(body: str | bytes) -> RawSyncMessage:
    """Raises msgspec.DecodeError/ValidationError when the body is not a sync message at all."""
    return _envelope_decoder.decode(body)


def metadata_problem(envelope: RawSyncMessage, now: Clock = utc_now) -> str | None:
    """Why this message's schema version or sync identity cannot be trusted (None: it can).

    `synced_at` decides which sync wins a key and `sync_id` names the sync in the ledger, so both
    are checked before anything is written (sync_identity: strict form, not in the future, an id
    that names the same time); a version this code does not know may mean anything.
    """
    if envelope.v != SCHEMA_VERSION:
        return f"unknown schema version {envelope.v} (this consumer reads v{SCHEMA_VERSION})"
    try:
        check_identity(envelope.sync_id, envelope.synced_at, now)
    except InvalidSyncMetadata as exc:
        return str(exc)
    return None


def decode_record(raw: msgspec.Raw) -> EarningsRecord:
    """Decode and re-validate with the CSV rules; raises msgspec.ValidationError with the reason."""
    record = _record_decoder.decode(raw)
    problem = record_problem(record)
    if problem is not None:
        raise msgspec.ValidationError(f"{problem.reason}: {problem.detail}")
    return record


def encode_records(records: Iterable[EarningsRecord | msgspec.Raw]) -> list[msgspec.Raw]:
    return [r if isinstance(r, msgspec.Raw) else msgspec.Raw(_encoder.encode(r)) for r in records]


def pack_records(
    groups: Iterable[Iterable[EarningsRecord]],
    max_records: int = MAX_RECORDS_PER_MESSAGE,
) -> Iterator[list[EarningsRecord]]:
    """First-fit in input order: a symbol's rows stay in one message unless they alone exceed it."""
    current: list[EarningsRecord] = []
    for group in groups:
        rows = list(group)
        if len(current) + len(rows) > max_records and current:
            yield current
            current = []
        while len(rows) > max_records:  # a symbol with more rows than a message holds
            yield rows[:max_records]
            rows = rows[max_records:]
        current.extend(rows)
    if current:
        yield current


def build_messages(
    groups: Iterable[Iterable[EarningsRecord]],
    sync_id: str,
    synced_at: str,
    max_records: int = MAX_RECORDS_PER_MESSAGE,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> Iterator[tuple[str, int]]:
    """(body, record count) per message, each ≤ max_records and ≤ max_bytes (halved until it fits).

    Messages are numbered (`seq`) 0, 1, 2… in the order they are yielded.
    """
    seq = 0
    for packed in pack_records(groups, max_records):
        pending = [packed]  # a stack: halves of an oversize message, first half on top
        while pending:
            rows = pending.pop()
            body = encode_message(SyncMessage(sync_id=sync_id, synced_at=synced_at, records=rows, seq=seq))
            if len(body.encode()) > max_bytes:
                if len(rows) == 1:
                    raise ValueError(f"record {rows[0].key} alone exceeds the {max_bytes}-byte message limit")
                half = len(rows) // 2
                pending.append(rows[half:])
                pending.append(rows[:half])
                continue
            seq += 1
            yield body, len(rows)


def batch_entries(
    bodies: Iterable[tuple[str, dict]],
    max_entries: int = MAX_ENTRIES_PER_BATCH,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> Iterator[list[tuple[str, dict]]]:
    """Group (body, attributes) pairs into SendMessageBatch calls within count and payload size."""
    batch: list[tuple[str, dict]] = []
    size = 0
    for body, attributes in bodies:
        entry_size = message_size(body, attributes)
        if batch and (len(batch) >= max_entries or size + entry_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append((body, attributes))
        size += entry_size
    if batch:
        yield batch


def message_size(body: str, attributes: dict) -> int:
    """SQS counts the body plus each attribute's name, type and value."""
    size = len(body.encode())
    for name, attribute in attributes.items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(str(attribute.get("StringValue", "")).encode())
    return size
