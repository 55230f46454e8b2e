"""DynamoDB adapters against moto: round trips, exactly-once events, TTL, erasure, parallel scans."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import EndpointConnectionError

from embrec.aws import store as store_module
from embrec.aws.clients import AwsClients
from embrec.aws.store import (
    IdempotencyStore,
    InteractionStore,
    ItemStore,
    ProfileStore,
    UserEvent,
    event_sort_key,
)
from embrec.config import Settings
from embrec.domain.model import Interaction, ItemState, StoredItem
from embrec.errors import ServiceUnavailableError

NOW = 1_780_000_000.0  # a fixed "now" (epoch s) so TTL decisions do not depend on the clock
DAY = 86_400.0


@pytest.fixture
def items(aws_clients: AwsClients, settings: Settings) -> ItemStore:
    return ItemStore(aws_clients.dynamodb, settings.items_table)


@pytest.fixture
def events(aws_clients: AwsClients, settings: Settings) -> InteractionStore:
    return InteractionStore(
        aws_clients.dynamodb, settings.interactions_table, settings.idempotency_table, ttl_days=30
    )


def _item(i: int, rng: np.random.Generator, dim: int = 8) -> StoredItem:
    fields: dict[str, Any] = {
        "item_id": f"item-{i:03d}",
        "title": f"Item {i}",
        "category": "books" if i % 2 else "games",
        "tags": ["a", "b"][: i % 3],
        "price": 9.99 + i,
        "available": bool(i % 5),
        "created_at": 1_700_000_000 + i,
        "extra": {"colour": "red", "rating": 4.5, "n": 3},
    }
    vector = rng.standard_normal(dim).astype(np.float32)
    return StoredItem(f"item-{i:03d}", fields, f"hash-{i}", vector, updated_at=NOW)


def _rows_botocore_parsed(aws_clients: AwsClients, operation: str) -> list[int]:
    """How many rows botocore's parser gave each ``operation`` call from here on (0 for a raw page)."""
    parsed_rows: list[int] = []
    aws_clients.dynamodb.meta.events.register(
        f"after-call.dynamodb.{operation}",
        lambda parsed, **_: parsed_rows.append(len(parsed.get("Items", []))),
    )
    return parsed_rows


def _event(n: int, ts: float = NOW - 3600, item: str = "item-001", kind: str = "view") -> Interaction:
    return Interaction(item_id=item, type=kind, timestamp=ts + n, event_id=f"e-{n}", value=None)


def _fail_transactions(
    client: Any, when: Callable[[bytes, int], bool], committed: bool = False
) -> tuple[list[int], Any]:
    """Fail TransactWriteItems calls for which ``when(body, call_number)`` holds.

    By default the request never reaches moto (a connection failure: nothing written). With ``committed``
    moto applies the write and the client gets a 500 instead: the ambiguous "did it commit?" case.
    """
    seen: list[int] = []

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        seen.append(1)
        if not when(bytes(request.body or b""), len(seen) - 1):
            return None
        if not committed:
            # Raised from the most specific handler, so moto's generic before-send handler never runs.
            raise EndpointConnectionError(endpoint_url=request.url)
        body = b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"boom"}'
        return AWSResponse(request.url, 500, HTTPHeaders(), _Raw(body))

    client.meta.events.register("before-send.dynamodb.TransactWriteItems", hook)
    return seen, hook


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


# -------------------------------------------------------------------------------------------- items


def test_items_round_trip_with_vectors_and_nested_fields(items: ItemStore) -> None:
    rng = np.random.default_rng(0)
    stored = [_item(i, rng) for i in range(30)]  # more than one BatchWriteItem (25)

    assert items.upsert(stored) == 30

    got = items.get("item-007")
    assert got is not None
    assert got.fields == stored[7].fields
    assert got.content_hash == "hash-7"
    assert got.vector is not None and got.vector.dtype == np.float32
    np.testing.assert_array_equal(got.vector, stored[7].vector)
    assert items.get("nope") is None

    many = items.batch_get(["item-001", "item-029", "item-001", "missing"])
    assert sorted(many) == ["item-001", "item-029"]
    np.testing.assert_array_equal(many["item-029"].vector, stored[29].vector)


def test_states_for_returns_only_known_items_with_encoder_and_source(items: ItemStore) -> None:
    rng = np.random.default_rng(1)
    stored = [_item(i, rng) for i in range(3)]
    stored[2] = replace(stored[2], encoder_id="enc-b", source="f00d:7")
    items.upsert(stored)

    assert items.states_for(["item-000", "item-002", "item-999"]) == {
        "item-000": ItemState("hash-0"),
        "item-002": ItemState("hash-2", "enc-b", "f00d:7"),
    }
    got = items.get("item-002")
    assert got is not None and (got.encoder_id, got.source) == ("enc-b", "f00d:7")
    assert "encoder_id" not in got.fields and "ingest_source" not in got.fields  # bookkeeping, not metadata


def test_upsert_replaces_and_later_duplicate_wins(items: ItemStore) -> None:
    rng = np.random.default_rng(2)
    first, second = _item(1, rng), _item(1, rng)
    items.upsert([first, second])
    got = items.get("item-001")
    assert got is not None and got.vector is not None
    np.testing.assert_array_equal(got.vector, second.vector)


def test_parallel_scan_sees_every_item_once(items: ItemStore) -> None:
    rng = np.random.default_rng(3)
    stored = {s.item_id: s for s in (_item(i, rng) for i in range(120))}
    items.upsert(stored.values())

    scanned = list(items.scan_all(segments=4))

    assert sorted(s.item_id for s in scanned) == sorted(stored)
    for s in scanned:
        assert s.vector is not None
        np.testing.assert_array_equal(s.vector, stored[s.item_id].vector)


def test_the_index_scan_reads_pages_without_botocore_and_gives_what_a_parsed_scan_gives(
    items: ItemStore, aws_clients: AwsClients
) -> None:
    # Given 120 items with vectors, nested fields and an image embedding
    rng = np.random.default_rng(5)
    stored = [_item(i, rng) for i in range(120)]
    stored = [replace(s, fields={**s.fields, "image_embedding": [0.5, -1.25]}) for s in stored]
    items.upsert(stored)
    parsed_rows = _rows_botocore_parsed(aws_clients, "Scan")
    # When the rebuild scans them for the index
    scanned = {s.item_id: s for s in items.scan_for_index(segments=3, images=True)}
    # Then botocore parsed none of the rows, and each item is what the whole-item scan (botocore's parse)
    # gives of the index's attributes: id, vector bit for bit, the metadata fields and the image
    assert len(parsed_rows) >= 3 and sum(parsed_rows) == 0
    whole = {s.item_id: s for s in items.scan_all(segments=2)}
    assert sum(parsed_rows) == 120 and set(scanned) == set(whole)
    for item_id, item in scanned.items():
        assert item.vector is not None and item.vector.dtype == np.float32
        np.testing.assert_array_equal(item.vector, whole[item_id].vector)
        assert item.fields == {k: v for k, v in whole[item_id].fields.items() if k not in ("extra",)}


def test_a_client_whose_events_never_reach_the_raw_page_hook_is_read_as_botocore_parsed_it(
    items: ItemStore, aws_clients: AwsClients, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a botocore that does not emit before-parse (the hook is never called: older releases)
    rng = np.random.default_rng(6)
    stored = {s.item_id: s for s in (_item(i, rng) for i in range(30))}
    items.upsert(stored.values())
    monkeypatch.setattr(store_module, "_keep_body", lambda **_: None)
    parsed_rows = _rows_botocore_parsed(aws_clients, "Scan")
    # When the index scan runs, Then botocore parsed every row (Binary as bytes) and the items are the same
    scanned = list(items.scan_for_index(segments=2))
    assert sum(parsed_rows) == 30
    assert sorted(s.item_id for s in scanned) == sorted(stored)
    for item in scanned:
        assert item.vector is not None
        np.testing.assert_array_equal(item.vector, stored[item.item_id].vector)


def test_parallel_scan_stops_cleanly_when_consumer_stops_early(items: ItemStore) -> None:
    rng = np.random.default_rng(4)
    items.upsert([_item(i, rng) for i in range(60)])
    scan = items.scan_all(segments=3)
    first = [next(scan) for _ in range(5)]
    scan.close()  # workers must notice and exit; a hang here fails the test by timeout
    assert len({s.item_id for s in first}) == 5


def test_unprocessed_items_are_resent(items: ItemStore, aws_clients: AwsClients) -> None:
    # Given a BatchWriteItem that reports its whole batch unprocessed once
    client = aws_clients.dynamodb
    original = client.batch_write_item
    calls: list[int] = []

    def flaky(**kwargs: Any) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            return {"UnprocessedItems": kwargs["RequestItems"]}
        result: dict[str, Any] = original(**kwargs)
        return result

    client.batch_write_item = flaky
    rng = np.random.default_rng(5)
    # When upserting, Then the rows are written on the second attempt
    assert items.upsert([_item(i, rng) for i in range(3)]) == 3
    assert len(calls) == 2
    assert len(items.batch_get([f"item-{i:03d}" for i in range(3)])) == 3


# -------------------------------------------------------------------------------------------- events


def test_same_batch_twice_is_stored_once(events: InteractionStore) -> None:
    batch = [("u1", _event(n)) for n in range(5)]

    first = events.put_events(batch, now=NOW)
    second = events.put_events(batch, now=NOW)

    assert sorted(first.stored) == [f"e-{n}" for n in range(5)]
    assert first.duplicates == []
    assert second.stored == []
    assert sorted(second.duplicates) == [f"e-{n}" for n in range(5)]
    history = events.history("u1", now=NOW)
    assert [i.event_id for i in history] == [f"e-{n}" for n in reversed(range(5))]


def test_retry_with_a_different_timestamp_is_still_a_duplicate(events: InteractionStore) -> None:
    events.put_events([("u1", _event(1))], now=NOW)
    resent = Interaction(item_id="item-001", type="view", timestamp=NOW - 10, event_id="e-1")

    result = events.put_events([UserEvent("u1", resent)], now=NOW)

    assert result.duplicates == ["e-1"]
    assert len(events.history("u1", now=NOW)) == 1


def test_failed_transaction_mid_batch_leaves_nothing_partial_and_retry_completes(
    aws_clients: AwsClients, settings: Settings
) -> None:
    # Given 4 events per transaction, and DynamoDB failing (every attempt) the chunk that holds e-5
    events = InteractionStore(
        aws_clients.dynamodb,
        settings.interactions_table,
        settings.idempotency_table,
        ttl_days=30,
        events_per_transaction=4,
    )
    _, hook = _fail_transactions(aws_clients.dynamodb, lambda body, _: b'"e-5"' in body)
    batch = [("u1", _event(n)) for n in range(10)]

    # When the first delivery fails mid-batch
    first = events.put_events(batch, now=NOW)

    # Then the failed chunk (e-4..e-7) is reported and none of it is stored, not even its idempotency records
    assert first.failed == ["e-4", "e-5", "e-6", "e-7"]
    assert sorted(first.stored) == ["e-0", "e-1", "e-2", "e-3", "e-8", "e-9"]
    stored = ["e-9", "e-8", "e-3", "e-2", "e-1", "e-0"]
    assert [i.event_id for i in events.history("u1", now=NOW)] == stored
    assert aws_clients.dynamodb.scan(TableName=settings.idempotency_table)["Count"] == 6

    # When the whole batch is redelivered after DynamoDB recovers, Then each event is stored exactly once
    aws_clients.dynamodb.meta.events.unregister("before-send.dynamodb.TransactWriteItems", hook)
    retry = events.put_events(batch, now=NOW)
    assert sorted(retry.duplicates) == sorted(stored)
    assert sorted(retry.stored) == ["e-4", "e-5", "e-6", "e-7"]
    assert [i.event_id for i in events.history("u1", now=NOW)] == [f"e-{n}" for n in reversed(range(10))]


def test_duplicates_inside_a_batch_and_across_batches(events: InteractionStore) -> None:
    events.put_events([("u1", _event(1)), ("u1", _event(3))], now=NOW)
    result = events.put_events(
        [("u1", _event(n)) for n in range(5)] + [("u1", _event(2)), ("u2", _event(2))], now=NOW
    )
    assert sorted(result.stored) == ["e-0", "e-2", "e-2", "e-4"]  # e-2 for u1 and for u2
    assert sorted(result.duplicates) == ["e-1", "e-2", "e-3"]
    assert len(events.history("u1", now=NOW)) == 5
    assert len(events.history("u2", now=NOW)) == 1


def test_batch_raises_when_dynamodb_is_down_for_every_event(
    events: InteractionStore, aws_clients: AwsClients
) -> None:
    _fail_transactions(aws_clients.dynamodb, lambda _, __: True)
    with pytest.raises(ServiceUnavailableError):
        events.put_events([("u1", _event(0)), ("u1", _event(1))], now=NOW)
    assert events.history("u1", now=NOW) == []


def test_transient_transaction_errors_are_absorbed_by_retries(
    events: InteractionStore, aws_clients: AwsClients
) -> None:
    seen, _ = _fail_transactions(aws_clients.dynamodb, lambda _, call: call < 2)
    result = events.put_events([("u1", _event(0))], now=NOW)
    assert result.stored == ["e-0"]
    assert len(seen) == 3


def test_a_lost_response_after_commit_still_stores_the_event_once(
    events: InteractionStore, aws_clients: AwsClients
) -> None:
    # Given DynamoDB commits the first attempt but the client sees a 500, When botocore retries
    _fail_transactions(aws_clients.dynamodb, lambda _, call: call == 0, committed=True)
    result = events.put_events([("u1", _event(0))], now=NOW)
    # Then the retry finds its own idempotency record: accepted (as a duplicate), stored exactly once
    assert result.duplicates == ["e-0"] and result.failed == []
    assert [i.event_id for i in events.history("u1", now=NOW)] == ["e-0"]


def test_history_is_newest_first_limited_and_round_trips_fields(events: InteractionStore) -> None:
    rich = Interaction(
        item_id="item-9",
        type="purchase",
        timestamp=NOW - 5.25,
        value=2.5,
        event_id="rich",
        recommendation_id="r1",
    )
    events.put_events([UserEvent("u1", rich, variant="B")] + [("u1", _event(n)) for n in range(40)], now=NOW)

    latest = events.history("u1", limit=3, now=NOW)

    assert latest[0] == rich
    assert [i.event_id for i in latest[1:]] == ["e-39", "e-38"]
    assert len(events.history("u1", now=NOW)) == 41
    assert events.history("nobody", now=NOW) == []


def test_expired_events_are_ignored_and_not_written(
    events: InteractionStore, aws_clients: AwsClients, settings: Settings
) -> None:
    old = Interaction(item_id="i", type="view", timestamp=NOW - 20 * DAY, event_id="old")
    new = Interaction(item_id="i", type="view", timestamp=NOW - 1 * DAY, event_id="new")
    ancient = Interaction(item_id="i", type="view", timestamp=NOW - 400 * DAY, event_id="ancient")

    result = events.put_events([("u1", old), ("u1", new), ("u1", ancient)], now=NOW)
    assert result.expired == ["ancient"]
    # not written at all (reads hide expired rows, so only the table itself can tell): no row, no record
    rows = aws_clients.dynamodb.scan(TableName=settings.interactions_table)["Items"]
    assert sorted(row["event_id"]["S"] for row in rows) == ["new", "old"]
    assert aws_clients.dynamodb.scan(TableName=settings.idempotency_table)["Count"] == 2

    # 15 days later the 30-day TTL has passed for "old" (moto never deletes it; the store must hide it)
    later = NOW + 15 * DAY
    assert [i.event_id for i in events.history("u1", now=later)] == ["new"]
    window = [row for page in events.read_window(NOW - 60 * DAY, now=later) for row in page.rows()]
    assert window == [("u1", "i", "view", new.timestamp)]


def test_erasure_hides_at_once_then_deletes_in_bounded_steps_and_only_that_user(
    events: InteractionStore, aws_clients: AwsClients, settings: Settings
) -> None:
    events.put_events([("u1", _event(n)) for n in range(60)] + [("u2", _event(1))], now=NOW)

    # When the erasure is requested, Then reads hide every event up to it before anything is deleted
    erasure = events.request_erasure("u1", now=NOW)
    assert events.history("u1", now=NOW) == [] and events.history("u1", limit=5, now=NOW) == []
    # and an event after it (the user came back) is the user's whole history
    after = Interaction(item_id="i", type="like", timestamp=NOW + 10, event_id="after")
    events.put_events([("u1", after)], now=NOW + 10)
    assert [i.event_id for i in events.history("u1", limit=5, now=NOW + 10)] == ["after"]

    # When the job deletes 25 rows a step, Then three steps erase the 60 events, and nothing else
    steps = [events.delete_erased("u1", erasure.erased_before, 25) for _ in range(3)]
    assert steps == [(25, True), (25, True), (10, False)]
    assert events.record_erasure(erasure, 60, 0, complete=True, now=NOW + 20)
    status = events.erasure("u1")
    assert status is not None and status.complete and status.events_deleted == 60
    left = aws_clients.dynamodb.query(
        TableName=settings.interactions_table, KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": "u1"}})["Items"]
    assert sorted(row["sk"]["S"].partition("#")[2] or row["sk"]["S"] for row in left) == ["after", "~erasure"]
    assert len(events.history("u2", now=NOW)) == 1
    # the marker has no ``ts`` or ``tb``: the rebuild's window read never takes it for an event
    recent = [row for page in events.read_window(NOW - 86_400, now=NOW + 20) for row in page.rows()]
    assert sorted((user, ts) for user, _, _, ts in recent) == [
        ("u1", after.timestamp), ("u2", _event(1).timestamp)
    ]

    # A late redelivery of an erased event does not resurrect it
    assert events.put_events([("u1", _event(3))], now=NOW).duplicates == ["e-3"]
    assert [i.event_id for i in events.history("u1", now=NOW + 10)] == ["after"]

    # A newer request replaces the marker: the older job's counts no longer land
    newer = events.request_erasure("u1", now=NOW + 30)
    assert not events.record_erasure(erasure, 1, 0, complete=True)
    assert events.history("u1", now=NOW + 30) == [] and newer.status == "pending"


def test_read_window_filters_by_time(events: InteractionStore) -> None:
    events.put_events(
        [("u1", _event(n, ts=NOW - 5 * DAY)) for n in range(10)]
        + [("u2", _event(n, ts=NOW - 1 * DAY)) for n in range(10, 15)],
        now=NOW,
    )
    recent = [row for page in events.read_window(NOW - 2 * DAY, now=NOW) for row in page.rows()]
    assert sorted(recent) == [("u2", "item-001", "view", NOW - 1 * DAY + n) for n in range(10, 15)]


def test_window_pages_are_what_botocore_parses_without_botocore_parsing_the_rows(
    events: InteractionStore, aws_clients: AwsClients, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 1,200 events of 40 users over 12 items, some carrying a value, a recommendation and a tricky id
    events.import_events(
        [UserEvent(f"user-{n % 40}", Interaction(
            item_id=f"ïtem \"{n % 12}\"", type=("view", "like")[n % 2], timestamp=NOW - 3600 + n * 0.001,
            event_id=f"e-{n}", value=1.5 if n % 3 else None, recommendation_id="r" if n % 5 else None,
        )) for n in range(1_200)],
        now=NOW,
    )
    parsed_rows = _rows_botocore_parsed(aws_clients, "Query")

    # When the rebuild's window read pages through them, 97 rows a page (the continuation keys it passes on
    # are the wire's, not botocore's parse)
    queries = store_module._bucket_queries
    monkeypatch.setattr(store_module, "_bucket_queries", lambda *a: [{**q, "Limit": 97} for q in queries(*a)])
    pages = list(events.read_window(NOW - DAY, now=NOW))

    # Then botocore's parser handled no row of it (json.loads did), in many pages
    assert len(parsed_rows) > 12 and sum(parsed_rows) == 0
    # and the rows are exactly what botocore's own parse of the same index gives
    expected = []
    for shard in range(4):
        for page in aws_clients.dynamodb.get_paginator("query").paginate(
            TableName=settings.interactions_table, IndexName="by_time", KeyConditionExpression="tb = :tb",
            ExpressionAttributeValues={":tb": {"S": f"{int(NOW * 1000) // (7 * 86_400_000)}#{shard}"}},
        ):
            expected += [
                (row["user_id"]["S"], row["item_id"]["S"], row["type"]["S"], int(row["ts"]["N"]) / 1000)
                for row in page["Items"]
            ]
    got = [row for page in pages for row in page.rows()]
    assert len(got) == 1_200 and sorted(got) == sorted(expected)
    # and other calls of the same client are parsed by botocore as before
    assert len(events.history("user-1", now=NOW)) == 30


def test_sort_key_is_time_ordered() -> None:
    assert event_sort_key(1.5, "x") == "0000000001500#x"
    assert event_sort_key(NOW, "a") < event_sort_key(NOW + 0.001, "a")


# -------------------------------------------------------------------------------------------- profiles


def test_profile_round_trip_and_delete(aws_clients: AwsClients, settings: Settings) -> None:
    profiles = ProfileStore(aws_clients.dynamodb, settings.profiles_table)
    vector = np.random.default_rng(6).standard_normal(384).astype(np.float32)

    profiles.put("u1", vector, "interests: hiking", updated_at=NOW)
    got = profiles.get("u1")

    assert got is not None and got.text == "interests: hiking" and got.updated_at == NOW
    np.testing.assert_array_equal(got.vector, vector)
    assert profiles.delete("u1") is True
    assert profiles.get("u1") is None
    assert profiles.delete("u1") is False


# -------------------------------------------------------------------------------------------- idempotency


def test_ingest_claims_are_exclusive_until_complete_or_stale(
    aws_clients: AwsClients, settings: Settings
) -> None:
    store = IdempotencyStore(aws_clients.dynamodb, settings.idempotency_table, lease_seconds=60)
    key = IdempotencyStore.ingest_key("bucket", "catalog/incoming/a.jsonl", '"etag1"')
    assert key == "ingest#bucket/catalog/incoming/a.jsonl#etag1"

    assert store.claim(key, now=NOW) is True
    assert store.claim(key, now=NOW + 10) is False  # a concurrent delivery of the same object
    assert store.status(key, now=NOW + 10) == "in_progress"
    assert store.claim(key, now=NOW + 120) is True  # the first worker died: its lease went stale
    store.complete(key, {"rows": 3}, now=NOW + 130)
    assert store.claim(key, now=NOW + 10_000) is False  # done: redeliveries are skipped
    assert store.status(key, now=NOW + 10_000) == "complete"

    other = IdempotencyStore.ingest_key("bucket", "catalog/incoming/b.jsonl", "e")
    assert store.claim(other, now=NOW) is True
    store.release(other)
    assert store.claim(other, now=NOW + 1) is True


# -------------------------------------------------------------------------------------------- clients, errors


def test_clients_honour_a_local_endpoint_and_lambda_retry_settings() -> None:
    from dataclasses import replace

    from embrec.aws import clients as aws

    settings = replace(Settings(), aws_endpoint="http://127.0.0.1:4566", region="eu-west-1")
    aws.clients.cache_clear()
    try:
        bundle = aws.clients(settings)
        assert aws.clients(settings) is bundle  # built once per settings
        assert bundle.s3.meta.endpoint_url == "http://127.0.0.1:4566"
        assert bundle.dynamodb.meta.region_name == "eu-west-1"
        config = bundle.sqs.meta.config
        assert config.retries == {"mode": "standard", "total_max_attempts": aws.MAX_ATTEMPTS}
        assert config.connect_timeout == aws.CONNECT_TIMEOUT_S
        assert bundle.s3.meta.config.s3 == {"addressing_style": "path"}
    finally:
        aws.clients.cache_clear()


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ProvisionedThroughputExceededException", 400, "ServiceUnavailableError"),
        ("InternalServerError", 500, "ServiceUnavailableError"),
        ("SlowDown", 503, "ServiceUnavailableError"),
        ("ConditionalCheckFailedException", 400, "ConflictError"),
        ("PreconditionFailed", 412, "ConflictError"),
        ("ConditionalRequestConflict", 409, "ConflictError"),
        ("NoSuchKey", 404, "ResourceMissingError"),
        ("ResourceNotFoundException", 400, "ResourceMissingError"),
        ("AccessDenied", 403, "EmbrecError"),
    ],
)
def test_client_errors_translate_in_one_place(code: str, status: int, expected: str) -> None:
    from botocore.exceptions import ClientError

    from embrec.aws.clients import translate_error

    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    error = ClientError(response, "Op")
    assert type(translate_error(error, "thing")).__name__ == expected
