"""The conflict rules as a property: however the messages of two or three syncs arrive (any order,
duplicated, records replayed from the DLQ), the table ends as in-order delivery leaves it.

Each example builds its syncs (content changes, a report date moved within one fiscal period, rows
dropped and added), packs them into messages as the producer does, and delivers them twice to fresh
moto tables: once in order, once in the generated order. The real `MessageConsumer` writes (both
write modes) and the real `StreamProcessor` reads each table's own stream after every delivery, as
the stream consumer would. Delivery is sequential: concurrency is the fault suite's business.

Generated syncs never list two dates for one (symbol, fiscal period): that is ambiguous data, which
the pipeline keeps as it finds it and `earnings-sync audit` reports (`ambiguous_fiscal_period`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import boto3
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earnings_sync import dlq
from earnings_sync.calendar_table import CalendarTable, item_to_plain, plain_key
from earnings_sync.consumer import ConsumerTally, MessageConsumer, MessageContext
from earnings_sync.messages import build_messages, decode_envelope
from earnings_sync.records import EarningsRecord
from earnings_sync.replay import parse_message, replay_attributes, replay_body
from earnings_sync.stream import StreamProcessor, StreamTally
from earnings_sync.upsert import WriteMode
from tests.helpers import sync_id_for

SYNCED_AT = ("2025-07-18T06:00:00.000000Z", "2025-07-19T06:00:00.000000Z", "2025-07-20T06:00:00.000000Z")
SYMBOLS = ("AAA", "BBB", "CCC")
# fiscal period -> the report dates it may be given (disjoint: a key always means one period)
PERIODS = {"2025-03-31": ("2025-04-28", "2025-04-30"), "2025-06-30": ("2025-07-29", "2025-07-31")}
RECORDS_PER_MESSAGE = 3
_table_numbers = itertools.count()


# --------------------------------------------------------------------------- generated syncs

# One row per (symbol, period): None (no row) or (which date, estimate, company name variant).
row = st.none() | st.tuples(st.integers(0, 1), st.sampled_from(["1.00", "1.5", None]), st.integers(0, 1))
snapshot = st.fixed_dictionaries({(symbol, period): row for symbol in SYMBOLS for period in PERIODS})


def records_of(rows: dict[tuple[str, str], Any]) -> list[EarningsRecord]:
    records = []
    for (symbol, period), chosen in sorted(rows.items()):
        if chosen is None:
            continue
        date, estimate, name = chosen
        company = f"{symbol} Corp{' Inc' if name else ''}"
        records.append(EarningsRecord(symbol, PERIODS[period][date], company, period, estimate, "USD"))
    return records


@dataclass(frozen=True)
class Message:
    sync: int
    body: str


def messages_of(syncs: list[list[EarningsRecord]]) -> list[Message]:
    """Each sync's records in messages, as the producer packs them (a symbol's rows stay together)."""
    found = []
    for number, records in enumerate(syncs):
        groups = [list(group) for _, group in itertools.groupby(records, key=lambda r: r.asset_symbol)]
        sync_id = sync_id_for(SYNCED_AT[number], number)
        for body, _ in build_messages(groups, sync_id, SYNCED_AT[number], max_records=RECORDS_PER_MESSAGE):
            found.append(Message(number, body))
    return found


@dataclass(frozen=True)
class Delivery:
    """One delivery of message `index`; `replayed` (a bit mask of its records) makes it a DLQ replay
    of those records, with the failure attributes a DLQ message carries."""

    index: int
    replayed: int = 0


@st.composite
def scenario(draw: Any) -> tuple[list[list[EarningsRecord]], list[Delivery]]:
    count = draw(st.integers(2, 3))
    syncs = [records_of(draw(snapshot)) for _ in range(count)]
    messages = messages_of(syncs)
    order = draw(st.permutations(range(len(messages))))
    deliveries = [Delivery(i) for i in order]
    if messages:
        extras = draw(
            st.lists(
                st.tuples(
                    st.integers(0, len(messages) - 1),
                    st.integers(0, len(deliveries)),
                    st.integers(0, 2**RECORDS_PER_MESSAGE - 1),
                ),
                max_size=4,
            )
        )
        for index, where, mask in extras:  # mask 0: a duplicate delivery; else a replay of those records
            deliveries.insert(where, Delivery(index, mask))
    return syncs, deliveries


# --------------------------------------------------------------------------- the pipeline under test


class Pipeline:
    """A fresh table with a stream, the real consumer in front of it and the real stream processing behind."""

    def __init__(self, env: dict[str, Any], write_mode: WriteMode) -> None:
        self.client = env["dynamodb"]
        self.name = f"conflicts-{next(_table_numbers)}"
        description = self.client.create_table(
            TableName=self.name,
            KeySchema=[{"AttributeName": "asset_symbol", "KeyType": "HASH"}, {"AttributeName": "earnings_date", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "asset_symbol", "AttributeType": "S"},
                {"AttributeName": "earnings_date", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]
        self.streams = boto3.client("dynamodbstreams", region_name="us-east-1", endpoint_url=env["endpoint"])
        arn = description["LatestStreamArn"]
        (shard,) = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        self.iterator = self.streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        self.table = CalendarTable(self.client, self.name)
        self.consumer = MessageConsumer(self.table, env["sqs"], env["resources"].dlq_url, max_receive_count=5, write_mode=write_mode)
        self.tally = ConsumerTally()
        self.restored = 0  # regressions the stream had to repair: sequential delivery must need none

    def deliver(self, message: Message, number: int, replayed: int) -> None:
        body, attributes = message.body, {}
        if replayed:
            body, attributes = dlq_replay(message.body, replayed)
        self.consumer.process(body, MessageContext(f"m-{number}", 1, attributes), self.tally)
        self.settle()

    def settle(self) -> None:
        """What the stream consumer does with the changes just made, and then with its own changes."""
        records = self._new_stream_records()
        while records:
            processor, tally = StreamProcessor(self.table), StreamTally()
            for record in records:
                processor.process(record, tally)
            self.restored += tally.regressions_restored
            changed = tally.superseded_removed + tally.regressions_restored
            records = self._new_stream_records() if changed else []

    def _new_stream_records(self) -> list[dict[str, Any]]:
        response = self.streams.get_records(ShardIterator=self.iterator, Limit=1000)
        self.iterator = response["NextShardIterator"]
        return response["Records"]

    def final(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every item: its content and bookkeeping (lastSyncDate, sync_id)."""
        return {plain_key(i): i for i in map(item_to_plain, self.table.all_items())}

    def drop(self) -> None:
        self.client.delete_table(TableName=self.name)


def dlq_replay(body: str, mask: int) -> tuple[str, dict[str, Any]]:
    """Records of `body` as they come back from the DLQ: the DeadLetter the consumer writes for them,
    turned back into a sync message by the replay code, with the attributes a replay carries."""
    envelope = decode_envelope(body)
    chosen = [i for i in range(len(envelope.records)) if mask >> i & 1] or [0]
    letter = dlq.DeadLetter(
        sync_id=envelope.sync_id,
        synced_at=envelope.synced_at,
        records=[envelope.records[i] for i in chosen],
        failures=[dlq.RecordFailure(n, "injected") for n in range(len(chosen))],
        seq=envelope.seq,
        positions=chosen,
    )
    attributes = dlq.failure_attributes("poison", "injected", sync_id=envelope.sync_id, receive_count=1)
    received = parse_message(
        {"MessageId": "dlq-1", "ReceiptHandle": "r", "Body": msgspec.json.encode(letter).decode(), "MessageAttributes": attributes}
    )
    return replay_body(received), replay_attributes(received)


# --------------------------------------------------------------------------- the property


def in_order_keys(syncs: list[list[EarningsRecord]]) -> set[tuple[str, str]]:
    """In order, each (symbol, fiscal period) keeps the date of the newest sync that lists it."""
    latest = {(r.asset_symbol, r.fiscal_date_ending): r.key for records in syncs for r in records}
    return set(latest.values())


@pytest.mark.parametrize("write_mode", ["batch", "conditional"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=scenario())
def test_any_interleaving_ends_as_in_order_delivery(
    aws: dict[str, Any], write_mode: WriteMode, case: tuple[list[list[EarningsRecord]], list[Delivery]]
) -> None:
    syncs, deliveries = case
    messages = messages_of(syncs)
    in_order = Pipeline(aws, write_mode)
    interleaved = Pipeline(aws, write_mode)
    try:
        for number, message in enumerate(messages):
            in_order.deliver(message, number, 0)
        for number, delivery in enumerate(deliveries):
            interleaved.deliver(messages[delivery.index], number, delivery.replayed)
        expected = in_order.final()
        assert interleaved.final() == expected
        assert interleaved.tally.dlq_sends == in_order.tally.dlq_sends == 0
        assert interleaved.restored == in_order.restored == 0  # the conflict rules alone kept older syncs out
        # the reference itself: one date per period, carrying the newest sync that lists it
        assert set(expected) == in_order_keys(syncs)
        newest = {r.key: n for n, records in enumerate(syncs) for r in records}
        for key, item in expected.items():
            number = newest[key]
            assert (item["lastSyncDate"], item["sync_id"]) == (SYNCED_AT[number], sync_id_for(SYNCED_AT[number], number))
    finally:
        in_order.drop()
        interleaved.drop()
