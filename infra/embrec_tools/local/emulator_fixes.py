"""A contained fix of the embedded emulator (moto), applied by the local stack only, never in the layer.

moto's ``TransactWriteItems`` (5.2.x) backs up *every table a transaction touches* with ``copy.deepcopy`` once
per action, so it can roll back by swapping the copy in. One 100-action transaction on a table of n rows
costs 100 deep copies of n rows: the local ``POST /events`` slowed from ~30 to ~6 events/s and grew the
process by ~5 MB per event until the kernel killed it near 4,700 events (issue 14). DynamoDB itself does no
such thing, and embrec's write path (one conditional idempotency record + the event, all-or-nothing) is the
right one in AWS, so the fix belongs to the emulator, not to the application.

:func:`install` keeps moto's transaction logic (conditions, cancellation reasons, unicity checks) and replaces
only its backup: before the transaction, each *touched item* is copied (an undo log, O(actions), not
O(table)); the whole-table deep copy becomes a no-op; on any failure the undo log puts every touched item back
(and drops stream records the rolled-back writes produced). Transactions are also serialised with each other,
as DynamoDB isolates them.

It also answers DynamoDB's data-plane calls (:data:`FAST_OPERATIONS`) with the result dict as JSON, which is
what DynamoDB's JSON 1.0 protocol puts on the wire, instead of moto's model-driven serializer: that one
spends ~2.3 ms of CPU per returned item (a 50-event history query took ~120 ms in moto, 95% serialising;
issue 14's request path). The output is the same JSON (tests/integration/test_local_emulator.py compares
both for every operation listed); the control plane (CreateTable, DescribeTable ...) keeps moto's serializer.

And it builds a stored item's attributes with one size check instead of one per attribute: moto's
``LimitedSizeDict.__setitem__`` re-measures every attribute already set before adding the next, so an item
of n attributes costs O(n^2) ``size()`` calls (~0.25 ms for a 9-attribute history row, ~60% of moto's
``BatchWriteItem``; issue 14's bulk import). The check is the same (the item's total size against moto's
405,000-byte limit): sizes are never negative, so the last prefix is the largest and one check on the whole
item raises exactly when one of the per-attribute checks would have.

Finally, a ``Query`` reads only what it asks for. moto's ``Table.query`` starts from ``all_items()``, every
item of the table sorted by its key (O(n log n) ``DynamoType`` comparisons), and then keeps the partition it
wants: a user's 50-event history read cost ~0.2 s on a 2,000-row table and grew with every other user's
events, and each page of the rebuild's ``by_time`` window read re-sorted the whole table (the 100k-row
MovieLens window read did not finish). During a query, ``all_items()`` now hands moto only the candidates:
the queried partition of the table, or, on an index, the items whose index hash attributes hold the queried
string values; moto then filters, sorts, pages and projects them as before (its own checks still run on each
candidate, so a superset could not change an answer; tests compare answers with and without the fix).

Idempotent; a no-op for an external endpoint (LocalStack), which is not moto.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["FAST_OPERATIONS", "install", "installed"]

#: DynamoDB operations whose moto result dict is sent as is (verified equal to moto's serializer's output).
FAST_OPERATIONS = frozenset(
    {
        "GetItem", "PutItem", "UpdateItem", "Query", "Scan", "BatchGetItem", "BatchWriteItem",
        "TransactWriteItems",
    }
)  # fmt: skip

_LOCK = threading.Lock()
#: moto's item size limit (``LimitedSizeDict``: DynamoDB's 400 KB measured between 409 and 410 KB).
_MAX_ITEM_BYTES = 405_000
_MARK = "__embrec_undo_log__"


class _NoTableCopies:
    """Stands in for the ``copy`` module inside moto's DynamoDB backend: tables are not deep-copied.

    Every other object (a single item, for ``UpdateItem``'s old image) is copied as before.
    """

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if isinstance(value, self._table_type):
            return value  # the undo log restores what the transaction touched
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _undo_log(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
    """``(table, hash, range, item copy or None)`` for each item the transaction may write."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    entries = []
    for action in transact_items:
        op_type, op = next(iter(action.items()))
        table = backend.tables.get(op.get("TableName"))
        if table is None or op_type == "ConditionCheck":
            continue
        key = op.get("Item", {}) if op_type == "Put" else op.get("Key", {})
        if table.hash_key_attr not in key:
            continue  # moto refuses the action itself; nothing to undo
        hash_value = DynamoType(key[table.hash_key_attr])
        range_value = None
        if table.range_key_attr is not None:
            if table.range_key_attr not in key:
                continue
            range_value = DynamoType(key[table.range_key_attr])
        current = table.items.get(hash_value)
        if range_value is not None:
            current = current.get(range_value) if isinstance(current, dict) else None
        entries.append((table, hash_value, range_value, copy.deepcopy(current)))
    return entries


def _undo(entries: list[tuple[Any, Any, Any, Any]], streams: list[tuple[Any, int]]) -> None:
    for table, hash_value, range_value, original in reversed(entries):
        if range_value is None:
            if original is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = original
        else:
            partition = table.items[hash_value]
            if original is None:
                partition.pop(range_value, None)
            else:
                partition[range_value] = original
    for shard, length in streams:
        del shard.items[length:]


def _with_undo_log(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        with _LOCK:
            entries = _undo_log(self, transact_items)
            shards = {id(t.stream_shard): t.stream_shard for t, *_ in entries if t.stream_shard is not None}
            streams = [(shard, len(shard.items)) for shard in shards.values()]
            try:
                original(self, transact_items)
            except BaseException:
                _undo(entries, streams)
                raise

    setattr(transact_write_items, _MARK, True)
    return transact_write_items


def _fast_dynamodb_json(original: Callable[..., Any]) -> Callable[..., Any]:
    from moto.dynamodb.models.utilities import dynamo_json_dump

    @functools.wraps(original)
    def execute_result(self: Any, context: Any) -> Any:
        if (
            context.service_model.service_name == "dynamodb"
            and context.operation_model.name in FAST_OPERATIONS
        ):
            return 200, {"Content-Type": "application/x-amz-json-1.0"}, dynamo_json_dump(self.result)
        return original(self, context)

    setattr(execute_result, _MARK, True)
    return execute_result


def _item_init(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    self.hash_key = hash_key
    self.range_key = range_key
    values = {key: DynamoType(value) for key, value in attrs.items()}
    if sum(bytesize(key) + value.size() for key, value in values.items()) > _MAX_ITEM_BYTES:
        raise ItemSizeTooLarge
    self.attrs = LimitedSizeDict(values)  # dict.update: no per-attribute re-measure


setattr(_item_init, _MARK, True)


_QUERY = threading.local()


def _query_candidates(self: Any, hash_value: Any, conditions: list[tuple[str, Any]]) -> list[Any]:
    """The items a running ``query`` needs (unsorted: moto sorts its candidates itself): the partition of
    ``hash_value`` on the table, else the items whose index hash attributes hold ``conditions``' values."""
    if hash_value is not None:
        partition = self.items.get(hash_value)
        if partition is None:
            return []
        return list(partition.values()) if self.range_key_attr else [partition]
    rows = (
        row
        for partition in self.items.values()
        for row in (partition.values() if self.range_key_attr else (partition,))
    )
    # String and binary keys only: equal there means equal values (numbers may be spelt two ways)
    return [
        row
        for row in rows
        if all((found := row.attrs.get(name)) is not None and found.type == value.type
               and found.value == value.value for name, value in conditions)
    ]


def _partition_reads(original_all_items: Callable[..., Any], original_query: Callable[..., Any]) -> tuple[
    Callable[..., Any], Callable[..., Any]
]:
    @functools.wraps(original_all_items)
    def all_items(self: Any) -> list[Any]:
        wanted = getattr(_QUERY, "wanted", None)
        if wanted is None or wanted[0] is not self:
            return original_all_items(self)
        return _query_candidates(self, wanted[1], wanted[2])

    @functools.wraps(original_query)
    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        conditions = kwargs.get("hash_key_conditions") or []
        wanted: tuple[Any, Any, list[tuple[str, Any]]]
        if index_name is None and hash_key is not None:
            wanted = (self, hash_key, [])
        elif index_name is not None and conditions and all(v.type in ("S", "B") for _, v in conditions):
            wanted = (self, None, list(conditions))
        else:
            return original_query(self, hash_key, *args, **kwargs)
        _QUERY.wanted = wanted
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            _QUERY.wanted = None

    setattr(query, _MARK, True)
    return all_items, query


def installed() -> bool:
    """True when moto's DynamoDB transactions run with the undo log in this process."""
    from moto.dynamodb.models import DynamoDBBackend

    return bool(getattr(DynamoDBBackend.transact_write_items, _MARK, False))


def install() -> None:
    """Patch moto's DynamoDB backend in this process (moto's backends are process-wide). Idempotent."""
    import moto.dynamodb.models as backend_module
    from moto.core.responses import ActionResult
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    with _LOCK:
        if installed():
            return
        backend_module.copy = _NoTableCopies(Table)  # type: ignore[assignment]
        backend_module.DynamoDBBackend.transact_write_items = _with_undo_log(  # type: ignore[method-assign]
            backend_module.DynamoDBBackend.transact_write_items
        )
        ActionResult.execute_result = _fast_dynamodb_json(ActionResult.execute_result)  # type: ignore[method-assign]
        Item.__init__ = _item_init  # type: ignore[method-assign]
        Table.all_items, Table.query = _partition_reads(Table.all_items, Table.query)  # type: ignore[method-assign]
