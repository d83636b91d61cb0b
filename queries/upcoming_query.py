"""Upcoming-earnings Lambda: who reports between two dates, read from the GSI (upcoming.py).

Invoked directly (`aws lambda invoke`, another service, an API front end) with
`{"from": "2025-07-28", "to": "2025-08-01"}` and optionally `limit`, `page_size` and `next_token`
(from a previous answer). It is the GSI read path running in Lambda, so its query duration,
index failures and Scan fallbacks reach CloudWatch; the CLI (`earnings-sync upcoming`) runs the
same query from an operator's shell.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aws_lambda_powertools.utilities.typing import LambdaContext

from earnings_sync import aws
from earnings_sync.calendar_table import CalendarTable
from earnings_sync.lambda_setup import observed_function
from earnings_sync.observability import UpcomingLog, emit_memory_metrics
from earnings_sync.settings import Settings
from earnings_sync.upcoming import DEFAULT_PAGE_SIZE, UpcomingResult, upcoming_earnings

observed = observed_function()
logger, metrics = observed.logger, observed.metrics
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000  # keeps one answer well under Lambda's 6 MB response limit; page with next_token


class UpcomingRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename={"date_from": "from", "date_to": "to"}):
    """The invocation payload; unknown fields are refused so a misspelt `limit` is not ignored."""

    date_from: str
    date_to: str
    limit: int = DEFAULT_LIMIT
    page_size: int = DEFAULT_PAGE_SIZE
    next_token: str | None = None


def parse_request(event: Any) -> UpcomingRequest:
    """ValueError for anything the caller must fix (the dates themselves are checked by the query)."""
    try:
        request = msgspec.convert(event, UpcomingRequest)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid request: {exc}") from None
    if not 1 <= request.limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    return request


_ENCODER = msgspec.json.Encoder(decimal_format="number")


def _json_ready(payload: dict[str, Any]) -> dict[str, Any]:
    """Estimates are Decimals; the runtime's json.dumps cannot write them."""
    return msgspec.json.decode(_ENCODER.encode(payload))


def query_upcoming(client: Any, settings: Settings, request: UpcomingRequest) -> UpcomingResult:
    """The GSI read path (upcoming.py) for one request."""
    return upcoming_earnings(
        CalendarTable(client, settings.table_name),
        request.date_from,
        request.date_to,
        limit=request.limit,
        page_size=request.page_size,
        start_token=request.next_token,
    )


@observed.handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()
    client = aws.client("dynamodb", max_attempts=settings.aws_max_attempts)
    upcoming_log = UpcomingLog(logger, metrics)
    with aws.counting_throttles(client) as throttles:
        try:
            request = parse_request(event)
            logger.append_keys(date_from=request.date_from, date_to=request.date_to)
            result = query_upcoming(client, settings, request)
        except ValueError as exc:  # the caller's mistake, found before any query: not a GSI failure
            return upcoming_log.invalid(exc)
        except Exception as exc:
            upcoming_log.failed(exc, throttles.count)
            raise
        finally:
            memory = emit_memory_metrics(metrics, context)
    return _json_ready(upcoming_log.answered(result, throttles.count, memory))
