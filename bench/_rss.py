"""Peak RSS of one producer run over a CSV, above the interpreter with imports (a subprocess, Linux)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import boto3  # noqa: F401 - counted in the baseline, as in the Lambda
import msgspec  # noqa: F401

from earnings_sync.producer import SyncProducer


class DiscardingQueue:
    """Accepts every entry: the measurement is the producer's own memory, not the queue's."""

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's names
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(mode: str, path: str) -> None:
    with open("/proc/self/clear_refs", "w") as clear:  # reset the peak (VmHWM) to the current RSS
        clear.write("5")
    baseline = _status_kb("VmRSS")
    if mode == "ours":
        SyncProducer(DiscardingQueue(), "bench").run(Path(path), source_name=path)
    else:  # the naive producer: the whole file as a list of dicts, then messages
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        bodies = [json.dumps(rows[i : i + 25]) for i in range(0, len(rows), 25)]
        del bodies
    peak = _status_kb("VmHWM")
    print(json.dumps({"baseline_mb": baseline / 1024, "peak_mb": peak / 1024, "delta_mb": (peak - baseline) / 1024}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
