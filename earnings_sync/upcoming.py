"""Who reports between two dates: the inverted GSI `upcoming-earnings-index`, one Query per day.

The index's HASH key is `earnings_date` and its RANGE key `asset_symbol`, so each report day is one
partition already sorted by symbol: walking the days in order gives results ordered by
(earnings_date, asset_symbol) with no sorting, and a position in that order — the last item returned
— is all a page token needs. The same token resumes either read path.

If the index cannot be queried (it is missing, still backfilling, or rejects the request: a
`ClientError` other than throttling), the read falls back to a Scan of the base table filtered on
`earnings_date BETWEEN`, sorted in memory, and says so in the result (`fallback_used`,
`index_failures`), which callers turn into metrics. Throttling is raised, not "fixed" with a Scan
that would cost far more capacity.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from earnings_sync.calendar_table import (
    INDEX_NAME,
    CalendarTable,
    Item,
    error_code,
    index_start,
    is_throttling,
    item_to_plain,
    key_of,
    plain_key,
)

DEFAULT_PAGE_SIZE = 100
MAX_DAYS = 731  # two years of report days: the calendar itself reaches 12 months ahead

Position = tuple[str, str]  # (earnings_date, asset_symbol) of the last item returned



@dataclass
class UpcomingResult:
    """Items in (earnings_date, asset_symbol) order, the token for the next page, and what it cost."""

    items: list[dict[str, Any]] = field(default_factory=list)
    next_token: str | None = None
    queries: int = 0
    scan_pages: int = 0
    index_failures: int = 0
    fallback_used: bool = False
    fallback_reason: str | None = None
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "count": len(self.items),
            "next_token": self.next_token,
            "queries": self.queries,
            "scan_pages": self.scan_pages,
            "index_failures": self.index_failures,
            "fallback_used": self.fallback_used,
            "fallback_reason": self.fallback_reason,
            "duration_ms": round(self.duration_ms, 1),
        }


def encode_token(position: Position) -> str:
    raw = json.dumps({"d": position[0], "s": position[1]}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> Position:
    """The position a token names; ValueError for anything that is not one of ours."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position = (payload["d"], payload["s"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError("not a page token from `upcoming`") from exc
    if not all(isinstance(part, str) for part in position):
        raise ValueError("not a page token from `upcoming`")
    _date(position[0], "token")
    return position


def _date(text: str, what: str) -> dt.date:
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected an ISO date like 2025-07-31, got {text!r}") from None


def days(date_from: str, date_to: str) -> Iterator[str]:
    day, last = _date(date_from, "from"), _date(date_to, "to")
    while day <= last:
        yield day.isoformat()
        day += dt.timedelta(days=1)


def _position(item: Item) -> Position:
    symbol, date = key_of(item)
    return (date, symbol)


def check_request(
    date_from: str,
    date_to: str,
    *,
    limit: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    start_token: str | None = None,
) -> Position | None:
    """Every argument of a request, checked before anything is read (the command line checks them
    before a local sync too); returns the token's position. ValueError says what is wrong."""
    first, last = _date(date_from, "from"), _date(date_to, "to")
    if first > last:
        raise ValueError(f"from {date_from} is after to {date_to}")
    if (last - first).days >= MAX_DAYS:
        raise ValueError(f"at most {MAX_DAYS} days per request (one Query per day)")
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    return decode_token(start_token) if start_token else None


def upcoming_earnings(
    table: CalendarTable,
    date_from: str,
    date_to: str,
    *,
    limit: int | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    start_token: str | None = None,
    index_name: str = INDEX_NAME,
    clock: Callable[[], float] = time.perf_counter,
) -> UpcomingResult:
    """Items with date_from <= earnings_date <= date_to, ordered by (earnings_date, asset_symbol).

    At most `limit` items (all when None); `next_token` is set when more may follow and resumes
    right after the last item returned. `page_size` bounds each request's Limit.
    """
    position = check_request(date_from, date_to, limit=limit, page_size=page_size, start_token=start_token)
    started = clock()
    result = UpcomingResult()
    try:
        _from_index(table, index_name, date_from, date_to, position, limit, page_size, result)
    except ClientError as exc:
        if is_throttling(exc):
            raise
        result.index_failures += 1
        result.fallback_used = True
        result.fallback_reason = f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"[:300]
        if result.items:  # resume after what the index already gave
            symbol, date = plain_key(result.items[-1])
            position = (date, symbol)
        remaining = None if limit is None else limit - len(result.items)
        _from_scan(table, date_from, date_to, position, remaining, page_size, result)
    result.duration_ms = (clock() - started) * 1000
    return result


def _from_index(
    table: CalendarTable,
    index_name: str,
    date_from: str,
    date_to: str,
    position: Position | None,
    limit: int | None,
    page_size: int,
    result: UpcomingResult,
) -> None:
    remaining = limit
    start = max(date_from, position[0]) if position else date_from
    for day in days(start, date_to):
        resume = index_start(day, position[1]) if position is not None and position[0] == day else None
        while True:
            page_limit = page_size if remaining is None else min(page_size, remaining)
            items, resume = table.query_day(day, limit=page_limit, start=resume, index_name=index_name)
            result.queries += 1
            result.items.extend(item_to_plain(item) for item in items)
            more_today = resume is not None
            if remaining is not None:
                remaining -= len(items)
                if remaining <= 0:
                    if more_today or day < date_to:
                        result.next_token = encode_token(_position(items[-1]))
                    return
            if not more_today:
                break


def _from_scan(
    table: CalendarTable,
    date_from: str,
    date_to: str,
    position: Position | None,
    limit: int | None,
    page_size: int,
    result: UpcomingResult,
) -> None:
    """The fallback: every matching item of the base table, sorted here."""
    first_day = max(date_from, position[0]) if position else date_from
    examined = max(page_size, 1000)  # items examined per page, before the filter
    found: list[Item] = []
    resume: Item | None = None
    while True:
        items, resume = table.scan_dates(first_day, date_to, limit=examined, start=resume)
        result.scan_pages += 1
        found.extend(items)
        if resume is None:
            break
    ordered = sorted(
        ((_position(item), item) for item in found if position is None or _position(item) > position),
        key=lambda pair: pair[0],
    )
    if limit is not None and len(ordered) > limit:
        ordered = ordered[:limit]
        result.next_token = encode_token(ordered[-1][0])
    result.items.extend(item_to_plain(item) for _, item in ordered)
