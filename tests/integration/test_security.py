"""Issue 8, security: object-level authorisation under JWT, limits, no leaked internals, private caching.

Issue 15: hostile bodies (item 8), one id rule at every door (item 11), no bucket or key told to a client
(item 12).

The JWT context is the one API Gateway's JWT authorizer hands the function
(``requestContext.authorizer.jwt``); the local emulator checks tokens (tests/unit/test_local_jwt.py).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from deployment import Deployment

from embrec.app import service
from embrec.app.runtime import reset_runtime
from embrec.domain.model import ID_RULE
from embrec.edge.auth import ADMIN_SCOPE
from embrec_tools.datasets import to_jsonl


def _as(deployment: Deployment, sub: str, scopes: list[str] | None = None, scope: str | None = None) -> None:
    """Every following request carries a JWT context for ``sub``: ``scopes`` as API Gateway lists them for
    routes with authorization scopes, or ``scope``, the token's own space-separated claim (Cognito)."""
    base = copy.deepcopy(deployment.base_http)
    claims: dict[str, Any] = {"sub": sub}
    if scope is not None:
        claims["scope"] = scope
    base["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": scopes}}
    deployment.base_http = base


def test_a_jwt_caller_may_only_touch_its_own_user_unless_admin(deployment: Deployment) -> None:
    _as(deployment, "alice")
    own = {"events": [{"event_id": "a-1", "user_id": "alice", "item_id": "i-1", "type": "view"}]}
    other = {"events": [{"event_id": "b-1", "user_id": "bob", "item_id": "i-1", "type": "view"},
                        {"event_id": "a-2", "user_id": "alice", "item_id": "i-1", "type": "view"}]}

    status, body, _ = deployment.http("GET", "/users/bob/recommendations")
    assert status == 403 and body["error"] == "forbidden"
    assert deployment.http("DELETE", "/users/bob", function="events")[0] == 403
    assert deployment.http("POST", "/users/bob/onboarding", body={"interests": ["x"]},
                           function="cold_start")[0] == 403
    status, body, _ = deployment.http("POST", "/events", body=other, function="events")
    assert status == 403  # the whole batch: nothing written
    status, body, _ = deployment.http("POST", "/events", body=own, function="events")
    assert status == 202 and body["accepted"] == 1
    status, body, _ = deployment.http("DELETE", "/users/alice", function="events")
    assert status == 202
    deployment.drain_erasure_queue()
    status, body, _ = deployment.http("GET", "/users/alice/erasure", function="events")
    assert body["events_deleted"] == 1  # a-2 of the refused batch was never written
    assert deployment.http("GET", "/users/bob/erasure", function="events")[0] == 403

    _as(deployment, "support", [ADMIN_SCOPE])
    assert deployment.http("DELETE", "/users/bob", function="events")[0] == 202
    assert deployment.http("POST", "/events", body=other, function="events")[0] == 202

    # Deployed tokens carry the grant as the space-separated ``scope`` claim, with no ``scopes`` list
    _as(deployment, "support", scope=f"openid profile {ADMIN_SCOPE}")
    assert deployment.http("GET", "/users/bob/recommendations")[0] != 403
    assert deployment.http("DELETE", "/users/bob", function="events")[0] == 202
    _as(deployment, "support", scope=f"openid {ADMIN_SCOPE}-not")  # a look-alike scope grants nothing
    assert deployment.http("DELETE", "/users/bob", function="events")[0] == 403


@pytest.mark.parametrize(
    ("path", "params", "function", "status", "field"),
    [
        ("/users/u/recommendations", {"k": 101}, "recommend", 400, "k"),
        ("/users/u/recommendations", {"k": "ten"}, "recommend", 400, "k"),
        ("/users/u/recommendations", {"min_price": 9, "max_price": 1}, "recommend", 422, "min_price"),
        ("/users/u/recommendations", {"category": ",".join(f"c{i}" for i in range(50))}, "recommend", 400,
         "category"),
        ("/search", {"q": "x" * 1001}, "cold_start", 400, "q"),
        ("/items/i/similar", {"k": 0}, "recommend", 400, "k"),
    ],
)
def test_limits_answer_4xx_with_field_and_reason(
    deployment: Deployment, path: str, params: dict[str, Any], function: str, status: int, field: str
) -> None:
    got, body, _ = deployment.http("GET", path, params, function=function)
    assert (got, body["field"]) == (status, field) and body["reason"]


def test_batch_and_body_limits(deployment: Deployment) -> None:
    event = {"user_id": "u", "item_id": "i", "type": "view"}
    events = {"events": [{**event, "event_id": f"e{i}"} for i in range(101)]}
    status, body, _ = deployment.http("POST", "/events", body=events, function="events")
    assert status == 413 and body["field"] == "events"
    huge = {"interests": ["x" * 300_000]}
    status, body, _ = deployment.http("POST", "/users/u/onboarding", body=huge, function="cold_start")
    assert status == 413 and body["field"] == "body"


def test_a_forced_exception_is_a_generic_500_without_internals(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("secret table name embrec-items at /var/task/app.py line 3")

    monkeypatch.setattr(service, "delete_user", boom)
    status, body, headers = deployment.http("DELETE", "/users/u", function="events")
    assert status == 500 and body == {"error": "internal_error", "message": "internal error"}
    assert "secret" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    assert headers["Cache-Control"] == "no-store"


def test_personal_responses_are_private_no_store(deployment: Deployment) -> None:
    status, _, headers = deployment.http("DELETE", "/users/u", function="events")
    assert status == 202 and headers["Cache-Control"] == "private, no-store"
    events = {"events": [{"event_id": "p-1", "user_id": "u", "item_id": "i", "type": "view"}]}
    status, _, headers = deployment.http("POST", "/events", body=events, function="events")
    assert status == 202 and headers["Cache-Control"] == "private, no-store"


# ---- issue 15: hostile input (8), one id rule (11), no leaks (12) ------------------------------------------


def _raw_post(deployment: Deployment, path: str, text: str, function: str) -> tuple[int, dict[str, Any]]:
    """POST a body exactly as given (``Deployment.http`` would JSON-encode it)."""
    event = copy.deepcopy(deployment.base_http)
    event["routeKey"] = event["requestContext"]["routeKey"] = f"POST {path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = "POST"
    event["body"] = text
    response = deployment.function(function).invoke(event)
    return response["statusCode"], json.loads(response["body"])


def test_hostile_bodies_are_4xx_naming_the_field_never_a_500(deployment: Deployment) -> None:
    nested = "[" * 60_000 + "]" * 60_000  # 120 KB: under the body limit, past the recursion limit
    status, body = _raw_post(deployment, "/events", '{"events": ' + nested + "}", "events")
    assert (status, body["field"]) == (400, "body")
    status, body = _raw_post(deployment, "/users/u/onboarding", '{"interests": ' + nested + "}", "cold_start")
    assert (status, body["field"]) == (400, "body")

    event = {"event_id": "h-1", "user_id": "u", "item_id": "i", "type": "view"}
    batch = {"events": [{**event, "timestamp": 10**400}, {**event, "event_id": "h-2", "value": -(10**400)},
                        {**event, "event_id": "h-3", "type": ["view"]}, {**event, "event_id": "h-4"}]}
    status, body, _ = deployment.http("POST", "/events", body=batch, function="events")
    assert status == 202 and body["accepted"] == 1  # the good event is written, each bad one named
    fields = {r["event_id"]: r.get("field") for r in body["results"] if r["status"] == "rejected"}
    assert fields == {"h-1": "timestamp", "h-2": "value", "h-3": "type"}


ID_CATALOG = [
    {"item_id": "sku|1", "title": "Trail running shoe", "category": "shoes"},
    {"item_id": "sku-2", "title": "Road running shoe", "category": "shoes"},
    {"item_id": "sku:3", "title": "Waterproof hiking boot", "category": "shoes"},
    {"item_id": "SKU 4", "title": "Running socks"},  # each of these three breaks the id rule
    {"item_id": "a/b", "title": "Rain jacket"},
    {"item_id": "café", "title": "Espresso cup"},
]


def test_one_id_rule_at_every_door(deployment: Deployment) -> None:
    bucket = deployment.env["EMBREC_BUCKET"]
    # Catalog door: an id no client could send is refused with the rule, not recommended
    deployment.clients.s3.put_object(Bucket=bucket, Key="catalog/incoming/ids.jsonl",
                                     Body=to_jsonl(ID_CATALOG))
    deployment.drain_ingest_queue()
    report = deployment.clients.s3.get_object(Bucket=bucket, Key="catalog/reports/ids.jsonl.json")
    assert json.loads(report["Body"].read())["rejected"] == 3
    rejected = deployment.clients.s3.get_object(Bucket=bucket, Key="catalog/rejected/ids.jsonl.jsonl")
    reasons = [json.loads(line)["errors"] for line in rejected["Body"].read().splitlines()]
    assert reasons == [[{"field": "item_id", "reason": ID_RULE}]] * 3
    assert deployment.rebuild()["items"] == 3

    # JWT door: a subject with '|' (as Auth0 issues them) reaches its own data, through every route
    _as(deployment, "auth0|123")
    mine = {"events": [{"event_id": "j-1", "user_id": "auth0|123", "item_id": "sku|1", "type": "like"}]}
    status, body, _ = deployment.http("POST", "/events", body=mine, function="events")
    assert (status, body["accepted"]) == (202, 1)
    status, body, _ = deployment.http("GET", "/users/auth0|123/recommendations")
    assert status == 200 and body["strategy"] == "personalized"
    assert "sku|1" not in {i["item_id"] for i in body["items"]}  # seen: the event reached the user's history
    status, body, _ = deployment.http("GET", "/items/sku|1/similar")
    assert status == 200 and {i["item_id"] for i in body["items"]} == {"sku-2", "sku:3"}
    assert deployment.http("GET", "/users/auth0|124/recommendations")[0] == 403
    assert deployment.http("DELETE", "/users/auth0|123", function="events")[0] in (200, 202)

    # Path door: an id outside the rule is a 400 naming it (checked before the object-level guard)
    status, body, _ = deployment.http("GET", "/users/a b/recommendations")
    assert (status, body["field"]) == (400, "user_id")
    status, body, _ = deployment.http("GET", "/items/SKU 4/similar")
    assert (status, body["field"]) == (400, "item_id")


def test_health_and_errors_name_no_bucket_key_or_raw_error(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = deployment.env["EMBREC_BUCKET"]
    s3 = deployment.clients.s3
    # /health is unauthenticated: it says what it serves, not where it is stored
    status, body, _ = deployment.http("GET", "/health")
    assert status == 200 and bucket not in json.dumps(body)

    # A corrupt pointer: a generic 503 for the client, the key and the reason in the log
    s3.put_object(Bucket=bucket, Key="index/current.json", Body=b"{not json")
    status, body, _ = deployment.http("GET", "/health")
    assert status == 503 and body == {"status": "degraded", "error": "artifact_integrity",
                                      "message": "the index cannot be served"}
    assert "index/current.json: not valid JSON" in caplog.text
    s3.delete_object(Bucket=bucket, Key="index/current.json")

    # An index whose encoder is missing from S3: /search is a generic 500, never a 404 naming s3://bucket/key
    s3.put_object(Bucket=bucket, Key="catalog/incoming/c.jsonl", Body=to_jsonl(ID_CATALOG[:3]))
    deployment.drain_ingest_queue()
    assert deployment.rebuild()["items"] == 3
    current = json.loads(s3.get_object(Bucket=bucket, Key="encoder/current.json")["Body"].read())
    manifest_key = f"encoder/{current['encoder_id']}/encoder.json"
    marker = s3.delete_object(Bucket=bucket, Key=manifest_key)["VersionId"]  # versioned: a delete marker
    reset_runtime()  # a cold search container (in-process, the functions share one runtime: ingest loaded it)
    try:
        status, body, _ = deployment.http("GET", "/search", {"q": "running shoe"}, function="cold_start")
    finally:
        s3.delete_object(Bucket=bucket, Key=manifest_key, VersionId=marker)  # the module's encoder is back
    assert status == 500 and body == {"error": "internal_error", "message": "internal error"}
    assert f"s3://{bucket}/{manifest_key}" in caplog.text
