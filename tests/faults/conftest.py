"""The fault-injection suite's world: two small deterministic snapshots, a fresh emulator state per
run with the real handlers wired by `earnings_sync_local.pipeline.LocalPipeline`, and the fault-free run of
each scenario's syncs (computed once per test run) to compare the final table with."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import random
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from bench.generate import generate_csv
from earnings_sync import aws as aws_clients
from earnings_sync.ledger import LedgerReport
from earnings_sync.replay import replay_dlq
from earnings_sync_local.lambda_runtime import patched_environ
from earnings_sync_local.pipeline import LocalPipeline, PipelineDrain, routed_logs
from earnings_sync_local.template import create_resources, load_template

OLDER_AT, NEWER_AT = "2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z"
ROWS = 100
# Small messages so a 100-row file makes a few dozen messages and several SQS batches; one SDK
# attempt so an injected fault reaches our code at once (no SDK backoff to wait for).
ENVIRONMENT = {
    "MAX_RECORDS_PER_MESSAGE": "5",
    "AWS_MAX_ATTEMPTS": "1",
    "WRITE_ATTEMPTS": "3",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
}
CONTENT = ("company_name", "fiscal_date_ending", "estimate", "currency", "time_of_the_day", "lastSyncDate")
Key = tuple[str, str]


# --------------------------------------------------------------------------- the snapshots


@dataclass(frozen=True)
class Snapshots:
    older: str  # path
    newer: str
    stable: tuple[str, ...]  # symbols whose rows keep their keys in the newer snapshot, in file order

    def keys_of(self, symbols: Sequence[str]) -> set[Key]:
        return {(row[0], row[2]) for row in _rows(self.older) if row[0] in symbols}


def _rows(path: str) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))[1:]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue())
    return str(path)


def make_snapshots(directory: Path, rows: int = ROWS, seed: int = 11) -> Snapshots:
    """An older snapshot and a newer one: estimates revised, dates moved (rescheduled earnings),
    rows dropped, new listings; each with a duplicate key and two rejected rows."""
    rng = random.Random(seed)
    header, *older = list(csv.reader(io.StringIO(generate_csv(rows, seed))))
    newer: list[list[str]] = []
    changed: set[str] = set()
    for row in older:
        roll = rng.random()
        if roll < 0.05:
            changed.add(row[0])
            continue  # no longer listed
        row = list(row)
        if roll < 0.15:
            row[4] = f"{rng.uniform(-2, 6):.2f}"
        elif roll < 0.20:
            row[2] = (dt.date.fromisoformat(row[2]) + dt.timedelta(days=rng.randint(1, 3))).isoformat()
            changed.add(row[0])
        newer.append(row)
    newer += [[f"NEW{i}", "New Listing Inc", "2025-09-0" + str(1 + i % 9), "2025-06-30", "", "USD"] for i in range(6)]

    def spoil(rows_: list[list[str]]) -> list[list[str]]:
        out = list(rows_)
        first = out[3]
        out.insert(4, [first[0], first[1], first[2], "2025-03-31", "0.10", first[5]])  # same key: the later row wins
        out.insert(9, ["BAD$", "Bad Symbol Co", "2025-08-01", "2025-06-30", "", "USD"])  # bad_symbol
        out.insert(15, ["OKAY", "Bad Date Inc", "2025-13-01", "2025-06-30", "1.00", "USD"])  # bad_report_date
        return out

    older_path = _write(directory / "older.csv", header, spoil(older))
    newer_path = _write(directory / "newer.csv", header, spoil(newer))
    stable = tuple(dict.fromkeys(r[0] for r in older if r[0] not in changed and r[0] != older[3][0]))
    return Snapshots(older_path, newer_path, stable)


@pytest.fixture(scope="session")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Snapshots:
    return make_snapshots(tmp_path_factory.mktemp("snapshots"))


# --------------------------------------------------------------------------- the pipeline


class Harness:
    """One fresh emulator state and the pipeline on it; the test-side clients are its own, so
    faults registered on the handlers' clients (`handler_client`) never touch them. A catch-all
    rule on the change-event bus keeps every event published (`take_events`)."""

    def __init__(self, endpoint: str, *, wrap_consumer: Callable | None = None) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
        aws_clients._cached_client.cache_clear()  # new handler clients: no hook survives a test
        self.endpoint = endpoint
        self.dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        self.sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
        streams = boto3.client("dynamodbstreams", region_name="us-east-1", endpoint_url=endpoint)
        events = boto3.client("events", region_name="us-east-1", endpoint_url=endpoint)
        self.resources = create_resources(load_template(), self.dynamodb, self.sqs, events_client=events)
        self.pipeline = LocalPipeline(
            self.resources, self.sqs, dynamodb=self.dynamodb, streams=streams, events=events,
            wrap_consumer=wrap_consumer, environment=ENVIRONMENT,
        )
        self.events: list[dict[str, Any]] = []  # every change event taken so far, as a rule target got it
        self.drains: list[PipelineDrain] = []

    @contextlib.contextmanager
    def running(self) -> Iterator[Harness]:
        from producers import app

        with self.pipeline.environ(), routed_logs(app.logger, None):
            yield self

    def handler_client(self, service: str, max_attempts: int = 1) -> Any:
        """The client a handler gets from `earnings_sync.aws` (the consumer's DLQ client: 8 attempts)."""
        return aws_clients.client(service, max_attempts=max_attempts)

    def sync(self, path: str, synced_at: str, *, queue_url: str | None = None) -> tuple[dict[str, Any], BaseException | None]:
        with patched_environ({"QUEUE_URL": queue_url} if queue_url else {}):
            report, error = self.pipeline.produce(path, synced_at)
        assert report is not None, error
        return report, error

    def drain(self) -> PipelineDrain:
        drained = self.pipeline.drain()
        self.drains.append(drained)
        return drained

    def take_events(self) -> list[dict[str, Any]]:
        """The change events published since the last call (also kept in `events`)."""
        assert self.pipeline.tap is not None
        taken = self.pipeline.tap.take()
        self.events.extend(taken)
        return taken

    def metric(self, name: str) -> float:
        return sum(d.metrics[name] for d in self.drains)

    def replay(self) -> int:
        """Replay the whole DLQ into the queue (`earnings-sync dlq replay`), then drain."""
        report = replay_dlq(self.sqs, self.resources.dlq_url, to=self.resources.queue_url, wait_seconds=0)
        assert report.ok, report.as_dict()
        self.drain()
        return report.replayed

    def dlq_depth(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.resources.dlq_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def ledger(self, sync_id: str) -> LedgerReport:
        return self.pipeline.ledger(sync_id)

    def table(self) -> dict[Key, tuple]:
        """Content and lastSyncDate by key; sync ids differ from run to run and are left out."""
        state = {}
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=self.resources.table_name, ConsistentRead=True):
            for item in page["Items"]:
                values = []
                for name in CONTENT:
                    value = item.get(name, {"NULL": True})
                    values.append(Decimal(value["N"]) if "N" in value else value.get("S"))
                state[(item["asset_symbol"]["S"], item["earnings_date"]["S"])] = tuple(values)
        return state


@dataclass(frozen=True)
class Baseline:
    table: dict[Key, tuple]
    ledgers: tuple[LedgerReport, ...]
    events: tuple[dict[str, Any], ...] = ()  # the change events published, in order


_BASELINES: dict[tuple[tuple[str, str], ...], Baseline] = {}


@pytest.fixture
def world(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Harness]]:
    """`world(wrap_consumer=None)` → a fresh `Harness` on the moto server the whole run shares."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    yield lambda **kwargs: Harness(moto_endpoint, **kwargs)
    aws_clients._cached_client.cache_clear()


@pytest.fixture
def baseline(world: Callable[..., Harness]) -> Callable[..., Baseline]:
    """The fault-free run of these syncs, in this order, each drained before the next."""

    def run(*syncs: tuple[str, str]) -> Baseline:
        if syncs not in _BASELINES:
            harness = world()
            reports = []
            with harness.running():
                for path, synced_at in syncs:
                    report, error = harness.sync(path, synced_at)
                    assert error is None, error
                    harness.drain()
                    reports.append(report["sync_id"])
                assert harness.dlq_depth() == 0
                harness.take_events()
                _BASELINES[syncs] = Baseline(harness.table(), tuple(harness.ledger(s) for s in reports), tuple(harness.events))
        return _BASELINES[syncs]

    return run


# --------------------------------------------------------------------------- the two checks


def assert_accounted(report: LedgerReport, *, settled: bool = True) -> None:
    """Every CSV row of the sync exactly once: written, unchanged, stale, rejected, duplicate or
    (unless `settled`) in the DLQ; nothing missing, nothing counted twice."""
    assert report.manifest and not report.anomalies, report.problems()
    assert report.missing == 0 and report.not_enqueued == 0, report.problems()
    assert report.accounted_rows == report.rows, report.as_dict()
    assert report.rejected_total == 2 and report.duplicates == 1
    if settled:
        assert report.status == "complete" and report.in_dlq_total == 0, report.problems()
    else:
        assert report.status in ("complete", "in_dlq"), report.problems()


def assert_same_fates(report: LedgerReport, fault_free: LedgerReport) -> None:
    """The same rows reached the table one way or another: how (inserted, updated, unchanged,
    stale) may differ when deliveries were reordered or a crash hid the first write."""
    assert report.rows == fault_free.rows and report.rejected == fault_free.rejected
    assert report.duplicates == fault_free.duplicates
    settled = report.written + report.unchanged + report.stale
    assert settled == fault_free.written + fault_free.unchanged + fault_free.stale


def assert_same_table(harness: Harness, fault_free: Baseline) -> None:
    table = harness.table()
    assert table.keys() == fault_free.table.keys(), (
        sorted(table.keys() - fault_free.table.keys())[:5],
        sorted(fault_free.table.keys() - table.keys())[:5],
    )
    different = {k: (table[k], fault_free.table[k]) for k in table if table[k] != fault_free.table[k]}
    assert not different, list(different.items())[:5]
