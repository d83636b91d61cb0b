"""Hostile producer input: what each case must get. Every CSV line ends as a record, a rejection
with its line number and reason, or a counted blank line; nothing read from a file or an object is
quoted back, nothing carries the API key, and the Lambda reads only S3 and AlphaVantage."""

from __future__ import annotations

import builtins
import csv
import http.client
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest

from earnings_sync.ledger import SyncLedger
from earnings_sync.messages import SyncMessage
from earnings_sync.observability import M
from earnings_sync.producer import SyncAborted, check_source_file, sync_from_event
from earnings_sync.records import (
    BLOCK_SIZE,
    EarningsRecord,
    NotACalendarError,
    ParseStats,
    Rejection,
    UpstreamError,
    parse_csv,
)
from earnings_sync.settings import Settings
from earnings_sync.sources import SourceError, fetch_alphavantage
from earnings_sync_local.lambda_runtime import LambdaContext, invoke
from earnings_sync_local.pipeline import routed_logs, run_local
from producers import app as producer_app
from tests.conftest import HEADER, ROOT, csv_text

T1 = "2025-07-18T06:00:00.000000Z"
API_KEY = "SECRETKEY42XYZ"


def row(number: int, symbol: str | None = None, estimate: str = "1.25") -> str:
    return f"{symbol or f'Z{number:03d}'},Company {number} Inc,2025-08-{number % 28 + 1:02d},2025-06-30,{estimate},USD"


def produce(event: dict[str, Any]) -> tuple[Any, Any, BaseException | None]:
    return invoke(producer_app.lambda_handler, event, LambdaContext("ProducerFunction", 300))


def drain(sqs: Any, url: str) -> list[dict]:
    messages: list[dict] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get("Messages", []):
        messages.extend(batch)
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    return messages


def queued_records(env: dict[str, Any]) -> list[EarningsRecord]:
    bodies = drain(env["sqs"], env["resources"].queue_url)
    return [r for m in bodies for r in msgspec.json.decode(m["Body"], type=SyncMessage).records]


def ledger_of(env: dict[str, Any], sync_id: str) -> Any:
    return SyncLedger(env["dynamodb"], env["resources"].tables["SyncLedgerTable"]).report(sync_id)


@pytest.fixture
def logs(handler_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The producer's JSON log lines at INFO, as CloudWatch Logs would receive them."""
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    level = producer_app.logger.log_level
    stream = io.StringIO()
    producer_app.logger.setLevel("INFO")
    with routed_logs(producer_app.logger, stream):
        yield stream
    producer_app.logger.setLevel(level)


# --------------------------------------------------------------------------- rows that vanished


def test_unterminated_quote_rejects_its_line_alone_and_the_ledger_counts_every_line(tmp_path: Path) -> None:
    lines = [row(n) for n in range(1, 21)]
    lines[10] = 'Z011,"Broken Quote Inc,2025-08-11,2025-06-30,1.25,USD'  # the 11th data line, physical line 12
    path = tmp_path / "broken.csv"
    path.write_text(csv_text(*lines))
    summary = run_local([str(path)], synced_at=[T1])
    [sync] = summary.syncs
    assert summary.ok and sync.rows == 20
    assert sync.rejected == {"unterminated_quote": 1}
    assert [(r["line"], r["reason"]) for r in sync.rejections] == [(12, "unterminated_quote")]
    assert sync.written == summary.table_items == 19  # the nine rows after it were not swallowed
    assert sync.ledger.complete and sync.ledger.rows == 20 and sync.ledger.rejected_total == 1


def test_field_over_128_kib_rejects_its_line_and_every_other_row_is_enqueued(handler_env: dict[str, Any], tmp_path: Path) -> None:
    lines = [row(n, symbol=f"S{n:04d}") for n in range(1, 1301)]
    lines[1249] = f"S1250,{'x' * 140_000},2025-08-01,2025-06-30,1,USD"  # past the csv module's field limit
    path = tmp_path / "huge_field.csv"
    path.write_text(csv_text(*lines))
    report, metrics, error = produce({"path": str(path)})
    assert error is None
    assert report["rows"] == 1300 and report["records_enqueued"] == 1299
    assert report["rejections"][0]["line"] == 1251 and report["rejections"][0]["reason"] == "line_too_long"
    assert "x" * 50 not in json.dumps(report)  # the field itself is never echoed
    assert metrics[f"{M.ROWS_REJECTED}_line_too_long"] == 1 and metrics[M.RECORDS_ENQUEUED] == 1299
    assert len(queued_records(handler_env)) == 1299
    assert ledger_of(handler_env, report["sync_id"]).rows == 1300  # the manifest was written


def test_line_of_several_megabytes_is_skipped_without_being_held(tmp_path: Path) -> None:
    path = tmp_path / "giant_line.csv"
    with open(path, "w") as handle:
        handle.write(csv_text(row(1)))
        handle.write("G," + "y" * 8_000_000 + "\n")
        handle.write(row(3) + "\n")
    reads: list[int] = []

    class Recording(io.FileIO):
        def read(self, size: int = -1) -> bytes:
            reads.append(size)
            return super().read(size)

    with Recording(path) as handle:
        items = list(parse_csv(handle))
    assert [type(i).__name__ for i in items] == ["EarningsRecord", "Rejection", "EarningsRecord"]
    assert items[1] == Rejection(3, "line_too_long", items[1].detail) and "8,000,002 bytes" in items[1].detail
    assert reads and max(reads) <= BLOCK_SIZE  # read in bounded blocks, never the line whole
    assert items[2].asset_symbol == "Z003"


# --------------------------------------------------------------------------- encoding


def test_latin1_bytes_are_rejected_per_line_and_never_stored_as_replacement_characters(
    handler_env: dict[str, Any], tmp_path: Path
) -> None:
    body = (
        csv_text(row(1)).encode()
        + "GLE,Société Générale,2025-08-01,2025-06-30,1.1,EUR\n".encode("cp1252")
        + "BNP,BNP Paribas SA,2025-08-01,2025-06-30,2.2,EUR\n".encode()
        + "MIS,Mis\ufffddecoded Co,2025-08-01,2025-06-30,3.3,EUR\n".encode()
        + "NES,Nestlé SA,2025-08-01,2025-06-30,4.4,CHF\n".encode()
    )
    path = tmp_path / "latin1.csv"
    path.write_bytes(body)
    report, _, error = produce({"path": str(path)})
    assert error is None
    assert report["rows"] == 5 and report["rejected"] == {"bad_encoding": 2}
    first, second = report["rejections"]
    assert first["line"] == 3 and "byte 9 " in first["detail"] and "0xE9" in first["detail"]
    assert "re-save it as UTF-8" in first["detail"] and "Latin-1" in first["detail"]
    assert second["line"] == 5 and "U+FFFD" in second["detail"]
    records = queued_records(handler_env)
    assert sorted(r.company_name for r in records) == ["BNP Paribas SA", "Company 1 Inc", "Nestlé SA"]
    assert not any("\ufffd" in r.company_name for r in records)


# --------------------------------------------------------------------------- shapes that are valid


def test_quote_all_file_is_parsed_header_and_rows(tmp_path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow([*HEADER.split(","), "timeOfTheDay"])
    writer.writerow(["BRK.B", "Berkshire Hathaway, Inc.", "2025-08-02", "2025-06-30", "4.50", "USD", "pre-market"])
    writer.writerow(["SHOP", 'Shopify "the store" Inc', "2025-08-06", "2025-06-30", "", "CAD", ""])
    path = tmp_path / "quoted.csv"
    path.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode())  # a BOM too, as Excel writes it
    stats = ParseStats()
    records = list(parse_csv(path, stats=stats))
    assert records == [
        EarningsRecord("BRK.B", "2025-08-02", "Berkshire Hathaway, Inc.", "2025-06-30", "4.5", "USD", "pre-market"),
        EarningsRecord("SHOP", "2025-08-06", 'Shopify "the store" Inc', "2025-06-30", None, "CAD"),
    ]
    assert check_source_file(path) is None


def test_blank_lines_and_mixed_line_endings_are_counted_not_rows(tmp_path: Path) -> None:
    body = f"{HEADER}\r\n{row(1)}\r\n\r\n   \n{row(2)}\n{row(3)}\r{row(4)}\n{row(5)}\r"
    stats = ParseStats()
    items = list(parse_csv(body.encode(), stats=stats))
    assert [(i.line, i.reason) if isinstance(i, Rejection) else i.asset_symbol for i in items] == [
        "Z001", "Z002", (6, "stray_cr"), "Z005",
    ]
    assert stats.blank_lines == 2 and 1 + len(items) + stats.blank_lines == 7


# --------------------------------------------------------------------------- what is never echoed


def test_empty_local_file_is_named_and_not_called_upstream(handler_env: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    _, metrics, error = produce({"path": str(path)})
    assert isinstance(error, NotACalendarError) and not isinstance(error, UpstreamError)
    assert str(error) == f"{path} is empty" and error.kind == "empty"
    assert metrics[M.UPSTREAM_ERRORS] == 1
    assert check_source_file(path) == f"{path} is empty"


def test_binary_garbage_is_never_echoed_raw(handler_env: dict[str, Any], tmp_path: Path, logs: io.StringIO) -> None:
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x1b[2J\x1b]0;pwned\x07\x00\x01\x02" + bytes(range(256)) * 4)
    _, _, error = produce({"path": str(garbage)})
    assert isinstance(error, NotACalendarError)
    assert "pwned" not in str(error) and str(error).isprintable() and str(garbage) in str(error)
    assert check_source_file(garbage) == str(error)

    # a calendar with a binary row: the rejection is printable, the row's bytes never reach a log raw
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes(csv_text(row(1)).encode() + b"\x1b[31mEVIL\x1b[0m,x,2025-08-01,2025-06-30,1,USD\n")
    report, _, error = produce({"path": str(mixed)})
    assert error is None and report["rejected"] == {"bad_symbol": 1}
    detail = report["rejections"][0]["detail"]
    assert detail.isprintable() and "\\x1b" in detail
    assert "\x1b" not in logs.getvalue() and "\\u001b" not in logs.getvalue()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{\n  "Information": "Thank you for using Alpha Vantage! 25 requests per day."\n}\n', "JSON 'Information' reply"),
        (b"<!DOCTYPE html><html><title>Login</title></html>", "starts like HTML"),
        (b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n", "not the calendar header (1 field;"),
        (b"Soci\xe9t\xe9,name\n", "not UTF-8"),
    ],
)
def test_a_file_that_is_not_the_calendar_is_described_never_quoted(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "input.csv"
    path.write_bytes(content)
    problem = check_source_file(path)
    assert problem is not None and expected in problem and str(path) in problem
    for quoted in ("25 requests", "Login", "root", "daemon", "Soci"):
        assert quoted not in problem.replace(str(path), "")
    with pytest.raises(NotACalendarError) as caught:
        list(parse_csv(path, source_name=str(path)))
    assert str(caught.value) == problem


def test_check_source_file_names_directories_and_missing_files(tmp_path: Path) -> None:
    assert check_source_file(tmp_path) == f"{tmp_path} is a directory, not a CSV file"
    assert check_source_file(tmp_path / "nope.csv") == f"cannot open {tmp_path / 'nope.csv'}: no such file"
    assert check_source_file(Path("/dev/null")) == "/dev/null is not a regular file"
    good = tmp_path / "good.csv"
    good.write_text(csv_text(row(1)))
    assert check_source_file(good) is None
    quota = tmp_path / "quota.csv"
    quota.write_text(f"\n{HEADER}\r\n\r\nI,n,f,o,r,m,a\r\n")
    assert check_source_file(quota) == f"{quota} holds AlphaVantage's quota row 'I,n,f,o,r,m,a' (request quota exhausted (Information))"
    header_only = tmp_path / "header_only.csv"
    header_only.write_text(HEADER + "\n")
    assert check_source_file(header_only) is None  # a calendar with no rows: a sync of nothing, not an error


# --------------------------------------------------------------------------- the Lambda surface


def test_path_event_refused_on_lambda_never_opens_the_file(
    handler_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALLOW_PATH_EVENTS")  # as deployed: the template never sets it
    secret = tmp_path / "environ"
    secret.write_text("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI\n")
    opened: list[str] = []
    real_open = builtins.open

    def watching_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watching_open)
    for path in (str(secret), "/etc/passwd", "/proc/self/environ"):
        _, _, error = produce({"path": path})
        assert isinstance(error, SourceError) and "ALLOW_PATH_EVENTS" in str(error)
        assert "wJalrXUtnFEMI" not in str(error) and "root:" not in str(error)
    assert not {str(secret), "/etc/passwd", "/proc/self/environ"} & set(opened)
    assert drain(handler_env["sqs"], handler_env["resources"].queue_url) == []
    assert Settings().allow_path_events is False
    assert "ALLOW_PATH_EVENTS" not in (ROOT / "template.yaml").read_text()


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (["not", "an", "object"], "the event must be a JSON object, got list"),
        ({"path": ""}, '"path" must name a file'),
        ({"path": 42}, '"path" must name a file'),
        ({"s3": "bucket/key"}, 'an "s3" event needs {"bucket": ..., "key": ...}'),
        ({"s3": {"bucket": "b"}}, "an S3 source needs a bucket and a key (both text)"),
        ({"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": 7}}}]}, "the S3 notification's object key is not text"),
        ({"Records": []}, "a Records event must be an S3 notification"),
        ({"symbol": {"$gt": ""}}, '"symbol" must be a ticker symbol'),
        ({"symbol": "IBM&apikey=x"}, '"symbol" must be a ticker symbol'),
    ],
)
def test_malformed_events_are_refused_with_a_clear_message(event: Any, message: str) -> None:
    settings = Settings(queue_url="unused", alphavantage_api_key=API_KEY, allow_path_events=True)
    with pytest.raises(SourceError) as caught:
        sync_from_event(event, settings, sqs=None, opener=lambda url, timeout: pytest.fail("nothing may be fetched"))
    assert message in str(caught.value) and API_KEY not in str(caught.value)


def test_s3_key_with_space_and_plus_is_url_decoded(handler_env: dict[str, Any]) -> None:
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=handler_env["endpoint"])
    s3.create_bucket(Bucket="calendar-drops")
    key = "drops/2025 07 19+final.csv"
    s3.put_object(Bucket="calendar-drops", Key=key, Body=csv_text(row(1), row(2)).encode())
    notification = {"Records": [{"s3": {"bucket": {"name": "calendar-drops"}, "object": {"key": "drops/2025+07+19%2Bfinal.csv"}}}]}
    report, _, error = produce(notification)
    assert error is None and report["source"] == f"s3://calendar-drops/{key}" and report["records_enqueued"] == 2
    _, _, error = produce({"Records": [{"s3": {"bucket": {"name": "calendar-drops"}}}]})
    assert isinstance(error, SourceError) and "S3 notification" in str(error)


def test_s3_object_that_is_not_the_calendar_is_described_never_quoted(handler_env: dict[str, Any]) -> None:
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=handler_env["endpoint"])
    s3.create_bucket(Bucket="calendar-drops")
    s3.put_object(Bucket="calendar-drops", Key="notes.txt", Body=b"password=hunter2\nsecond line\n")
    _, _, error = produce({"s3": {"bucket": "calendar-drops", "key": "notes.txt"}})
    assert isinstance(error, NotACalendarError) and "s3://calendar-drops/notes.txt" in str(error)
    assert "hunter2" not in str(error) and "password" not in str(error)


def test_invalid_url_setting_never_leaks_the_key(handler_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, logs: io.StringIO) -> None:
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", API_KEY)
    for url in ("https://www.alphavantage.co/qu ery", "ftp://www.alphavantage.co/query", "www.alphavantage.co/query"):
        monkeypatch.setenv("ALPHAVANTAGE_URL", url)
        _, _, error = produce({"source": "alphavantage"})
        assert isinstance(error, SourceError) and "ALPHAVANTAGE_URL" in str(error)
        assert API_KEY not in str(error) and "alphavantage.co" not in str(error)
    assert API_KEY not in logs.getvalue() and "source unavailable" in logs.getvalue()

    def refusing(url: str, timeout: float) -> Any:  # what urllib raises for a URL it cannot send
        raise http.client.InvalidURL(f"URL can't contain control characters. {url!r} (found at least ' ')")

    def broken(url: str, timeout: float) -> Any:
        raise ValueError(f"unknown url type: {url}")

    for opener in (refusing, broken):
        with pytest.raises(SourceError) as caught:
            fetch_alphavantage(API_KEY, opener=opener, sleep=lambda _: None)
        assert API_KEY not in str(caught.value) and "function=EARNINGS_CALENDAR" not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.fixture
def alphavantage(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """A local HTTP endpoint standing in for AlphaVantage: it answers the bodies put in the list."""
    bodies: list[bytes] = []

    class Calendar(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = bodies.pop(0)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Calendar)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("ALPHAVANTAGE_URL", f"http://127.0.0.1:{server.server_address[1]}/query")
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", API_KEY)
    yield bodies
    server.shutdown()
    server.server_close()


def test_rejection_detail_scrubs_the_api_key(handler_env: dict[str, Any], alphavantage: list[bytes], logs: io.StringIO) -> None:
    alphavantage.append(csv_text(
        row(1),
        f"E1,Echo Co,{API_KEY},2025-06-30,1,USD",  # the key in a field that is quoted back
        f"E2,Echo Co,2025-08-01,2025-06-30,apikey={API_KEY[:6]}XX,USD",
        f"E3,Echo Co,2025-08-01,2025-06-30,1,{'#' * 30}{API_KEY}",  # the key across the quoting limit
    ).encode())
    report, _, error = produce({"source": "alphavantage"})
    assert error is None and report["rejected"] == {"bad_report_date": 1, "bad_estimate": 1, "bad_currency": 1}
    details = [r["detail"] for r in report["rejections"]]
    assert "***" in details[0] and "apikey=***" in details[1]
    written = json.dumps(report) + logs.getvalue()
    assert logs.getvalue().count('"row rejected"') == 3
    assert API_KEY not in written and API_KEY[:6] not in written


def test_alphavantage_error_reply_is_quoted_with_the_key_masked(
    handler_env: dict[str, Any], alphavantage: list[bytes], logs: io.StringIO
) -> None:
    alphavantage.append(json.dumps({"Error Message": f"Invalid API call for key {API_KEY}.\x1b[31m"}).encode())
    _, metrics, error = produce({"source": "alphavantage"})
    assert isinstance(error, UpstreamError) and "Invalid API call" in str(error) and metrics[M.UPSTREAM_ERRORS] == 1
    shown = str(error) + logs.getvalue()
    assert API_KEY not in shown and "\x1b" not in shown and "\\u001b" not in shown and "\\x1b[31m" in str(error)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "estimate",
    [
        "1." + "1" * 38,  # 39 significant digits
        "0." + "0" * 130 + "1",  # below DynamoDB's smallest magnitude (1E-130)
        "1000000000",  # |estimate| ≥ 1e9
        "1e5",
        "+1",
        "١",  # a digit, but not an ASCII one
    ],
)
def test_estimate_over_38_digits_or_outside_dynamodbs_range_is_rejected(estimate: str) -> None:
    [rejected] = list(parse_csv(csv_text(row(1, estimate=estimate))))
    assert isinstance(rejected, Rejection) and rejected.reason == "bad_estimate" and rejected.line == 2


def test_estimate_of_38_digits_is_kept_exactly() -> None:
    text = "12345678." + "9" * 29 + "1"  # 38 significant digits, a trailing zero dropped
    [record] = list(parse_csv(csv_text(row(1, estimate=text + "0"))))
    assert isinstance(record, EarningsRecord) and record.estimate == text


# --------------------------------------------------------------------------- a sync that stops


def test_sync_stopped_part_way_writes_an_aborted_manifest_and_the_ledger_says_incomplete(
    handler_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: io.StringIO
) -> None:
    from earnings_sync import records

    real = records.validate_row

    def failing(fields: list[str], line: int, width: int, secrets: Any = ()) -> Any:
        if line == 1200:
            raise RuntimeError("disk vanished")
        return real(fields, line, width, secrets)

    monkeypatch.setattr(records, "validate_row", failing)
    path = tmp_path / "snapshot.csv"
    path.write_text(csv_text(*(row(n, symbol=f"S{n:04d}") for n in range(1, 1501))))
    _, metrics, error = produce({"path": str(path)})
    assert isinstance(error, SyncAborted)
    report = error.report
    assert report.messages_sent >= 40 and report.aborted.startswith("stopped after line 1,199 of ")
    assert "RuntimeError: disk vanished" in report.aborted
    assert metrics[M.SYNC_ABORTED] == 1 and metrics[M.MESSAGES_ENQUEUED] == report.messages_sent
    assert metrics[M.ROWS_READ] == report.rows == 1198
    ledger = ledger_of(handler_env, report.sync_id)
    assert ledger.manifest and ledger.status == "incomplete" and ledger.aborted == report.aborted
    assert any(p.startswith("sync aborted by the producer: stopped after line 1,199") for p in ledger.problems())
    errors = [json.loads(line) for line in logs.getvalue().splitlines() if '"level":"ERROR"' in line]
    assert [e["message"] for e in errors] == ["sync aborted"] and errors[0]["reason"] == report.aborted
