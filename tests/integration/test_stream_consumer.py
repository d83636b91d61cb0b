"""The stream consumer handler on real DynamoDB stream records from moto, and the table it tidies.

Items are written the way the pipeline writes them (`upsert.upsert_records`) or, for what the
pipeline never does, directly; the stream is then read with dynamodbstreams and fed to the handler.
Nothing here depends on whether an unchanged overwrite emits a MODIFY (moto does, DynamoDB does not):
the conflict-safe upsert never overwrites unchanged content with the same sync.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from earnings_sync import aws as aws_clients
from earnings_sync.observability import M
from tests.helpers import Faults, dynamodb_error
from tests.integration.stream_support import T1, T2, T3, StreamReader, Table, call_handler, rec


def handler_client() -> Any:
    """The very client the handler will use (cached per endpoint), to inject faults into."""
    return aws_clients.client("dynamodb", max_attempts=8)


def test_inserts_are_validated_and_nothing_is_removed(table: Table, stream: StreamReader) -> None:
    table.sync(T1, rec("AAPL", "2025-07-31"), rec("MSFT", "2025-07-29"))
    event = stream.event()
    assert [r["eventName"] for r in event["Records"]] == ["INSERT", "INSERT"]
    response, metrics, _ = call_handler(event)
    assert response == {"batchItemFailures": []}
    assert metrics[M.STREAM_RECORDS_PROCESSED] == 2
    assert metrics[M.VALIDATION_PASSED] == 2 and metrics[M.VALIDATION_FAILED] == 0
    assert metrics[M.SUPERSEDED_REMOVED] == 0 and metrics["ColdStart"] in (0, 1)
    assert table.keys() == {("AAPL", "2025-07-31"), ("MSFT", "2025-07-29")}


def test_a_rescheduled_date_removes_the_old_one_and_keeps_history(table: Table, stream: StreamReader) -> None:
    table.sync(T1, rec("AAPL", "2025-04-30", fiscal="2025-03-31"), rec("AAPL", "2025-07-31"), rec("IBM", "2025-07-23"))
    call_handler(stream.event())
    table.sync(T2, rec("AAPL", "2025-08-01"), rec("IBM", "2025-07-23"))  # moved; IBM unchanged
    event = stream.event()
    assert sorted(r["eventName"] for r in event["Records"]) == ["INSERT", "MODIFY"]
    response, metrics, logs = call_handler(event)
    assert response == {"batchItemFailures": []}
    assert metrics[M.SUPERSEDED_REMOVED] == 1 and metrics[M.BOOKKEEPING_ONLY] == 1
    assert table.keys() == {("AAPL", "2025-04-30"), ("AAPL", "2025-08-01"), ("IBM", "2025-07-23")}
    # the delete comes back as a REMOVE record, which is only counted
    removal = stream.event()
    assert [r["eventName"] for r in removal["Records"]] == ["REMOVE"]
    _, metrics, _ = call_handler(removal)
    assert metrics[M.REMOVE_EVENTS] == 1 and metrics[M.VALIDATION_PASSED] == 0


def test_an_older_sync_arriving_late_removes_its_own_item(table: Table, stream: StreamReader) -> None:
    table.sync(T2, rec("AAPL", "2025-08-01"))
    call_handler(stream.event())
    table.sync(T1, rec("AAPL", "2025-07-31"))  # e.g. a DLQ replay of the older snapshot
    _, metrics, _ = call_handler(stream.event())
    assert metrics[M.SUPERSEDED_REMOVED] == 1
    assert table.keys() == {("AAPL", "2025-08-01")}


FUTURE = "2999-01-01T00:00:00.000000Z"


def test_a_future_dated_image_never_settles_its_period_nor_is_restored(table: Table, stream: StreamReader) -> None:
    """An item dated after now (written around the consumer's checks) would make every real date of
    its fiscal period look superseded, and a regression guard that trusted it would put it back over
    a real sync's write: it is counted as `future_sync_date`, and neither happens."""
    table.sync(T1, rec("AAPL", "2025-07-31"))
    call_handler(stream.event())
    table.put(rec("AAPL", "2025-08-01"), FUTURE)  # same fiscal period, another date, from the "future"
    table.put(rec("MSFT", "2025-07-29", estimate="9.00"), FUTURE)
    table.put(rec("MSFT", "2025-07-29", estimate="3.00"), T2)  # a real write over the forged one
    _, metrics, logs = call_handler(stream.event())
    assert metrics[f"{M.VALIDATION_FAILED}_future_sync_date"] == 2 and metrics[M.SUPERSEDED_REMOVED] == 0
    assert metrics[M.REGRESSIONS_RESTORED] == 0 and metrics[M.REGRESSION_CONFLICTS] == 1
    assert ("AAPL", "2025-07-31") in table.keys()  # the real date stays
    assert table.last_sync("MSFT", "2025-07-29") == T2
    assert "future_sync_date" in logs


def test_two_dates_from_the_same_sync_are_both_kept(table: Table, stream: StreamReader) -> None:
    table.sync(T1, rec("AAPL", "2025-07-31"), rec("AAPL", "2025-08-01"))
    _, metrics, _ = call_handler(stream.event())
    assert metrics[M.SUPERSEDED_REMOVED] == 0
    assert table.keys() == {("AAPL", "2025-07-31"), ("AAPL", "2025-08-01")}


def test_a_bookkeeping_only_change_costs_no_query(table: Table, stream: StreamReader) -> None:
    table.sync(T1, rec("AAPL", "2025-07-31"))
    call_handler(stream.event())
    table.sync(T2, rec("AAPL", "2025-07-31"))
    event = stream.event()
    assert [r["eventName"] for r in event["Records"]] == ["MODIFY"]
    queries = Faults(handler_client(), "dynamodb", "Query", [])
    _, metrics, _ = call_handler(event)
    assert metrics[M.BOOKKEEPING_ONLY] == 1 and metrics[M.VALIDATION_PASSED] == 0
    assert queries.calls == 0
    table.sync(T3, rec("AAPL", "2025-07-31", estimate="1.10"))  # a content change does query
    _, metrics, _ = call_handler(stream.event())
    assert metrics[M.VALIDATION_PASSED] == 1 and queries.calls == 1


def test_a_concurrent_newer_write_wins_over_the_superseded_delete(table: Table, stream: StreamReader) -> None:
    table.sync(T1, rec("AAPL", "2025-07-31"))
    call_handler(stream.event())
    table.sync(T2, rec("AAPL", "2025-08-01"))
    deletes = Faults(handler_client(), "dynamodb", "DeleteItem", [dynamodb_error("ConditionalCheckFailedException")])
    response, metrics, _ = call_handler(stream.event())
    assert response == {"batchItemFailures": []}  # not an error: counted and skipped
    assert deletes.calls == 1
    assert metrics[M.SUPERSEDED_CONFLICTS] == 1 and metrics[M.SUPERSEDED_REMOVED] == 0
    assert ("AAPL", "2025-07-31") in table.keys()


def test_an_invalid_item_is_counted_by_rule_and_logged_without_its_content(table: Table, stream: StreamReader) -> None:
    table.put(rec("ZBAD", "2025-09-01"), T1, currency={"S": "dollars"}, time_of_the_day={"S": "noon"})
    response, metrics, logs = call_handler(stream.event())
    assert response == {"batchItemFailures": []}  # bad data is reported, never retried
    assert metrics[M.VALIDATION_FAILED] == 1
    assert metrics[f"{M.VALIDATION_FAILED}_bad_currency"] == 1
    assert metrics[f"{M.VALIDATION_FAILED}_bad_time_of_day"] == 1
    warning = next(json.loads(line) for line in logs.splitlines() if "consistency rules" in line)
    assert warning["key"] == ["ZBAD", "2025-09-01"] and warning["rules"] == ["bad_currency", "bad_time_of_day"]
    assert "dollars" not in logs and "ZBAD Inc" not in logs
    assert ("ZBAD", "2025-09-01") in table.keys()


def test_a_regression_is_restored_unless_a_newer_write_came_first(table: Table, stream: StreamReader) -> None:
    table.sync(T2, rec("AAPL", "2025-07-31", estimate="2.00"), rec("MSFT", "2025-07-29", estimate="3.00"))
    call_handler(stream.event())
    table.put(rec("AAPL", "2025-07-31", estimate="1.00"), T1)  # an older sync overwrote a newer one
    table.put(rec("MSFT", "2025-07-29", estimate="1.00"), T1)
    table.put(rec("MSFT", "2025-07-29", estimate="4.00"), T3)  # ...and MSFT moved on since
    event = stream.event()
    response, metrics, _ = call_handler(event)
    assert response == {"batchItemFailures": []}
    assert metrics[M.REGRESSIONS_RESTORED] == 1 and metrics[M.REGRESSION_CONFLICTS] == 1
    aapl = table.table.get(("AAPL", "2025-07-31"))
    assert (Decimal(aapl["estimate"]["N"]), aapl["lastSyncDate"]["S"]) == (Decimal("2"), T2)
    msft = table.table.get(("MSFT", "2025-07-29"))
    assert msft["lastSyncDate"]["S"] == T3
    # the restore is an ordinary newer-over-older MODIFY: validated, not restored again
    _, metrics, _ = call_handler(stream.event())
    assert metrics[M.REGRESSIONS_RESTORED] == 0 and metrics[M.VALIDATION_PASSED] == 1


def test_a_failing_record_is_reported_by_sequence_number_and_the_rest_is_deferred(table: Table, stream: StreamReader) -> None:
    """Lambda retries from the failed record: the records after it are left untouched for that retry
    (handled, and their events published, in stream order), reported but not logged one by one."""
    table.sync(T1, rec("AAPL", "2025-07-31"), rec("MSFT", "2025-07-29"), rec("NVDA", "2025-08-27"))
    event = stream.event()
    second, third = (event["Records"][i]["dynamodb"]["SequenceNumber"] for i in (1, 2))
    queries = Faults(handler_client(), "dynamodb", "Query", [None, dynamodb_error("ValidationException")])
    response, metrics, logs = call_handler(event)
    assert response == {"batchItemFailures": [{"itemIdentifier": second}, {"itemIdentifier": third}]}
    assert metrics[M.STREAM_RECORD_FAILURES] == 1 and metrics[M.VALIDATION_PASSED] == 2
    assert queries.calls == 2  # NVDA's record was not started
    summary = next(json.loads(line) for line in logs.splitlines() if "stream batch processed" in line)
    assert summary["deferred"] == 1 and summary["failed"] == 2
    assert second in logs and third not in logs


def test_an_unknown_event_name_fails_only_that_record(table: Table, stream: StreamReader) -> None:
    table.sync(T1, rec("AAPL", "2025-07-31"))
    event = stream.event()
    broken = json.loads(json.dumps(event))
    broken["Records"][0]["eventName"] = "TRUNCATE"
    response, metrics, _ = call_handler(broken)
    assert response["batchItemFailures"] == [{"itemIdentifier": event["Records"][0]["dynamodb"]["SequenceNumber"]}]
    assert metrics[M.STREAM_RECORD_FAILURES] == 1
