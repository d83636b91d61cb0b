"""Stream-consumer and upcoming-read metrics as EMF, read back the way the local runner reads them."""

from __future__ import annotations

import contextlib
import io
from collections import Counter

from aws_lambda_powertools import Metrics

from earnings_sync.observability import (
    M,
    emit_stream_metrics,
    emit_upcoming_metrics,
    parse_emf,
    validation_failures_by_rule,
)
from earnings_sync.stream import StreamTally
from earnings_sync.upcoming import UpcomingResult


def flushed(emit) -> Counter[str]:
    metrics = Metrics(namespace="EarningsSync", service="earnings-sync")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit(metrics)
        metrics.flush_metrics()
    return parse_emf(out.getvalue().splitlines())


def test_stream_tally_becomes_one_metric_per_count_and_per_rule() -> None:
    tally = StreamTally(records=7, validation_passed=3, validation_failed=2, bookkeeping_only=1, superseded_removed=2, removes=1)
    tally.violations.update(["bad_currency", "bad_currency", "bad_date"])
    tally.requests.update({"Query": 3, "DeleteItem": 2})
    totals = flushed(lambda m: emit_stream_metrics(m, tally, 12.34))
    assert totals[M.STREAM_RECORDS_PROCESSED] == 7 and totals[M.VALIDATION_PASSED] == 3
    assert totals[M.VALIDATION_FAILED] == 2 and totals[M.BOOKKEEPING_ONLY] == 1
    assert totals[M.SUPERSEDED_REMOVED] == 2 and totals[M.REMOVE_EVENTS] == 1
    assert totals[M.STREAM_DYNAMODB_REQUESTS] == 5 and totals[M.STREAM_BATCH_DURATION] == 12.3
    assert validation_failures_by_rule(totals) == {"bad_currency": 2, "bad_date": 1}
    assert validation_failures_by_rule({f"{M.VALIDATION_FAILED}_bad_name": 0, M.VALIDATION_FAILED: 4}) == {}


def test_upcoming_result_metrics() -> None:
    result = UpcomingResult(queries=4, index_failures=1, fallback_used=True, duration_ms=8.06)
    totals = flushed(lambda m: emit_upcoming_metrics(m, result))
    assert totals == Counter(
        {M.UPCOMING_QUERIES: 4, M.UPCOMING_QUERY_DURATION: 8.1, M.UPCOMING_INDEX_FAILURES: 1, M.UPCOMING_SCAN_FALLBACKS: 1}
    )
