"""The completeness ledger: every CSV row of every sync accounted for exactly once.

Metrics say what each batch did; they cannot say whether one sync is *done*: whether each of its
rows reached the table, was skipped for a reason, or waits in the DLQ. The ledger can. It holds two
kinds of items in `SyncLedgerTable` (PK `sync_id`, SK `entry`, TTL `expires_at`); docs/ledger.md
has the whole design.

* The **manifest**, written by the producer once every message was handed to SQS (or refused):
  rows read, records, duplicate keys, rejections by reason, and how many records each message
  `seq` carries (`manifest#NNNNNN` chunks of 10,000 messages, written before the `manifest` header,
  so a header means a whole manifest).
* One **outcome** per message, written by the consumer when the message is done and before it is
  deleted: one letter per record — `i` inserted, `u` updated, `c` unchanged, `s` stale (the item
  holds a newer sync), `p` poison and `x` retries exhausted (both sent to the DLQ with a reason).
  `m#NNNNNN` is written only if absent: the first completion wins, so a redelivery after success,
  whose records all look unchanged, is never counted again. A message back from the DLQ (it carries
  `replay_count` or `failure_kind`) writes `m#NNNNNN#r#<failed_at>#<replay_count>` instead, with the
  records' `positions` in message `seq` when it holds only some of them.

`account` nets the outcomes per record: the original outcome sets each record's state, and a replay
moves only records that are still in the DLQ, so a duplicated DLQ message, or a record that was
settled in between, is never counted twice. A record seen only through a replay was moved to the DLQ
by the queue's own redrive policy (a crash on its last receive), which records no reason.

    rows = written + unchanged + stale + rejected + duplicates + in the DLQ + not enqueued + missing

A sync is *complete* when the last two are zero and nothing is in the DLQ; *accounted* (status
`in_dlq`) when only the DLQ still holds some of its records.

The same table holds the **sync registry** (partition `#registry`, never expiring): a counter the
stream consumer reads, and one item per sync id that `earnings-sync audit` checks items against and
the sync monitor (sync_watch.py) reads for the newest syncs and marks `completed_at`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Item = dict[str, dict[str, Any]]

MANIFEST = "manifest"
REGISTRY = "#registry"  # the sync registry's partition: not a sync, no manifest, no expiry
REGISTRY_KEY = {"sync_id": {"S": REGISTRY}, "entry": {"S": "syncs"}}  # how many syncs, and the first one
REGISTERED = "sync#"  # + sync_id: one item per registered sync, in the registry's partition
CHUNK_SEQS = 10_000  # message counts per manifest chunk: ~60 kB, far below the 400 kB item limit
MAX_LISTED = 20  # messages listed per problem in a report; the counts are always whole
MAX_NOTED = 50  # rejections / duplicate keys kept in the manifest; the counts are always whole

SETTLED = {"i": "inserted", "u": "updated", "c": "unchanged", "s": "stale"}
IN_DLQ = {"p": "poison", "x": "retries_exhausted", "q": "queue_redrive"}
OUTCOME_CODES = {"inserted": "i", "updated": "u", "unchanged": "c", "stale": "s"}
POISON, EXHAUSTED, REDRIVEN = "p", "x", "q"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Registration:
    """One sync as the registry knows it: when it ran, when it was registered, and when the sync
    monitor first saw its ledger complete (empty until then)."""

    sync_id: str
    synced_at: str
    registered_at: str
    completed_at: str = ""


@dataclass(frozen=True)
class RegisteredSyncs:
    """The syncs the registry knows by id, and since when it records ids at all.

    `since` is when the first of them was registered (wall clock, `synced_at` form): syncs that ran
    before it were counted without their id, so their items cannot be judged against `ids`.
    """

    ids: frozenset[str] = frozenset()
    since: str | None = None


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(int(value))}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _plain(value: Mapping[str, Any]) -> Any:
    """Attribute value → plain Python (the few shapes the manifest uses)."""
    ((kind, raw),) = value.items()
    if kind == "N":
        return int(raw)
    if kind == "M":
        return {k: _plain(v) for k, v in raw.items()}
    if kind == "L":
        return [_plain(v) for v in raw]
    if kind == "NULL":
        return None
    return raw


def _attribute(value: Any) -> dict[str, Any]:
    """Plain Python → attribute value (str, int, None, lists and maps of them)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return _n(value)
    if value is None:
        return {"NULL": True}
    if isinstance(value, Mapping):
        return {"M": {str(k): _attribute(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [_attribute(v) for v in value]}
    return _s(str(value))


def outcome_entry(seq: int, replay: str | None = None) -> str:
    return f"m#{seq:06d}" if replay is None else f"m#{seq:06d}#r#{replay}"


# --------------------------------------------------------------------------- what is recorded


@dataclass
class Manifest:
    """What the producer made of one CSV: the left-hand side of the ledger's equation."""

    sync_id: str
    synced_at: str
    source: str
    rows: int
    records: int
    duplicates: int
    rejected: dict[str, int]
    seq_records: list[int]  # records per message, by seq
    unsent: list[int] = field(default_factory=list)  # seqs SQS never accepted
    unsent_error: str = ""
    rejections: list[dict[str, Any]] = field(default_factory=list)  # the first few: line, reason, detail
    duplicate_keys: list[dict[str, Any]] = field(default_factory=list)  # the first few: key, fiscal periods
    aborted: str = ""  # the producer stopped before the end of its input: where and why


@dataclass(frozen=True)
class MessageOutcome:
    """What one delivery of one message did to each of its records (see the module docstring)."""

    sync_id: str
    seq: int
    codes: str
    positions: Sequence[int] | None = None  # each record's index in message `seq`; None: 0..n-1
    replay: str | None = None  # which DLQ message this delivery came from; None: the original
    message_id: str = ""
    receive_count: int = 0

    @property
    def entry(self) -> str:
        return outcome_entry(self.seq, self.replay)


def replay_token(attributes: Mapping[str, Mapping[str, Any]]) -> str | None:
    """None for a message's first life; else a name stable across redeliveries of one DLQ message.

    `attributes` are SQS message attributes in either the Lambda event's or the API's casing.
    """

    def text(name: str) -> str:
        value = attributes.get(name) or {}
        return str(value.get("stringValue") or value.get("StringValue") or "")

    replays, kind = text("replay_count"), text("failure_kind")
    if not replays.strip("0") and not kind:
        return None
    return f"{text('failed_at') or '-'}#{replays or '0'}"


# --------------------------------------------------------------------------- the table adapter


class SyncLedger:
    """Adapter around the ledger table; the low-level DynamoDB client is passed in."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        retention_days: int = 35,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.retention_days = retention_days
        self.clock = clock

    def _expires_at(self) -> dict[str, str]:
        return _n(int(self.clock()) + self.retention_days * 86_400)

    # -- the sync registry -----------------------------------------------------------------------
    def register_sync(self, sync_id: str, synced_at: str) -> None:
        """Record a sync before it sends anything (never expires: it describes the table's history).

        One item per sync (`sync#<sync_id>`, an idempotent update) lets `earnings-sync audit` tell
        the table's real syncs from forged ones. The counter item is what the stream consumer reads:
        while only one sync has ever been registered, nothing in the table can be superseded (that
        needs an older sync) and no Query is needed to find out. Ids live in items of their own so
        that this per-invocation read stays one small item however many syncs the table has seen.
        """
        registered_at = dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.client.update_item(
            TableName=self.table_name,
            Key={"sync_id": _s(REGISTRY), "entry": _s(f"{REGISTERED}{sync_id}")},
            UpdateExpression="SET synced_at = :s, registered_at = if_not_exists(registered_at, :t)",
            ExpressionAttributeValues={":s": _s(synced_at), ":t": _s(registered_at)},
        )
        self.client.update_item(
            TableName=self.table_name,
            Key=REGISTRY_KEY,
            UpdateExpression="ADD sync_count :one SET first_synced_at = if_not_exists(first_synced_at, :t)",
            ExpressionAttributeValues={":one": _n(1), ":t": _s(synced_at)},
        )

    def sole_sync(self) -> str | None:
        """The `synced_at` of the only sync ever registered, or None once there are two or more."""
        item = self.client.get_item(TableName=self.table_name, Key=REGISTRY_KEY, ConsistentRead=True).get("Item") or {}
        if int(item.get("sync_count", {}).get("N", "0")) != 1:
            return None
        return item.get("first_synced_at", {}).get("S")

    def registered_syncs(self) -> RegisteredSyncs:
        """Every sync registered with its id (a Query on the registry's partition: for operators)."""
        ids: set[str] = set()
        first: str | None = None
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "sync_id = :r AND begins_with(#e, :p)",
            "ProjectionExpression": "#e, registered_at",
            "ExpressionAttributeNames": {"#e": "entry"},
            "ExpressionAttributeValues": {":r": _s(REGISTRY), ":p": _s(REGISTERED)},
            "ConsistentRead": True,
        }
        while True:
            response = self.client.query(**kwargs)
            for item in response.get("Items", []):
                ids.add(item["entry"]["S"][len(REGISTERED) :])
                registered_at = item.get("registered_at", {}).get("S")
                if registered_at and (first is None or registered_at < first):
                    first = registered_at
            if "LastEvaluatedKey" not in response:
                return RegisteredSyncs(frozenset(ids), first)
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def registered_sync_ids(self) -> frozenset[str]:
        """The ids of every sync registered with its id."""
        return self.registered_syncs().ids

    def registrations_since(self, sync_id_floor: str) -> list[Registration]:
        """Syncs registered with an id at or after `sync_id_floor`, oldest first (the sync monitor).

        Sync ids start with their compacted `synced_at`, so they sort like time and one Query on the
        registry's sort key reads only the newest syncs, however long the registry has grown. `$`
        sorts right after `#`, so `sync#<floor>` .. `sync$` holds every id from the floor on.
        """
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "sync_id = :r AND #e BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#e": "entry"},
            "ExpressionAttributeValues": {
                ":r": _s(REGISTRY),
                ":low": _s(f"{REGISTERED}{sync_id_floor}"),
                ":high": _s(f"{REGISTERED[:-1]}$"),
            },
        }
        found: list[Registration] = []
        while True:
            response = self.client.query(**kwargs)
            for item in response.get("Items", []):
                plain = {name: _plain(value) for name, value in item.items() if name not in ("sync_id", "entry")}
                found.append(
                    Registration(
                        sync_id=item["entry"]["S"][len(REGISTERED) :],
                        synced_at=str(plain.get("synced_at", "")),
                        registered_at=str(plain.get("registered_at") or plain.get("synced_at", "")),
                        completed_at=str(plain.get("completed_at", "")),
                    )
                )
            if "LastEvaluatedKey" not in response:
                return found
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def mark_completed(self, sync_id: str, completed_at: str) -> bool:
        """Note on the sync's registry item that its ledger is complete; True only the first time.

        Conditional, so two monitors (or a retried invocation) count one completion once, and only
        a registered sync can be marked.
        """
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"sync_id": _s(REGISTRY), "entry": _s(f"{REGISTERED}{sync_id}")},
                UpdateExpression="SET completed_at = :t",
                ConditionExpression="attribute_exists(#e) AND attribute_not_exists(completed_at)",
                ExpressionAttributeNames={"#e": "entry"},
                ExpressionAttributeValues={":t": _s(completed_at)},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # -- writes --------------------------------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> int:
        """Chunks first, header last; returns the number of PutItem requests."""
        expires = self._expires_at()
        unsent = set(manifest.unsent)
        chunks = range(0, max(1, len(manifest.seq_records)), CHUNK_SEQS)
        for first in chunks:
            counts = manifest.seq_records[first : first + CHUNK_SEQS]
            last = first + len(counts)
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    "sync_id": _s(manifest.sync_id),
                    "entry": _s(f"{MANIFEST}#{first:06d}"),
                    "first_seq": _n(first),
                    "counts": _s(",".join(map(str, counts))),
                    "unsent": _s(",".join(str(seq) for seq in sorted(unsent) if first <= seq < last)),
                    "expires_at": expires,
                },
            )
        header = {
            "synced_at": manifest.synced_at,
            "source": manifest.source,
            "rows": manifest.rows,
            "records": manifest.records,
            "duplicates": manifest.duplicates,
            "rejected": dict(sorted(manifest.rejected.items())),
            "rejections": manifest.rejections[:MAX_NOTED],
            "duplicate_keys": manifest.duplicate_keys[:MAX_NOTED],
            "messages": len(manifest.seq_records),
            "unsent_messages": len(unsent),
            "unsent_error": manifest.unsent_error[:500],
            "chunks": len(chunks),
            "written_at": utc_now(),
        }
        if manifest.aborted:
            header["aborted"] = manifest.aborted[:500]
        item = {"sync_id": _s(manifest.sync_id), "entry": _s(MANIFEST), "expires_at": expires}
        item.update({name: _attribute(value) for name, value in header.items()})
        self.client.put_item(TableName=self.table_name, Item=item)
        return len(chunks) + 1

    def record_outcome(self, outcome: MessageOutcome) -> bool:
        """True when this is the first completion of this entry, False when one was already recorded."""
        item: Item = {
            "sync_id": _s(outcome.sync_id),
            "entry": _s(outcome.entry),
            "seq": _n(outcome.seq),
            "codes": _s(outcome.codes),
            "done_at": _s(utc_now()),
            "receive_count": _n(outcome.receive_count),
            "expires_at": self._expires_at(),
        }
        if outcome.message_id:
            item["message_id"] = _s(outcome.message_id)
        if outcome.positions is not None:
            item["positions"] = _s(",".join(map(str, outcome.positions)))
        try:
            self.client.put_item(TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(entry)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # -- reads ---------------------------------------------------------------------------------
    def entries(self, sync_id: str, *, consistent: bool = True) -> list[Item]:
        """Every ledger item of one sync (one Query, paged). `consistent=False` halves the read
        units: an outcome written a moment ago may be missed (the sync monitor looks again)."""
        items: list[Item] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "sync_id = :s",
            "ExpressionAttributeValues": {":s": _s(sync_id)},
            "ConsistentRead": consistent,
        }
        while True:
            response = self.client.query(**kwargs)
            items.extend(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return items
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def report(self, sync_id: str, *, consistent: bool = True) -> LedgerReport:
        return account(sync_id, self.entries(sync_id, consistent=consistent))

    def recent_syncs(self, limit: int = 20) -> list[tuple[str, str]]:
        """(synced_at, sync_id) of the newest manifests, newest first (a Scan: for operators)."""
        found: list[tuple[str, str]] = []
        paginator = self.client.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self.table_name,
            FilterExpression="#e = :m",
            ProjectionExpression="sync_id, synced_at",
            ExpressionAttributeNames={"#e": "entry"},
            ExpressionAttributeValues={":m": _s(MANIFEST)},
        )
        for page in pages:
            found.extend((i.get("synced_at", {}).get("S", ""), i["sync_id"]["S"]) for i in page.get("Items", []))
        return sorted(found, reverse=True)[:limit]


# --------------------------------------------------------------------------- accounting


@dataclass
class _Outcome:
    seq: int
    codes: str
    positions: list[int]
    done_at: str
    entry: str


def _outcome(item: Item) -> _Outcome:
    codes = item.get("codes", {}).get("S", "")
    positions = item.get("positions", {}).get("S")
    return _Outcome(
        seq=int(item["seq"]["N"]),
        codes=codes,
        positions=_ints(positions) if positions is not None else list(range(len(codes))),
        done_at=item.get("done_at", {}).get("S", ""),
        entry=item["entry"]["S"],
    )


@dataclass
class LedgerReport:
    """One sync's rows, each accounted for once; `problems` says in words what is not settled."""

    sync_id: str
    manifest: bool = False
    synced_at: str = ""
    source: str = ""
    rows: int = 0
    records: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    duplicate_keys: list[dict[str, Any]] = field(default_factory=list)
    messages: int = 0
    messages_with_outcome: int = 0
    replays: int = 0  # replay outcomes seen (deliveries of messages back from the DLQ)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    in_dlq: dict[str, int] = field(default_factory=dict)  # poison / retries_exhausted / queue_redrive
    not_enqueued: int = 0
    missing: int = 0
    unsent_error: str = ""
    aborted: str = ""  # the producer stopped part-way (its manifest says where and why)
    dlq_seqs: list[tuple[int, int]] = field(default_factory=list)  # (seq, records in the DLQ)
    missing_seqs: list[tuple[int, int]] = field(default_factory=list)  # (seq, records without an outcome)
    unsent_seqs: list[tuple[int, int]] = field(default_factory=list)  # (seq, records never enqueued)
    anomalies: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def in_dlq_total(self) -> int:
        return sum(self.in_dlq.values())

    @property
    def accounted_rows(self) -> int:
        """Rows with a known fate, the DLQ included."""
        return (self.written + self.unchanged + self.stale + self.rejected_total + self.duplicates
                + self.in_dlq_total)

    @property
    def status(self) -> str:
        """complete, in_dlq (every row accounted, some in the DLQ), incomplete, or unknown."""
        if not self.manifest and not self.messages_with_outcome:
            return "unknown"
        if (not self.manifest or self.aborted or self.missing or self.not_enqueued or self.anomalies
                or self.accounted_rows != self.rows):
            return "incomplete"
        return "in_dlq" if self.in_dlq_total else "complete"

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def accounted(self) -> bool:
        """Every row exactly once: written, unchanged, stale, rejected, duplicate or in the DLQ."""
        return self.status in ("complete", "in_dlq")

    def problems(self) -> list[str]:
        found = []
        if self.status == "unknown":
            return [f"no ledger entries for sync {self.sync_id}: unknown, or expired after its retention"]
        if not self.manifest:
            found.append(
                f"no manifest: the producer has not finished this sync, or failed before recording it "
                f"({self.messages_with_outcome:,} message outcome(s) seen)"
            )
        if self.aborted:
            found.append(f"sync aborted by the producer: {self.aborted}; the rest of the input was never read: run the sync again")
        if self.not_enqueued:
            found.append(
                f"{self.not_enqueued:,} record(s) in {len(self.unsent_seqs):,} message(s) were never enqueued "
                f"({self.unsent_error or 'SQS refused them'}); run the sync again: {_seq_list(self.unsent_seqs)}"
            )
        if self.missing:
            found.append(
                f"{self.missing:,} record(s) in {len(self.missing_seqs):,} message(s) have no outcome yet: still "
                f"queued or being retried, or moved to the DLQ by the queue's redrive (a crash on the last "
                f"receive): {_seq_list(self.missing_seqs)}"
            )
        if self.in_dlq_total:
            kinds = ", ".join(f"{kind.replace('_', ' ')} {count:,}" for kind, count in sorted(self.in_dlq.items()))
            found.append(
                f"{self.in_dlq_total:,} record(s) wait in the DLQ ({kinds}); `earnings-sync dlq replay` "
                f"settles them: {_seq_list(self.dlq_seqs)}"
            )
        found.extend(self.anomalies)
        if self.manifest and not self.anomalies and not self.aborted and self.accounted_rows + self.not_enqueued + self.missing != self.rows:
            found.append(f"the counts do not add up: {self.accounted_rows + self.not_enqueued + self.missing:,} of {self.rows:,} rows")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "sync_id": self.sync_id,
            "status": self.status,
            "accounted": self.accounted,
            "complete": self.complete,
            "synced_at": self.synced_at,
            "source": self.source,
            "rows": self.rows,
            "written": self.written,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "stale": self.stale,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": self.rejected_total,
            "duplicates": self.duplicates,
            "in_dlq": dict(sorted(self.in_dlq.items())),
            "in_dlq_total": self.in_dlq_total,
            "not_enqueued": self.not_enqueued,
            "missing": self.missing,
            "records": self.records,
            "messages": self.messages,
            "messages_with_outcome": self.messages_with_outcome,
            "replays": self.replays,
            "rejections": self.rejections,
            "duplicate_keys": self.duplicate_keys,
            "dlq_messages": [{"seq": s, "records": n} for s, n in self.dlq_seqs[:MAX_LISTED]],
            "missing_messages": [{"seq": s, "records": n} for s, n in self.missing_seqs[:MAX_LISTED]],
            "unsent_messages": [{"seq": s, "records": n} for s, n in self.unsent_seqs[:MAX_LISTED]],
            "aborted": self.aborted,
            "problems": self.problems(),
        }


def _seq_list(pairs: Sequence[tuple[int, int]]) -> str:
    shown = ", ".join(f"seq {seq} ({count})" for seq, count in pairs[:MAX_LISTED])
    return shown + (f", … {len(pairs) - MAX_LISTED:,} more" if len(pairs) > MAX_LISTED else "")


def _read_manifest(report: LedgerReport, header: Item, chunks: list[Item]) -> tuple[list[int], set[int]]:
    plain = {name: _plain(value) for name, value in header.items()}
    report.manifest = True
    report.synced_at, report.source = plain.get("synced_at", ""), plain.get("source", "")
    report.rows, report.records, report.duplicates = plain.get("rows", 0), plain.get("records", 0), plain.get("duplicates", 0)
    report.rejected = {k: int(v) for k, v in (plain.get("rejected") or {}).items() if v}
    report.rejections = plain.get("rejections") or []
    report.duplicate_keys = plain.get("duplicate_keys") or []
    report.unsent_error = plain.get("unsent_error") or ""
    report.aborted = plain.get("aborted") or ""
    counts: list[int] = []
    unsent: set[int] = set()
    for chunk in sorted(chunks, key=lambda c: int(c["first_seq"]["N"])):
        if int(chunk["first_seq"]["N"]) != len(counts):
            report.anomalies.append(f"manifest chunk {chunk['entry']['S']} does not follow on from seq {len(counts)}")
        counts.extend(_ints(chunk.get("counts", {}).get("S", "")))
        unsent.update(_ints(chunk.get("unsent", {}).get("S", "")))
    if len(counts) != plain.get("messages", len(counts)):
        report.anomalies.append(f"the manifest lists {len(counts):,} of its {plain.get('messages'):,} messages")
    if report.aborted:  # records read but never packed into a message: the abort explains the gap
        return counts, unsent
    if sum(counts) != report.records:
        report.anomalies.append(f"the messages carry {sum(counts):,} records, the manifest counts {report.records:,}")
    if report.records + report.duplicates + report.rejected_total != report.rows:
        report.anomalies.append(
            f"{report.rows:,} rows read but {report.records:,} records + {report.duplicates:,} duplicates + "
            f"{report.rejected_total:,} rejected"
        )
    return counts, unsent


def _net(seq: int, original: _Outcome | None, replays: list[_Outcome], report: LedgerReport) -> dict[int, str]:
    """Each record's final state in message `seq` (see the module docstring)."""
    state: dict[int, str] = {}
    if original is not None:
        state.update(zip(original.positions, original.codes, strict=False))
    for replay in sorted(replays, key=lambda r: (r.done_at, r.entry)):
        for position, code in zip(replay.positions, replay.codes, strict=False):
            if state.get(position, REDRIVEN) in IN_DLQ:
                state[position] = code
    for outcome in ([original] if original else []) + replays:
        if len(outcome.positions) != len(outcome.codes):
            report.anomalies.append(f"{outcome.entry}: {len(outcome.codes)} outcomes for {len(outcome.positions)} positions")
    return state


@dataclass
class _Entries:
    """One sync's ledger items by kind: the manifest header and chunks, outcomes by message seq."""

    header: Item | None = None
    chunks: list[Item] = field(default_factory=list)
    originals: dict[int, _Outcome] = field(default_factory=dict)
    replays: dict[int, list[_Outcome]] = field(default_factory=dict)

    @classmethod
    def sort(cls, items: Iterable[Item]) -> _Entries:
        entries = cls()
        for item in items:
            entry = item["entry"]["S"]
            if entry == MANIFEST:
                entries.header = item
            elif entry.startswith(f"{MANIFEST}#"):
                entries.chunks.append(item)
            elif entry.startswith("m#"):
                outcome = _outcome(item)
                if "#r#" in entry:
                    entries.replays.setdefault(outcome.seq, []).append(outcome)
                else:
                    entries.originals[outcome.seq] = outcome
        return entries


def account(sync_id: str, items: Iterable[Item]) -> LedgerReport:
    """Net a sync's ledger entries into a `LedgerReport` (pure: no I/O)."""
    report = LedgerReport(sync_id=sync_id)
    entries = _Entries.sort(items)
    report.replays = sum(len(replays) for replays in entries.replays.values())
    counts: list[int] = []
    unsent: set[int] = set()
    if entries.header is not None:
        counts, unsent = _read_manifest(report, entries.header, entries.chunks)
    report.messages = len(counts)
    for seq in sorted(set(entries.originals) | set(entries.replays) | set(range(len(counts)))):
        expected = counts[seq] if seq < len(counts) else None
        if entries.header is not None and expected is None:
            report.anomalies.append(f"an outcome for message seq {seq}, which the manifest does not list")
        has_outcome = seq in entries.originals or seq in entries.replays
        report.messages_with_outcome += has_outcome
        if seq in unsent:
            if has_outcome:
                report.anomalies.append(f"message seq {seq} was reported unsent but has an outcome")
            report.not_enqueued += expected or 0
            report.unsent_seqs.append((seq, expected or 0))
            continue
        state = _net(seq, entries.originals.get(seq), entries.replays.get(seq, []), report)
        _count_states(report, seq, state, expected if expected is not None else len(state))
    if entries.header is None:
        report.records = report.accounted_rows
    return report


def _count_states(report: LedgerReport, seq: int, state: Mapping[int, str], size: int) -> None:
    """Each record of message `seq` (a `size`-record message) counted once: settled, in the DLQ, or
    missing (no outcome yet); positions outside the message and unknown codes are anomalies."""
    outside = sorted(p for p in state if not 0 <= p < size)
    if outside:
        report.anomalies.append(f"message seq {seq}: outcomes for positions {outside[:5]} of a {size}-record message")
    in_dlq = 0
    for position, code in state.items():
        if not 0 <= position < size:
            continue
        if code in SETTLED:
            name = SETTLED[code]
            setattr(report, name, getattr(report, name) + 1)
        elif code in IN_DLQ:
            report.in_dlq[IN_DLQ[code]] = report.in_dlq.get(IN_DLQ[code], 0) + 1
            in_dlq += 1
        else:
            report.anomalies.append(f"message seq {seq}: unknown outcome {code!r} at position {position}")
    if in_dlq:
        report.dlq_seqs.append((seq, in_dlq))
    missing = size - sum(1 for p in state if 0 <= p < size)
    if missing:
        report.missing += missing
        report.missing_seqs.append((seq, missing))


# --------------------------------------------------------------------------- presentation


def headline(report: LedgerReport) -> str:
    """One line: the status and the equation."""
    if report.status == "unknown":
        return "ledger: unknown sync"
    parts = [
        f"{report.written:,} written",
        f"{report.unchanged:,} unchanged",
        f"{report.stale:,} stale",
        f"{report.rejected_total:,} rejected",
        f"{report.duplicates:,} duplicate{'' if report.duplicates == 1 else 's'}",
        f"{report.in_dlq_total:,} in the DLQ",
    ]
    if report.not_enqueued:
        parts.append(f"{report.not_enqueued:,} not enqueued")
    if report.missing:
        parts.append(f"{report.missing:,} missing")
    status = {"complete": "complete", "in_dlq": "accounted, DLQ pending", "incomplete": "INCOMPLETE"}[report.status]
    return f"ledger {status}: {report.rows:,} rows = " + " + ".join(parts)


def format_report(report: LedgerReport) -> str:
    lines = [f"sync {report.sync_id}" + (f" ({report.synced_at}, {report.source})" if report.manifest else "")]
    lines.append("  " + headline(report))
    if report.status == "unknown":
        lines.extend(f"  {problem}" for problem in report.problems())
        return "\n".join(lines)
    lines.append(
        f"  written = {report.inserted:,} inserted + {report.updated:,} updated; "
        f"{report.messages:,} message(s), {report.messages_with_outcome:,} with an outcome, {report.replays:,} replay(s)"
    )
    for reason, count in sorted(report.rejected.items()):
        where = [str(r.get("line")) for r in report.rejections if r.get("reason") == reason][:5]
        lines.append(f"  rejected {reason}: {count:,}" + (f" (lines {', '.join(where)}{', …' if count > len(where) else ''})" if where else ""))
    for duplicate in report.duplicate_keys[:5]:
        symbol, date = duplicate.get("key", ["?", "?"])
        periods = duplicate.get("fiscal_periods") or []
        lines.append(
            f"  duplicate {symbol} {date}: a later row replaced an earlier one"
            + (f" (fiscal {periods[0]} → {periods[-1]})" if len(periods) == 2 else "")
        )
    if report.duplicates > 5:
        lines.append(f"  … {report.duplicates - 5:,} more duplicate(s)")
    lines.extend(f"  {problem}" for problem in report.problems())
    return "\n".join(lines)
