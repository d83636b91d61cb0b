"""Inspect the dead-letter queue and replay the right messages without ever losing one.

Reading without consuming: messages are received with a short visibility timeout and held until
the scan ends, then made visible again (ChangeMessageVisibility 0). They cannot be released one by
one as they are read: SQS hands the first visible messages out again, so the scan would see the
same few forever. The trade-off: while a scan runs, a concurrent reader of the DLQ finds the
scanned messages invisible (for at most `visibility_timeout` seconds if this process dies).

Replay sends first and deletes from the DLQ only after SQS accepted the send. A crash in between
leaves a duplicate in the source queue, which the table's upsert rules make harmless (an equal
sync is idempotent, an older one never regresses newer data): replays are idempotent by business
key, never by MessageId. Anything not replayed (filtered out, refused, over the limit, dry run)
stays in the DLQ and is made visible again before `replay_dlq` returns.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from earnings_sync import dlq
from earnings_sync.messages import MAX_ENTRIES_PER_BATCH, RawSyncMessage, batch_entries, decode_envelope
from earnings_sync.queue_scan import QueueScan

UNKNOWN_KIND = "unknown"  # no failure_kind: moved by the queue's own redrive policy, or sent by hand
NATIVE_UNSUPPORTED = "the endpoint does not support StartMessageMoveTask; run without --native"
MAX_NATIVE_RATE = 500  # StartMessageMoveTask's MaxNumberOfMessagesPerSecond upper bound

Now = Callable[[], dt.datetime]

_dead_letter_decoder = msgspec.json.Decoder(dlq.DeadLetter)
_encoder = msgspec.json.Encoder()


class DlqError(Exception):
    """Something the operator has to settle: an unknown queue, an ambiguous target, bad options."""


class NotADeadLetterQueue(DlqError):
    """No queue's redrive policy points at the queue given as a DLQ: most likely the wrong queue."""


class NativeUnsupported(DlqError):
    """The endpoint has no StartMessageMoveTask (moto); the client-side replay works everywhere."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- reading messages


@dataclass(frozen=True)
class DlqMessage:
    """One DLQ message as received, with what the pipeline recorded about it decoded."""

    message_id: str
    receipt_handle: str
    body: str
    attributes: Mapping[str, Mapping[str, Any]]  # SQS message attributes, as received
    sent_at: dt.datetime | None
    kind: str
    reason: str
    sync_id: str
    symbols: tuple[str, ...]  # one per record, in record order
    record_failures: tuple[dlq.RecordFailure, ...]  # per-record reasons of a pipeline DeadLetter
    decode_error: str  # empty when the body is a sync message
    failed_at: dt.datetime | None
    receive_count: int | None  # deliveries from the source queue before it failed
    replay_count: int

    @property
    def decodable(self) -> bool:
        return not self.decode_error

    def age(self, now: dt.datetime) -> dt.timedelta | None:
        """Time since the failure (failed_at), or since SQS took the message in when none is recorded."""
        moment = self.failed_at or self.sent_at
        return None if moment is None else now - moment

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        age = self.age(now)
        return {
            "message_id": self.message_id,
            "kind": self.kind,
            "reason": self.reason,
            "sync_id": self.sync_id,
            "symbols": list(self.symbols),
            "records": len(self.symbols),
            "record_failures": [
                {"index": f.index, "symbol": _symbol_at(self.symbols, f.index), "reason": f.reason}
                for f in self.record_failures
            ],
            "decodable": self.decodable,
            "decode_error": self.decode_error or None,
            "failed_at": _iso(self.failed_at),
            "sent_at": _iso(self.sent_at),
            "age_seconds": None if age is None else round(age.total_seconds(), 3),
            "receive_count": self.receive_count,
            "replay_count": self.replay_count,
            "body": None if self.decodable else self.body[:1000],
        }


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _symbol_at(symbols: Sequence[str], index: int) -> str:
    return symbols[index] if 0 <= index < len(symbols) else "?"


def _text(attributes: Mapping[str, Mapping[str, Any]], name: str) -> str:
    return str((attributes.get(name) or {}).get("StringValue") or "")


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _timestamp(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _record_symbol(raw: msgspec.Raw) -> str:
    """The symbol even of an invalid record: it is what operators filter and search by."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "?"
    symbol = value.get("asset_symbol") if isinstance(value, dict) else None
    return symbol if isinstance(symbol, str) and symbol else "?"


def parse_message(message: Mapping[str, Any]) -> DlqMessage:
    """A ReceiveMessage entry → DlqMessage; any body is accepted (undecodable ones say why)."""
    attributes = message.get("MessageAttributes") or {}
    body = message.get("Body", "")
    sync_id, symbols, failures, error = "", (), (), ""
    try:
        letter = _dead_letter_decoder.decode(body)
        sync_id, failures = letter.sync_id, tuple(letter.failures)
        symbols = tuple(_record_symbol(r) for r in letter.records)
    except (msgspec.DecodeError, msgspec.ValidationError):
        try:
            envelope = decode_envelope(body)
            sync_id, symbols = envelope.sync_id, tuple(_record_symbol(r) for r in envelope.records)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            error = f"not a sync message: {exc}"
    sent = (message.get("Attributes") or {}).get("SentTimestamp")
    return DlqMessage(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        body=body,
        attributes=attributes,
        sent_at=dt.datetime.fromtimestamp(int(sent) / 1000, dt.UTC) if sent else None,
        kind=_text(attributes, dlq.ATTR_KIND) or UNKNOWN_KIND,
        reason=_text(attributes, dlq.ATTR_REASON),
        sync_id=_text(attributes, dlq.ATTR_SYNC_ID) or sync_id,
        symbols=symbols,
        record_failures=failures,
        decode_error=error,
        failed_at=_timestamp(_text(attributes, dlq.ATTR_FAILED_AT)),
        receive_count=_int(_text(attributes, dlq.ATTR_RECEIVE_COUNT)),
        replay_count=_int(_text(attributes, dlq.ATTR_REPLAY_COUNT)) or 0,
    )


def _error_code(exc: Exception) -> str:
    return str(((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code", ""))


def queue_url(sqs: Any, queue: str) -> str:
    """A queue given by URL, ARN or name → its URL."""
    if queue.startswith(("https://", "http://")):
        return queue
    kwargs: dict[str, str] = {"QueueName": queue}
    if queue.startswith("arn:"):
        parts = queue.split(":")
        if len(parts) != 6:
            raise DlqError(f"not an SQS queue ARN: {queue}")
        kwargs = {"QueueName": parts[5], "QueueOwnerAWSAccountId": parts[4]}
    try:
        return sqs.get_queue_url(**kwargs)["QueueUrl"]
    except ClientError as exc:
        if _missing_queue(exc):
            raise DlqError(f"no such queue: {queue}") from exc
        raise


def _missing_queue(exc: ClientError) -> bool:
    return "NonExistentQueue" in _error_code(exc) or _error_code(exc) == "QueueDoesNotExist"


def queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def source_queues(sqs: Any, dlq_url: str) -> list[str]:
    """Queues whose redrive policy points at this DLQ (ListDeadLetterSourceQueues)."""
    urls: list[str] = []
    for page in sqs.get_paginator("list_dead_letter_source_queues").paginate(QueueUrl=dlq_url):
        urls.extend(page.get("queueUrls", []))
    return urls


def dead_letter_queue(sqs: Any, queue: str, *, force: bool = False) -> str:
    """The URL of `queue` once it is known to exist and to be some queue's DLQ (`force`: any queue,
    unchecked). Reading receives every message, which counts toward a source queue's
    maxReceiveCount: a live queue given by mistake must be refused, not peeked."""
    url = queue_url(sqs, queue)
    if force:
        return url
    try:
        found = source_queues(sqs, url)
    except ClientError as exc:
        if _missing_queue(exc):
            raise DlqError(f"no such queue: {queue}") from exc
        raise
    if not found:
        raise NotADeadLetterQueue(f"{queue} is not a dead-letter queue: no queue's redrive policy points at it")
    return url


def replay_target(sqs: Any, dlq_url: str, to: str | None) -> str:
    """`to`, or the one queue that dead-letters into this DLQ; anything ambiguous is an error."""
    if to:
        target = queue_url(sqs, to)
    else:
        found = source_queues(sqs, dlq_url)
        if not found:
            raise NotADeadLetterQueue(
                f"{dlq_url} is not a dead-letter queue: no queue's redrive policy points at it; "
                "name the queue to replay into with --to"
            )
        if len(found) != 1:
            where = f": {', '.join(found)}" if found else ""
            raise DlqError(
                f"{len(found)} queues use {dlq_url} as their dead-letter queue{where}; "
                "name the queue to replay into with --to"
            )
        target = found[0]
    if target.rstrip("/") == dlq_url.rstrip("/"):
        raise DlqError("the replay target is the DLQ itself; name the source queue with --to")
    return target


class _Scanner(QueueScan):
    """The DLQ read once, each message decoded (see queue_scan)."""

    def next(self, count: int = MAX_ENTRIES_PER_BATCH) -> list[DlqMessage]:  # type: ignore[override]
        return [parse_message(message) for message in super().next(count)]


# --------------------------------------------------------------------------- stats and peek


@dataclass
class DlqStats:
    """Depth from the queue's attributes, plus a breakdown of the messages read."""

    queue_url: str
    visible: int
    in_flight: int
    delayed: int
    scanned: int = 0
    complete: bool = True  # False when max_messages stopped the scan before the end
    oldest_age_seconds: float | None = None
    oldest_message_id: str | None = None
    by_kind: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_sync_id: Counter[str] = field(default_factory=Counter)
    undecodable: int = 0
    replayed_before: int = 0  # messages that already went through a replay and failed again

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_url": self.queue_url,
            "visible": self.visible,
            "in_flight": self.in_flight,
            "delayed": self.delayed,
            "scanned": self.scanned,
            "complete": self.complete,
            "oldest_age_seconds": self.oldest_age_seconds,
            "oldest_message_id": self.oldest_message_id,
            "by_kind": dict(self.by_kind.most_common()),
            "by_reason": dict(self.by_reason.most_common()),
            "by_sync_id": dict(self.by_sync_id.most_common()),
            "undecodable": self.undecodable,
            "replayed_before": self.replayed_before,
        }


def dlq_stats(
    sqs: Any,
    queue: str,
    *,
    max_messages: int = 10_000,
    visibility_timeout: int = 30,
    wait_seconds: int = 2,
    now: Now = utc_now,
) -> DlqStats:
    """Depth and counts by failure kind / reason / sync id; leaves every message in the DLQ."""
    url = queue_url(sqs, queue)
    depth = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]
    stats = DlqStats(
        queue_url=url,
        visible=int(depth["ApproximateNumberOfMessages"]),
        in_flight=int(depth["ApproximateNumberOfMessagesNotVisible"]),
        delayed=int(depth.get("ApproximateNumberOfMessagesDelayed", 0)),
    )
    scanner = _Scanner(sqs, url, visibility_timeout=visibility_timeout, wait_seconds=wait_seconds)
    try:
        while stats.scanned < max_messages:
            messages = scanner.next(max_messages - stats.scanned)
            if not messages:
                break
            moment = now()
            for message in messages:
                stats.scanned += 1
                stats.by_kind[message.kind] += 1
                stats.by_reason[message.reason or "(no reason recorded)"] += 1
                stats.by_sync_id[message.sync_id or "(none)"] += 1
                stats.undecodable += not message.decodable
                stats.replayed_before += message.replay_count > 0
                age = message.age(moment)
                if age is not None and (stats.oldest_age_seconds is None or age.total_seconds() > stats.oldest_age_seconds):
                    stats.oldest_age_seconds = round(age.total_seconds(), 3)
                    stats.oldest_message_id = message.message_id
        else:
            stats.complete = False
    finally:
        scanner.release()
    return stats


def peek_dlq(
    sqs: Any,
    queue: str,
    *,
    limit: int = 10,
    visibility_timeout: int = 30,
    wait_seconds: int = 2,
) -> list[DlqMessage]:
    """Up to `limit` messages, decoded; they stay in the DLQ (visible again on return)."""
    url = queue_url(sqs, queue)
    scanner = _Scanner(sqs, url, visibility_timeout=visibility_timeout, wait_seconds=wait_seconds)
    found: list[DlqMessage] = []
    try:
        while len(found) < limit:
            messages = scanner.next(limit - len(found))
            if not messages:
                break
            found.extend(messages)
    finally:
        scanner.release()
    return found[:limit]


# --------------------------------------------------------------------------- replay


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """`90`, `90s`, `15m`, `2h`, `1h30m`, `3d`, `1w` → timedelta (a bare number is seconds)."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return dt.timedelta(seconds=float(value))
    parts = _DURATION_RE.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 15m, 2h, 1h30m, 3d)")
    return dt.timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


@dataclass(frozen=True)
class ReplayFilter:
    """Which DLQ messages to replay; every given criterion must hold."""

    symbol: str | None = None  # any record of the message has this symbol
    sync_id: str | None = None
    reason: str | None = None  # case-insensitive substring of the message's or a record's reason
    kind: str | None = None  # one of dlq.FAILURE_KINDS, or unknown
    min_age: dt.timedelta | None = None  # failed at least this long ago (--older-than)
    max_age: dt.timedelta | None = None  # failed at most this long ago (--newer-than)

    @property
    def is_empty(self) -> bool:
        return all(value is None for value in (self.symbol, self.sync_id, self.reason, self.kind, self.min_age, self.max_age))

    def matches(self, message: DlqMessage, now: dt.datetime) -> bool:
        if self.symbol is not None and self.symbol.upper() not in message.symbols:
            return False
        if self.sync_id is not None and message.sync_id != self.sync_id:
            return False
        if self.kind is not None and message.kind != self.kind:
            return False
        if self.reason is not None:
            texts = [message.reason, message.decode_error, *(f.reason for f in message.record_failures)]
            if self.reason.lower() not in "\n".join(texts).lower():
                return False
        if self.min_age is not None or self.max_age is not None:
            age = message.age(now)
            if age is None:
                return False
            if self.min_age is not None and age < self.min_age:
                return False
            if self.max_age is not None and age > self.max_age:
                return False
        return True


class TokenBucket:
    """At most `rate` messages per second on average, in bursts of up to one second's worth.

    The clock and sleep are injected so tests count sleeps instead of waiting.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self.sleeps = 0
        self.slept = 0.0

    @property
    def batch_size(self) -> int:
        """The largest batch one acquire can cover: ≤ 10 (SendMessageBatch) and ≤ the burst."""
        return max(1, min(MAX_ENTRIES_PER_BATCH, int(self.capacity)))

    def _refill(self) -> None:
        moment = self.clock()
        self.tokens = min(self.capacity, self.tokens + (moment - self.updated) * self.rate)
        self.updated = moment

    def acquire(self, count: int = 1) -> float:
        """Take `count` tokens, sleeping until they have accrued; returns the seconds slept."""
        if count > self.capacity:
            raise ValueError(f"cannot take {count} tokens at once from a bucket of {self.capacity:g}")
        self._refill()
        delay = 0.0
        if self.tokens < count:
            delay = (count - self.tokens) / self.rate
            self.sleep(delay)
            self.sleeps += 1
            self.slept += delay
            self._refill()
            self.tokens = max(self.tokens, float(count))  # float rounding must not cost a second sleep
        self.tokens -= count
        return delay


def replay_body(message: DlqMessage) -> str:
    """The body to send back: a pipeline DeadLetter becomes a plain sync message of its records.

    The consumer's envelope decoder would ignore `failures`, but they index into `records` and
    turn wrong once a record is corrected; the reason stays readable in the failure_reason
    attribute, and a second failure writes fresh per-record reasons. Other bodies go back as is.
    """
    try:
        letter = _dead_letter_decoder.decode(message.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return message.body
    envelope = RawSyncMessage(
        sync_id=letter.sync_id, synced_at=letter.synced_at, records=letter.records, v=letter.v,
        seq=letter.seq, positions=letter.positions,
    )
    return _encoder.encode(envelope).decode()


def replay_attributes(message: DlqMessage) -> dict[str, dict[str, Any]]:
    """The message's attributes, failure history included, with replay_count incremented.

    The consumer reads none of the failure_* attributes, and overwrites them when it dead-letters
    the message again, so they describe the latest failure while the message waits in the queue.
    Nothing else is added: SQS allows 10 attributes and a re-dead-lettered replay carries 9.
    """
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in message.attributes.items():
        if "StringValue" in value:
            attributes[name] = {"DataType": value["DataType"], "StringValue": value["StringValue"]}
        elif "BinaryValue" in value:
            attributes[name] = {"DataType": value["DataType"], "BinaryValue": value["BinaryValue"]}
    attributes[dlq.ATTR_REPLAY_COUNT] = {"DataType": "Number", "StringValue": str(message.replay_count + 1)}
    return attributes


@dataclass
class ReplayItem:
    """What happened to one matching message."""

    message_id: str
    sync_id: str
    symbols: tuple[str, ...]
    kind: str
    reason: str
    outcome: str  # replayed / would_replay / send_failed / delete_failed
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "sync_id": self.sync_id,
            "symbols": list(self.symbols),
            "kind": self.kind,
            "reason": self.reason,
            "outcome": self.outcome,
            "error": self.error or None,
        }


@dataclass
class ReplayReport:
    dlq_url: str
    target_url: str
    dry_run: bool
    scanned: int = 0
    matched: int = 0
    replayed: int = 0  # accepted by the target queue
    send_failed: int = 0  # still in the DLQ
    delete_failed: int = 0  # replayed, but also still in the DLQ: a later replay makes a harmless duplicate
    released: int = 0  # made visible again in the DLQ at the end
    limit_reached: bool = False
    aborted: str | None = None
    throttled_seconds: float = 0.0
    seconds: float = 0.0
    items: list[ReplayItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.aborted is None and self.send_failed == 0 and self.delete_failed == 0

    def add(self, message: DlqMessage, outcome: str, error: str = "") -> None:
        self.items.append(ReplayItem(message.message_id, message.sync_id, message.symbols, message.kind, message.reason, outcome, error))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dlq_url": self.dlq_url,
            "target_url": self.target_url,
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "matched": self.matched,
            "replayed": self.replayed,
            "send_failed": self.send_failed,
            "delete_failed": self.delete_failed,
            "released": self.released,
            "limit_reached": self.limit_reached,
            "aborted": self.aborted,
            "throttled_seconds": round(self.throttled_seconds, 3),
            "seconds": round(self.seconds, 3),
            "items": [item.as_dict() for item in self.items],
        }


class _Replayer:
    def __init__(self, sqs: Any, scanner: _Scanner, report: ReplayReport, bucket: TokenBucket | None, rewrite: Callable[[str], str] | None) -> None:
        self.sqs = sqs
        self.scanner = scanner
        self.report = report
        self.bucket = bucket
        self.rewrite = rewrite
        self.batch_size = bucket.batch_size if bucket is not None else MAX_ENTRIES_PER_BATCH

    def send(self, messages: list[DlqMessage]) -> None:
        """Send, then delete what was accepted; everything else stays held in the DLQ."""
        outgoing = []
        for message in messages:
            body = replay_body(message)
            outgoing.append((self.rewrite(body) if self.rewrite is not None else body, replay_attributes(message)))
        position = 0
        for batch in batch_entries(outgoing, max_entries=self.batch_size):
            chunk = messages[position : position + len(batch)]
            position += len(batch)
            if self.report.aborted is None:
                self._send_batch(chunk, batch)

    def _send_batch(self, chunk: list[DlqMessage], batch: list[tuple[str, dict]]) -> None:
        report = self.report
        if self.bucket is not None:
            report.throttled_seconds += self.bucket.acquire(len(batch))
        try:
            response = self.sqs.send_message_batch(
                QueueUrl=report.target_url,
                Entries=[{"Id": str(i), "MessageBody": body, "MessageAttributes": attrs} for i, (body, attrs) in enumerate(batch)],
            )
        except (ClientError, BotoCoreError) as exc:
            # The SDK already retried; the outcome is unknown, so the messages stay in the DLQ (a
            # send that did happen becomes a harmless duplicate later) and the replay stops.
            for message in chunk:
                report.send_failed += 1
                report.add(message, "send_failed", f"{type(exc).__name__}: {exc}")
            report.aborted = f"SendMessageBatch failed: {exc}"
            return
        accepted = {entry["Id"] for entry in response.get("Successful", [])}
        refused = {entry["Id"]: f"{entry.get('Code', '')}: {entry.get('Message', '')}".strip(": ") for entry in response.get("Failed", [])}
        sent = []
        for index, message in enumerate(chunk):
            if str(index) in accepted:
                sent.append(message)
            else:
                report.send_failed += 1
                report.add(message, "send_failed", refused.get(str(index), "missing from the SendMessageBatch reply"))
        report.replayed += len(sent)
        self._delete(sent)

    def _delete(self, sent: list[DlqMessage]) -> None:
        if not sent:
            return
        report = self.report
        try:
            response = self.sqs.delete_message_batch(
                QueueUrl=report.dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(sent)],
            )
            failed = {entry["Id"]: entry.get("Message") or entry.get("Code", "") for entry in response.get("Failed", [])}
        except (ClientError, BotoCoreError) as exc:
            failed = {str(i): f"{type(exc).__name__}: {exc}" for i in range(len(sent))}
            report.aborted = f"DeleteMessageBatch failed: {exc}"
        for index, message in enumerate(sent):
            if str(index) in failed:  # still held: released at the end, as a duplicate in waiting
                report.delete_failed += 1
                report.add(message, "delete_failed", failed[str(index)])
            else:
                self.scanner.forget(message.message_id)
                report.add(message, "replayed")


def replay_dlq(
    sqs: Any,
    queue: str,
    *,
    to: str | None = None,
    where: ReplayFilter = ReplayFilter(),
    limit: int | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    rewrite: Callable[[str], str] | None = None,
    progress: Callable[[ReplayReport], None] | None = None,
    now: Now = utc_now,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    visibility_timeout: int = 60,
    wait_seconds: int = 2,
) -> ReplayReport:
    """Move the matching DLQ messages back to `to` (default: the DLQ's one source queue).

    `rate` caps messages per second; `rewrite` may correct a body (a fixed record) before it is
    sent. See the module docstring for the delivery guarantees.
    """
    if limit is not None and limit < 1:
        raise DlqError("--limit must be at least 1")
    started = time.perf_counter()
    dlq_url = queue_url(sqs, queue)
    report = ReplayReport(dlq_url=dlq_url, target_url=replay_target(sqs, dlq_url, to), dry_run=dry_run)
    bucket = TokenBucket(rate, clock=clock, sleep=sleep) if rate is not None else None
    # Long enough to send and delete one round even at a low rate.
    hold_seconds = visibility_timeout + (int(MAX_ENTRIES_PER_BATCH / bucket.rate) if bucket is not None else 0)
    scanner = _Scanner(sqs, dlq_url, visibility_timeout=min(hold_seconds, 43_200), wait_seconds=wait_seconds)
    replayer = _Replayer(sqs, scanner, report, bucket, rewrite)
    try:
        while report.aborted is None:
            wanted = replayer.batch_size if limit is None else min(replayer.batch_size, limit - report.matched)
            if wanted <= 0:
                report.limit_reached = True
                break
            messages = scanner.next(wanted)
            if not messages:
                break
            report.scanned += len(messages)
            moment = now()
            selected = []
            for message in messages:
                if where.matches(message, moment) and (limit is None or report.matched < limit):
                    report.matched += 1
                    selected.append(message)
            if dry_run:
                for message in selected:
                    report.add(message, "would_replay")
            elif selected:
                replayer.send(selected)
            if progress is not None:
                progress(report)
    finally:
        report.released = scanner.release()[0]
        report.seconds = time.perf_counter() - started
    return report


# --------------------------------------------------------------------------- native move task


def _unsupported(exc: ClientError) -> bool:
    """Recognise "no such operation": AWS-style codes, or a 5xx page that is not an AWS reply (moto)."""
    code = _error_code(exc)
    message = str((exc.response.get("Error") or {}).get("Message", "")).lower()
    status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode", 0)
    return (
        code in {"UnknownOperationException", "InvalidAction", "UnsupportedOperation", "NotImplemented", "501"}
        or "not implemented" in message
        or "not been implemented" in message
        or "not supported" in message
        or status == 501
        or (status >= 500 and "<html" in message)
    )


def start_native_replay(sqs: Any, queue: str, *, to: str | None = None, rate: float | None = None) -> str:
    """StartMessageMoveTask from the DLQ (to `to`, else SQS's own choice: the original source queues).

    SQS moves every message as is: no filter, no replay_count, `failures` kept in the body (the
    consumer's envelope decoder ignores unknown fields). Returns the task handle.
    """
    dlq_url = queue_url(sqs, queue)
    kwargs: dict[str, Any] = {"SourceArn": queue_arn(sqs, dlq_url)}
    if to:
        target = queue_url(sqs, to)
        if target.rstrip("/") == dlq_url.rstrip("/"):
            raise DlqError("the replay target is the DLQ itself")
        kwargs["DestinationArn"] = queue_arn(sqs, target)
    if rate is not None:
        if not 1 <= rate <= MAX_NATIVE_RATE:
            raise DlqError(f"--rate with --native must be between 1 and {MAX_NATIVE_RATE} messages per second")
        kwargs["MaxNumberOfMessagesPerSecond"] = int(rate)
    try:
        return sqs.start_message_move_task(**kwargs)["TaskHandle"]
    except ClientError as exc:
        if _unsupported(exc):
            raise NativeUnsupported(NATIVE_UNSUPPORTED) from exc
        raise
