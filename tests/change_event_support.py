"""Change events in the tests: the JSON Schemas of schemas/, and an in-memory publisher."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from earnings_sync.change_events import DETAIL_TYPES, SOURCE, ChangeEvent, ChangePublishError, encode_detail

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILES = {detail_type: ROOT / "schemas" / f"{detail_type.lower().replace(' ', '-')}.v1.json" for detail_type in DETAIL_TYPES}


@cache
def validator(detail_type: str) -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_FILES[detail_type].read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def as_received(event: ChangeEvent) -> dict[str, Any]:
    """What a rule target gets for the event, as far as the event is ours (source, detail-type, detail)."""
    return {"source": SOURCE, "detail-type": event.detail_type, "detail": json.loads(encode_detail(event))}


def assert_valid(events: Iterable[dict[str, Any]]) -> int:
    """Every event (as a rule target receives it) validates against its detail-type's schema; how many."""
    count = 0
    for event in events:
        errors = sorted(validator(event["detail-type"]).iter_errors(event), key=str)
        assert not errors, (event, [error.message for error in errors])
        count += 1
    return count


class RecordingPublisher:
    """A `ChangePublisher` that keeps what it published, in order, and fails when told to: `fail`
    sees each call's events and returns the ones that do not go out (from the first of them on)."""

    def __init__(self, fail: Callable[[Sequence[ChangeEvent]], Sequence[ChangeEvent]] | None = None) -> None:
        self.fail = fail
        self.published: list[ChangeEvent] = []
        self.calls: list[int] = []

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        self.calls.append(len(events))
        failed = list(self.fail(events)) if self.fail is not None else []
        if not failed:
            self.published.extend(events)
            return
        first = next(i for i, event in enumerate(events) if event in failed)
        self.published.extend(events[:first])
        raise ChangePublishError("injected", published=events[:first], unpublished=events[first:])

    def received(self) -> list[dict[str, Any]]:
        return [as_received(event) for event in self.published]
