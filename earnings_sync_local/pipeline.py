"""The whole pipeline on one machine: moto server + template.yaml's resources + the real handlers.

`run_local` starts an embedded AWS emulator on 127.0.0.1 (random free port), creates the queues and
tables from template.yaml's own definitions, then runs each CSV as a successive sync through a
`LocalPipeline`: producer handler → SQS → `SqsEventSource` (behaves like Lambda's SQS mapping) →
consumer handler → table → stream consumer. Figures in the summary come from the handlers' own EMF
metric output, and each sync's completeness from the ledger (`earnings_sync.ledger`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from earnings_sync.observability import M
from earnings_sync_local.emulator import embedded_emulator
from earnings_sync_local.lambda_runtime import FAKE_ACCOUNT, REGION, Handler, LambdaContext, invoke, patched_environ
from earnings_sync_local.sqs_mapping import DrainStats, SqsEventSource


@dataclass
class PipelineDrain(DrainStats):
    """A drain of the queue and the stream until both are quiet."""

    stream_records: int = 0
    stream_skipped_records: int = 0  # given up on after the stream mapping's retries


class LocalPipeline:
    """The deployed pipeline's moving parts on an emulator: the producer, Lambda's SQS and stream
    mappings and the real handlers, wired from `template.LocalResources` (the template's settings).

    `run_local` drives it sync by sync; the fault-injection tests drive it the same way, with
    `wrap_consumer` wrapping the consumer handler to crash or time out an invocation. Handlers read
    their settings from the environment: call them inside `environ()`.
    """

    def __init__(
        self,
        resources: Any,
        sqs: Any,
        *,
        dynamodb: Any = None,
        streams: Any = None,
        wrap_consumer: Callable[[Handler], Handler] | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        from consumers import sqs_consumer, stream_consumer
        from earnings_sync_local.stream_mapping import DynamoDBStreamEventSource
        from producers import app as producer_app

        self.resources = resources
        self.sqs = sqs
        self.dynamodb = dynamodb
        self.environment = {
            **resources.environments.get("ProducerFunction", {}),
            **resources.environments.get("ConsumerFunction", {}),
            **resources.environments.get("StreamConsumerFunction", {}),
            "POWERTOOLS_METRICS_NAMESPACE": os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "EarningsSync"),
            "ALLOW_PATH_EVENTS": "true",  # the local runner hands the producer files; Lambda never does
            **(environment or {}),
        }
        self.producer: Handler = producer_app.lambda_handler
        consumer: Handler = sqs_consumer.lambda_handler
        self.source = SqsEventSource(
            sqs,
            resources.queue_url,
            resources.queue_arn,
            wrap_consumer(consumer) if wrap_consumer is not None else consumer,
            batch_size=resources.consumer_batch_size,
            report_batch_item_failures="ReportBatchItemFailures" in resources.consumer_function_response_types,
            function_name="ConsumerFunction",
            timeout_seconds=resources.consumer_timeout,
        )
        # Lambda's stream mapping, with the position kept across drains.
        self.streams = None
        if streams is not None and resources.stream_mapping is not None:
            self.streams = DynamoDBStreamEventSource.from_mapping(resources.stream_mapping, streams, stream_consumer.lambda_handler, sqs)

    @contextlib.contextmanager
    def environ(self) -> Iterator[LocalPipeline]:
        with patched_environ({k: str(v) for k, v in self.environment.items()}):
            yield self

    def produce(self, path: str, synced_at: str | None = None) -> tuple[dict[str, Any] | None, BaseException | None]:
        """One producer invocation: (its report, even of a failed sync when it has one; its error)."""
        event: dict[str, Any] = {"path": path}
        if synced_at is not None:
            event["synced_at"] = synced_at
        result, _, error = invoke(self.producer, event, LambdaContext("ProducerFunction", 300))
        report = result if isinstance(result, dict) else getattr(getattr(error, "report", None), "as_dict", lambda: None)()
        return report, error

    def drain(self, progress: Callable[[DrainStats], None] | None = None) -> PipelineDrain:
        """Deliver the queue, then the stream, again and again until neither has anything new."""
        from earnings_sync_local.stream_mapping import merge_stats

        stats = merge_stats(PipelineDrain(), self.source.drain(progress))
        while self.streams is not None:
            streamed = self.streams.drain()
            stats.stream_records += streamed.records
            stats.stream_skipped_records += streamed.skipped_records
            stats.metrics.update(streamed.metrics)
            again = self.source.drain()
            merge_stats(stats, again)
            if again.deliveries == 0:
                break
        return stats

    def ledger(self, sync_id: str) -> Any:
        """The sync's `ledger.LedgerReport`, or None when the template has no ledger table."""
        from earnings_sync.ledger import SyncLedger

        name = self.environment.get("LEDGER_TABLE")
        if not name or self.dynamodb is None:
            return None
        return SyncLedger(self.dynamodb, name).report(sync_id)


@dataclass
class SyncSummary:
    file: str
    sync_id: str = ""
    synced_at: str = ""
    rows: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    messages: int = 0
    records_enqueued: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale_skipped: int = 0
    poison_records: int = 0
    retries: int = 0
    invocations: int = 0
    failed_deliveries: int = 0
    dlq_messages: int = 0
    # the stream consumer, over this sync's changes (and the changes it made itself)
    stream_records: int = 0
    validation_passed: int = 0
    validation_failed: dict[str, int] = field(default_factory=dict)  # rule -> items
    bookkeeping_only: int = 0
    superseded_removed: int = 0
    superseded_conflicts: int = 0
    regressions_restored: int = 0
    dynamodb_requests: dict[str, int] = field(default_factory=dict)  # by kind, consumer + stream consumer
    stream_records_skipped: int = 0  # given up on after the mapping's retries (on-failure queue)
    seconds: float = 0.0
    error: str | None = None
    ledger: Any = None  # ledger.LedgerReport once the run is over; None without a ledger table

    @property
    def written(self) -> int:
        return self.inserted + self.updated


@dataclass
class LocalSummary:
    endpoint: str
    syncs: list[SyncSummary] = field(default_factory=list)
    table_items: int = 0
    dlq_messages: int = 0
    stream_failure_messages: int = 0
    seconds: float = 0.0
    export: str | None = None
    files: list[str] = field(default_factory=list)  # every file given, in order; a run stops at a failed sync

    @property
    def not_run(self) -> list[str]:
        """Files after a failed sync: never started."""
        return self.files[len(self.syncs) :]

    @property
    def unsynced(self) -> list[str]:
        """Files whose sync failed or never started."""
        return [s.file for s in self.syncs if s.error is not None] + self.not_run

    @property
    def ok(self) -> bool:
        return all(s.error is None for s in self.syncs) and not self.not_run

    @property
    def complete(self) -> bool | None:
        """Every given file synced and all its rows settled according to the ledger (None: no ledger table)."""
        reports = [s.ledger for s in self.syncs if s.ledger is not None]
        if self.unsynced:
            return False
        return all(r.complete for r in reports) if reports else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files": self.files,
            "unsynced": self.unsynced,
            "not_run": self.not_run,
            "syncs": [
                {
                    "file": s.file,
                    "sync_id": s.sync_id,
                    "synced_at": s.synced_at,
                    "rows": s.rows,
                    "rejected": s.rejected,
                    "rejected_total": sum(s.rejected.values()),
                    "rejections": s.rejections,
                    "duplicates": s.duplicates,
                    "messages": s.messages,
                    "records_enqueued": s.records_enqueued,
                    "written": s.written,
                    "inserted": s.inserted,
                    "updated": s.updated,
                    "unchanged": s.unchanged,
                    "stale_skipped": s.stale_skipped,
                    "poison_records": s.poison_records,
                    "retries": s.retries,
                    "consumer_invocations": s.invocations,
                    "failed_deliveries": s.failed_deliveries,
                    "dlq_messages": s.dlq_messages,
                    "stream_records": s.stream_records,
                    "validation_passed": s.validation_passed,
                    "validation_failed": s.validation_failed,
                    "validation_failed_total": sum(s.validation_failed.values()),
                    "bookkeeping_only": s.bookkeeping_only,
                    "superseded_removed": s.superseded_removed,
                    "superseded_conflicts": s.superseded_conflicts,
                    "regressions_restored": s.regressions_restored,
                    "dynamodb_requests": s.dynamodb_requests,
                    "dynamodb_requests_total": sum(s.dynamodb_requests.values()),
                    "stream_records_skipped": s.stream_records_skipped,
                    "seconds": round(s.seconds, 3),
                    "error": s.error,
                    "ledger": s.ledger.as_dict() if s.ledger is not None else None,
                }
                for s in self.syncs
            ],
            "complete": self.complete,
            "table_items": self.table_items,
            "dlq_messages": self.dlq_messages,
            "stream_failure_messages": self.stream_failure_messages,
            "seconds": round(self.seconds, 3),
            "export": self.export,
        }


def _queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None

    def show(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()

    def done(self) -> None:
        if self.stream is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()


def sync_error_text(error: BaseException) -> str:
    """A failed sync in one line: the input's own message for what a user can fix (it names the
    file); the exception's type as well for anything else."""
    from earnings_sync.records import NotACalendarError
    from earnings_sync.sources import SourceError
    from earnings_sync.sync_identity import InvalidSyncMetadata

    if isinstance(error, (NotACalendarError, SourceError, InvalidSyncMetadata)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_local(
    csv_paths: Sequence[str],
    *,
    export: str | None = None,
    progress_stream: IO[str] | None = None,
    log_stream: IO[str] | None = None,
    synced_at: Sequence[str] | None = None,
    template_path: str | None = None,
    on_ready: Callable[[LocalSummary, RunningEmulator], None] | None = None,
) -> LocalSummary:
    """Run each CSV as a successive sync through the real handlers on an embedded emulator.

    `on_ready` runs after the syncs while the emulator is still up (`--serve` blocks in it).
    """
    from earnings_sync import aws
    from earnings_sync.calendar_table import CalendarTable, export_jsonl
    from earnings_sync.observability import requests_by_kind, validation_failures_by_rule
    from earnings_sync_local import template

    started = time.perf_counter()
    progress = Progress(progress_stream)
    tpl = template.load_template(template_path) if template_path else template.load_template()
    with embedded_emulator() as endpoint, contextlib.ExitStack() as stack:
        sqs = aws.client("sqs")
        dynamodb = aws.client("dynamodb")
        resources = template.create_resources(tpl, dynamodb, sqs, region=REGION, account_id=FAKE_ACCOUNT)
        pipeline = LocalPipeline(resources, sqs, dynamodb=dynamodb, streams=aws.client("dynamodbstreams"))
        summary = LocalSummary(endpoint=endpoint, files=list(csv_paths))
        with pipeline.environ():
            from producers import app as producer_app

            stack.enter_context(routed_logs(producer_app.logger, log_stream))
            dlq_before = 0
            for number, path in enumerate(csv_paths, start=1):
                sync = SyncSummary(file=path)
                summary.syncs.append(sync)
                sync_started = time.perf_counter()
                progress.show(f"sync {number}/{len(csv_paths)}: reading {os.path.basename(path)}")
                report, error = pipeline.produce(path, synced_at[number - 1] if synced_at is not None else None)
                if report:
                    sync.sync_id, sync.synced_at = report["sync_id"], report["synced_at"]
                    sync.rows, sync.rejected, sync.rejections = report["rows"], report["rejected"], report["rejections"]
                    sync.duplicates, sync.messages = report["duplicates"], report["messages_sent"]
                    sync.records_enqueued = report["records_enqueued"]
                if error is not None:
                    sync.error = sync_error_text(error)
                    sync.seconds = time.perf_counter() - sync_started
                    if not report:
                        break  # nothing was enqueued: an upstream error ends the run

                def show(stats: DrainStats, n: int = number, s: SyncSummary = sync) -> None:
                    done = stats.metrics[M.RECORDS_RECEIVED]
                    progress.show(f"sync {n}/{len(csv_paths)}: {int(done):,}/{s.records_enqueued:,} records consumed")

                drained = pipeline.drain(show)
                sync.stream_records = drained.stream_records
                sync.stream_records_skipped = drained.stream_skipped_records
                metrics = drained.metrics
                sync.validation_passed = int(metrics[M.VALIDATION_PASSED])
                sync.validation_failed = validation_failures_by_rule(metrics)
                sync.bookkeeping_only = int(metrics[M.BOOKKEEPING_ONLY])
                sync.superseded_removed = int(metrics[M.SUPERSEDED_REMOVED])
                sync.superseded_conflicts = int(metrics[M.SUPERSEDED_CONFLICTS])
                sync.regressions_restored = int(metrics[M.REGRESSIONS_RESTORED])
                sync.dynamodb_requests = requests_by_kind(metrics)
                sync.inserted = int(metrics[M.RECORDS_INSERTED])
                sync.updated = int(metrics[M.RECORDS_UPDATED])
                sync.unchanged = int(metrics[M.RECORDS_UNCHANGED])
                sync.stale_skipped = int(metrics[M.STALE_SYNC_SKIPPED])
                sync.poison_records = int(metrics[M.POISON_RECORDS])
                sync.retries = int(metrics[M.WRITE_RETRIES])
                sync.invocations = drained.invocations
                sync.failed_deliveries = drained.failed_deliveries
                dlq_now = _queue_depth(sqs, resources.dlq_url)
                sync.dlq_messages, dlq_before = dlq_now - dlq_before, dlq_now
                sync.seconds = time.perf_counter() - sync_started
                if sync.error is not None:
                    break
            progress.done()
            for sync in summary.syncs:  # read once every sync is drained
                if sync.sync_id:
                    sync.ledger = pipeline.ledger(sync.sync_id)
            table = CalendarTable(dynamodb, resources.table_name)
            summary.dlq_messages = _queue_depth(sqs, resources.dlq_url)
            if resources.stream_failure_queue_url:
                summary.stream_failure_messages = _queue_depth(sqs, resources.stream_failure_queue_url)
            if export:
                summary.table_items = export_jsonl(table, export)
                summary.export = export
            else:
                summary.table_items = table.count()
            if on_ready is not None:
                summary.seconds = time.perf_counter() - started
                on_ready(summary, RunningEmulator(endpoint, resources, pipeline.source))
                return summary
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass
class RunningEmulator:
    """What `earnings-sync local --serve` keeps up, so other terminals can run `earnings-sync dlq`."""

    endpoint: str
    resources: Any  # template.LocalResources
    source: SqsEventSource

    def describe(self) -> str:
        queue, dlq = (url.rsplit("/", 1)[-1] for url in (self.resources.queue_url, self.resources.dlq_url))
        return "\n".join(
            [
                f"emulator running at {self.endpoint} (Ctrl-C to stop)",
                f"  queue {queue}, DLQ {dlq}, table {self.resources.table_name}",
                "  from another terminal:",
                f"    export AWS_ENDPOINT_URL={self.endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION={REGION}",
                f"    earnings-sync dlq peek {dlq}",
                f"  messages replayed into {queue} are consumed here, as the Lambda would.",
            ]
        )

    def serve(self, stream: IO[str], *, interval: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> int:
        """Print how to reach the emulator, then consume the queue until Ctrl-C; returns deliveries."""
        print(self.describe(), file=stream, flush=True)
        consumed = 0
        try:
            while True:
                stats = DrainStats()
                if self.source.poll_once(stats) == 0:
                    sleep(interval)
                    continue
                consumed += stats.deliveries
                dlq_depth = _queue_depth(self.source.sqs, self.resources.dlq_url)
                print(
                    f"consumed {stats.deliveries} message(s): {stats.deleted} done, {stats.failed_deliveries} to retry; "
                    f"DLQ holds {dlq_depth}",
                    file=stream,
                    flush=True,
                )
        except KeyboardInterrupt:
            print("stopping the emulator", file=stream, flush=True)
        return consumed


@contextlib.contextmanager
def routed_logs(logger: Any, stream: IO[str] | None) -> Iterator[None]:
    """Handler logs go to a file (or nowhere) locally, so the terminal shows progress and summary."""
    handler = logger.registered_handler
    with contextlib.ExitStack() as stack:
        target = stream if stream is not None else stack.enter_context(open(os.devnull, "w"))  # noqa: SIM115
        previous = handler.setStream(target)
        try:
            yield
        finally:
            handler.setStream(previous)


def format_summary(summary: LocalSummary) -> str:
    synced = len(summary.files or summary.syncs) - len(summary.unsynced)
    done = f"{len(summary.syncs)} sync(s)" if summary.ok else f"{synced} of {len(summary.files or summary.syncs)} file(s) synced"
    lines = [f"earnings-sync local: {done} in {summary.seconds:.1f} s on {summary.endpoint} (moto)"]
    header = f"{'#':>2} {'file':<28} {'rows':>7} {'rejected':>8} {'dup':>4} {'messages':>8} {'written':>8} {'unchanged':>9} {'stale':>6} {'poison':>6} {'dlq':>4} {'time':>7}"
    lines.append(header)
    for number, sync in enumerate(summary.syncs, start=1):
        name = os.path.basename(sync.file)
        name = name if len(name) <= 28 else "…" + name[-27:]
        lines.append(
            f"{number:>2} {name:<28} {sync.rows:>7,} {sum(sync.rejected.values()):>8,} {sync.duplicates:>4,} "
            f"{sync.messages:>8,} {sync.written:>8,} {sync.unchanged:>9,} {sync.stale_skipped:>6,} "
            f"{sync.poison_records:>6,} {sync.dlq_messages:>4,} {sync.seconds:>6.1f}s"
        )
        if sync.written:
            lines.append(f"   {'':<28} inserted {sync.inserted:,}, updated {sync.updated:,}")
        for reason, count in sorted(sync.rejected.items()):
            where = [str(r["line"]) for r in sync.rejections if r["reason"] == reason][:5]
            lines.append(f"   rejected {reason}: {count:,} (lines {', '.join(where)}{', …' if count > len(where) else ''})")
        if sync.stream_records:
            lines.append(
                f"   stream: {sync.stream_records:,} records, validation passed {sync.validation_passed:,}, "
                f"failed {sum(sync.validation_failed.values()):,}, bookkeeping-only {sync.bookkeeping_only:,}, "
                f"superseded removed {sync.superseded_removed:,}, regressions restored {sync.regressions_restored:,}"
                + (f", skipped {sync.stream_records_skipped:,}" if sync.stream_records_skipped else "")
            )
        for rule, count in sorted(sync.validation_failed.items()):
            lines.append(f"   validation failed {rule}: {count:,}")
        if sync.dynamodb_requests:
            spent = ", ".join(f"{kind} {count:,}" for kind, count in sync.dynamodb_requests.items())
            lines.append(f"   DynamoDB requests: {sum(sync.dynamodb_requests.values()):,} ({spent})")
        if sync.ledger is not None:
            from earnings_sync.ledger import headline

            lines.append(f"   {headline(sync.ledger)}")
            lines.extend(f"     {problem}" for problem in sync.ledger.problems())
        if sync.error:
            lines.append(f"   ERROR: {sync.error}")
    lines.append(
        f"table items: {summary.table_items:,}   DLQ messages: {summary.dlq_messages:,}"
        + (f"   stream failures: {summary.stream_failure_messages:,}" if summary.stream_failure_messages else "")
    )
    if summary.unsynced:
        lines.append("NOT synced: " + ", ".join(summary.unsynced) + (" (stopped after the failed sync)" if summary.not_run else ""))
    if summary.complete is not None:
        lines.append("ledger: every sync complete" if summary.complete else "ledger: NOT every sync is complete (see above)")
    if summary.export:
        lines.append(f"exported to {summary.export}")
    return "\n".join(lines)
