"""The write floor as a whole process: start the same emulator, create the table from template.yaml,
write every distinct row of a CSV with raw BatchWriteItem calls of 25 pre-built requests."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(csv_path: str) -> None:
    started = time.perf_counter()
    from earnings_sync import aws
    from earnings_sync.calendar_table import record_to_item
    from earnings_sync.records import ParseStats, iter_symbol_groups, parse_csv
    from earnings_sync_local import template
    from earnings_sync_local.emulator import embedded_emulator

    with open(csv_path, newline="") as handle:
        records = [r for g in iter_symbol_groups(parse_csv(handle), ParseStats()) for r in g]
    with embedded_emulator():
        dynamodb, sqs = aws.client("dynamodb"), aws.client("sqs")
        resources = template.create_resources(template.load_template(), dynamodb, sqs)
        requests = [{"PutRequest": {"Item": record_to_item(r, "floor", "2025-07-19T06:00:00.000000Z")}} for r in records]
        for start in range(0, len(requests), 25):
            pending = {resources.table_name: requests[start : start + 25]}
            while pending:
                pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    print(f"{len(records)} items in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parent.parent / "samples" / "earnings_calendar_2025-07.csv"))
