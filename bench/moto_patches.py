"""What each moto patch of the embedded emulator saves: the figures of docs/moto-patches.md.

    python -m bench.moto_patches                 # per request and per sync (about 25 minutes)
    python -m bench.moto_patches --rounds 1
    python -m bench.moto_patches --only requests

- per request: each patched path on a table of the sample's 10,285 items, in one process: under
  `moto_as_shipped()`, with every patch but that path's, and with every patch (CPU time: the server
  runs in the process); plus moto's JSON serializer, the patch's direct encoder and the smaller
  change docs/moto-patches.md proposes to moto, on one BatchGetItem answer;
- per sync: `earnings-sync local SAMPLE SAMPLE` (a first sync, then an unchanged re-sync) as whole
  processes with every patch, with none, and with each left out, interleaved. The process's CPU
  seconds (the moto server runs in it) wander less than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "earnings_calendar_2025-07.csv"
SYNCED_AT = "2025-07-19T06:00:00.000000Z"
# What a run leaves out, by the names of the attributes the patches replace ("index": the index half of Query).
LEFT_OUT = {
    "none": frozenset(),
    "query": frozenset({"query"}),
    "index": frozenset(),
    "scan": frozenset({"scan"}),
    "sqs": frozenset({"attributes", "send_message", "is_message_valid_based_on_retention_period"}),
    "json": frozenset({"_serialize_result"}),
    "all": frozenset(),  # moto as shipped
}


# -- per request --------------------------------------------------------------------------------------
def _median_ms(call: Callable[[], Any], repeat: int) -> float:
    """CPU milliseconds of this process (client and moto server both), median of `repeat` calls."""
    took = []
    for _ in range(repeat):
        started = time.process_time()
        call()
        took.append(time.process_time() - started)
    return statistics.median(took) * 1000


def _sample_items() -> list[dict[str, Any]]:
    from earnings_sync.records import ParseStats, iter_symbol_groups, parse_csv
    from earnings_sync.table import record_to_item

    with open(SAMPLE, newline="") as handle:
        records = [r for g in iter_symbol_groups(parse_csv(handle), ParseStats()) for r in g]
    return [record_to_item(r, "bench", SYNCED_AT) for r in records]


def _request_cases(dynamodb: Any, sqs: Any, table: str, items: list[dict[str, Any]]) -> dict[str, tuple[Callable[[], Any], int, str]]:
    """Each patched path as the pipeline, `upcoming`, `audit` and the export call it: (call, repeats, its patch)."""
    symbols = sorted({i["asset_symbol"]["S"] for i in items})[::500][:10]
    days = sorted({i["earnings_date"]["S"] for i in items})[5:10]
    keys = [{"asset_symbol": i["asset_symbol"], "earnings_date": i["earnings_date"]} for i in items[:100]]
    queues = iter(range(1_000_000))

    def pages(call: Callable[..., Any], **request: Any) -> None:
        while "LastEvaluatedKey" in (page := call(**request)):
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def query_partitions() -> None:
        for symbol in symbols:
            pages(dynamodb.query, TableName=table, KeyConditionExpression="asset_symbol = :s", ExpressionAttributeValues={":s": {"S": symbol}})

    def query_index() -> None:
        for day in days:
            pages(
                dynamodb.query, TableName=table, IndexName="upcoming-earnings-index", KeyConditionExpression="earnings_date = :d",
                ExpressionAttributeValues={":d": {"S": day}},
            )

    def send_and_receive_400() -> None:
        url = sqs.create_queue(QueueName=f"bench-{next(queues)}")["QueueUrl"]
        for _ in range(40):
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(k), "MessageBody": "x" * 2000} for k in range(10)])
        received = 0
        while received < 400 and (got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300).get("Messages")):
            received += len(got)

    return {
        "Query, base table: 10 partitions": (query_partitions, 3, "query"),
        "Query, index: 5 report days, every page": (query_index, 3, "index"),
        "Scan of the whole table, pages of 1,000": (lambda: pages(dynamodb.scan, TableName=table, Limit=1000), 1, "scan"),
        "BatchGetItem of 100 keys": (lambda: dynamodb.batch_get_item(RequestItems={table: {"Keys": keys}}), 9, "json"),
        "SQS: SendMessageBatch 400 messages, ReceiveMessage them all": (send_and_receive_400, 1, "sqs"),
    }


def _leave_out(name: str) -> None:
    """From the next time moto is patched on: every patch but `name` (see LEFT_OUT)."""
    from earnings_sync_local import moto_speedups

    dropped, builders = LEFT_OUT[name], moto_speedups._PATCH_BUILDERS
    moto_speedups._PATCH_BUILDERS = (lambda: [p for build in builders for p in build() if p.name not in dropped],)
    if name == "index":
        moto_speedups._index_candidates = lambda *_: None  # moto's own index Query, the base-table half kept


@contextlib.contextmanager
def _every_patch_but(name: str) -> Iterator[None]:
    """Every patch but `name` for the block (moto is patched: the block re-patches it without that one)."""
    from earnings_sync_local import moto_speedups

    saved = moto_speedups._PATCH_BUILDERS, moto_speedups._index_candidates
    with moto_speedups.moto_as_shipped():
        _leave_out(name)
    try:
        yield
    finally:
        with moto_speedups.moto_as_shipped():
            moto_speedups._PATCH_BUILDERS, moto_speedups._index_candidates = saved


def per_request() -> list[tuple[str, str, str]]:
    from earnings_sync import aws
    from earnings_sync_local import moto_speedups, template
    from earnings_sync_local.emulator import embedded_emulator

    items = _sample_items()
    rows = []
    with embedded_emulator():
        dynamodb, sqs = aws.client("dynamodb"), aws.client("sqs")
        table = template.create_resources(template.load_template(), dynamodb, sqs).table_name
        for start in range(0, len(items), 25):
            pending = {table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
            while pending:
                pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        for name, (call, repeat, patch) in _request_cases(dynamodb, sqs, table, items).items():
            patched = _median_ms(call, repeat)
            with _every_patch_but(patch):
                without = _median_ms(call, repeat)
            with moto_speedups.moto_as_shipped():
                shipped = _median_ms(call, repeat)
            rows.append((name, f"{shipped:,.0f} ms / {without:,.0f} ms / {patched:,.0f} ms", f"{patch} patch: {without / patched:.1f}×; all: {shipped / patched:.1f}× (CPU, median of {repeat})"))
    return rows + serializer_rows(items[:100])


class _DictFastPathSerializer:
    """The change proposed to moto: a plain dict keyed by its shape's member names skips the value picker."""

    def _serialize_type_structure(self, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if type(value) is not dict or shape.is_document_type or not value.keys() <= shape.members.keys():
            return super()._serialize_type_structure(serialized, value, shape, key)  # type: ignore[misc]
        wrapper = self.MAP_TYPE() if key else serialized  # type: ignore[attr-defined]
        for member_key, member_shape in shape.members.items():
            member_value = value.get(member_key)
            if member_value is not None:
                member_shape.parent = shape
                self._serialize(wrapper, member_value, member_shape, member_key)  # type: ignore[attr-defined]
        if key:
            self._default_serialize(serialized, wrapper, shape, key)  # type: ignore[attr-defined]


def serializer_rows(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """CPU time to serialize one BatchGetItem answer, outside the server."""
    from moto.core.responses import get_service_model
    from moto.core.serialize import JSONSerializer, XFormedAttributePicker

    from earnings_sync_local import moto_speedups

    operation = get_service_model("dynamodb").operation_model("BatchGetItem")
    answer = {"Responses": {"earningsCalendar": items}, "UnprocessedKeys": {}}
    fast_path = type("DictFastPathJSONSerializer", (_DictFastPathSerializer, JSONSerializer), {})

    def body(serializer: type) -> str:
        return serializer(operation, value_picker=XFormedAttributePicker()).serialize(answer)["body"]

    def cpu_ms(serializer: type) -> float:
        took = []
        for _ in range(15):
            started = time.process_time()
            body(serializer)
            took.append(time.process_time() - started)
        return statistics.median(took) * 1000

    with moto_speedups.moto_as_shipped():
        shipped_body, shipped = body(JSONSerializer), cpu_ms(JSONSerializer)
        assert body(fast_path) == shipped_body
        proposed = cpu_ms(fast_path)
    with moto_speedups.installed():
        assert body(JSONSerializer) == shipped_body
        direct = cpu_ms(JSONSerializer)
    what = f"{len(items)} items of {len(items[0])} attributes"
    return [
        (f"JSON answer of BatchGetItem, {what}: proposed dict fast path", f"{shipped:.0f} ms → {proposed:.1f} ms", f"{shipped / proposed:.0f}× (CPU)"),
        (f"JSON answer of BatchGetItem, {what}: the patch's direct encoder", f"{shipped:.0f} ms → {direct:.1f} ms", f"{shipped / direct:.0f}× (CPU)"),
    ]


# -- per sync -----------------------------------------------------------------------------------------
def one_sync_run(left_out: str) -> dict[str, Any]:
    """`earnings-sync local SAMPLE SAMPLE` in this process with `left_out` left out (run in a fresh process)."""
    from earnings_sync_cli.main import main
    from earnings_sync_local import moto_speedups

    _leave_out(left_out)
    shipped = moto_speedups.moto_as_shipped() if left_out == "all" else contextlib.nullcontext()
    out = io.StringIO()
    with shipped, contextlib.redirect_stdout(out):
        code = main(["local", str(SAMPLE), str(SAMPLE), "--json"])
    summary = json.loads(out.getvalue())
    return {"code": code, "cpu": time.process_time(), "syncs": [s["seconds"] for s in summary["syncs"]], "items": summary["table_items"]}


def per_sync(rounds: int) -> list[tuple[str, str, str]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in LEFT_OUT}
    for _ in range(rounds):
        for name in LEFT_OUT:
            done = subprocess.run([sys.executable, "-m", "bench.moto_patches", "--one-sync-run", name], capture_output=True, text=True, cwd=ROOT, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    cpu = {name: statistics.median(r["cpu"] for r in results) for name, results in runs.items()}
    rows = []
    for name, results in runs.items():
        first, again = (statistics.median(r["syncs"][i] for r in results) for i in (0, 1))
        label = {"none": "every patch", "all": "moto as shipped (no patch)"}.get(name, f"every patch but {name}")
        extra = "" if name == "none" else f", {cpu[name] - cpu['none']:+.1f} s"
        rows.append((label, f"{cpu[name]:.1f} s CPU{extra}", f"first sync {first:.1f} s, unchanged re-sync {again:.1f} s (wall; median of {rounds})"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs of each per-sync configuration")
    parser.add_argument("--only", choices=["requests", "syncs"])
    parser.add_argument("--one-sync-run", choices=sorted(LEFT_OUT), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_sync_run:
        print(json.dumps(one_sync_run(args.one_sync_run)))
        return
    if args.only != "syncs":
        print("\n## Per request, on a table of the sample's 10,285 items: CPU ms, moto as shipped / every patch but this path's / every patch")
        for row in per_request():
            print("| " + " | ".join(row) + " |")
    if args.only != "requests":
        print(f"\n## Per sync: earnings-sync local SAMPLE SAMPLE, whole processes ({args.rounds} rounds)")
        for row in per_sync(args.rounds):
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
