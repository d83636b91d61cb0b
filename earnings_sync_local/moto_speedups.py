"""Take the embedded emulator's hot spots from O(table) or O(queue) to what the real service costs.

moto 5.2.5 is written for correctness on small fixtures, and a few of its paths scale badly with the
10k-100k items and hundreds of messages of a real sync. Each patch below keeps moto's answers exactly
(the tests compare patched and unpatched responses) and only removes work:

- **Query on the base table** sorts *all* items of the table (`Table.all_items`) and then keeps the
  partition asked for. The patch hands it the queried partition only.
- **Query on an index** sorts all items by the base table's key and then sorts the matches again by
  the index key, which is a total order of its own; the patch hands it the items whose index hash key
  matches, unsorted.
- **Scan on the base table** sorts all items with moto's Python-level key comparisons on every
  page, then walks past the pages already returned. The patch sorts by the keys' native values
  (the same order for string and number keys) and starts right after `ExclusiveStartKey`.
- **SQS ReceiveMessage** checks each delivered message's retention by computing *every* queue
  attribute (three times), counting the whole queue for `ApproximateNumberOfMessages*` each time;
  **SendMessage** computes them all to read `ContentBasedDeduplication`. The patch reads the one
  attribute needed.
- **JSON-protocol responses** (DynamoDB, DynamoDB Streams) go through moto's generic, reflective
  serializer, which looks every value up by several candidate names: about half a millisecond per
  item or stream record. moto already holds these results as plain dicts in wire form; the patch
  walks them along the same output shape directly and hands timestamps, blobs and anything not
  plain (objects, snake_case keys, renamed members) to the serializer's own code.
- **SQS receipt handles** are 185 letters drawn one `random.choice` call at a time: over a
  millisecond per message received. The patch draws them in one `choices` call (same alphabet, same
  length, from moto's own seedable random).
- **EventBridge rule targets** get each event through an input template whose JSONPath expressions
  moto parses again (with a yacc parser) for every event and every target: about 13 ms per event
  delivered. The patch parses each expression once; a parsed expression is only read afterwards.

Overrides that narrow what a call sees are per thread and per table, so concurrent requests on the
threaded server do not see them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_overrides = threading.local()
_INDEX_NAME_POSITION = 6  # Table.query(hash_key, range_comparison, range_objs, limit, start_key, forward, projection, index_name, ...)
_enabled = True  # off only while a test compares the patched answers with moto's own


def install() -> bool:
    """Patch moto once; returns False when everything was already patched or moto's shape differs."""
    try:
        import moto.dynamodb.models.table  # noqa: F401
    except ImportError:  # pragma: no cover - moto is only needed for local runs
        return False
    installed = [
        _install_query(), _install_scan(), _install_sqs(), _install_receipt_handles(), _install_json_results(), _install_jsonpath()
    ]  # Scan needs Query's
    return any(installed)


@contextlib.contextmanager
def _all_items_are(table: Any, items: list[Any]) -> Iterator[None]:
    """`table.all_items()` answers `items` in this thread until the block ends (see `_install_query`)."""
    by_table = getattr(_overrides, "by_table", None)
    if by_table is None:
        by_table = _overrides.by_table = {}
    by_table[id(table)] = items
    try:
        yield
    finally:
        by_table.pop(id(table), None)


# -- DynamoDB Query ---------------------------------------------------------------------------------
def _index_candidates(table: Any, index_name: str, hash_key: Any) -> list[Any] | None:
    """Items whose index hash key equals `hash_key`, or None when the index is not a one-hash-key
    index this patch understands (moto then reads the whole table, as it always did)."""
    index = next((i for i in table.all_indexes() if i.name == index_name), None)
    if index is None or hash_key is None:
        return None
    hash_keys = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
    if len(hash_keys) != 1:
        return None
    attribute = hash_keys[0]
    items = (item for partition in table.items.values() for item in (partition.values() if table.range_key_attr else (partition,)))
    if hash_key.type == "S":  # a string equals a string only: compare the raw values, no casting
        wanted = hash_key.value
        return [item for item in items if (value := item.attrs.get(attribute)) is not None and value.type == "S" and value.value == wanted]
    return [item for item in items if item.attrs.get(attribute) == hash_key]


def _install_query() -> bool:
    from moto.dynamodb.models.table import Table

    if getattr(Table.query, "_partition_scoped", False):
        return False
    original_query = Table.query
    original_all_items = Table.all_items

    def all_items(self: Any) -> list[Any]:
        partition = getattr(_overrides, "by_table", {}).get(id(self))
        return partition if partition is not None else original_all_items(self)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[_INDEX_NAME_POSITION] if len(args) > _INDEX_NAME_POSITION else kwargs.get("index_name")
        if not _enabled:
            candidates = None
        elif index_name:
            candidates = _index_candidates(self, index_name, hash_key)
        elif hash_key is not None and self.range_key_attr:
            candidates = list(self.items.get(hash_key, {}).values())
        else:
            candidates = None
        if candidates is None:
            return original_query(self, hash_key, *args, **kwargs)
        with _all_items_are(self, candidates):
            return original_query(self, hash_key, *args, **kwargs)

    query._partition_scoped = True  # type: ignore[attr-defined]
    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]
    return True


def _native_key(item: Any) -> tuple[Any, Any]:
    """The order moto's DynamoType comparisons give string and number keys, without them."""
    return (item.hash_key.cast_value, item.range_key.cast_value)


def _install_scan() -> bool:
    from bisect import bisect_right

    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    if getattr(Table.scan, "_native_order", False):
        return False
    original_scan = Table.scan

    def scan(self: Any, filters: Any, limit: Any, exclusive_start_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[1] if len(args) > 1 else kwargs.get("index_name")
        key_types = {self.hash_key_type, self.range_key_type}
        if not _enabled or index_name or not self.range_key_attr or not key_types <= {"S", "N"}:
            return original_scan(self, filters, limit, exclusive_start_key, *args, **kwargs)
        ordered = [item for partition in self.items.values() for item in partition.values()]
        ordered.sort(key=_native_key)
        if exclusive_start_key is not None:
            try:
                start = (DynamoType(exclusive_start_key[self.hash_key_attr]).cast_value, DynamoType(exclusive_start_key[self.range_key_attr]).cast_value)
            except (KeyError, TypeError):
                return original_scan(self, filters, limit, exclusive_start_key, *args, **kwargs)
            ordered = ordered[bisect_right(ordered, start, key=_native_key) :]
        with _all_items_are(self, ordered):  # the Query patch's all_items override
            return original_scan(self, filters, limit, None, *args, **kwargs)

    scan._native_order = True  # type: ignore[attr-defined]
    Table.scan = scan  # type: ignore[method-assign]
    return True


# -- SQS --------------------------------------------------------------------------------------------
def _install_sqs() -> bool:
    from moto.core.utils import unix_time
    from moto.sqs.models import Queue, SQSBackend

    if getattr(SQSBackend.send_message, "_one_attribute", False):
        return False
    original_attributes = Queue.attributes.fget
    original_send_message = SQSBackend.send_message

    def attributes(self: Any) -> dict[str, Any]:
        if getattr(_overrides, "sending", False):  # what send_message and add_message read, and no count
            return {"ContentBasedDeduplication": str(bool(self.content_based_deduplication)).lower()} if self.fifo_queue else {}
        return original_attributes(self)

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        _overrides.sending = True
        try:
            return original_send_message(self, *args, **kwargs)
        finally:
            _overrides.sending = False

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention_period = self.get_queue(queue_name).message_retention_period
        return bool(retention_period + message.sent_timestamp / 1000 > unix_time())

    send_message._one_attribute = True  # type: ignore[attr-defined]
    Queue.attributes = property(attributes)  # type: ignore[method-assign,assignment]
    SQSBackend.send_message = send_message  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
    return True


def _install_receipt_handles() -> bool:
    import string

    import moto.sqs.models
    from moto.moto_api._internal import mock_random

    if getattr(moto.sqs.models.generate_receipt_handle, "_one_draw", False):
        return False
    original = moto.sqs.models.generate_receipt_handle

    def generate_receipt_handle() -> str:
        if not _enabled:
            return original()
        return "".join(mock_random.choices(string.ascii_lowercase, k=185))

    generate_receipt_handle._one_draw = True  # type: ignore[attr-defined]
    moto.sqs.models.generate_receipt_handle = generate_receipt_handle  # what Message.mark_received calls
    return True


# -- EventBridge targets ------------------------------------------------------------------------------
def _install_jsonpath() -> bool:
    import functools

    import jsonpath_ng.ext

    if getattr(jsonpath_ng.ext.parse, "_parsed_once", False):
        return False
    original_parse = jsonpath_ng.ext.parse
    parsed_once = functools.lru_cache(maxsize=256)(original_parse)

    def parse(path: Any, *args: Any, **kwargs: Any) -> Any:
        if _enabled and not args and not kwargs and type(path) is str:
            return parsed_once(path)
        return original_parse(path, *args, **kwargs)

    parse._parsed_once = True  # type: ignore[attr-defined]
    jsonpath_ng.ext.parse = parse  # moto imports it from the module on every event
    return True


# -- JSON-protocol responses (DynamoDB, DynamoDB Streams) ------------------------------------------
class _Fallback(Exception):
    """The value is not of the plain shape the direct encoder handles: use moto's serializer."""


def _encode(serializer: Any, value: Any, shape: Any) -> Any:
    """What moto's JSON serializer writes for `value`, for values that are plain dicts, lists and
    strings keyed by the model's own member names; anything else raises `_Fallback`."""
    if shape.serialization.get("name"):
        raise _Fallback
    kind = shape.type_name
    if kind == "structure":
        if shape.is_document_type:
            return value
        members = shape.members
        if type(value) is not dict or not value.keys() <= members.keys():
            raise _Fallback  # objects and snake_case keys need moto's attribute picker
        if len(value) == 1:  # an AttributeValue: the common case, in the same member order trivially
            ((name, item),) = value.items()
            return {} if item is None else {name: _encode(serializer, item, members[name])}
        return {name: _encode(serializer, value[name], member) for name, member in members.items() if value.get(name) is not None}
    if kind == "list":
        if type(value) is not list or None in value:
            raise _Fallback
        member = shape.member
        return [_encode(serializer, item, member) for item in value]
    if kind == "map":
        if type(value) is not dict or None in value.values():
            raise _Fallback
        member = shape.value
        return {key: _encode(serializer, item, member) for key, item in value.items()}
    if (kind == "string" and type(value) is str) or (kind == "boolean" and type(value) is bool) or (kind in ("integer", "long") and type(value) is int):
        return value
    wrapper: dict[str, Any] = {}  # timestamps, blobs, doubles, enums: the serializer's own code
    serializer._serialize(wrapper, value, shape, "value")
    if "value" not in wrapper:
        raise _Fallback
    return wrapper["value"]


def _install_json_results() -> bool:
    from moto.core.serialize import JSONSerializer

    if getattr(JSONSerializer._serialize_result, "_direct", False):
        return False
    original_serialize_result = JSONSerializer._serialize_result

    def _serialize_result(self: Any, resp: Any, result: Any) -> Any:
        shape = self.operation_model.output_shape
        if _enabled and shape is not None and type(result) is dict and not getattr(self._value_picker, "response_transformers", None):
            try:
                encoded = _encode(self, result, shape)
            except _Fallback:
                pass
            else:
                return self._serialized_result_to_response(resp, result, shape, encoded)
        return original_serialize_result(self, resp, result)

    _serialize_result._direct = True  # type: ignore[attr-defined]
    JSONSerializer._serialize_result = _serialize_result  # type: ignore[method-assign]
    return True


@contextlib.contextmanager
def moto_as_shipped() -> Iterator[None]:
    """Query, Scan and serialize as moto does for a while: how the tests compare both answers."""
    global _enabled
    _enabled = False
    try:
        yield
    finally:
        _enabled = True
