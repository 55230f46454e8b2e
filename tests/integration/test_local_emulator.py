"""The local stack's embedded DynamoDB (moto server) holds a real history: a transaction costs the same memory
on a big table as on a small one, and a cancelled one still leaves nothing behind (issue 14).

Measured with tracemalloc in bytes (the moto server runs in this process), never with a clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import selectors
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from embrec.aws.clients import AwsClients, clients
from embrec.aws.store import InteractionStore, UserEvent
from embrec.config import Settings
from embrec.domain.model import Interaction
from embrec_tools.local.aws_endpoint import LOCAL_CREDENTIALS, AwsEndpoint, patched_environ
from embrec_tools.local.emulator_fixes import FAST_OPERATIONS, install
from embrec_tools.template import create_local_resources, load_template

NOW = 1_780_000_000.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def local_dynamodb() -> Iterator[tuple[AwsClients, Settings]]:
    """The local stack's own endpoint (embedded moto server, free port) with the template's tables."""
    with patched_environ({**LOCAL_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}):
        endpoint = AwsEndpoint(port=0)
        endpoint.start()
        try:
            settings = dataclasses.replace(Settings(), aws_endpoint=endpoint.url)
            bundle = clients(settings)
            create_local_resources(load_template(), bundle)
            yield bundle, settings
        finally:
            clients.cache_clear()
            endpoint.stop()


def _fill(client: Any, table: str, rows: int, start: int) -> None:
    """``rows`` other users' events written straight into the table (25 a BatchWriteItem)."""
    for first in range(start, start + rows, 25):
        client.batch_write_item(RequestItems={table: [
            {"PutRequest": {"Item": {
                "user_id": {"S": f"other-{n % 97}"}, "sk": {"S": f"{n:013d}#x{n}"}, "item_id": {"S": "i"},
                "type": {"S": "view"}, "ts": {"N": str(n)}, "description": {"S": "x" * 400},
            }}}
            for n in range(first, min(first + 25, start + rows))
        ]})


def _transaction_peak_bytes(store: InteractionStore, batch: int) -> int:
    """Peak bytes the process allocated while one batch of events was written (moto's side included)."""
    events = [
        UserEvent("measured", Interaction(f"i-{n}", "view", NOW - n, event_id=f"m{batch}-{n}"))
        for n in range(5)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        result = store.put_events(events, now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.stored) == 5
    return peak


class _NothingToDrain:
    """A selector that never finds a connection readable (see :func:`_small_and_large_table_peaks`)."""

    def register(self, *args: Any) -> None:
        pass

    def select(self, timeout: float | None = None) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def _small_and_large_table_peaks() -> tuple[int, int]:
    """One 5-event transaction's peak allocation on a 200-row, then a 3,000-row interactions table.

    moto's HTTP server (werkzeug's) drains every connection it has answered: if the client's close arrives
    within 10 ms, it is read with ``rfile.read(10_000_000)``, a 10 MB buffer in the request thread, freed at
    once. tracemalloc counts every thread, so whenever that close beat ``get_traced_memory`` the peak was
    ~10.1 MB instead of ~0.2 MB, on either table. That drain only serves clients that send more than is read
    (boto never does), so it is turned off here: the peaks are then the request's and the transaction's own.
    """
    import werkzeug.serving

    nothing_to_drain = SimpleNamespace(DefaultSelector=_NothingToDrain, EVENT_READ=selectors.EVENT_READ)
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.contextmanager(local_dynamodb.__wrapped__)() as (bundle, settings),
    ):
        patch.setattr(werkzeug.serving, "selectors", nothing_to_drain)
        store = InteractionStore(bundle.dynamodb, settings.interactions_table, settings.idempotency_table)
        _fill(bundle.dynamodb, settings.interactions_table, 200, 0)
        small = min(_transaction_peak_bytes(store, b) for b in range(2))
        _fill(bundle.dynamodb, settings.interactions_table, 2_800, 200)
        large = min(_transaction_peak_bytes(store, b) for b in range(2, 4))
    return small, large


def test_a_transaction_costs_the_same_memory_on_a_large_table_as_on_a_small_one() -> None:
    # Measured in a fresh interpreter: tracemalloc counts every thread, and earlier tests' local stacks may
    # still be winding down in this one (moto's own server threads: see _small_and_large_table_peaks)
    code = (
        "import json, sys; sys.path.insert(0, '.'); "
        "from tests.integration.test_local_emulator import _small_and_large_table_peaks as f; "
        "print(json.dumps(f()))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    small, large = json.loads(out.stdout.strip().splitlines()[-1])

    # Then one 5-event transaction (10 actions) allocates no more on the large table: moto 5.2.6 deep-copies
    # the whole table for every action (here +18 MB of peak for the 2,800 added rows), the fixed emulator
    # copies only the items the transaction touches
    assert large - small < 1_000_000, (small, large)


def test_a_cancelled_transaction_on_the_fixed_emulator_leaves_nothing_and_a_retry_lands_once(
    local_dynamodb: tuple[AwsClients, Settings],
) -> None:
    bundle, settings = local_dynamodb
    store = InteractionStore(bundle.dynamodb, settings.interactions_table, settings.idempotency_table)
    _fill(bundle.dynamodb, settings.interactions_table, 50, 0)
    store.put_events([("u", Interaction("i-1", "view", NOW - 10, event_id="e-1"))], now=NOW)

    # When a batch holds one event already stored, its transaction is cancelled (a failed condition) ...
    batch = [("u", Interaction("i-2", "like", NOW - 5, event_id=f"e-{n}")) for n in range(4)]
    result = store.put_events(batch, now=NOW)

    # ... and rolled back by the undo log; the store re-sends the rest: each event stored exactly once
    assert result.duplicates == ["e-1"] and sorted(result.stored) == ["e-0", "e-2", "e-3"]
    assert sorted(i.event_id for i in store.history("u", now=NOW)) == ["e-0", "e-1", "e-2", "e-3"]
    rows = bundle.dynamodb.scan(TableName=settings.interactions_table)["Count"]
    records = bundle.dynamodb.scan(TableName=settings.idempotency_table)["Count"]
    assert (rows, records) == (54, 4)


def test_the_fast_dynamodb_answers_are_the_json_moto_serialises(
    aws_clients: AwsClients, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the emulator fixes installed, and every answer of a FAST operation also serialised by moto itself
    from moto.core.responses import ActionResult

    install()
    fast = ActionResult.execute_result
    compared: dict[str, bool] = {}

    def both(self: Any, context: Any) -> Any:
        answer = fast(self, context)
        if context.operation_model.name in FAST_OPERATIONS:
            moto_body = fast.__wrapped__(self, context)[2]  # type: ignore[attr-defined]
            compared[context.operation_model.name] = json.loads(answer[2]) == json.loads(moto_body)
        return answer

    monkeypatch.setattr(ActionResult, "execute_result", both)
    client, table = aws_clients.dynamodb, settings.items_table
    key = {"item_id": {"S": "i-1"}}
    nested = {"M": {"a": {"N": "1.5"}, "l": {"L": [{"S": "x"}, {"BOOL": True}, {"NULL": True}]}}}

    # When every FAST operation runs on items with binary, nested and numeric attributes
    client.put_item(TableName=table, Item={**key, "vector": {"B": b"\x00\x01\xff"}, "extra": nested})
    client.get_item(TableName=table, Key=key)
    client.query(TableName=table, KeyConditionExpression="item_id = :i",
                 ExpressionAttributeValues={":i": key["item_id"]})
    client.scan(TableName=table, Limit=1)
    client.batch_get_item(RequestItems={table: {"Keys": [key]}})
    client.update_item(TableName=table, Key=key, UpdateExpression="SET n = :n",
                       ExpressionAttributeValues={":n": {"N": "3"}}, ReturnValues="ALL_NEW")
    client.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": {"item_id": {"S": "i-2"}}}}]})
    client.transact_write_items(
        TransactItems=[{"Put": {"TableName": table, "Item": {"item_id": {"S": "i-3"}}}}]
    )

    # Then the answers are moto's own, byte for byte as JSON
    assert compared == dict.fromkeys(FAST_OPERATIONS, True)


def test_a_query_answers_as_moto_does_while_reading_only_its_partition(
    aws_clients: AwsClients, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the emulator fixes installed, and every query also answered by moto's own (whole-table) query
    from moto.dynamodb.models.table import Table

    install()
    fixed = Table.query
    answers: list[tuple[Any, Any]] = []

    def both(self: Table, *args: Any, **kwargs: Any) -> Any:
        answer = fixed(self, *args, **kwargs)
        original = fixed.__wrapped__(self, *args, **kwargs)  # type: ignore[attr-defined]
        answers.append(tuple(([r.to_json() for r in a[0]], a[1], a[2]) for a in (answer, original)))
        return answer

    monkeypatch.setattr(Table, "query", both)
    store = InteractionStore(aws_clients.dynamodb, settings.interactions_table, settings.idempotency_table)
    store.import_events(
        [
            UserEvent(f"u{n % 7}", Interaction(f"i-{n % 13}", ("view", "like")[n % 2], NOW - 3_000 * n,
                                                event_id=f"e{n}", recommendation_id="r1" if n % 5 else None))
            for n in range(400)
        ],
        now=NOW,
    )
    client, table = aws_clients.dynamodb, settings.interactions_table

    # When the product's reads run (newest history, windows through the by_time index with and without a
    # filter, counts) and raw queries page forwards and backwards with range conditions and small limits
    assert len(store.history("u3", limit=20, now=NOW)) == 20
    assert len(store.history("u4", now=NOW)) == 57
    assert sum(len(page) for page in store.read_window(NOW - 400_000, now=NOW)) == 134
    assert sum(1 for _ in store.read_attributed(NOW - 400_000, now=NOW)) == 107
    assert store.count_since(NOW - 100_000, now=NOW) == 34
    for forward in (True, False):
        pages = client.get_paginator("query").paginate(
            TableName=table, KeyConditionExpression="user_id = :u AND sk BETWEEN :a AND :b",
            ExpressionAttributeValues={":u": {"S": "u1"}, ":a": {"S": "0"}, ":b": {"S": "9"}},
            ScanIndexForward=forward, PaginationConfig={"PageSize": 9},
        )
        assert sum(page["Count"] for page in pages) == 57
    assert client.query(TableName=table, KeyConditionExpression="user_id = :u",
                        ExpressionAttributeValues={":u": {"S": "nobody"}})["Count"] == 0
    assert client.query(TableName=settings.items_table, KeyConditionExpression="item_id = :i",
                        ExpressionAttributeValues={":i": {"S": "none"}})["Count"] == 0

    # Then each answer (items, scanned count, where the next page starts) is the one moto's query gives
    assert len(answers) > 20
    for fixed_answer, original_answer in answers:
        assert fixed_answer == original_answer


def test_a_history_query_compares_as_many_keys_on_a_large_table_as_on_a_small_one(
    aws_clients: AwsClients, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the emulator fixes installed, and moto's key comparisons counted
    from moto.dynamodb.models.dynamo_type import DynamoType

    install()
    compared = [0]
    for name in ("__eq__", "__lt__"):
        original = getattr(DynamoType, name)

        def counted(self: Any, other: Any, _original: Any = original) -> Any:
            compared[0] += 1
            return _original(self, other)

        monkeypatch.setattr(DynamoType, name, counted)
    store = InteractionStore(aws_clients.dynamodb, settings.interactions_table, settings.idempotency_table)
    store.import_events([UserEvent("me", Interaction(f"i-{n}", "view", NOW - n, event_id=f"m{n}"))
                         for n in range(30)], now=NOW)

    def comparisons_for_one_history_read(others: int, start: int) -> int:
        _fill(aws_clients.dynamodb, settings.interactions_table, others, start)
        compared[0] = 0
        assert len(store.history("me", now=NOW)) == 30
        return compared[0]

    # When the same user's history is read with 200, then 4,000 other users' rows in the table
    small = comparisons_for_one_history_read(200, 0)
    large = comparisons_for_one_history_read(3_800, 200)

    # Then the read compares the same keys: it touches the user's partition only (moto alone sorts the whole
    # table for every query: 1,326 against 16,956 comparisons here)
    assert small == large, (small, large)
