"""Take the embedded emulator's hot spots from O(table) or O(queue) to what the real service costs.

moto 5.2.5 is written for correctness on small fixtures, and a few of its paths scale badly with the
10k-100k items and hundreds of messages of a real sync. Each patch below keeps moto's answers exactly
(the tests compare patched and unpatched responses) and only removes work; docs/moto-patches.md writes
each one up as a change to moto itself, with its measured cost:

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
  serializer, which looks every value up by several candidate names: about a millisecond per
  item or stream record. moto already holds these results as plain dicts in wire form; the patch
  walks them along the same output shape directly and hands timestamps, blobs and anything not
  plain (objects, snake_case keys, renamed members) to the serializer's own code; operations whose
  output has a member the picker could read from another member's key keep the serializer.
- **SQS receipt handles** are 185 letters drawn one `random.choice` call at a time: 0.16 ms per
  message received (0.035 ms in one `choices` call: same alphabet, same length, moto's own seedable
  random), 1.2 s over the ~10k change events of a first sync read back from the local tap.
- **EventBridge rule targets** get each event through an input template whose eight JSONPath
  expressions moto parses again (with a yacc parser) for every event and every target: about 8 ms
  per event delivered, 80 s for a first sync's events. The patch parses each expression once; a
  parsed expression is only read afterwards.

The patches rely on moto's internals, so they are fenced: `installed()` patches only the pinned moto
version, and only when every function they replace or call still has the signature they were written
against; otherwise moto stays stock (slower, same answers) and the context says why in one line. The
patches last as long as the outermost `installed()` block (nested blocks, from any thread, count) and
every attribute is moto's own again when it ends. `moto_as_shipped()` puts moto's own code back for a
while, whatever is installed: how the tests compare both answers. Both swap class attributes, so they
are entered and left while no request is in flight (the emulator stops its server before leaving).

Overrides that narrow what a call sees are per thread and per table, so concurrent requests on the
threaded server do not see them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

PINNED_MOTO_VERSION = "5.2.5"  # the `local` and `dev` extras in pyproject.toml pin the same (tested)
_ON_STOCK_MOTO = "running on stock moto (slower, same answers)"
_INDEX_NAME_POSITION = 6  # Table.query(hash_key, range_comparison, range_objs, limit, start_key, forward, projection, index_name, ...)


# -- The fence: what the patches were written against ------------------------------------------------
@dataclass(frozen=True)
class _Expected:
    """A moto function or property a patch replaces or calls, with the parameters it was written against."""

    module: str
    owner: str | None  # a class of `module`; None for a module-level function
    name: str
    parameters: tuple[str, ...] | None  # None: a property
    replaced: bool = False

    @property
    def path(self) -> str:
        return ".".join(part for part in (self.module, self.owner, self.name) if part)


_TABLE, _SQS, _SERIALIZE = "moto.dynamodb.models.table", "moto.sqs.models", "moto.core.serialize"
_EXPECTED = (
    _Expected(_TABLE, "Table", "all_items", ("self",), replaced=True),
    _Expected(
        _TABLE,
        "Table",
        "query",
        (
            "self", "hash_key", "range_comparison", "range_objs", "limit", "exclusive_start_key", "scan_index_forward",
            "projection_expressions", "index_name", "consistent_read", "filter_expression", "hash_key_conditions",
            "range_key_conditions", "filter_kwargs",
        ),
        replaced=True,
    ),
    _Expected(
        _TABLE,
        "Table",
        "scan",
        (
            "self", "filters", "limit", "exclusive_start_key", "filter_expression", "index_name", "consistent_read",
            "projection_expression", "segments",
        ),
        replaced=True,
    ),
    _Expected(_TABLE, "Table", "all_indexes", ("self",)),
    _Expected("moto.dynamodb.models.dynamo_type", "DynamoType", "cast_value", None),
    _Expected(_SQS, "Queue", "attributes", None, replaced=True),
    _Expected(
        _SQS,
        "SQSBackend",
        "send_message",
        (
            "self", "queue_name", "message_body", "message_attributes", "delay_seconds", "deduplication_id", "group_id",
            "system_attributes", "validate_group_id",
        ),
        replaced=True,
    ),
    _Expected(_SQS, "SQSBackend", "is_message_valid_based_on_retention_period", ("self", "queue_name", "message"), replaced=True),
    _Expected(_SQS, "SQSBackend", "get_queue", ("self", "queue_name")),
    _Expected(_SQS, None, "generate_receipt_handle", (), replaced=True),
    _Expected("moto.moto_api._internal", "mock_random", "choices", ("self", "population", "weights", "cum_weights", "k")),
    _Expected("jsonpath_ng.ext", None, "parse", ("path", "debug"), replaced=True),
    _Expected("moto.core.utils", None, "unix_time", ("dt",)),
    _Expected(_SERIALIZE, "JSONSerializer", "_serialize_result", ("self", "resp", "result"), replaced=True),
    _Expected(_SERIALIZE, "JSONSerializer", "_serialized_result_to_response", ("self", "resp", "result", "shape", "serialized_result")),
    _Expected(_SERIALIZE, "JSONSerializer", "_serialize", ("self", "serialized", "value", "shape", "key")),
)


def _installed_moto_version() -> str | None:
    try:
        return importlib.metadata.version("moto")
    except importlib.metadata.PackageNotFoundError:
        return None


def refusal() -> str | None:
    """Why the speedups will not patch the installed moto, in one line; None when they will."""
    version = _installed_moto_version()
    if version is None:
        return "moto is not installed (the embedded emulator needs the `local` extra)"
    if version != PINNED_MOTO_VERSION:
        return f"moto {version} is installed but the speedups are written for moto {PINNED_MOTO_VERSION} (the pinned version): {_ON_STOCK_MOTO}"
    with _lock:
        problem = _shape_problem()
    if problem is not None:
        return f"moto {version} is not the shape the speedups are written for ({problem}): {_ON_STOCK_MOTO}"
    return None


def _shape_problem() -> str | None:
    """The first expected function or property that is missing or takes other parameters (called with the lock held)."""
    for expected in _EXPECTED:
        try:
            module = importlib.import_module(expected.module)
        except ImportError as error:
            return f"{expected.module} cannot be imported: {type(error).__name__}"
        try:
            found = _moto_own(getattr(module, expected.owner) if expected.owner else module, expected.name)
        except AttributeError:
            return f"{expected.path} is missing"
        if expected.parameters is None:
            if not isinstance(found, property):
                return f"{expected.path} is not a property"
            continue
        try:
            parameters = tuple(inspect.signature(found).parameters)
        except (TypeError, ValueError):
            return f"{expected.path} is not a function"
        if parameters != expected.parameters:
            return f"{expected.path} takes ({', '.join(parameters)}), not ({', '.join(expected.parameters)})"
    return None


def patched_attributes() -> list[tuple[Any, str]]:
    """Every (class or module, attribute name) the speedups replace while installed."""
    patched = []
    for expected in _EXPECTED:
        if expected.replaced:
            module = importlib.import_module(expected.module)
            patched.append((getattr(module, expected.owner) if expected.owner else module, expected.name))
    return patched


# -- Installing and restoring -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Patch:
    """One replaced attribute and what moto itself defines there, to put back."""

    owner: Any  # a class, or a module for a module-level function
    name: str
    replacement: Any
    moto_own: Any  # as defined, unbound: a function, a property
    defined_on_owner: bool  # False: inherited from a base class, so restoring deletes the override

    @classmethod
    def of(cls, owner: Any, name: str, replacement: Any) -> _Patch:
        return cls(owner, name, replacement, inspect.getattr_static(owner, name), name in vars(owner))

    def apply(self) -> None:
        setattr(self.owner, self.name, self.replacement)

    def restore(self) -> None:
        if self.defined_on_owner:
            setattr(self.owner, self.name, self.moto_own)
        else:
            delattr(self.owner, self.name)


_lock = threading.RLock()
_installations = 0  # open installed() blocks, from any thread
_shipped = 0  # open moto_as_shipped() blocks
_applied: list[_Patch] | None = None
_overrides = threading.local()  # per-thread narrowing of what a patched call sees


def _moto_own(owner: Any, name: str) -> Any:
    """What moto defines for `owner.name`, patched or not (called with the lock held)."""
    for patch in _applied or ():
        if patch.owner is owner and patch.name == name:
            return patch.moto_own
    return inspect.getattr_static(owner, name)


def _settle() -> None:
    """Patch or restore moto to match the open blocks (called with the lock held)."""
    global _applied
    wanted = _installations > 0 and _shipped == 0
    if wanted and _applied is None:
        patches = [patch for build in _PATCH_BUILDERS for patch in build()]  # all built before any is applied
        for patch in patches:
            patch.apply()
        _applied = patches
    elif not wanted and _applied is not None:
        for patch in reversed(_applied):
            patch.restore()
        _applied = None


def active() -> bool:
    """Whether moto runs patched right now."""
    return _applied is not None


@contextlib.contextmanager
def installed() -> Iterator[str | None]:
    """Patch moto for the block; yields None, or the one-line reason it stays stock (see `refusal`).

    Blocks nest and may be open in several threads at once: moto is patched while any is open and
    is moto's own again, attribute for attribute, when the last one ends.
    """
    global _installations
    with _lock:
        reason = refusal()
        if reason is None:
            _installations += 1
            try:
                _settle()
            except BaseException:
                _installations -= 1
                raise
    if reason is not None:
        yield reason
        return
    try:
        yield None
    finally:
        with _lock:
            _installations -= 1
            _settle()


@contextlib.contextmanager
def moto_as_shipped() -> Iterator[None]:
    """Moto's own code for the block, whatever is installed: how the tests compare both answers."""
    global _shipped
    with _lock:
        _shipped += 1
        _settle()
    try:
        yield
    finally:
        with _lock:
            _shipped -= 1
            _settle()


@contextlib.contextmanager
def _all_items_are(table: Any, items: list[Any]) -> Iterator[None]:
    """`table.all_items()` answers `items` in this thread until the block ends (see `_dynamodb_patches`)."""
    by_table = getattr(_overrides, "by_table", None)
    if by_table is None:
        by_table = _overrides.by_table = {}
    by_table[id(table)] = items
    try:
        yield
    finally:
        by_table.pop(id(table), None)


# -- DynamoDB Query and Scan ------------------------------------------------------------------------
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


def _native_key(item: Any) -> tuple[Any, Any]:
    """The order moto's DynamoType comparisons give string and number keys, without them."""
    return (item.hash_key.cast_value, item.range_key.cast_value)


def _dynamodb_patches() -> list[_Patch]:
    """Query reads the queried partition or index key only; Scan sorts by native key values (both
    through one `all_items` override)."""
    from bisect import bisect_right

    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    moto_all_items, moto_query, moto_scan = Table.all_items, Table.query, Table.scan

    def all_items(self: Any) -> list[Any]:
        partition = getattr(_overrides, "by_table", {}).get(id(self))
        return partition if partition is not None else moto_all_items(self)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[_INDEX_NAME_POSITION] if len(args) > _INDEX_NAME_POSITION else kwargs.get("index_name")
        if index_name:
            candidates = _index_candidates(self, index_name, hash_key)
        elif hash_key is not None and self.range_key_attr:
            candidates = list(self.items.get(hash_key, {}).values())
        else:
            candidates = None
        if candidates is None:
            return moto_query(self, hash_key, *args, **kwargs)
        with _all_items_are(self, candidates):
            return moto_query(self, hash_key, *args, **kwargs)

    def scan(self: Any, filters: Any, limit: Any, exclusive_start_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[1] if len(args) > 1 else kwargs.get("index_name")
        key_types = {self.hash_key_type, self.range_key_type}
        if index_name or not self.range_key_attr or not key_types <= {"S", "N"}:
            return moto_scan(self, filters, limit, exclusive_start_key, *args, **kwargs)
        ordered = [item for partition in self.items.values() for item in partition.values()]
        ordered.sort(key=_native_key)
        if exclusive_start_key is not None:
            try:
                start = (DynamoType(exclusive_start_key[self.hash_key_attr]).cast_value, DynamoType(exclusive_start_key[self.range_key_attr]).cast_value)
            except (KeyError, TypeError):
                return moto_scan(self, filters, limit, exclusive_start_key, *args, **kwargs)
            ordered = ordered[bisect_right(ordered, start, key=_native_key) :]
        with _all_items_are(self, ordered):
            return moto_scan(self, filters, limit, None, *args, **kwargs)

    return [_Patch.of(Table, "all_items", all_items), _Patch.of(Table, "query", query), _Patch.of(Table, "scan", scan)]


# -- SQS --------------------------------------------------------------------------------------------
def _sqs_patches() -> list[_Patch]:
    """SendMessage and ReceiveMessage read the one queue attribute they need, not all of them."""
    from moto.core.utils import unix_time
    from moto.sqs.models import Queue, SQSBackend

    moto_attributes = inspect.getattr_static(Queue, "attributes").fget
    moto_send_message = SQSBackend.send_message

    def attributes(self: Any) -> dict[str, Any]:
        if getattr(_overrides, "sending", False):  # what send_message and add_message read, and no count
            return {"ContentBasedDeduplication": str(bool(self.content_based_deduplication)).lower()} if self.fifo_queue else {}
        return moto_attributes(self)

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        _overrides.sending = True
        try:
            return moto_send_message(self, *args, **kwargs)
        finally:
            _overrides.sending = False

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention_period = self.get_queue(queue_name).message_retention_period
        return bool(retention_period + message.sent_timestamp / 1000 > unix_time())

    return [
        _Patch.of(Queue, "attributes", property(attributes)),
        _Patch.of(SQSBackend, "send_message", send_message),
        _Patch.of(SQSBackend, "is_message_valid_based_on_retention_period", is_message_valid_based_on_retention_period),
    ]


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


def _member_aliases(parent: Any, name: str, member: Any) -> set[str]:
    """Every key moto's XFormedAttributePicker may read a member from in a dict: its own name, the
    aliases its providers give (shape name, prefix-less name, serialization name) and their snake_case forms."""
    from botocore import xform_name

    keys = {name}
    if member.serialization.get("name"):
        keys.add(member.serialization["name"])
    if member.type_name in ("list", "structure") and member.name not in parent.members:
        keys.add(member.name)
    if name.lower().startswith(parent.name.lower()) and name[len(parent.name) :] not in parent.members:  # ShapePrefixAlias
        keys.add(name[len(parent.name) :])
    if name.lower().startswith("dict"):  # ClassPrefixAlias, the value being a dict
        keys.add(name[len("dict") :])
    return keys | {xform_name(key) for key in keys}


def _picks_own_keys(shape: Any) -> bool:
    """Whether, for every structure under `shape`, no member can be read from another member's key:
    then moto's picker finds a plain dict's own key or nothing, as `_encode` does."""
    seen: set[str] = set()
    pending = [shape]
    while pending:
        current = pending.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        if current.type_name == "structure":
            names = set(current.members)
            for name, member in current.members.items():
                if _member_aliases(current, name, member) & (names - {name}):
                    return False
                pending.append(member)
        elif current.type_name == "list":
            pending.append(current.member)
        elif current.type_name == "map":
            pending.append(current.value)
    return True


_own_keys_by_operation: dict[tuple[str, str], bool] = {}


def _json_response_patches() -> list[_Patch]:
    """JSON responses of plain dicts are encoded along the output shape, not through the value picker."""
    from moto.core.serialize import JSONSerializer

    moto_serialize_result = JSONSerializer._serialize_result

    def picks_own_keys(serializer: Any, shape: Any) -> bool:
        operation = (serializer.service_model.service_name, serializer.operation_model.name)
        answer = _own_keys_by_operation.get(operation)
        if answer is None:
            answer = _own_keys_by_operation[operation] = _picks_own_keys(shape)
        return answer

    def _serialize_result(self: Any, resp: Any, result: Any) -> Any:
        shape = self.operation_model.output_shape
        if (
            shape is not None
            and type(result) is dict
            and not getattr(self._value_picker, "response_transformers", None)
            and picks_own_keys(self, shape)
        ):
            try:
                encoded = _encode(self, result, shape)
            except _Fallback:
                pass
            else:
                return self._serialized_result_to_response(resp, result, shape, encoded)
        return moto_serialize_result(self, resp, result)

    return [_Patch.of(JSONSerializer, "_serialize_result", _serialize_result)]


# -- SQS receipt handles and EventBridge rule targets ---------------------------------------------------
def _receipt_handle_patches() -> list[_Patch]:
    """Receipt handles drawn in one `choices` call: same alphabet, same length, moto's seedable random."""
    import string

    import moto.sqs.models
    from moto.moto_api._internal import mock_random

    def generate_receipt_handle() -> str:
        return "".join(mock_random.choices(string.ascii_lowercase, k=185))

    return [_Patch.of(moto.sqs.models, "generate_receipt_handle", generate_receipt_handle)]  # what Message.mark_received calls


def _jsonpath_patches() -> list[_Patch]:
    """Each JSONPath expression of a rule target's input template parsed once (moto imports `parse`
    from the module for every event it delivers)."""
    import functools

    import jsonpath_ng.ext

    moto_parse = jsonpath_ng.ext.parse
    parsed_once = functools.lru_cache(maxsize=256)(moto_parse)

    def parse(path: Any, debug: Any = None) -> Any:
        return parsed_once(path) if debug is None and type(path) is str else moto_parse(path, debug)

    return [_Patch.of(jsonpath_ng.ext, "parse", parse)]


_PATCH_BUILDERS: tuple[Callable[[], list[_Patch]], ...] = (
    _dynamodb_patches, _sqs_patches, _json_response_patches, _receipt_handle_patches, _jsonpath_patches
)
