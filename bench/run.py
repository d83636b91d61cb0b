"""Benchmarks: figures against baselines measured in the same run, printed and written to BENCHMARKS.md.

    python -m bench.run                 # everything (a few minutes)
    python -m bench.run --only parse,memory
    python -m bench.run --large         # also the 100k-row end-to-end sync

Each section compares our path with a floor or a naive baseline on the same machine, the same
emulator and the same data, so the ratios mean something even where the absolute figures do not.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "earnings_calendar_2025-07.csv"
SYNCED_AT = "2025-07-19T06:00:00.000000Z"


class Results:
    def __init__(self) -> None:
        self.sections: list[tuple[str, str, list[tuple[str, str, str]]]] = []

    def add(self, title: str, command: str, rows: list[tuple[str, str, str]]) -> None:
        self.sections.append((title, command, rows))
        print(f"\n## {title}\n   ({command})")
        width = max(len(r[0]) for r in rows)
        for name, figure, note in rows:
            print(f"   {name:<{width}}  {figure:>18}  {note}")

    def markdown(self) -> str:
        from importlib.metadata import version

        from earnings_sync_local import moto_speedups

        refused = moto_speedups.refusal()
        out = [
            "# Benchmarks",
            "",
            f"Measured {dt.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, moto {version('moto')} server on 127.0.0.1 (figures from one run of "
            "`make bench`; ratios compare paths measured in that same run).",
            "",
            "Every section that talks to DynamoDB or SQS runs on the embedded emulator of `earnings-sync local`,",
            "floors and baselines included. That emulator removes a few of moto's costs that scale with the table",
            "or the queue instead of the request (base-table and index Query, base-table Scan, SQS attribute",
            "reads, the reflective JSON response serializer; `earnings_sync_local/moto_speedups.py`, answers unchanged",
            "and tested against moto's own; [docs/moto-patches.md](docs/moto-patches.md) measures each), so the figures",
            "measure our code rather than moto's hot spots. Absolute times are moto's, not DynamoDB's: read the ratios.",
            "",
        ]
        if refused is not None:
            out += [f"**This run's emulator ran on stock moto**: {refused}.", ""]
        for title, command, rows in self.sections:
            out += [f"## {title}", "", f"`{command}`", "", "| what | figure | note |", "|---|---:|---|"]
            out += [f"| {name} | {figure} | {note} |" for name, figure, note in rows]
            out.append("")
        return "\n".join(out)


def best_of(runs: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def generated(rows: int, tmp: Path) -> Path:
    from bench.generate import generate_csv

    path = tmp / f"generated_{rows}.csv"
    if not path.exists():
        path.write_text(generate_csv(rows))
    return path


# -- CSV → validated records -----------------------------------------------------------------------
def naive_parse(text: str) -> int:
    """What one writes first: DictReader, strptime, Decimal, a dict per row."""
    count = 0
    for row in csv.DictReader(io.StringIO(text)):
        dt.datetime.strptime(row["reportDate"], "%Y-%m-%d")
        dt.datetime.strptime(row["fiscalDateEnding"], "%Y-%m-%d")
        estimate = Decimal(row["estimate"]) if row["estimate"] else None
        record = {"asset_symbol": row["symbol"].strip(), "company_name": row["name"], "estimate": estimate, "currency": row["currency"]}
        count += bool(record)
    return count


def bench_parse(results: Results, tmp: Path) -> None:
    from earnings_sync.records import parse_csv

    text = generated(100_000, tmp).read_text()
    ours = best_of(3, lambda: sum(1 for _ in parse_csv(text)))
    naive = best_of(3, lambda: naive_parse(text))
    results.add(
        "CSV → validated records (one core, 100k generated rows)",
        "python -m bench.run --only parse",
        [
            ("earnings_sync.records.parse_csv", f"{100_000 / ours:,.0f} rows/s", "target ≥ 300,000 rows/s"),
            ("naive: DictReader + strptime + Decimal", f"{100_000 / naive:,.0f} rows/s", f"ours is {naive / ours:.1f}× faster"),
        ],
    )


# -- producer memory ------------------------------------------------------------------------------
def bench_memory(results: Results, tmp: Path) -> None:
    path = generated(100_000, tmp)
    figures = {}
    for mode in ("ours", "naive"):
        done = subprocess.run([sys.executable, "-m", "bench._rss", mode, str(path)], capture_output=True, text=True, cwd=ROOT, check=True)
        figures[mode] = json.loads(done.stdout)
    results.add(
        "Producer peak RSS on a 100k-row CSV (above the interpreter with imports)",
        "python -m bench.run --only memory",
        [
            ("interpreter + imports", f"{figures['ours']['baseline_mb']:.1f} MB", "boto3, msgspec, earnings_sync"),
            ("SyncProducer.run (streaming)", f"+{figures['ours']['delta_mb']:.1f} MB", "target: within 30 MB"),
            ("naive: list of dicts, then messages", f"+{figures['naive']['delta_mb']:.1f} MB", ""),
        ],
    )


# -- cold imports -----------------------------------------------------------------------------------
def import_time(module: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"],
            capture_output=True, text=True, cwd=ROOT, check=True,
        )
        times.append(float(done.stdout))
    return statistics.median(times)


def bench_imports(results: Results, tmp: Path) -> None:
    bare = import_time("boto3")
    rows = [("import boto3 (bare)", f"{bare * 1000:.0f} ms", "the floor every handler pays")]
    for module in ("producers.app", "consumers.sqs_consumer", "consumers.stream_consumer"):
        try:
            took = import_time(module)
        except subprocess.CalledProcessError:
            continue
        rows.append((f"import {module}", f"{took * 1000:.0f} ms", f"{took / bare:.2f}× bare boto3"))
    results.add("Cold import time of each handler module (median of 5 fresh interpreters)", "python -m bench.run --only imports", rows)


# -- DynamoDB write paths ---------------------------------------------------------------------------
def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _write_floor(dynamodb: Any, table: str, items: list[dict]) -> None:
    for start in range(0, len(items), 25):
        pending = {table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def _write_naive(dynamodb: Any, table: str, items: list[dict]) -> None:
    for item in items:
        dynamodb.put_item(TableName=table, Item=item)


def _write_batch_writer(endpoint: str, table: str, records: list[Any]) -> None:
    import boto3

    resource = boto3.resource("dynamodb", endpoint_url=endpoint, region_name="us-east-1").Table(table)
    with resource.batch_writer(overwrite_by_pkeys=["asset_symbol", "earnings_date"]) as writer:
        for r in records:
            writer.put_item(Item={
                "asset_symbol": r.asset_symbol, "earnings_date": r.earnings_date, "company_name": r.company_name,
                "fiscal_date_ending": r.fiscal_date_ending, "estimate": Decimal(r.estimate) if r.estimate else None,
                "currency": r.currency, "lastSyncDate": SYNCED_AT, "sync_id": "bench",
            })


def _write_ours(dynamodb: Any, table: str, messages: list[list[Any]], timings: dict[str, float]) -> dict[str, int]:
    """A first sync, then an unchanged re-sync, through the product's own upsert."""
    from earnings_sync.calendar_table import CalendarTable
    from earnings_sync.upsert import UpsertResult, upsert_records

    gateway = CalendarTable(dynamodb, table)
    first, again = UpsertResult(), UpsertResult()
    timings["ours_first"] = _timed(lambda: [upsert_records(gateway, m, "bench-1", SYNCED_AT, first) for m in messages])
    resynced_at = "2025-07-20T06:00:00.000000Z"
    timings["ours_unchanged"] = _timed(lambda: [upsert_records(gateway, m, "bench-2", resynced_at, again) for m in messages])
    return {
        "first": sum(first.requests.values()),
        "again": sum(again.requests.values()),
        "again_content_writes": first.written and again.written,
    }


def bench_writes(results: Results, tmp: Path) -> None:
    import urllib.request

    from earnings_sync import aws
    from earnings_sync.calendar_table import record_to_item
    from earnings_sync.messages import pack_records
    from earnings_sync.records import ParseStats, iter_symbol_groups, parse_csv
    from earnings_sync_local import template
    from earnings_sync_local.emulator import embedded_emulator

    with open(SAMPLE, newline="") as handle:
        groups = list(iter_symbol_groups(parse_csv(handle), ParseStats()))
    records = [r for g in groups for r in g]
    messages = list(pack_records(groups))
    items = [record_to_item(r, "bench", SYNCED_AT) for r in records]
    timings: dict[str, float] = {}
    with embedded_emulator() as endpoint:

        def fresh() -> Any:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
            aws._cached_client.cache_clear()
            dynamodb = aws.client("dynamodb")
            return dynamodb, template.create_resources(template.load_template(), dynamodb, aws.client("sqs")).table_name

        dynamodb, table = fresh()  # each path starts from an empty table, set up outside its timing
        timings["floor"] = _timed(lambda: _write_floor(dynamodb, table, items))
        dynamodb, table = fresh()
        timings["naive"] = _timed(lambda: _write_naive(dynamodb, table, items))
        table = fresh()[1]
        timings["batch_writer"] = _timed(lambda: _write_batch_writer(endpoint, table, records))
        requests = _write_ours(*fresh(), messages, timings)
    _report_writes(results, len(records), timings, requests)


def _report_writes(results: Results, n: int, timings: dict[str, float], requests: dict[str, int]) -> None:
    floor = timings["floor"]
    results.add(
        f"DynamoDB write paths on moto ({n:,} distinct rows of the real sample, one process)",
        "python -m bench.run --only writes",
        [
            ("floor: BatchWriteItem of 25 pre-built requests", f"{n / floor:,.0f} items/s", "1.00×"),
            ("naive: one put_item per record", f"{n / timings['naive']:,.0f} items/s", f"{timings['naive'] / floor:.2f}× the floor"),
            ("boto3 Table.batch_writer()", f"{n / timings['batch_writer']:,.0f} items/s", f"{timings['batch_writer'] / floor:.2f}× the floor"),
            ("ours, first sync (upsert.upsert_records)", f"{n / timings['ours_first']:,.0f} items/s",
             f"{timings['ours_first'] / floor:.2f}× the floor, {requests['first']:,} requests"),
            ("ours, unchanged re-sync", f"{n / timings['ours_unchanged']:,.0f} items/s",
             f"{timings['ours_unchanged'] / floor:.2f}× the floor, {requests['again']:,} requests, {requests['again_content_writes']} content writes"),
        ],
    )


# -- whole pipeline, whole processes ---------------------------------------------------------------
def timed_process(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    return time.perf_counter() - started, done.stdout


def bench_pipeline(results: Results, tmp: Path, large: bool, repeats: int = 3) -> None:
    """Whole processes, interleaved and repeated: this machine's timings wander by ±20 % from one run
    to the next, so each figure is the median of `repeats` runs taken side by side."""
    floors, ones, twos = [], [], []
    for _ in range(repeats):
        floors.append(timed_process(["-m", "bench.floor", str(SAMPLE)])[0])
        took, out_one = timed_process(["-m", "earnings_sync_cli", "local", str(SAMPLE), "--json"])
        ones.append(took)
        took, out_two = timed_process(["-m", "earnings_sync_cli", "local", str(SAMPLE), str(SAMPLE), "--json"])
        twos.append(took)
    floor, one, two = statistics.median(floors), statistics.median(ones), statistics.median(twos)
    first = json.loads(out_one)["syncs"][0]
    second = json.loads(out_two)["syncs"][1]
    resync = two - one
    spread = f"median of {repeats}"
    rows = [
        ("floor process (emulator + table + raw BatchWriteItem)", f"{floor:.1f} s", f"1.00× ({spread}: {min(floors):.1f}–{max(floors):.1f} s)"),
        ("earnings-sync local SAMPLE (first sync, whole pipeline)", f"{one:.1f} s",
         f"{one / floor:.2f}× the floor (target 3×; {min(ones):.1f}–{max(ones):.1f} s); {first['written']:,} written, {first['records_enqueued'] / one:,.0f} records/s"),
        ("unchanged re-sync (local SAMPLE SAMPLE minus the first)", f"{resync:.1f} s",
         f"{resync / floor:.2f}× the floor (target 2×; two syncs {min(twos):.1f}–{max(twos):.1f} s), {resync / one:.2f}× the first sync; "
         f"{second['written']} content writes, {second['unchanged']:,} unchanged"),
    ]
    sizes = [10_000, 100_000] if large else [10_000]
    for size in sizes:
        path = generated(size, tmp)
        took, out = timed_process(["-m", "earnings_sync_cli", "local", str(path), "--json"])
        sync = json.loads(out)["syncs"][0]
        rows.append((f"earnings-sync local, {size:,} generated rows", f"{sync['records_enqueued'] / took:,.0f} records/s", f"{took:.1f} s whole process"))
    results.add("Whole pipeline as whole processes (producer → SQS → consumer → table, on moto)", "python -m bench.run --only pipeline [--large]", rows)


# -- GSI date-range query ---------------------------------------------------------------------------
SCAN_WINDOWS = 3


def bench_gsi(results: Results, tmp: Path) -> None:
    import urllib.request

    from earnings_sync import aws
    from earnings_sync.calendar_table import CalendarTable, record_to_item
    from earnings_sync.records import ParseStats, iter_symbol_groups, parse_csv
    from earnings_sync.upcoming import upcoming_earnings
    from earnings_sync_local import template
    from earnings_sync_local.emulator import embedded_emulator

    text = generated(100_000, tmp).read_text()
    records = [r for g in iter_symbol_groups(parse_csv(text), ParseStats()) for r in g]
    with embedded_emulator() as endpoint:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
        dynamodb = aws.client("dynamodb")
        table = template.create_resources(template.load_template(), dynamodb, aws.client("sqs")).table_name
        for start in range(0, len(records), 25):
            pending = {table: [{"PutRequest": {"Item": record_to_item(r, "bench", SYNCED_AT)}} for r in records[start : start + 25]]}
            while pending:
                pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        # The emulator shares this process: keep its 100k loaded items out of the garbage collector's
        # full passes, which would otherwise land in random queries (a server's heap is not ours on AWS).
        gc.collect()
        gc.freeze()
        windows = [(dt.date(2025, 7, 21) + dt.timedelta(days=3 * i)) for i in range(20)]
        index_times, scan_times, counts = [], [], []
        for first in windows:
            date_from, date_to = first.isoformat(), (first + dt.timedelta(days=6)).isoformat()
            result = upcoming_earnings(CalendarTable(dynamodb, table), date_from, date_to, page_size=1000)
            index_times.append(result.duration_ms)
            counts.append(len(result.items))
            if len(scan_times) < SCAN_WINDOWS:  # the baseline reads the whole table each time: a few windows suffice
                scanned = upcoming_earnings(
                    CalendarTable(dynamodb, table), date_from, date_to, page_size=1000, index_name="no-such-index"
                )
                assert scanned.fallback_used and len(scanned.items) == len(result.items)
                scan_times.append(scanned.duration_ms)

    def p95(values: list[float]) -> float:
        return sorted(values)[max(0, int(round(0.95 * len(values))) - 1)]

    results.add(
        f"Date-range query, 7-day windows on {len(records):,} items (20 windows; baseline {SCAN_WINDOWS}; moto, loaded items frozen out of the GC)",
        "python -m bench.run --only gsi",
        [
            ("upcoming_earnings on the GSI: median", f"{statistics.median(index_times):,.0f} ms", f"~{statistics.median(counts):,.0f} items per window, 7 Queries"),
            ("upcoming_earnings on the GSI: p95", f"{p95(index_times):,.0f} ms", ""),
            ("baseline: filtered Scan (the fallback): median", f"{statistics.median(scan_times):,.0f} ms",
             f"{statistics.median(scan_times) / statistics.median(index_times):.1f}× the GSI path"),
            ("baseline: filtered Scan: p95", f"{p95(scan_times):,.0f} ms", ""),
        ],
    )


SECTIONS = ("parse", "memory", "imports", "writes", "pipeline", "gsi")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--large", action="store_true", help="also sync 100k generated rows end to end")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"), help="markdown file to write ('-' for none)")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(SECTIONS)
    results = Results()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        for section in chosen:
            if section == "pipeline":
                bench_pipeline(results, tmp, args.large)
            else:
                globals()[f"bench_{section}"](results, tmp)
    if args.output != "-":
        Path(args.output).write_text(results.markdown())
        print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
