"""Where the table-reading commands (`upcoming`, `audit`) find their table.

With `--csv FILE ...` the files are first run as successive syncs on the embedded emulator (the
whole pipeline, stream consumer included, as `earnings-sync local` does) and the command reads the
table that produced. Otherwise it reads a deployed table: the endpoint comes from `--endpoint-url`
or the standard AWS settings (AWS_ENDPOINT_URL, AWS_PROFILE, AWS_REGION), the name from `--table`,
TABLE_NAME, or `earningsCalendar`.

Every command's input files and output paths are checked here before any work starts
(`check_input_files`, `check_output_paths`), and its AWS clients come from `client`, which gives
up quickly on an endpoint that cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from earnings_sync_cli import embedded
from earnings_sync_cli.errors import UsageError, error_code, one_line, where

T = TypeVar("T")
DEFAULT_TABLE = "earningsCalendar"
CONNECT_ATTEMPTS = 2  # a dead endpoint is reported at once, not after every retry's backoff


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv",
        nargs="+",
        action="extend",
        metavar="FILE",
        help="run these calendar CSVs as successive syncs on the embedded emulator first, and read that table",
    )
    parser.add_argument("--endpoint-url", metavar="URL", help="DynamoDB endpoint (default: AWS_ENDPOINT_URL or AWS)")
    parser.add_argument("--table", metavar="NAME", help=f"table name (default: TABLE_NAME or {DEFAULT_TABLE})")


def check_csv_arguments(args: argparse.Namespace, built: str = "its own table") -> None:
    """--csv builds tables on the embedded emulator: no endpoint or table may be named, the files must be calendars."""
    if args.endpoint_url or args.table:
        raise UsageError(f"--csv builds {built} on the embedded emulator: drop --endpoint-url/--table")
    check_input_files(args.csv)


def check_input_files(paths: Sequence[str]) -> None:
    """Every calendar file a command is given, checked before any work starts.

    Raises UsageError naming the first file that cannot be synced and why: the checks a sync makes
    before it sends anything (producer.check_source_file), on the file's first lines only.
    """
    from earnings_sync.producer import check_source_file  # lazy: loads botocore; keeps the CLI's start fast

    for path in paths:
        problem = check_source_file(Path(path))
        if problem is not None:
            raise UsageError(problem)


def check_output_paths(outputs: Mapping[str, str | None], inputs: Sequence[str] = ()) -> None:
    """Files a command will write (`{"--export": path}`), checked before any work starts: a
    directory that exists and is writable, a path that is not a directory, one of the inputs, or
    another option's output."""
    taken: dict[str, str] = {}
    for option, path in outputs.items():
        if not path:
            continue
        shown = f"{option} {one_line(path)}"
        if os.path.abspath(path) in taken:
            raise UsageError(f"{shown}: {taken[os.path.abspath(path)]} writes the same file")
        taken[os.path.abspath(path)] = option
        if os.path.isdir(path):
            raise UsageError(f"{shown}: is a directory")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"{shown}: no such directory: {one_line(parent)}")
        if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            raise UsageError(f"{shown}: permission denied")
        if os.path.exists(path) and any(os.path.exists(i) and os.path.samefile(path, i) for i in inputs):
            raise UsageError(f"{shown}: is one of the input files")


def client(service: str, endpoint_url: str | None, *, max_attempts: int = 8, read_timeout: int = 30) -> Any:
    """A boto3 client for a command: an endpoint that is not a URL is a usage error, a dead one is
    reported after CONNECT_ATTEMPTS connection attempts."""
    from earnings_sync import aws  # lazy: loads boto3; keeps the CLI's start fast

    try:
        return aws.client(
            service, max_attempts=max_attempts, endpoint_url=endpoint_url, connect_attempts=CONNECT_ATTEMPTS, read_timeout=read_timeout
        )
    except ValueError as exc:  # botocore: "Invalid endpoint: ..."
        given = endpoint_url or os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL") or ""
        raise UsageError(f"invalid endpoint URL {given!r}: expected http(s)://host[:port] ({exc})") from exc


@contextlib.contextmanager
def naming_table(dynamodb: Any, table: str) -> Iterator[None]:
    """A missing table is a usage error that names it and where it was looked for."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        raise UsageError(f"table {table} does not exist at {where(dynamodb)}") from exc


def on_table(args: argparse.Namespace, work: Callable[[Any, str], T]) -> tuple[T, Any]:
    """Run `work(dynamodb_client, table_name)` on the table the arguments name.

    Returns its result and, with --csv, the local run's `LocalSummary` (else None).
    """
    if not args.csv:
        table = args.table or os.environ.get("TABLE_NAME") or DEFAULT_TABLE
        dynamodb = client("dynamodb", args.endpoint_url)
        with naming_table(dynamodb, table):
            return work(dynamodb, table), None

    check_csv_arguments(args)
    outcome: list[T] = []

    def ready(summary: Any, emulator: Any) -> None:
        outcome.append(work(client("dynamodb", None), emulator.resources.table_name))

    summary = embedded.run_local(args.csv, on_ready=ready)
    if not outcome:  # pragma: no cover - run_local always calls on_ready once the emulator is up
        raise RuntimeError("the local run ended before the table could be read")
    return outcome[0], summary


def sync_failures(summary: Any) -> list[str]:
    """For stderr, one line each: every failed sync of a local run, and the files it never synced."""
    if summary is None:
        return []
    lines = [
        one_line(sync.error if sync.file in sync.error else f"{sync.file}: {sync.error}")  # name the file once
        for sync in summary.syncs
        if sync.error
    ]
    if summary.not_run:
        lines.append("not synced (an earlier sync failed): " + ", ".join(one_line(path) for path in summary.not_run))
    return lines
