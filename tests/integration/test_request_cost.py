"""Bounded cost per request (issue 14): a recommendation reads the user's newest events only.

Counted, not timed: botocore event hooks on the runtime's own DynamoDB client count the calls of one request
by operation and the bytes DynamoDB returned (read units are billed per 4 KB read), under in-process moto.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

import pytest
from deployment import Deployment
from test_reliability import SLICE

from embrec.app.runtime import get_runtime, reset_runtime
from embrec_tools.datasets import load_movielens, to_jsonl
from embrec_tools.local.emulator_fixes import install

CATALOG = load_movielens(SLICE).catalog_rows[:40]
ITEM_IDS = [str(row["item_id"]) for row in CATALOG]


def _seed_index(deployment: Deployment) -> None:
    s3 = deployment.clients.s3
    s3.put_object(Bucket=deployment.env["EMBREC_BUCKET"], Key="catalog/incoming/cost.jsonl",
                  Body=to_jsonl(CATALOG))
    deployment.drain_ingest_queue()
    assert deployment.rebuild()["status"] == "published"


def _write_history(deployment: Deployment, user: str, events: int) -> None:
    """``events`` rows put straight into moto's table (100,000 through the API would take minutes here):
    the history a year of traffic leaves, 10 distinct items so the list is never empty."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    install()  # the local stack's moto: an item's size checked once, not once per attribute

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(
        deployment.env["EMBREC_INTERACTIONS_TABLE"]
    )
    now_ms = int(time.time() * 1000)
    partition = table.items[DynamoType({"S": user})]
    for n in range(events):
        row = {
            "user_id": {"S": user}, "sk": {"S": f"{now_ms - n * 1000:013d}#ev-{n:07d}"},
            "event_id": {"S": f"ev-{n:07d}"}, "item_id": {"S": ITEM_IDS[n % 10]},
            "type": {"S": "view"}, "ts": {"N": str(now_ms - n * 1000)},
            "expires_at": {"N": str(now_ms // 1000 + 86_400 * 30)},
        }
        hash_key, range_key = DynamoType(row["user_id"]), DynamoType(row["sk"])
        partition[range_key] = Item(hash_key, range_key, row)


class _Meter:
    """DynamoDB calls by operation and response bytes, on one client, while active."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()
        self.bytes = 0

    def _call(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _response(self, http_response: Any, **_: Any) -> None:
        self.bytes += len(http_response.content)

    def __enter__(self) -> _Meter:
        self.client.meta.events.register("before-call.dynamodb", self._call)
        self.client.meta.events.register("after-call.dynamodb", self._response)
        return self

    def __exit__(self, *_: object) -> None:
        self.client.meta.events.unregister("before-call.dynamodb", self._call)
        self.client.meta.events.unregister("after-call.dynamodb", self._response)

    @property
    def read_units(self) -> int:
        return math.ceil(self.bytes / 4096)


def _request_cost(deployment: Deployment, user: str) -> _Meter:
    with _Meter(get_runtime().aws.dynamodb) as meter:
        status, body, _ = deployment.http("GET", f"/users/{user}/recommendations", {"k": 5})
    assert status == 200 and body["strategy"] == "personalized", body
    return meter


@pytest.mark.slow
def test_a_user_with_100k_events_costs_what_a_user_with_100_costs(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a history limit of 100 (the default is 500), a user with 100 events and one with 100,000
    monkeypatch.setenv("EMBREC_HISTORY_LIMIT", "100")
    reset_runtime()
    _seed_index(deployment)
    _write_history(deployment, "light", 100)
    _write_history(deployment, "heavy", 100_000)
    deployment.http("GET", "/users/light/recommendations")  # warm: index loaded, experiments read

    # When each asks for recommendations
    light = _request_cost(deployment, "light")
    heavy = _request_cost(deployment, "heavy")

    # Then both cost the same calls (one history query, one profile read, the impression) and read units
    assert heavy.calls == light.calls == Counter({"Query": 1, "GetItem": 1, "PutItem": 1})
    assert heavy.read_units == light.read_units


def test_the_default_limit_bounds_a_long_history_to_one_query_of_500(deployment: Deployment) -> None:
    # Given a user with 1,200 events and the default EMBREC_HISTORY_LIMIT (500)
    _seed_index(deployment)
    _write_history(deployment, "long", 1_200)

    # When the user asks for recommendations, Then one query reads the newest 500 events only
    queries: list[dict[str, Any]] = []
    client = get_runtime().aws.dynamodb

    def seen(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "Query":
            queries.append(params)

    client.meta.events.register("provide-client-params.dynamodb", seen)
    status, _, _ = deployment.http("GET", "/users/long/recommendations")
    client.meta.events.unregister("provide-client-params.dynamodb", seen)
    assert status == 200
    # (501: the newest 500 events and the slot of a possible erasure marker, which sorts first)
    assert len(queries) == 1 and queries[0]["Limit"] == 501 and queries[0]["ScanIndexForward"] is False


def test_the_impression_is_written_beside_the_reads_not_after_the_ranking(deployment: Deployment) -> None:
    # Given a user with a history, and the history query held until the impression's PutItem has started
    _seed_index(deployment)
    _write_history(deployment, "overlap", 30)
    client = get_runtime().aws.dynamodb
    deployment.http("GET", "/users/overlap/recommendations")  # warm: index loaded, experiments read
    put_started = threading.Event()
    waited: list[bool] = []

    def before(model: Any, **_: Any) -> None:
        if model.name == "PutItem":
            put_started.set()
        elif model.name == "Query":
            waited.append(put_started.wait(timeout=10))

    client.meta.events.register("before-call.dynamodb", before)
    try:
        # When the user asks for 5 items
        with _Meter(client) as meter:
            status, body, _ = deployment.http("GET", "/users/overlap/recommendations", {"k": 5})
    finally:
        client.meta.events.unregister("before-call.dynamodb", before)

    # Then the impression was already in flight while the history was read (a write issued after the
    # ranking would have left the query waiting here), and a full list costs no correction
    assert status == 200 and len(body["items"]) == 5
    assert waited == [True]
    assert meter.calls == Counter({"Query": 1, "GetItem": 1, "PutItem": 1})
    row = client.get_item(TableName=deployment.env["EMBREC_IMPRESSIONS_TABLE"],
                          Key={"recommendation_id": {"S": body["recommendation_id"]}})["Item"]
    assert row["item_count"] == {"N": "5"}


def test_a_list_shorter_than_asked_corrects_its_recorded_size(deployment: Deployment) -> None:
    # Given a 40-item catalog and a user who has seen 10 of them
    _seed_index(deployment)
    _write_history(deployment, "short", 10)
    client = get_runtime().aws.dynamodb

    # When the user asks for 100 items and gets the 30 left
    with _Meter(client) as meter:
        status, body, _ = deployment.http("GET", "/users/short/recommendations", {"k": 100})

    # Then the impression records the 30 shown (one UpdateItem), not the 100 asked for
    assert status == 200 and len(body["items"]) == 30
    assert meter.calls["UpdateItem"] == 1
    row = client.get_item(TableName=deployment.env["EMBREC_IMPRESSIONS_TABLE"],
                          Key={"recommendation_id": {"S": body["recommendation_id"]}})["Item"]
    assert row["item_count"] == {"N": "30"}
