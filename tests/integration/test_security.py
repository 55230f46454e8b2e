"""Issue 8, security: object-level authorisation under JWT, limits, no leaked internals, private caching.

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
from embrec.edge.auth import ADMIN_SCOPE


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
