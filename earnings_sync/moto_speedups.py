"""Make the embedded emulator's base-table Query cost one partition, as DynamoDB's does.

moto 5.2.5 answers every Query by sorting *all* items of the table (`Table.all_items`) and then
keeping the partition asked for, so a Query costs O(table) instead of O(partition). The stream
consumer runs one Query per new or changed item (the symbol's few items), which made the first
sync of the bundled 10k-row snapshot take many minutes locally instead of about a minute.

`install()` narrows `all_items` to the queried partition for the duration of a base-table Query
(index queries, scans and everything else are untouched). The candidate set is exactly the items
moto's own filter would keep, so results, ordering, paging and filters are unchanged. The override
is per thread and per table, so concurrent requests on the threaded server do not see it.
"""

from __future__ import annotations

import threading
from typing import Any

_overrides = threading.local()
_INDEX_NAME_POSITION = 6  # Table.query(hash_key, range_comparison, range_objs, limit, start_key, forward, projection, index_name, ...)


def install() -> bool:
    """Patch moto's Table once; returns False when it was already patched or moto's shape differs."""
    try:
        from moto.dynamodb.models.table import Table
    except ImportError:  # pragma: no cover - moto is only needed for local runs
        return False
    if getattr(Table.query, "_partition_scoped", False):
        return False
    original_query = Table.query
    original_all_items = Table.all_items

    def all_items(self: Any) -> list[Any]:
        partition = getattr(_overrides, "by_table", {}).get(id(self))
        return partition if partition is not None else original_all_items(self)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[_INDEX_NAME_POSITION] if len(args) > _INDEX_NAME_POSITION else kwargs.get("index_name")
        if index_name or hash_key is None or not self.range_key_attr:
            return original_query(self, hash_key, *args, **kwargs)
        by_table = getattr(_overrides, "by_table", None)
        if by_table is None:
            by_table = _overrides.by_table = {}
        by_table[id(self)] = list(self.items.get(hash_key, {}).values())
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            by_table.pop(id(self), None)

    query._partition_scoped = True  # type: ignore[attr-defined]
    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]
    return True
