"""The local stack's embedded DynamoDB (moto server) holds a real history: a transaction costs the same memory
on a big table as on a small one, and a cancelled one still leaves nothing behind (issue 14).

Measured with tracemalloc in bytes (the moto server runs in this process), never with a clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
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


def _small_and_large_table_peaks() -> tuple[int, int]:
    """One 5-event transaction's peak allocation on a 200-row, then a 3,000-row interactions table."""
    with contextlib.contextmanager(local_dynamodb.__wrapped__)() as (bundle, settings):
        store = InteractionStore(bundle.dynamodb, settings.interactions_table, settings.idempotency_table)
        _fill(bundle.dynamodb, settings.interactions_table, 200, 0)
        small = min(_transaction_peak_bytes(store, b) for b in range(2))
        _fill(bundle.dynamodb, settings.interactions_table, 2_800, 200)
        large = min(_transaction_peak_bytes(store, b) for b in range(2, 4))
    return small, large


def test_a_transaction_costs_the_same_memory_on_a_large_table_as_on_a_small_one() -> None:
    # Measured in a fresh interpreter: tracemalloc counts every thread, and earlier tests' local stacks may
    # still be winding down in this one
    code = (
        "import json, sys; sys.path.insert(0, '.'); "
        "from tests.integration.test_local_emulator import _small_and_large_table_peaks as f; "
        "print(json.dumps(f()))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    small, large = json.loads(out.stdout.strip().splitlines()[-1])

    # Then one 5-event transaction (10 actions) allocates no more on the large table: moto 5.2.6 deep-copies
    # the whole table for every action (here +8.6 MB of peak for the 2,800 added rows), the fixed emulator
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
