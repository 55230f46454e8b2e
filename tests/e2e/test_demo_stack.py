"""The real stack end to end: template.yaml, the real handlers, moto over HTTP, the API over real HTTP.

Given the local stack on free ports with the cached encoder published and a MovieLens slice uploaded through
boto3 to catalog/incoming/ (S3 -> SQS -> ingest handler) and rebuilt, when clients call the API with
``requests`` and upload with the real AWS CLI, then every route answers as documented, and a new item
uploaded while serving becomes searchable and similar-able without a rebuild.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from live_stack import Stack

from embrec_tools.datasets import to_jsonl

pytestmark = pytest.mark.timeout(180)

AWS_CLI = Path(sys.executable).with_name("aws")
KID_HISTORY = ("ml-1", "ml-2018", "ml-594", "ml-588")  # Toy Story, Bambi, Snow White, Aladdin
FAMILY = frozenset({"Animation", "Children"})


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def test_ingest_report_and_health(stack: Stack) -> None:
    report = stack.report("slice.jsonl")
    assert report is not None and report["accepted"] == len(stack.rows) and report["rejected"] == 0
    assert stack.rebuilt["status"] == "published" and stack.rebuilt["items"] == len(stack.rows)
    response = stack.get("/health")
    assert response.status_code == 200
    health = response.json()
    assert health["index_version"] == stack.rebuilt["version"]
    assert health["items"] == len(stack.rows) and health["encoder_id"].startswith("all-MiniLM-L6-v2")


def test_events_personalize_then_delete_falls_back_to_trending(stack: Stack) -> None:
    user = "e2e-kid"
    now = time.time()
    events = [
        {"event_id": f"kid-{i}", "user_id": user, "item_id": item, "type": "like", "timestamp": now - 60 + i}
        for i, item in enumerate(KID_HISTORY)
    ]
    # When the user's likes are posted
    response = stack.http.post(stack.url("/events"), json={"events": events}, timeout=60)
    assert response.status_code == 202
    assert response.json()["accepted"] == len(KID_HISTORY)

    # Then the next recommendations are personalised, skip what was seen, and lean animation/children
    response = stack.get(f"/users/{user}/recommendations", k=5, explain="true")
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "personalized" and body["index_version"] == stack.rebuilt["version"]
    assert body["recommendation_id"] and len(body["items"]) == 5
    assert not set(_ids(body)) & set(KID_HISTORY)
    assert all(item["reasons"] and item["title"] for item in body["items"])
    family = [i for i in _ids(body) if stack.tags[i] & FAMILY]
    assert len(family) >= 3, body["items"]

    # When the user is erased, then the answer is trending again at once, and the erasure job (the events
    # function, fed by the erasure queue) deletes the events
    response = stack.http.delete(stack.url(f"/users/{user}"), timeout=60)
    assert response.status_code == 202 and response.json()["status"] == "pending"
    body = stack.get(f"/users/{user}/recommendations", k=5).json()
    assert body["strategy"] == "trending" and len(body["items"]) == 5
    status_url = stack.url(response.json()["status_url"])
    assert stack.eventually(lambda: stack.http.get(status_url, timeout=60).json()["status"] == "complete")
    assert stack.http.get(status_url, timeout=60).json()["events_deleted"] == len(KID_HISTORY)


def test_onboarding_similar_search_openapi(stack: Stack) -> None:
    answers = {"interests": ["animated fairy tales"], "goals": ["movie night with small kids"],
               "experience": "casual"}
    response = stack.http.post(stack.url("/users/e2e-new/onboarding"), json=answers, timeout=60)
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "onboarding" and len(body["items"]) == 10
    assert sum(1 for i in _ids(body)[:5] if stack.tags[i] & FAMILY) >= 3, body["items"]
    assert stack.get("/users/e2e-new/recommendations").json()["strategy"] == "onboarding"

    response = stack.get("/items/ml-1/similar", k=3)
    assert response.status_code == 200 and len(response.json()["items"]) == 3
    assert "ml-1" not in _ids(response.json())

    response = stack.get("/search", q="toy story", k=3)
    assert response.status_code == 200 and _ids(response.json())[0] == "ml-1"

    response = stack.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/users/{user_id}/recommendations", "/events", "/search", "/health"} <= set(paths)

    response = stack.get("/items/ml-1/similar", k=0)
    assert response.status_code == 400 and response.json()["error"]
    assert stack.get("/items/no-such-item/similar").status_code == 404


def test_aws_cli_upload_while_serving_shows_up_without_rebuild(stack: Stack, tmp_path: Path) -> None:
    new_item = {"item_id": "e2e-new-1", "title": "Galactic Submarine Cooking Contest",
                "description": "Chefs compete underwater in deep space.", "category": "Comedy"}
    catalog = tmp_path / "new items.jsonl"
    catalog.write_bytes(to_jsonl([new_item]))
    # When the real AWS CLI uploads to catalog/incoming/ on the local endpoint
    cli_env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": stack.env.region, "AWS_PAGER": ""}
    done = subprocess.run(
        [str(AWS_CLI), "--endpoint-url", stack.env.endpoint_url, "s3", "cp", str(catalog),
         f"s3://{stack.bucket}/catalog/incoming/"],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr

    # Then, with no rebuild, the item is found by search and has similar items within a minute
    def searchable() -> bool:
        response = stack.get("/search", q="underwater space cooking contest", k=3)
        return response.status_code == 200 and _ids(response.json())[:1] == ["e2e-new-1"]

    assert stack.eventually(searchable, timeout=60)
    response = stack.get("/items/e2e-new-1/similar", k=3)
    assert response.status_code == 200 and len(response.json()["items"]) == 3
    report = stack.report("new items.jsonl")
    assert report is not None and report["accepted"] == 1
    health = stack.get("/health").json()
    assert health["index_version"] == stack.rebuilt["version"] and health["deltas_applied"] >= 1
