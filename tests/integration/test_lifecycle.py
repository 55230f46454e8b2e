"""The whole life of a deployment, through the real handlers, under in-process moto.

Given the bucket, queues and tables created from template.yaml's own definitions, the encoder published to S3
and a MovieLens catalog slice uploaded to catalog/incoming/ (moto delivers the S3 -> SQS notification), when
the ingest, rebuild, events, recommend and cold-start handlers are fed API Gateway / SQS / scheduler events,
then recommendations change with events, onboarding and search work, a deleted user gets trending, and a new
item is searchable and similar-able without a rebuild.
"""

from __future__ import annotations

import json

from deployment import ROOT, Deployment

from embrec_tools.datasets import load_movielens, to_jsonl

SLICE = ROOT / "tests" / "fixtures" / "movielens-slice"


def _upload(deployment: Deployment, key: str, body: bytes) -> None:
    deployment.clients.s3.put_object(Bucket=deployment.env["EMBREC_BUCKET"], Key=key, Body=body)


def test_whole_life(deployment: Deployment) -> None:
    dataset = load_movielens(SLICE)
    bucket = deployment.env["EMBREC_BUCKET"]
    # Given a catalog with one bad row, uploaded under a key with a space (URL-encoded in the notification)
    rows = [*dataset.catalog_rows, {"item_id": "bad-1", "price": -3}]
    _upload(deployment, "catalog/incoming/movies slice.jsonl", to_jsonl(rows))

    # When S3 -> SQS -> ingest runs, then the rebuild
    deployment.drain_ingest_queue()
    report = json.loads(
        deployment.clients.s3.get_object(Bucket=bucket, Key="catalog/reports/movies slice.jsonl.json")[
            "Body"
        ].read()
    )
    assert report["total"] == len(rows)
    assert report["rejected"] == 1 and report["accepted"] == len(dataset.catalog_rows)
    assert report["total"] == report["accepted"] + report["unchanged"] + report["rejected"]
    rejected = deployment.clients.s3.get_object(
        Bucket=bucket, Key="catalog/rejected/movies slice.jsonl.jsonl"
    )
    rejected_rows = [json.loads(line) for line in rejected["Body"].read().splitlines()]
    assert rejected_rows[0]["line"] == len(rows)
    assert {e["field"] for e in rejected_rows[0]["errors"]} >= {"title", "price"}

    rebuilt = deployment.rebuild()
    assert rebuilt["status"] == "published" and rebuilt["items"] == len(dataset.catalog_rows)

    status, health, _ = deployment.http("GET", "/health")
    assert status == 200 and health["index_version"] == rebuilt["version"]
    assert health["items"] == len(dataset.catalog_rows)

    # A user with no history gets trending
    status, body, headers = deployment.http("GET", "/users/u-1/recommendations", {"k": 5})
    assert status == 200 and body["strategy"] == "trending"
    assert headers["Cache-Control"] == "private, no-store"

    # Then events change the very next recommendations
    toy_story = next(r["item_id"] for r in dataset.catalog_rows if r["title"].startswith("Toy Story"))
    events = {"events": [
        {"event_id": "e-1", "user_id": "u-1", "item_id": toy_story, "type": "like"},
        {"event_id": "e-2", "user_id": "u-1", "item_id": "no-such-item", "type": "like", "timestamp": -5},
    ]}
    status, body, _ = deployment.http("POST", "/events", body=events, function="events")
    assert status == 202 and body["accepted"] == 1 and body["rejected"] == 1
    assert body["results"][0]["field"] == "timestamp"
    status, body, _ = deployment.http("POST", "/events", body=events, function="events")
    assert status == 202
    assert [r["status"] for r in body["results"] if r.get("event_id") == "e-1"] == ["duplicate"]

    status, body, _ = deployment.http("GET", "/users/u-1/recommendations", {"k": 5, "explain": "true"})
    assert status == 200 and body["strategy"] == "personalized"
    assert toy_story not in [item["item_id"] for item in body["items"]]
    assert body["recommendation_id"] and body["variant"] and body["index_version"] == rebuilt["version"]
    assert all(item["reasons"] for item in body["items"])

    # Onboarding gives a cold-start profile and first picks
    onboarding = {"interests": ["animated films for children"], "goals": ["family movie night"],
                  "experience": "casual"}
    status, body, _ = deployment.http("POST", "/users/u-2/onboarding", body=onboarding, function="cold_start")
    assert status == 200 and body["strategy"] == "onboarding" and len(body["items"]) == 10
    status, body, _ = deployment.http("GET", "/users/u-2/recommendations")
    assert body["strategy"] == "onboarding"

    # Similar items and search
    status, body, _ = deployment.http("GET", f"/items/{toy_story}/similar", {"k": 3})
    assert status == 200 and len(body["items"]) == 3
    assert toy_story not in [i["item_id"] for i in body["items"]]
    status, body, _ = deployment.http("GET", "/search", {"q": "toy story", "k": 3}, function="cold_start")
    assert status == 200 and body["items"][0]["item_id"] == toy_story

    # Deleting the user hides events and profile at once (the next answer is trending again); the erasure
    # job then deletes the events, and the status says so
    status, body, _ = deployment.http("DELETE", "/users/u-1", function="events")
    assert status == 202 and body["status"] == "pending" and body["status_url"] == "/users/u-1/erasure"
    status, body, _ = deployment.http("GET", "/users/u-1/recommendations")
    assert body["strategy"] == "trending"
    deployment.drain_erasure_queue()
    status, body, _ = deployment.http("GET", "/users/u-1/erasure", function="events")
    assert status == 200 and body["status"] == "complete" and body["events_deleted"] == 1
    status, body, _ = deployment.http("DELETE", "/users/u-2", function="events")
    assert body["profile_deleted"] is True
    status, body, _ = deployment.http("GET", "/users/u-2/recommendations")
    assert body["strategy"] == "trending"

    # A new item appears without a rebuild (an index delta), and a tombstone removes one
    new_item = {"item_id": "new-1", "title": "Galactic Submarine Cooking Contest",
                "description": "Chefs compete underwater in deep space.", "category": "Comedy"}
    tombstone = {"item_id": toy_story, "deleted": True}
    _upload(deployment, "catalog/incoming/new.jsonl", to_jsonl([new_item, tombstone]))
    deployment.drain_ingest_queue()
    status, body, _ = deployment.http("GET", "/search", {"q": "underwater space cooking", "k": 3},
                                      function="cold_start")
    assert body["items"][0]["item_id"] == "new-1"
    status, body, _ = deployment.http("GET", "/items/new-1/similar", {"k": 3})
    assert status == 200 and len(body["items"]) == 3
    status, body, _ = deployment.http("GET", "/search", {"q": "toy story", "k": 10}, function="cold_start")
    assert toy_story not in [item["item_id"] for item in body["items"]]
    status, body, _ = deployment.http("GET", "/health")
    assert body["deltas_applied"] >= 1


def test_errors_are_json_with_field_and_reason(deployment: Deployment) -> None:
    status, body, _ = deployment.http("GET", "/users/u-1/recommendations", {"k": 0})
    assert status == 400 and body["field"] == "k"
    status, body, _ = deployment.http("GET", "/users/u-1/recommendations", {"min_price": 5, "max_price": 1})
    assert status == 422 and body["field"] == "min_price"
    status, body, _ = deployment.http("POST", "/events", body={"events": []}, function="events")
    assert status == 400 and body["field"] == "events"
    status, body, _ = deployment.http("GET", "/search", {"q": "x" * 1001}, function="cold_start")
    assert status == 400 and body["field"] == "q"
    # Before any rebuild there is no index: a clear 503, not a traceback
    status, body, _ = deployment.http("GET", "/users/u-1/recommendations")
    assert status == 503 and body["error"] == "service_unavailable"
