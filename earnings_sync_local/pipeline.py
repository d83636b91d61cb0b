"""The whole pipeline on one machine: moto server + template.yaml's resources + the real handlers.

`run_local` starts an embedded AWS emulator on 127.0.0.1 (random free port), creates the queues and
tables from template.yaml's own definitions, then runs each CSV as a successive sync through a
`LocalPipeline`: producer handler → SQS → `SqsEventSource` (behaves like Lambda's SQS mapping) →
consumer handler → table → stream consumer → change events on the template's bus. The handlers
are the functions template.yaml's `Handler` properties name. Figures in the summary come from the
handlers' own EMF metric output (change events per detail-type included) and each sync's
completeness from the ledger (`earnings_sync.ledger`). Asked for the events themselves, the run puts
an `EventTap` on the bus: a catch-all rule whose target is a local SQS queue, so they arrive through
the emulator's own EventBridge → SQS delivery, as a rule target receives them. Showing progress and
the summary is the caller's: `run_local` reports progress as text to a callback and returns data.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import IO, Any

from earnings_sync import aws
from earnings_sync.calendar_table import CalendarTable, export_jsonl
from earnings_sync.change_events import METRIC_KEYS, SOURCE
from earnings_sync.ledger import SyncLedger
from earnings_sync.observability import M, change_events_by_type, requests_by_kind, validation_failures_by_rule
from earnings_sync.records import NotACalendarError
from earnings_sync.sources import SourceError
from earnings_sync.sync_identity import InvalidSyncMetadata
from earnings_sync_local import template
from earnings_sync_local.emulator import embedded_emulator
from earnings_sync_local.lambda_runtime import FAKE_ACCOUNT, REGION, Handler, LambdaContext, invoke, patched_environ
from earnings_sync_local.sqs_mapping import DrainStats, SqsEventSource
from earnings_sync_local.stream_mapping import DynamoDBStreamEventSource, merge_stats

ProgressCallback = Callable[[str], None]
"""Where `run_local` says what it is doing, one short line at a time (the CLI shows it on a terminal)."""


def import_handler(resources: template.LocalResources, function_id: str) -> tuple[ModuleType, Handler]:
    """The function template.yaml's `Handler` names for `function_id` (`package.module.function`),
    and its module, imported as Lambda's Python runtime does: a renamed handler fails here, by name."""
    spec = resources.handlers.get(function_id)
    if spec is None:
        raise template.TemplateError(f"{function_id} has no Handler in the template")
    module_name, _, name = spec.rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else None
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise  # the handler's module exists; something it imports does not
        raise template.TemplateError(f"{function_id}: Handler {spec}: no module {exc.name}") from exc
    handler = getattr(module, name, None)
    if module is None or not callable(handler):
        raise template.TemplateError(f"{function_id}: Handler {spec}: no such function")
    return module, handler


class EventTap:
    """A catch-all rule for the `earnings-sync` source on the change-event bus, targeting a local SQS
    queue: what `take` returns went through the emulator's EventBridge → SQS delivery.

    The queue is emptied after every stream consumer invocation (`collect`): moto's ReceiveMessage
    and DeleteMessage walk the whole queue, so ten thousand events left in it cost minutes."""

    RULE = "earnings-sync-local-tap"

    def __init__(self, events: Any, sqs: Any, bus_name: str, *, queue_name: str = "earnings-change-events") -> None:
        self.sqs = sqs
        self.received: list[dict[str, Any]] = []
        self.url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=self.RULE, EventBusName=bus_name, EventPattern=json.dumps({"source": [SOURCE]}), State="ENABLED")
        events.put_targets(Rule=self.RULE, EventBusName=bus_name, Targets=[{"Id": "local-queue", "Arn": arn}])

    def collect(self) -> None:
        """Move what the queue holds, as the rule target received it, to `received`."""
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not messages:
                return
            self.received.extend(json.loads(message["Body"]) for message in messages)
            self.sqs.delete_message_batch(
                QueueUrl=self.url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            )

    def take(self) -> list[dict[str, Any]]:
        """Every event received since the last `take`, in the order the queue gave them."""
        self.collect()
        taken, self.received = self.received, []
        return taken

    def after(self, handler: Handler) -> Handler:
        """`handler`, collecting the events its invocation published once it returns."""

        def handler_then_collect(event: dict, context: Any) -> Any:
            try:
                return handler(event, context)
            finally:
                self.collect()

        return handler_then_collect


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
        resources: template.LocalResources,
        sqs: Any,
        *,
        dynamodb: Any = None,
        streams: Any = None,
        events: Any = None,
        wrap_consumer: Callable[[Handler], Handler] | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.resources = resources
        self.sqs = sqs
        self.dynamodb = dynamodb
        self.environment = {
            **resources.environments.get(template.PRODUCER_ID, {}),
            **resources.environments.get(template.CONSUMER_ID, {}),
            **resources.environments.get(template.STREAM_CONSUMER_ID, {}),
            "POWERTOOLS_METRICS_NAMESPACE": os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "EarningsSync"),
            "ALLOW_PATH_EVENTS": "true",  # the local runner hands the producer files; Lambda never does
            **(environment or {}),
        }
        self.producer_module, self.producer = import_handler(resources, template.PRODUCER_ID)
        _, consumer = import_handler(resources, template.CONSUMER_ID)
        self.source = SqsEventSource(
            sqs,
            resources.queue_url,
            resources.queue_arn,
            wrap_consumer(consumer) if wrap_consumer is not None else consumer,
            batch_size=resources.consumer_batch_size,
            report_batch_item_failures="ReportBatchItemFailures" in resources.consumer_function_response_types,
            function_name=template.CONSUMER_ID,
            timeout_seconds=resources.consumer_timeout,
        )
        # The change events the stream consumer publishes, with an `events` client and a bus to tap.
        self.tap = EventTap(events, sqs, resources.event_bus_name) if events is not None and resources.event_bus_name else None
        # Lambda's stream mapping, with the position kept across drains.
        self.streams = None
        if streams is not None and resources.stream_mapping is not None:
            _, stream_consumer = import_handler(resources, resources.stream_mapping.function_logical_id)
            if self.tap is not None:
                stream_consumer = self.tap.after(stream_consumer)
            self.streams = DynamoDBStreamEventSource.from_mapping(resources.stream_mapping, streams, stream_consumer, sqs)

    @property
    def logger(self) -> Any:
        """The handlers' Powertools logger (one service, so one logger for all of them)."""
        return self.producer_module.logger

    @contextlib.contextmanager
    def environ(self) -> Iterator[LocalPipeline]:
        with patched_environ({k: str(v) for k, v in self.environment.items()}):
            yield self

    def produce(self, path: str, synced_at: str | None = None) -> tuple[dict[str, Any] | None, BaseException | None]:
        """One producer invocation: (its report, even of a failed sync when it has one; its error)."""
        event: dict[str, Any] = {"path": path}
        if synced_at is not None:
            event["synced_at"] = synced_at
        result, _, error = invoke(self.producer, event, LambdaContext(template.PRODUCER_ID, 300))
        report = result if isinstance(result, dict) else getattr(getattr(error, "report", None), "as_dict", lambda: None)()
        return report, error

    def drain(self, progress: Callable[[DrainStats], None] | None = None) -> PipelineDrain:
        """Deliver the queue, then the stream, again and again until neither has anything new."""
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
        name = self.environment.get("LEDGER_TABLE")
        if not name or self.dynamodb is None:
            return None
        return SyncLedger(self.dynamodb, name).report(sync_id)

    def dlq_depth(self) -> int:
        return _queue_depth(self.sqs, self.resources.dlq_url)


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
    events: dict[str, int] = field(default_factory=dict)  # change events published, by detail-type
    event_publish_failures: int = 0  # change events the stream consumer could not publish (records retried)
    events_received: int | None = None  # through the tap's queue, when the run taps the bus
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
    events_file: str | None = None  # where every change event received was written, as JSON Lines
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
                    "events": s.events,
                    "events_total": sum(s.events.values()),
                    "event_publish_failures": s.event_publish_failures,
                    "events_received": s.events_received,
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
            "events_file": self.events_file,
        }


def _queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def sync_error_text(error: BaseException) -> str:
    """A failed sync in one line: the input's own message for what a user can fix (it names the
    file); the exception's type as well for anything else."""
    if isinstance(error, (NotACalendarError, SourceError, InvalidSyncMetadata)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _no_progress(text: str) -> None:
    """Progress nobody watches."""


def run_local(
    csv_paths: Sequence[str],
    *,
    export: str | None = None,
    progress: ProgressCallback | None = None,
    log_stream: IO[str] | None = None,
    synced_at: Sequence[str] | None = None,
    template_path: str | None = None,
    on_ready: Callable[[LocalSummary, RunningEmulator], None] | None = None,
    events: str | None = None,
) -> LocalSummary:
    """Run each CSV as a successive sync through the real handlers on an embedded emulator.

    `progress` hears what the run is doing, one line at a time. `on_ready` runs after the syncs
    while the emulator is still up (`--serve` blocks in it). `events` names a file that receives
    every change event, one JSON line each, as a rule target receives it.
    """
    started = time.perf_counter()
    tpl = template.load_template(template_path) if template_path else template.load_template()
    with embedded_emulator() as endpoint, contextlib.ExitStack() as stack:
        sqs, dynamodb, events_client = aws.client("sqs"), aws.client("dynamodb"), aws.client("events")
        resources = template.create_resources(tpl, dynamodb, sqs, region=REGION, account_id=FAKE_ACCOUNT, events_client=events_client)
        streams = aws.client("dynamodbstreams")
        pipeline = LocalPipeline(resources, sqs, dynamodb=dynamodb, streams=streams, events=events_client if events else None)
        summary = LocalSummary(endpoint=endpoint, files=list(csv_paths), events_file=events)
        events_out = stack.enter_context(open(events, "w", encoding="utf-8")) if events else None  # noqa: SIM115
        with pipeline.environ():
            stack.enter_context(routed_logs(pipeline.logger, log_stream))
            _run_syncs(pipeline, summary, synced_at, progress or _no_progress, events_out)
            _read_outcome(pipeline, summary, export)
            if on_ready is not None:
                summary.seconds = time.perf_counter() - started
                on_ready(summary, RunningEmulator(endpoint, resources, pipeline.source))
                return summary
    summary.seconds = time.perf_counter() - started
    return summary


def _run_syncs(
    pipeline: LocalPipeline, summary: LocalSummary, synced_at: Sequence[str] | None, progress: ProgressCallback, events_out: IO[str] | None
) -> None:
    """Each file as the next sync, drained to the end before the next starts; a failed sync ends the run."""
    dlq_before = 0
    for number, path in enumerate(summary.files, start=1):
        sync = SyncSummary(file=path)
        summary.syncs.append(sync)
        started = time.perf_counter()
        step = f"sync {number}/{len(summary.files)}"
        progress(f"{step}: reading {os.path.basename(path)}")
        report, error = pipeline.produce(path, synced_at[number - 1] if synced_at is not None else None)
        _record_report(sync, report, error)
        if error is not None and not report:
            sync.seconds = time.perf_counter() - started
            break  # nothing was enqueued: an upstream error ends the run
        _record_drain(sync, pipeline.drain(_consumption(progress, step, sync)))
        if pipeline.tap is not None:
            _record_events(sync, pipeline.tap.take(), events_out)
        dlq_now = pipeline.dlq_depth()
        sync.dlq_messages, dlq_before = dlq_now - dlq_before, dlq_now
        sync.seconds = time.perf_counter() - started
        if sync.error is not None:
            break


def _consumption(progress: ProgressCallback, step: str, sync: SyncSummary) -> Callable[[DrainStats], None]:
    """A drain's progress: records consumed of those the sync enqueued."""

    def show(stats: DrainStats) -> None:
        progress(f"{step}: {int(stats.metrics[M.RECORDS_RECEIVED]):,}/{sync.records_enqueued:,} records consumed")

    return show


def _record_report(sync: SyncSummary, report: dict[str, Any] | None, error: BaseException | None) -> None:
    """What the producer says it did (a failed sync may have a report too), and its error."""
    if report:
        sync.sync_id, sync.synced_at = report["sync_id"], report["synced_at"]
        sync.rows, sync.rejected, sync.rejections = report["rows"], report["rejected"], report["rejections"]
        sync.duplicates, sync.messages = report["duplicates"], report["messages_sent"]
        sync.records_enqueued = report["records_enqueued"]
    if error is not None:
        sync.error = sync_error_text(error)


def _record_drain(sync: SyncSummary, drained: PipelineDrain) -> None:
    """The sync's figures from its drain: the consumers' own metrics and the mappings' deliveries."""
    metrics = drained.metrics
    sync.stream_records = drained.stream_records
    sync.stream_records_skipped = drained.stream_skipped_records
    sync.validation_passed = int(metrics[M.VALIDATION_PASSED])
    sync.validation_failed = validation_failures_by_rule(metrics)
    sync.bookkeeping_only = int(metrics[M.BOOKKEEPING_ONLY])
    sync.superseded_removed = int(metrics[M.SUPERSEDED_REMOVED])
    sync.superseded_conflicts = int(metrics[M.SUPERSEDED_CONFLICTS])
    sync.regressions_restored = int(metrics[M.REGRESSIONS_RESTORED])
    sync.event_publish_failures = int(metrics[M.CHANGE_EVENT_PUBLISH_FAILURES])
    detail_types = {key: detail_type for detail_type, key in METRIC_KEYS.items()}
    sync.events = {detail_types[key]: count for key, count in change_events_by_type(metrics).items()}
    sync.dynamodb_requests = requests_by_kind(metrics)
    sync.inserted = int(metrics[M.RECORDS_INSERTED])
    sync.updated = int(metrics[M.RECORDS_UPDATED])
    sync.unchanged = int(metrics[M.RECORDS_UNCHANGED])
    sync.stale_skipped = int(metrics[M.STALE_SYNC_SKIPPED])
    sync.poison_records = int(metrics[M.POISON_RECORDS])
    sync.retries = int(metrics[M.WRITE_RETRIES])
    sync.invocations = drained.invocations
    sync.failed_deliveries = drained.failed_deliveries


def _record_events(sync: SyncSummary, received: list[dict[str, Any]], events_out: IO[str] | None) -> None:
    """The change events the tap's queue received during the sync's drain, written out as received."""
    sync.events_received = len(received)
    if events_out is not None:
        events_out.writelines(json.dumps(event, separators=(",", ":")) + "\n" for event in received)
        events_out.flush()


def _read_outcome(pipeline: LocalPipeline, summary: LocalSummary, export: str | None) -> None:
    """Once every sync is drained: each sync's ledger report, the queues' depths and the table."""
    for sync in summary.syncs:
        if sync.sync_id:
            sync.ledger = pipeline.ledger(sync.sync_id)
    summary.dlq_messages = pipeline.dlq_depth()
    if pipeline.resources.stream_failure_queue_url:
        summary.stream_failure_messages = _queue_depth(pipeline.sqs, pipeline.resources.stream_failure_queue_url)
    summary.table_items = _table_items(pipeline.dynamodb, pipeline.resources.table_name, export)
    summary.export = export or None


def _table_items(dynamodb: Any, table_name: str, export: str | None) -> int:
    """How many items the table holds; with `export`, written there as JSON Lines on the way."""
    table = CalendarTable(dynamodb, table_name)
    return export_jsonl(table, export) if export else table.count()


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
                # AWS_DEFAULT_REGION for plain boto3 scripts and the AWS CLI; AWS_REGION for the SDKs that read that
                f"    export AWS_ENDPOINT_URL={self.endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
                f" AWS_DEFAULT_REGION={REGION} AWS_REGION={REGION}",
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
