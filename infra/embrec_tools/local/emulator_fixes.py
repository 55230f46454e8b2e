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


def installed() -> bool:
    """True when moto's DynamoDB transactions run with the undo log in this process."""
    from moto.dynamodb.models import DynamoDBBackend

    return bool(getattr(DynamoDBBackend.transact_write_items, _MARK, False))


def install() -> None:
    """Patch moto's DynamoDB backend in this process (moto's backends are process-wide). Idempotent."""
    import moto.dynamodb.models as backend_module
    from moto.core.responses import ActionResult
    from moto.dynamodb.models.table import Table

    with _LOCK:
        if installed():
            return
        backend_module.copy = _NoTableCopies(Table)  # type: ignore[assignment]
        backend_module.DynamoDBBackend.transact_write_items = _with_undo_log(  # type: ignore[method-assign]
            backend_module.DynamoDBBackend.transact_write_items
        )
        ActionResult.execute_result = _fast_dynamodb_json(ActionResult.execute_result)  # type: ignore[method-assign]
