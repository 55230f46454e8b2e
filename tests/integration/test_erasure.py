"""Erasure that always completes (issue 15 item 7): accepted at once, hidden at once, finished by a job.

Given a user with 30,000 events (a 10 s function deleting 25 at a time could not), when the user is erased,
then the answer is 202 and the next recommendation is trending before anything is deleted, the job erases
every event in bounded steps, and ``GET /users/{id}/erasure`` says when it is complete.
"""

from __future__ import annotations

from typing import Any

import pytest
from deployment import Deployment
from test_request_cost import _seed_index, _write_history

from embrec.app import service


def _rows(deployment: Deployment, user: str) -> int:
    return int(deployment.clients.dynamodb.query(
        TableName=deployment.env["EMBREC_INTERACTIONS_TABLE"], KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": user}}, Select="COUNT")["Count"])


@pytest.mark.slow
def test_erasing_a_user_with_30k_events_completes_in_bounded_steps(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_index(deployment)
    _write_history(deployment, "big", 30_000)
    assert deployment.http("GET", "/users/big/recommendations")[1]["strategy"] == "personalized"
    monkeypatch.setattr(service, "ERASE_ROWS_PER_STEP", 5_000)
    steps: list[dict[str, Any]] = []
    step = service.erase_step
    monkeypatch.setattr(service, "erase_step", lambda runtime, body: steps.append(step(runtime, body)))

    # When the user is erased, Then it is accepted at once and the user's data is hidden at once
    status, body, _ = deployment.http("DELETE", "/users/big", function="events")
    assert status == 202 and body["status"] == "pending" and body["events_deleted"] == 0
    assert deployment.http("GET", "/users/big/recommendations")[1]["strategy"] == "trending"
    status, body, _ = deployment.http("GET", body["status_url"], function="events")
    assert status == 200 and body["status"] == "pending"

    # When the job runs, Then every step is bounded and the last one completes the erasure
    deployment.drain_erasure_queue()
    assert len(steps) >= 6 and all(s["events_deleted"] <= 5_000 for s in steps)
    assert [s["status"] for s in steps] == ["continued"] * (len(steps) - 1) + ["complete"]
    status, body, _ = deployment.http("GET", "/users/big/erasure", function="events")
    assert body["status"] == "complete" and body["events_deleted"] == 30_000 and body["completed_at"]
    assert _rows(deployment, "big") == 1  # only the marker, which expires with the erased events' TTL


@pytest.mark.parametrize("user", ["a.b_c-d", "mail:x@example.com", "k+v=1", "A" * 128])
def test_every_id_the_events_api_accepts_can_be_erased(deployment: Deployment, user: str) -> None:
    event = {"event_id": "e-1", "user_id": user, "item_id": "i-1", "type": "view"}
    status, body, _ = deployment.http("POST", "/events", body={"events": [event]}, function="events")
    assert status == 202 and body["accepted"] == 1

    status, body, _ = deployment.http("DELETE", f"/users/{user}", function="events")
    assert status == 202, body
    deployment.drain_erasure_queue()
    status, body, _ = deployment.http("GET", f"/users/{user}/erasure", function="events")
    assert body["status"] == "complete" and body["events_deleted"] == 1
    assert _rows(deployment, user) == 1


def test_erasure_status_of_a_user_never_erased_is_404(deployment: Deployment) -> None:
    status, body, _ = deployment.http("GET", "/users/nobody/erasure", function="events")
    assert status == 404 and body["error"] == "not_found"
