"""Producer domain logic: one CSV snapshot → one sync → SQS messages of ≤ 25 records."""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from earnings_sync import sources
from earnings_sync.backoff import backoff_delays
from earnings_sync.ledger import MAX_NOTED, Manifest, SyncLedger
from earnings_sync.messages import batch_entries, build_messages, decode_envelope
from earnings_sync.observability import M, add_metric, emit_producer_metrics
from earnings_sync.records import (
    SYMBOL_RE,
    EarningsRecord,
    NotACalendarError,
    ParseStats,
    Rejection,
    UpstreamError,
    iter_symbol_groups,
    parse_csv,
    physical_lines,
    printable,
    scrub,
    symbols_contiguous,
)
from earnings_sync.sources import SourceError
from earnings_sync.sync_identity import check_synced_at, new_sync_identity

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
    blank_lines: int = 0  # empty lines: not rows, but every physical line is accounted for
    aborted: str = ""  # why the sync stopped before the end of its input (where and why); empty: it did not

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def complete(self) -> bool:
        return not self.failed_messages and not self.aborted

    def as_dict(self) -> dict[str, Any]:
        return {
            "sync_id": self.sync_id,
            "synced_at": self.synced_at,
            "source": self.source,
            "rows": self.rows,
            "blank_lines": self.blank_lines,
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
            "aborted": self.aborted,
            "duration_ms": round(self.duration_ms, 1),
        }


class EnqueueError(Exception):
    """Some messages could not be sent after retries; the report lists them."""

    def __init__(self, report: SyncReport) -> None:
        super().__init__(f"{len(report.failed_messages)} of {report.messages} messages could not be sent")
        self.report = report


class SyncAborted(Exception):
    """Something unexpected stopped a sync part-way; its manifest says so (the ledger: incomplete)."""

    def __init__(self, report: SyncReport) -> None:
        super().__init__(f"sync {report.sync_id} aborted: {report.aborted}")
        self.report = report


def _file_problem(path: Path) -> str | None:
    """Why a local path cannot be read as a file at all (missing, a directory, no permission)."""
    shown = printable(str(path))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"cannot open {shown}: no such file"
    except NotADirectoryError:
        return f"cannot open {shown}: a part of its path is a file, not a directory"
    except OSError as exc:
        return f"cannot open {shown}: {(exc.strerror or type(exc).__name__).lower()}"
    if stat.S_ISDIR(mode):
        return f"{shown} is a directory, not a CSV file"
    if not stat.S_ISREG(mode):
        return f"{shown} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"cannot read {shown}: permission denied"
    return None


def check_source_file(path: Path) -> str | None:
    """A one-line problem with a local CSV, from its first lines only, or None when it looks right.

    For checking every argument before any work starts: the same checks a sync makes before it
    sends anything (header, quota row, JSON/HTML replies, encoding), on the file's first block
    (64 KiB; a JSON reply up to 64 KiB more), and never quoting what the file holds.
    """
    problem = _file_problem(path)
    if problem is not None:
        return problem
    shown = printable(str(path))
    try:
        with open(path, "rb") as handle:
            next(parse_csv(handle, source_name=shown), None)
    except NotACalendarError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read {shown}: {exc.strerror or type(exc).__name__}"
    return None


def _primed(items: Iterator[Any]) -> Iterator[Any]:
    """Pull the first item now, so a body that is not the calendar fails before anything happens."""
    first = next(items, None)
    return items if first is None else chain((first,), items)


def _symbols_contiguous(source: str | bytes | Path | Iterable[str] | Iterable[bytes]) -> bool:
    """Whether every symbol's rows form one run, from a second pass over a re-readable source (a
    one-pass iterable cannot be scanned twice: its groups are buffered to the end)."""
    if isinstance(source, Path):
        with open(source, "rb") as again:
            return symbols_contiguous(physical_lines(again))
    return isinstance(source, (str, bytes)) and symbols_contiguous(physical_lines(source))


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
        source: str | bytes | Path | Iterable[str] | Iterable[bytes],
        *,
        source_name: str,
        synced_at: str | None = None,
        secrets: Iterable[str] = (),
        from_alphavantage: bool = False,
    ) -> SyncReport:
        """Raises NotACalendarError / UpstreamError (nothing sent), EnqueueError (after sending all
        it could) or SyncAborted (something unexpected stopped it; its manifest is still written).

        A re-readable source (text, bytes, a file path), once its first lines proved it a calendar,
        is scanned for symbol contiguity; when every symbol's rows form one run (AlphaVantage sorts
        by symbol) records stream through to the queue with memory bounded by one batch, otherwise
        groups are buffered to the end. Nothing is registered or sent before the header and the
        first data row have passed the checks. `from_alphavantage` lets a not-the-calendar error
        quote the reply (`secrets` masked); any other source is only described.
        """
        started = time.perf_counter()
        sync_id, synced_at = new_sync_identity(synced_at)
        report = SyncReport(sync_id=sync_id, synced_at=synced_at, source=source_name)
        if self.on_start is not None:
            self.on_start(report)
        stats = ParseStats()
        secrets = [s for s in secrets if s]
        with contextlib.ExitStack() as stack:
            body: Any = stack.enter_context(open(source, "rb")) if isinstance(source, Path) else source  # noqa: SIM115
            items = _primed(parse_csv(body, secrets, source_name=source_name, from_alphavantage=from_alphavantage, stats=stats))
            contiguous = _symbols_contiguous(source)
            if self.ledger is not None:
                # before the first send (a failure here aborts a sync that has sent nothing)
                self.ledger.register_sync(sync_id, synced_at)
            try:
                self._send_all(items, stats, report, contiguous=contiguous)
            except Exception as exc:  # noqa: BLE001 - whatever it was, the ledger must say the sync stopped
                report.aborted = scrub(
                    f"stopped after line {stats.lines:,} of {source_name}, {report.messages_sent:,} message(s) sent: "
                    f"{type(exc).__name__}: {exc}",
                    secrets,
                )
                self._finish(report, stats, started)
                raise SyncAborted(report) from exc
        self._finish(report, stats, started)
        if report.failed_messages:
            raise EnqueueError(report)
        return report

    def _send_all(self, items: Iterator[Any], stats: ParseStats, report: SyncReport, *, contiguous: bool) -> None:
        """Records → symbol groups → messages → SendMessageBatch calls, streaming as far as `contiguous` allows."""
        groups = iter_symbol_groups(
            items, stats, functools.partial(self._rejected, report), functools.partial(self._duplicate, report), contiguous=contiguous
        )
        messages = build_messages(groups, report.sync_id, report.synced_at, self.max_records, self.max_payload_bytes)
        for batch in batch_entries(self._numbered(messages, report), max_bytes=self.max_payload_bytes):
            self._send_batch(batch, report)

    def _rejected(self, report: SyncReport, rejection: Rejection) -> None:
        if len(report.rejections) < MAX_REPORTED_REJECTIONS:
            report.rejections.append({"line": rejection.line, "reason": rejection.reason, "detail": rejection.detail})
        if self.on_rejection is not None:
            self.on_rejection(rejection)

    def _duplicate(self, report: SyncReport, earlier: EarningsRecord, later: EarningsRecord) -> None:
        if len(report.duplicate_keys) < MAX_NOTED:
            report.duplicate_keys.append({"key": list(later.key), "fiscal_periods": [earlier.fiscal_date_ending, later.fiscal_date_ending]})
        if self.on_duplicate is not None:
            self.on_duplicate(earlier, later)

    @staticmethod
    def _numbered(messages: Iterable[tuple[str, int]], report: SyncReport) -> Iterator[tuple[str, dict]]:
        """Each message body with its attributes; its record count noted by seq for the manifest."""
        for body, count in messages:
            report.seq_records.append(count)
            yield body, message_attributes(report.sync_id, report.synced_at, count)

    def _finish(self, report: SyncReport, stats: ParseStats, started: float) -> None:
        report.rows, report.records, report.duplicates = stats.rows, stats.records, stats.duplicates
        report.rejected, report.blank_lines = stats.rejected, stats.blank_lines
        self._record_manifest(report)
        report.duration_ms = (time.perf_counter() - started) * 1000

    def _record_manifest(self, report: SyncReport) -> None:
        """The ledger's left-hand side. A failure is reported, not raised: the sync itself is done,
        and the ledger will show it without a manifest (incomplete) rather than lose it."""
        if self.ledger is None:
            return
        unsent = [f["seq"] for f in report.failed_messages if f.get("seq") is not None]
        unsent += range(report.messages, len(report.seq_records))  # built, never handed to SQS (an abort)
        unsent_error = report.failed_messages[0]["error"] if report.failed_messages else report.aborted
        manifest = Manifest(
            sync_id=report.sync_id,
            synced_at=report.synced_at,
            source=report.source,
            rows=report.rows,
            records=report.records,
            duplicates=report.duplicates,
            rejected=dict(report.rejected),
            seq_records=report.seq_records,
            unsent=unsent,
            unsent_error=unsent_error,
            rejections=report.rejections[:MAX_NOTED],
            duplicate_keys=report.duplicate_keys,
            aborted=report.aborted,
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


PATH_EVENTS_REFUSED = (
    "this function reads S3 objects and AlphaVantage only: {\"path\": ...} events are for the local runner "
    "and the CLI (ALLOW_PATH_EVENTS)"
)


def _s3_reference(event: dict[str, Any]) -> tuple[Any, Any] | None:
    """(bucket, key) from `{"s3": {...}}` or an S3 notification, else None.

    Notification keys arrive URL-encoded (a space as `+`, `+` as `%2B`) and are decoded here.
    """
    direct = event.get("s3")
    if direct is not None:
        if not isinstance(direct, dict):
            raise SourceError('an "s3" event needs {"bucket": ..., "key": ...}')
        return direct.get("bucket"), direct.get("key")
    records = event.get("Records")
    if records is None:
        return None
    try:
        notification = records[0]["s3"]
        bucket, key = notification["bucket"]["name"], notification["object"]["key"]
    except (KeyError, IndexError, TypeError):
        raise SourceError("a Records event must be an S3 notification (Records[0].s3.bucket.name, .object.key)") from None
    if not isinstance(key, str):
        raise SourceError("the S3 notification's object key is not text")
    return bucket, urllib.parse.unquote_plus(key)


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

    Event shapes: `{"s3": {"bucket": b, "key": k}}`, an S3 notification (`Records[0].s3`, key
    URL-decoded), `{"path": "/x.csv"}` only where `settings.allow_path_events` is set (the local
    runner and the CLI; never on Lambda), or anything else (e.g. the schedule's
    `{"source": "alphavantage"}`) → fetch from AlphaVantage. `synced_at` may be given to backfill
    an old snapshot as an old sync. It is checked first
    (sync_identity.check_synced_at: strict, not in the future), and a bad one raises
    InvalidSyncMetadata before any source is read.
    """
    if not isinstance(event, dict):
        raise SourceError(f"the event must be a JSON object, got {type(event).__name__}")
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
    if "path" in event:
        return _sync_from_path(producer, event["path"], settings, synced_at)
    s3_ref = _s3_reference(event)
    if s3_ref is not None:
        return _sync_from_s3(producer, s3_ref, s3, synced_at)
    return _sync_from_alphavantage(producer, event, settings, ssm, opener, synced_at)


def _sync_from_path(producer: SyncProducer, path_text: Any, settings: Any, synced_at: str | None) -> SyncReport:
    if not getattr(settings, "allow_path_events", False):
        raise SourceError(PATH_EVENTS_REFUSED)  # the file is never opened
    if not isinstance(path_text, str) or not path_text:
        raise SourceError('"path" must name a file')
    path = Path(path_text)
    problem = _file_problem(path)
    if problem is not None:
        raise SourceError(problem)
    return producer.run(path, source_name=printable(str(path)), synced_at=synced_at)


def _sync_from_s3(producer: SyncProducer, s3_ref: tuple[Any, Any], s3: Any, synced_at: str | None) -> SyncReport:
    bucket, key = s3_ref
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise SourceError("an S3 source needs a bucket and a key (both text)")
    body = sources.read_s3_object(s3, bucket, key)
    return producer.run(body, source_name=printable(f"s3://{bucket}/{key}"), synced_at=synced_at)


def _sync_from_alphavantage(
    producer: SyncProducer,
    event: dict[str, Any],
    settings: Any,
    ssm: Any,
    opener: Callable[..., Any] | None,
    synced_at: str | None,
) -> SyncReport:
    """The API key is masked in anything the sync reports, and only an AlphaVantage reply is quoted."""
    api_key = sources.resolve_api_key(settings, ssm)
    horizon = event.get("horizon", settings.alphavantage_horizon)
    symbol = event.get("symbol")
    if symbol is not None and (not isinstance(symbol, str) or SYMBOL_RE.fullmatch(symbol) is None):
        raise SourceError('"symbol" must be a ticker symbol (A-Z, 0-9, ".", "-", "_")')
    body = sources.fetch_alphavantage(
        api_key,
        horizon=horizon,
        symbol=symbol,
        base_url=settings.alphavantage_url,
        timeout=settings.http_timeout_seconds,
        attempts=settings.http_attempts,
        **({"opener": opener} if opener is not None else {}),
    )
    return producer.run(
        body, source_name=f"alphavantage:{horizon}", synced_at=synced_at, secrets=[api_key], from_alphavantage=True
    )


# --------------------------------------------------------------------------- what a sync logs

MAX_LOGGED_REJECTIONS = 100  # rejected rows logged one line each per sync; all of them are counted
MAX_LOGGED_FAILURES = 20  # failed messages listed in the error line; all of them are counted


def loggable_sync(summary: dict[str, Any]) -> dict[str, Any]:
    """The report without the per-row rejections (each was logged on its own) and with a capped
    list of failed messages, so one log line stays readable whatever the sync did."""
    shown = {k: v for k, v in summary.items() if k not in ("rejections", "failed_messages")}
    failed = summary.get("failed_messages") or []
    if failed:
        shown["failed_messages"] = failed[:MAX_LOGGED_FAILURES]
        shown["failed_messages_total"] = len(failed)
    return shown


class SyncLog:
    """The producer function's lines and metrics for one sync, shaped here so a test reads them
    without Lambda: the callbacks `sync_from_event` takes while it runs (every line from the first
    carries the sync_id), then one line, and the sync's metrics, for the way it ended. `logger` is a
    Powertools Logger, `metrics` Powertools Metrics."""

    def __init__(self, logger: Any, metrics: Any) -> None:
        self.logger = logger
        self.metrics = metrics
        self.rejections_seen = 0

    def callbacks(self) -> dict[str, Any]:
        return {"on_start": self.started, "on_rejection": self.rejected, "on_duplicate": self.duplicate}

    def started(self, report: SyncReport) -> None:
        self.logger.append_keys(sync_id=report.sync_id)
        self.logger.info("sync started", extra={"source": report.source, "synced_at": report.synced_at})

    def rejected(self, rejection: Rejection) -> None:
        if self.rejections_seen < MAX_LOGGED_REJECTIONS:
            extra = {"line": rejection.line, "reason": rejection.reason, "detail": rejection.detail}
            self.logger.warning("row rejected", extra=extra)
        self.rejections_seen += 1

    def duplicate(self, earlier: EarningsRecord, later: EarningsRecord) -> None:
        self.logger.info(
            "duplicate key in snapshot, later row wins",
            extra={"key": list(later.key), "fiscal_periods": [earlier.fiscal_date_ending, later.fiscal_date_ending]},
        )

    def failed(self, exc: BaseException, throttles: int) -> None:
        """The error line of a sync that raised; nothing for an error no line describes (it is raised as it is)."""
        if isinstance(exc, NotACalendarError):  # AlphaVantage's error replies and files/objects that are no calendar
            add_metric(self.metrics, M.UPSTREAM_ERRORS, 1)
            if isinstance(exc, UpstreamError):
                self.logger.error("upstream error, nothing enqueued", extra={"kind": exc.kind, "upstream_message": exc.message})
            else:
                self.logger.error("not an earnings calendar, nothing enqueued", extra={"kind": exc.kind, "problem": exc.message})
        elif isinstance(exc, SourceError):
            self.logger.error("source unavailable, nothing enqueued", extra={"problem": str(exc)})
        elif isinstance(exc, (EnqueueError, SyncAborted)):
            summary = exc.report.as_dict()
            emit_producer_metrics(self.metrics, summary, throttles)
            extra = {"sync": loggable_sync(summary), "throttles": throttles}
            if isinstance(exc, EnqueueError):
                self.logger.error("sync incomplete: messages not sent", extra=extra)
            else:
                self.logger.error("sync aborted", extra={"reason": exc.report.aborted, **extra})

    def enqueued(self, report: SyncReport, throttles: int, memory: Mapping[str, float]) -> dict[str, Any]:
        """Metrics and the closing line of a sync that sent everything; returns the function's answer."""
        summary = report.as_dict()
        emit_producer_metrics(self.metrics, summary, throttles)
        self.logger.info("sync enqueued", extra={"sync": loggable_sync(summary), "throttles": throttles, **memory})
        return summary
