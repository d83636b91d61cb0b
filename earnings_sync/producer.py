"""Producer domain logic: one CSV snapshot → one sync → SQS messages of ≤ 25 records."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from earnings_sync.ledger import MAX_NOTED, Manifest, SyncLedger
from earnings_sync.messages import batch_entries, build_messages, decode_envelope
from earnings_sync.records import EarningsRecord, ParseStats, Rejection, iter_symbol_groups, parse_csv, symbols_contiguous
from earnings_sync.sync_identity import check_synced_at, new_sync_identity
from earnings_sync.table import backoff_delays

MAX_REPORTED_REJECTIONS = 200


@dataclass
class SyncReport:
    """Everything a sync did: the producer handler returns it, logs it and turns it into metrics."""

    sync_id: str
    synced_at: str
    source: str
    rows: int = 0
    records: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    messages: int = 0
    messages_sent: int = 0
    records_enqueued: int = 0
    send_retries: int = 0
    failed_messages: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: float = 0.0
    duplicate_keys: list[dict[str, Any]] = field(default_factory=list)  # the first few, with both fiscal periods
    seq_records: list[int] = field(default_factory=list)  # records per message, by seq (the ledger's manifest)
    ledger: str = "off"  # recorded / failed: <why> / off (no ledger table configured)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def complete(self) -> bool:
        return not self.failed_messages

    def as_dict(self) -> dict[str, Any]:
        return {
            "sync_id": self.sync_id,
            "synced_at": self.synced_at,
            "source": self.source,
            "rows": self.rows,
            "records": self.records,
            "duplicates": self.duplicates,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": self.rejected_total,
            "rejections": self.rejections,
            "messages": self.messages,
            "messages_sent": self.messages_sent,
            "records_enqueued": self.records_enqueued,
            "send_retries": self.send_retries,
            "failed_messages": self.failed_messages,
            "duplicate_keys": self.duplicate_keys,
            "ledger": self.ledger,
            "duration_ms": round(self.duration_ms, 1),
        }


def _open_lines(path: Path) -> IO[str]:
    """Lines of a local file (newline='' lets the csv module see CRLF pairs)."""
    return open(path, encoding="utf-8-sig", errors="replace", newline="")  # noqa: SIM115


class EnqueueError(Exception):
    """Some messages could not be sent after retries; the report lists them."""

    def __init__(self, report: SyncReport) -> None:
        super().__init__(f"{len(report.failed_messages)} of {report.messages} messages could not be sent")
        self.report = report


def message_attributes(sync_id: str, synced_at: str, record_count: int) -> dict[str, dict[str, str]]:
    return {
        "sync_id": {"DataType": "String", "StringValue": sync_id},
        "synced_at": {"DataType": "String", "StringValue": synced_at},
        "record_count": {"DataType": "Number", "StringValue": str(record_count)},
    }


class SyncProducer:
    """Parses, validates, groups and enqueues one snapshot; the SQS client is passed in."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        max_records: int = 25,
        max_payload_bytes: int = 256 * 1024,
        send_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        on_rejection: Callable[[Rejection], None] | None = None,
        on_duplicate: Callable[[EarningsRecord, EarningsRecord], None] | None = None,
        on_start: Callable[[SyncReport], None] | None = None,
        ledger: SyncLedger | None = None,
    ) -> None:
        self.sqs = sqs
        self.ledger = ledger  # the completeness ledger: the sync's manifest is recorded there
        self.queue_url = queue_url
        self.max_records = max_records
        self.max_payload_bytes = max_payload_bytes
        self.send_attempts = send_attempts
        self.sleep = sleep
        self.on_rejection = on_rejection
        self.on_duplicate = on_duplicate
        self.on_start = on_start  # told the sync_id before any row is read, so every log line can carry it

    def run(
        self,
        source: str | bytes | Path | Iterable[str],
        *,
        source_name: str,
        synced_at: str | None = None,
        secrets: Iterable[str] = (),
    ) -> SyncReport:
        """Raises UpstreamError (nothing sent) or EnqueueError (after sending all it could).

        A re-readable source (text, bytes, a file path) is first scanned for symbol contiguity;
        when every symbol's rows form one run (AlphaVantage sorts by symbol) records stream through
        to the queue with memory bounded by one batch, otherwise groups are buffered to the end.
        Nothing is sent before the header and the first data row have passed the upstream checks.
        """
        started = time.perf_counter()
        sync_id, synced_at = new_sync_identity(synced_at)
        report = SyncReport(sync_id=sync_id, synced_at=synced_at, source=source_name)
        if self.on_start is not None:
            self.on_start(report)
        stats = ParseStats()

        def reject(rejection: Rejection) -> None:
            if len(report.rejections) < MAX_REPORTED_REJECTIONS:
                report.rejections.append({"line": rejection.line, "reason": rejection.reason, "detail": rejection.detail})
            if self.on_rejection is not None:
                self.on_rejection(rejection)

        def duplicate(earlier: EarningsRecord, later: EarningsRecord) -> None:
            if len(report.duplicate_keys) < MAX_NOTED:
                report.duplicate_keys.append(
                    {"key": list(later.key), "fiscal_periods": [earlier.fiscal_date_ending, later.fiscal_date_ending]}
                )
            if self.on_duplicate is not None:
                self.on_duplicate(earlier, later)

        def numbered(messages: Iterable[tuple[str, int]]) -> Iterable[tuple[str, dict]]:
            for body, count in messages:
                report.seq_records.append(count)
                yield body, message_attributes(sync_id, synced_at, count)

        with contextlib.ExitStack() as stack:
            if isinstance(source, Path):
                contiguous = symbols_contiguous(stack.enter_context(_open_lines(source)))
                lines: Iterable[str] | str | bytes = stack.enter_context(_open_lines(source))
            elif isinstance(source, (str, bytes)):
                text = source.decode("utf-8-sig", errors="replace") if isinstance(source, bytes) else source
                contiguous = symbols_contiguous(io.StringIO(text, newline=""))
                lines = text
            else:
                contiguous, lines = False, source
            if self.ledger is not None:
                # before the first send (a failure here aborts a sync that has sent nothing)
                self.ledger.register_sync(sync_id, synced_at)
            groups = iter_symbol_groups(parse_csv(lines, secrets), stats, reject, duplicate, contiguous=contiguous)
            bodies = numbered(build_messages(groups, sync_id, synced_at, self.max_records, self.max_payload_bytes))
            for batch in batch_entries(bodies, max_bytes=self.max_payload_bytes):
                self._send_batch(batch, report)
        report.rows, report.records, report.duplicates = stats.rows, stats.records, stats.duplicates
        report.rejected = stats.rejected
        self._record_manifest(report)
        report.duration_ms = (time.perf_counter() - started) * 1000
        if report.failed_messages:
            raise EnqueueError(report)
        return report

    def _record_manifest(self, report: SyncReport) -> None:
        """The ledger's left-hand side. A failure is reported, not raised: the sync itself is done,
        and the ledger will show it without a manifest (incomplete) rather than lose it."""
        if self.ledger is None:
            return
        manifest = Manifest(
            sync_id=report.sync_id,
            synced_at=report.synced_at,
            source=report.source,
            rows=report.rows,
            records=report.records,
            duplicates=report.duplicates,
            rejected=dict(report.rejected),
            seq_records=report.seq_records,
            unsent=[f["seq"] for f in report.failed_messages if f.get("seq") is not None],
            unsent_error=report.failed_messages[0]["error"] if report.failed_messages else "",
            rejections=report.rejections[:MAX_NOTED],
            duplicate_keys=report.duplicate_keys,
        )
        try:
            self.ledger.write_manifest(manifest)
        except Exception as exc:  # noqa: BLE001 - reported in the result, the log and a metric
            report.ledger = f"failed: {type(exc).__name__}: {exc}"[:300]
            return
        report.ledger = "recorded"

    def _send_batch(self, batch: list[tuple[str, dict]], report: SyncReport) -> None:
        """SendMessageBatch, then resend only the entries reported in `Failed`, with backoff."""
        report.messages += len(batch)
        pending = {str(i): entry for i, entry in enumerate(batch)}
        errors: dict[str, str] = {}
        delays = iter(backoff_delays(self.send_attempts - 1, base=0.1))
        while pending:
            try:
                response = self.sqs.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": entry_id, "MessageBody": body, "MessageAttributes": attrs}
                        for entry_id, (body, attrs) in pending.items()
                    ],
                )
                report.send_retries += response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            except Exception as exc:  # noqa: BLE001 - the SDK already retried; keep every entry
                response = {"Failed": [{"Id": i, "Message": f"{type(exc).__name__}: {exc}", "SenderFault": False} for i in pending]}
            for ok in response.get("Successful", []):
                body, attrs = pending.pop(ok["Id"])
                report.messages_sent += 1
                report.records_enqueued += int(attrs["record_count"]["StringValue"])
            retryable = {}
            for failed in response.get("Failed", []):
                errors[failed["Id"]] = failed.get("Message") or failed.get("Code", "unknown")
                if not failed.get("SenderFault", False):
                    retryable[failed["Id"]] = pending[failed["Id"]]
            delay = next(delays, None)
            if not retryable or delay is None:
                break
            for entry_id in set(pending) - set(retryable):
                self._record_failure(pending.pop(entry_id), errors[entry_id], report)
            report.send_retries += 1
            self.sleep(delay)
        for entry_id, entry in pending.items():
            self._record_failure(entry, errors.get(entry_id, "not sent"), report)

    @staticmethod
    def _record_failure(entry: tuple[str, dict], error: str, report: SyncReport) -> None:
        body, attrs = entry
        report.failed_messages.append(
            {
                "seq": decode_envelope(body).seq,
                "records": int(attrs["record_count"]["StringValue"]),
                "error": error,
                "body_bytes": len(body.encode()),
            }
        )


def sync_from_event(
    event: dict[str, Any],
    settings: Any,
    *,
    sqs: Any,
    s3: Any = None,
    ssm: Any = None,
    opener: Callable[..., Any] | None = None,
    on_rejection: Callable[[Rejection], None] | None = None,
    on_duplicate: Callable[[EarningsRecord, EarningsRecord], None] | None = None,
    on_start: Callable[[SyncReport], None] | None = None,
    ledger: SyncLedger | None = None,
) -> SyncReport:
    """Pick the source the event names and run one sync from it.

    Event shapes: `{"path": "/x.csv"}`, `{"s3": {"bucket": b, "key": k}}`, an S3 notification
    (`Records[0].s3`), or anything else (e.g. the schedule's `{"source": "alphavantage"}`) →
    fetch from AlphaVantage. `synced_at` may be given to backfill an old snapshot as an old sync;
    it is checked first (sync_identity.check_synced_at: strict, not in the future), and a bad one
    raises InvalidSyncMetadata before any source is read.
    """
    from earnings_sync import sources  # local import: the HTTP code is only needed on this path

    producer = SyncProducer(
        sqs,
        settings.queue_url,
        max_records=settings.max_records_per_message,
        max_payload_bytes=settings.max_payload_bytes,
        on_rejection=on_rejection,
        on_duplicate=on_duplicate,
        on_start=on_start,
        ledger=ledger,
    )
    synced_at = event.get("synced_at")
    if synced_at is not None:
        check_synced_at(synced_at)  # before anything is read: a bad time fails the invocation, nothing is sent
    s3_ref = event.get("s3")
    if not s3_ref and event.get("Records"):
        notification = event["Records"][0].get("s3", {})
        s3_ref = {"bucket": notification.get("bucket", {}).get("name"), "key": notification.get("object", {}).get("key")}
    if event.get("path"):
        path = Path(event["path"])
        if not path.is_file():
            raise sources.SourceError(f"cannot open {path}: no such file")
        return producer.run(path, source_name=str(path), synced_at=synced_at)
    if s3_ref:
        bucket, key = s3_ref.get("bucket"), s3_ref.get("key")
        if not bucket or not key:
            raise sources.SourceError(f"S3 source needs bucket and key, got {s3_ref!r}")
        body = sources.read_s3_object(s3, bucket, key)
        return producer.run(body, source_name=f"s3://{bucket}/{key}", synced_at=synced_at)
    api_key = sources.resolve_api_key(settings, ssm)
    horizon = event.get("horizon", settings.alphavantage_horizon)
    body = sources.fetch_alphavantage(
        api_key,
        horizon=horizon,
        symbol=event.get("symbol"),
        base_url=settings.alphavantage_url,
        timeout=settings.http_timeout_seconds,
        attempts=settings.http_attempts,
        **({"opener": opener} if opener is not None else {}),
    )
    return producer.run(body, source_name=f"alphavantage:{horizon}", synced_at=synced_at, secrets=[api_key])
