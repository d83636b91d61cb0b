"""Every `earnings-sync` command fails the same way: exit 2 for bad usage or input, 1 when a sync or
check failed, one printable line on stderr naming the file, table, queue or endpoint, no traceback.
Checks of files and output paths run before any emulator starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import producers.app  # noqa: F401 - its logger binds sys.stdout on import: the session's, not one test's capture
from earnings_sync import aws as aws_clients
from earnings_sync_cli import local as cli_local
from earnings_sync_cli import tables as cli_table
from earnings_sync_cli.embedded import LOCAL_EXTRA
from earnings_sync_cli.errors import one_line
from earnings_sync_cli.main import main
from earnings_sync_local import pipeline as local
from earnings_sync_local.emulator import free_port
from earnings_sync_local.pipeline import LocalSummary, SyncSummary
from tests.conftest import csv_text
from tests.helpers import Faults, dynamodb_error

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    "AAPL,Apple Inc,2025-07-31,2025-06-30,1.42,USD",
    "MSFT,Microsoft Corp,2025-07-29,2025-06-30,3.35,USD",
]
QUOTA_REPLY = '{\n    "Information": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day."\n}\n'
TABLE_COMMANDS = {
    "ledger": ["ledger"],
    "audit": ["audit"],
    "upcoming": ["upcoming", "--from", "2025-07-28", "--to", "2025-08-01"],
}


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr must be exactly one printable line, with no traceback; returns it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].isprintable(), lines[0]
    return lines[0]


@pytest.fixture
def calendar(tmp_path: Path) -> Path:
    path = tmp_path / "calendar.csv"
    path.write_text(csv_text(*ROWS))
    return path


@pytest.fixture
def no_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any check that must come before the work fails the test if the emulator starts anyway."""

    def refuse() -> Any:
        raise AssertionError("the embedded emulator was started before the arguments were checked")

    monkeypatch.setattr(local, "embedded_emulator", refuse)


@pytest.fixture
def closed_endpoint() -> str:
    """Nothing listens there: the connection is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """No credentials anywhere botocore looks, and no instance metadata to ask."""
    empty = tmp_path / "empty-aws-config"
    empty.write_text("")
    for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    aws_clients._cached_client.cache_clear()
    yield {name: value for name, value in os.environ.items()}
    aws_clients._cached_client.cache_clear()


# --------------------------------------------------------------------------- credentials, endpoints, tables


@pytest.mark.parametrize("command", TABLE_COMMANDS)
def test_no_credentials_is_a_usage_error(command: str, no_credentials: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(TABLE_COMMANDS[command]) == 2
    line = error_line(capsys)
    assert line.startswith(f"earnings-sync {command}: no AWS credentials: set AWS_PROFILE")
    assert "--endpoint-url" in line


@pytest.mark.parametrize("command", [*TABLE_COMMANDS, "dlq"])
def test_unreachable_endpoint_names_it(command: str, closed_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["dlq", "peek", "earnings-dlq"] if command == "dlq" else TABLE_COMMANDS[command]
    assert main([*argv, "--endpoint-url", closed_endpoint]) == 2
    assert f"cannot reach {closed_endpoint}: check --endpoint-url" in error_line(capsys)


def test_a_refused_connection_is_tried_twice_not_through_every_retry(closed_endpoint: str) -> None:
    from botocore.exceptions import EndpointConnectionError

    dynamodb = cli_table.client("dynamodb", closed_endpoint)
    attempts = Faults(dynamodb, "dynamodb", "Scan", [])
    with pytest.raises(EndpointConnectionError):
        dynamodb.scan(TableName="t")
    assert attempts.calls == cli_table.CONNECT_ATTEMPTS == 2
    handler = aws_clients.client("dynamodb", endpoint_url=closed_endpoint)  # the handlers' clients keep every retry
    assert handler is not dynamodb


def test_invalid_endpoint_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--endpoint-url", "not a url"]) == 2
    assert "invalid endpoint URL 'not a url'" in error_line(capsys)


@pytest.mark.parametrize("command", TABLE_COMMANDS)
def test_missing_table_names_it_and_the_endpoint(command: str, aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TABLE_COMMANDS[command], "--endpoint-url", aws["endpoint"], "--table", "no-such-table"]) == 2
    assert error_line(capsys) == f"earnings-sync {command}: table no-such-table does not exist at {aws['endpoint']} (us-east-1)"


def test_access_denied_is_a_usage_error_and_other_aws_errors_fail_the_command(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    table = aws["resources"].table_name
    dynamodb = cli_table.client("dynamodb", aws["endpoint"])  # the very client the command gets
    Faults(dynamodb, "dynamodb", "Scan", [dynamodb_error("AccessDeniedException", "not authorized to perform dynamodb:Scan")])
    assert main(["audit", "--endpoint-url", aws["endpoint"], "--table", table]) == 2
    assert "access denied (AccessDeniedException on Scan): not authorized to perform dynamodb:Scan" in error_line(capsys)
    Faults(dynamodb, "dynamodb", "Scan", [dynamodb_error("ValidationException", "injected refusal")])
    assert main(["audit", "--endpoint-url", aws["endpoint"], "--table", table]) == 1
    assert "Scan failed: ValidationException: injected refusal" in error_line(capsys)


def _client_error(code: str, message: str = "refused", operation: str = "Scan") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def _aws_errors() -> list[tuple[str, Exception, int, str]]:
    from botocore import exceptions as boto

    from earnings_sync.replay import DlqError
    from earnings_sync_cli.errors import UsageError

    return [
        ("partial-credentials", boto.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), 2,
         "incomplete AWS credentials (Partial credentials found in env, missing: AWS_SECRET_ACCESS_KEY)"),
        ("no-region", boto.NoRegionError(), 2, "check AWS_PROFILE, AWS_REGION"),
        ("connect-timeout", boto.ConnectTimeoutError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/1/q?x=1"), 2,
         "cannot reach https://sqs.eu-west-1.amazonaws.com: the connection timed out"),
        ("read-timeout", boto.ReadTimeoutError(endpoint_url="http://127.0.0.1:4566/"), 2, "cannot reach http://127.0.0.1:4566: no answer in time"),
        ("missing-queue", _client_error("AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.", "ReceiveMessage"), 2,
         "queue does not exist (ReceiveMessage): The specified queue does not exist."),
        ("missing-resource", _client_error("ResourceNotFoundException", "Requested resource not found"), 2, "not found (Scan)"),
        ("access-denied-sqs", _client_error("AccessDenied", "not authorized", "ReceiveMessage"), 2, "access denied (AccessDenied on ReceiveMessage)"),
        ("bad-credentials", _client_error("UnrecognizedClientException", "The security token included in the request is invalid"), 2,
         "AWS refused the credentials (UnrecognizedClientException)"),
        ("server-error", _client_error("InternalServerError", "try again"), 1, "Scan failed: InternalServerError: try again"),
        ("sdk-error", boto.ParamValidationError(report="Invalid length for parameter TableName"), 1, "ParamValidationError: "),
        ("file", FileNotFoundError(2, "No such file or directory", "/gone/x.jsonl"), 2, "/gone/x.jsonl: No such file or directory"),
        ("disk-full", OSError(28, "No space left on device"), 2, "No space left on device"),
        ("usage", UsageError("--limit must be at least 1"), 2, "--limit must be at least 1"),
        ("dlq", DlqError("no such queue: q"), 2, "no such queue: q"),
    ]


@pytest.mark.parametrize(("case", "error", "code", "message"), _aws_errors(), ids=[case[0] for case in _aws_errors()])
def test_every_error_a_user_can_cause_has_an_exit_code_and_a_message(case: str, error: Exception, code: int, message: str) -> None:
    from earnings_sync_cli.errors import describe

    described = describe(error)
    assert described is not None and described[0] == code and message in described[1]


def test_a_bug_keeps_its_traceback() -> None:
    from earnings_sync_cli.errors import describe

    assert describe(RuntimeError("a bug")) is None and describe(KeyError("k")) is None


def test_the_connection_attempt_limit_leaves_throttling_to_the_sdk() -> None:
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    limit = aws_clients.ConnectAttemptLimit(2)
    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")
    assert limit(attempts=1, caught_exception=refused) is None  # the SDK retries once
    with pytest.raises(EndpointConnectionError):
        limit(attempts=2, caught_exception=refused)
    with pytest.raises(ConnectTimeoutError):
        limit(attempts=2, caught_exception=ConnectTimeoutError(endpoint_url="http://10.255.255.1/"))
    assert limit(attempts=7, caught_exception=None, response=({}, {"Error": {"Code": "ThrottlingException"}})) is None


def test_debug_shows_the_stack_instead(closed_endpoint: str) -> None:
    from botocore.exceptions import EndpointConnectionError

    with pytest.raises(EndpointConnectionError):
        main(["--debug", "ledger", "--endpoint-url", closed_endpoint])
    with pytest.raises(EndpointConnectionError):
        main(["ledger", "--endpoint-url", closed_endpoint, "--debug"])


def test_interrupt_exits_130_with_one_line(calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "run_local", interrupted)
    assert main(["local", str(calendar)]) == 130
    assert error_line(capsys) == "earnings-sync local: interrupted"


# --------------------------------------------------------------------------- files and output paths, before any work


@pytest.mark.usefixtures("no_emulator")
def test_export_into_a_missing_directory_fails_before_the_sync(calendar: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", str(calendar), "--export", "/nonexistent/x.jsonl"]) == 2
    assert error_line(capsys) == "earnings-sync local: --export /nonexistent/x.jsonl: no such directory: /nonexistent"


@pytest.mark.usefixtures("no_emulator")
def test_log_file_in_a_missing_directory_fails_before_the_sync(calendar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "missing" / "handlers.log"
    assert main(["local", str(calendar), "--log-file", str(log)]) == 2
    assert error_line(capsys) == f"earnings-sync local: --log-file {log}: no such directory: {log.parent}"


@pytest.mark.usefixtures("no_emulator")
def test_export_to_a_directory_fails_before_the_sync(calendar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", str(calendar), "--export", str(tmp_path)]) == 2
    assert error_line(capsys) == f"earnings-sync local: --export {tmp_path}: is a directory"


@pytest.mark.usefixtures("no_emulator")
def test_export_over_an_input_file_is_refused(calendar: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", str(calendar), "--export", str(calendar)]) == 2
    assert "is one of the input files" in error_line(capsys)
    assert calendar.read_text() == csv_text(*ROWS)


@pytest.mark.usefixtures("no_emulator")
def test_a_directory_as_csv_argument_says_it_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", str(tmp_path)]) == 2
    assert error_line(capsys) == f"earnings-sync local: {tmp_path} is a directory, not a CSV file"


@pytest.mark.usefixtures("no_emulator")
def test_a_missing_file_says_no_such_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", str(tmp_path / "nope.csv")]) == 2
    assert error_line(capsys) == f"earnings-sync local: cannot open {tmp_path / 'nope.csv'}: no such file"


@pytest.mark.usefixtures("no_emulator")
def test_an_empty_file_is_called_empty_not_an_upstream_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert main(["local", str(empty)]) == 2
    line = error_line(capsys)
    assert line == f"earnings-sync local: {empty} is empty" and "upstream" not in line
    blank = tmp_path / "blank.csv"
    blank.write_bytes(b"\xef\xbb\xbf\r\n\n  \n")
    assert main(["local", str(blank)]) == 2
    assert error_line(capsys) == f"earnings-sync local: {blank} holds only blank lines, no calendar header"


@pytest.mark.usefixtures("no_emulator")
def test_binary_garbage_is_refused_with_a_printable_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x1b[2J\x07\xff\xfe")
    assert main(["local", str(garbage)]) == 2
    line = error_line(capsys)
    assert line == f"earnings-sync local: {garbage}: the first line is not UTF-8 text (a Latin-1/cp1252 export? re-save it as UTF-8)"
    assert "PNG" not in line  # described, never quoted

    terminal = tmp_path / "escapes.csv"  # valid UTF-8, but a terminal would act on it
    terminal.write_bytes(b"\x1b[2J\x1b]0;title\x07symbol,name\x00\x08\n")
    assert main(["local", str(terminal)]) == 2
    line = error_line(capsys)
    assert line == f"earnings-sync local: {terminal} looks binary (NUL bytes in the first line), not the calendar CSV"


@pytest.mark.usefixtures("no_emulator")
def test_a_saved_quota_reply_is_refused_as_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quota = tmp_path / "quota.csv"
    quota.write_text(QUOTA_REPLY)
    assert main(["local", str(quota)]) == 2
    assert error_line(capsys) == (
        f"earnings-sync local: {quota} holds an AlphaVantage JSON 'Information' reply (an error or quota answer), "
        "not the calendar CSV"
    )


@pytest.mark.usefixtures("no_emulator")
def test_an_unreadable_file_is_refused(calendar: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    calendar.chmod(0)
    try:
        assert main(["local", str(calendar)]) == 2
        assert error_line(capsys) == f"earnings-sync local: cannot read {calendar}: permission denied"
    finally:
        calendar.chmod(0o644)


@pytest.mark.usefixtures("no_emulator")
def test_a_fifo_is_not_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "calendar.csv"
    os.mkfifo(fifo)  # reading it would block until a writer came
    assert main(["local", str(fifo)]) == 2
    assert error_line(capsys) == f"earnings-sync local: {fifo} is not a regular file"


@pytest.mark.usefixtures("no_emulator")
def test_an_empty_file_among_good_ones_is_refused_up_front_naming_it(calendar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty, later = tmp_path / "empty.csv", tmp_path / "later.csv"
    empty.write_text("")
    later.write_text(csv_text(*ROWS))
    assert main(["local", str(calendar), str(empty), str(later)]) == 2
    assert error_line(capsys) == f"earnings-sync local: {empty} is empty"


@pytest.mark.usefixtures("no_emulator")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "2025-08-02", "--to", "2025-08-01"], "from 2025-08-02 is after to 2025-08-01"),
        (["--from", "2025-8-1", "--to", "2025-08-01"], "from: expected an ISO date like 2025-07-31, got '2025-8-1'"),
        (["--from", "2025-08-01", "--to", "2025-08-02", "--token", "garbage"], "not a page token from `upcoming`"),
    ],
    ids=["reversed", "not-iso", "bad-token"],
)
def test_upcoming_csv_checks_dates_and_token_before_the_sync(argv: list[str], message: str, calendar: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upcoming", *argv, "--csv", str(calendar)]) == 2
    assert error_line(capsys) == f"earnings-sync upcoming: {message}"


@pytest.mark.usefixtures("no_emulator")
def test_audit_csv_garbage_prints_no_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x00\x01\x02 not a calendar\n")
    assert main(["audit", "--csv", str(garbage)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.strip() == f"earnings-sync audit: {garbage} looks binary (NUL bytes in the first line), not the calendar CSV"


@pytest.mark.usefixtures("no_emulator")
def test_local_and_every_csv_command_give_the_same_exit_code_for_the_same_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    commands = {
        "local": ["local", str(empty)],
        "ledger": ["ledger", "--csv", str(empty)],
        "audit": ["audit", "--csv", str(empty)],
        "upcoming": ["upcoming", "--from", "2025-08-01", "--to", "2025-08-01", "--csv", str(empty)],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        assert error_line(capsys) == f"earnings-sync {name}: {empty} is empty"


# --------------------------------------------------------------------------- a multi-file run that stops early


def test_a_sync_failing_mid_run_names_the_files_it_did_not_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, third = (tmp_path / name for name in ("first.csv", "second.csv", "third.csv"))
    for path in (first, second, third):
        path.write_text(csv_text(*ROWS))
    produce = local.LocalPipeline.produce

    def overwritten_before_its_turn(self: Any, path: str, synced_at: str | None = None) -> Any:
        if path == str(second):  # it passed the checks; then a quota reply was saved over it
            second.write_text(QUOTA_REPLY)
        return produce(self, path, synced_at)

    monkeypatch.setattr(local.LocalPipeline, "produce", overwritten_before_its_turn)

    assert main(["local", str(first), str(second), str(third)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert "1 of 3 file(s) synced" in out
    assert f"NOT synced: {second}, {third} (stopped after the failed sync)" in out
    assert "every sync complete" not in out and "ledger: NOT every sync is complete" in out
    errors = err.splitlines()
    assert errors[0] == f"earnings-sync local: {second} holds an AlphaVantage JSON 'Information' reply (an error or quota answer), not the calendar CSV"
    assert errors[1] == f"earnings-sync local: not synced (an earlier sync failed): {third}"

    second.write_text(csv_text(*ROWS))
    assert main(["local", str(first), str(second), str(third), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == [str(first), str(second), str(third)]
    assert summary["unsynced"] == [str(second), str(third)] and summary["not_run"] == [str(third)]
    assert summary["complete"] is False and summary["ok"] is False
    assert [s["file"] for s in summary["syncs"]] == [str(first), str(second)]
    assert summary["syncs"][0]["ledger"]["status"] == "complete"


def test_ledger_csv_names_the_files_a_failed_run_did_not_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    for path in (first, second):
        path.write_text(csv_text(*ROWS))
    produce = local.LocalPipeline.produce

    def overwritten_before_its_turn(self: Any, path: str, synced_at: str | None = None) -> Any:
        if path == str(second):
            second.write_text(QUOTA_REPLY)
        return produce(self, path, synced_at)

    monkeypatch.setattr(local.LocalPipeline, "produce", overwritten_before_its_turn)
    assert main(["ledger", "--json", "--csv", str(first), str(second)]) == 1
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert shown["complete"] is False and [s["status"] for s in shown["syncs"]] == ["complete"]
    assert err.startswith(f"earnings-sync ledger: {second} holds an AlphaVantage JSON") and len(err.splitlines()) == 1


def test_local_exits_1_when_the_ledger_is_not_complete(
    calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from earnings_sync.ledger import LedgerReport

    def unsettled(paths: list[str], **_: Any) -> LocalSummary:
        syncs = [SyncSummary(file=path, sync_id="s1", ledger=LedgerReport(sync_id="s1")) for path in paths]
        return LocalSummary(endpoint="http://127.0.0.1:1", files=list(paths), syncs=syncs)

    monkeypatch.setattr(local, "run_local", unsettled)
    assert main(["local", str(calendar)]) == 1
    out, err = capsys.readouterr()
    assert "ledger: NOT every sync is complete" in out
    assert err == "earnings-sync local: the ledger does not account for every row (see the summary)\n"


@pytest.mark.usefixtures("no_emulator")
def test_a_path_through_a_file_is_not_a_directory(calendar: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", f"{calendar}/x.csv"]) == 2
    assert error_line(capsys) == f"earnings-sync local: cannot open {calendar}/x.csv: a part of its path is a file, not a directory"


def test_summary_counts_only_the_files_synced() -> None:
    summary = LocalSummary(endpoint="http://127.0.0.1:1", files=["a.csv", "b.csv", "c.csv", "a.csv"])
    summary.syncs = [SyncSummary(file="a.csv"), SyncSummary(file="b.csv", error="UpstreamError: upstream returned …")]
    assert summary.not_run == ["c.csv", "a.csv"] and summary.unsynced == ["b.csv", "c.csv", "a.csv"]
    assert not summary.ok and summary.complete is False
    text = cli_local.format_summary(summary)
    assert text.startswith("earnings-sync local: 1 of 4 file(s) synced") and "every sync complete" not in text
    assert cli_table.sync_failures(summary) == [
        "b.csv: UpstreamError: upstream returned …",
        "not synced (an earlier sync failed): c.csv, a.csv",
    ]
    whole = LocalSummary(endpoint="http://127.0.0.1:1", files=["a.csv"], syncs=[SyncSummary(file="a.csv")])
    assert whole.ok and whole.unsynced == [] and whole.complete is None  # no ledger table: no verdict
    assert cli_local.format_summary(whole).startswith("earnings-sync local: 1 sync(s)")


# --------------------------------------------------------------------------- without the `local` extra

EMULATOR_COMMANDS = {
    "local": ["local"],
    "ledger": ["ledger", "--csv"],
    "audit": ["audit", "--csv"],
    "upcoming": ["upcoming", "--from", "2025-07-28", "--to", "2025-08-01", "--csv"],
}


@pytest.mark.usefixtures("no_emulator")
@pytest.mark.parametrize("missing", LOCAL_EXTRA)
@pytest.mark.parametrize("command", EMULATOR_COMMANDS)
def test_without_the_local_extra_the_emulator_commands_say_what_to_install(
    command: str, missing: str, calendar: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what an interpreter without it answers
    assert main([*EMULATOR_COMMANDS[command], str(calendar)]) == 2
    assert error_line(capsys) == (
        f"earnings-sync {command}: the embedded emulator needs the local extra ({missing} is not installed): "
        "pip install 'earnings-sync[local]'"
    )


# --------------------------------------------------------------------------- dlq


def test_dlq_peek_of_a_queue_that_is_not_a_dlq_is_refused(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    sqs, resources = aws["sqs"], aws["resources"]
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody="{}")
    for command in ("peek", "stats"):
        assert main(["dlq", command, "earnings-queue"]) == 2
        line = error_line(capsys)
        assert line.startswith(f"earnings-sync dlq {command}: earnings-queue is not a dead-letter queue: no queue's redrive policy")
        assert "--force" in line
    attributes = sqs.get_queue_attributes(QueueUrl=resources.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "1"  # nothing was received
    assert main(["dlq", "peek", "earnings-queue", "--force", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_dlq_replay_from_a_queue_that_is_not_a_dlq_asks_for_to(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay", "earnings-queue"]) == 2
    line = error_line(capsys)
    assert "is not a dead-letter queue" in line and "--to" in line
    assert main(["dlq", "replay", "earnings-queue", "--native"]) == 2
    assert "is not a dead-letter queue: no queue's redrive policy points at it; name the queue to move its messages to with --to" in error_line(capsys)


def test_dlq_of_a_queue_that_does_not_exist_names_it(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "peek", "no-such-dlq"]) == 2
    assert error_line(capsys) == "earnings-sync dlq peek: no such queue: no-such-dlq"
    url = f"{aws['endpoint']}/123456789012/no-such-dlq"
    assert main(["dlq", "stats", url]) == 2
    assert error_line(capsys) == f"earnings-sync dlq stats: no such queue: {url}"
    assert main(["dlq", "stats", url, "--force"]) == 2
    assert error_line(capsys) == f"earnings-sync dlq stats: no such queue: {url} at {aws['endpoint']} (us-east-1)"


# --------------------------------------------------------------------------- a real terminal


def test_no_traceback_reaches_the_terminal(tmp_path: Path, closed_endpoint: str) -> None:
    """As a user runs it: a separate process, no credentials, then a dead endpoint and a binary file."""
    empty = tmp_path / "empty-aws-config"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty), AWS_EC2_METADATA_DISABLED="true",
               PYTHONPATH=str(ROOT))
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes(range(128, 256)) + bytes(range(128)))
    fake_credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    runs = [
        ("no AWS credentials", ["ledger"], {}),
        (f"cannot reach {closed_endpoint}", ["audit", "--endpoint-url", closed_endpoint], fake_credentials),
        ("the first line is not UTF-8 text", ["local", str(garbage)], {}),
    ]
    for expected, argv, extra in runs:
        done = subprocess.run(
            [sys.executable, "-m", "earnings_sync_cli", *argv], capture_output=True, env={**env, **extra}, timeout=60, cwd=tmp_path
        )
        err = done.stderr.decode()
        assert done.returncode == 2 and done.stdout == b"", (argv, err)
        assert "Traceback" not in err and len(err.splitlines()) == 1 and err.rstrip("\n").isprintable() and expected in err


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_a_message_is_always_one_printable_line(text: str) -> None:
    line = one_line(text)
    assert line.isprintable() and "\n" not in line and len(line) <= 600
