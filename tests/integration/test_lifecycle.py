"""The whole life of a deployment, through the real handlers, under in-process moto.

Given the bucket, queues and tables created from template.yaml's own definitions, the encoder published to S3
and a MovieLens catalog slice uploaded to catalog/incoming/ (moto delivers the S3 -> SQS notification), when
the ingest, rebuild, events, recommend and cold-start handlers are fed API Gateway / SQS / scheduler events,
then recommendations change with events, onboarding and search work, a deleted user gets trending, and a new
item is searchable and similar-able without a rebuild.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from moto import mock_aws

from embrec import aws
from embrec.artifacts import ArtifactStore
from embrec.datasets import load_movielens, to_jsonl
from embrec.local.runtime import LambdaFunction, function_specs
from embrec.runtime import reset_runtime
from embrec.template import create_local_resources, load_template, settings_env

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
SLICE = ROOT / "tests" / "fixtures" / "movielens-slice"


class Deployment:
    """The template's functions, invoked in-process with events shaped as AWS sends them."""

    def __init__(self, env: dict[str, str], clients: aws.AwsClients) -> None:
        self.env = env
        self.clients = clients
        self.functions = {
            logical_id: LambdaFunction(spec)
            for logical_id, spec in function_specs(load_template(), ROOT).items()
        }
        self.base_http = json.loads((EVENTS / "http_api_v2.json").read_text())

    def function(self, directory: str) -> LambdaFunction:
        for fn in self.functions.values():
            if fn.spec.module_file.parent.name == directory:
                return fn
        raise KeyError(directory)

    def http(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             function: str = "recommend") -> tuple[int, dict[str, Any], dict[str, str]]:
        event = copy.deepcopy(self.base_http)
        event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {path}"
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        if params:
            event["rawQueryString"] = urlencode(params)
            event["queryStringParameters"] = {k: str(v) for k, v in params.items()}
        if body is not None:
            event["body"] = json.dumps(body)
        response = self.function(function).invoke(event)
        return response["statusCode"], json.loads(response["body"]), response.get("headers", {})

    def drain_ingest_queue(self) -> list[dict[str, Any]]:
        """Receive what S3 delivered to the ingest queue and feed it to the ingest handler, as Lambda does."""
        url = self.env["EMBREC_INGEST_QUEUE_URL"]
        outcomes = []
        while True:
            received = self.clients.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = received.get("Messages", [])
            if not messages:
                return outcomes
            event = {"Records": [
                {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                 "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                 "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
                 "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:embrec-ingest",
                 "awsRegion": "us-east-1"}
                for m in messages
            ]}
            result = self.function("ingest").invoke(event)
            failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
            assert not failed, f"ingest failed for {failed}"
            for m in messages:
                self.clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            outcomes.append(result)

    def rebuild(self) -> dict[str, Any]:
        return self.function("rebuild").invoke(json.loads((EVENTS / "scheduled_rebuild.json").read_text()))


@pytest.fixture
def deployment(tmp_path: Path, encoder_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("EMBREC_AWS_ENDPOINT", raising=False)
    with mock_aws():
        reset_runtime()
        aws.clients.cache_clear()
        from embrec.config import Settings

        bootstrap = aws.clients(Settings())
        template = load_template()
        resources = create_local_resources(template, bootstrap)
        env = settings_env(template, resources)
        env.update(EMBREC_CACHE_DIR=str(tmp_path / "cache"), EMBREC_INDEX_REFRESH_SECONDS="0",
                   EMBREC_SHARED_CACHE_SECONDS="0", EMBREC_ENCODER_THREADS="2")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        reset_runtime()
        ArtifactStore(bootstrap.s3, resources.bucket, tmp_path / "publish").publish_encoder(encoder_dir)
        yield Deployment(env, bootstrap)
        reset_runtime()
        aws.clients.cache_clear()


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

    # Deleting the user erases events and profile at once: the next answer is trending again
    status, body, _ = deployment.http("DELETE", "/users/u-1", function="events")
    assert status == 200 and body["events_deleted"] == 1
    status, body, _ = deployment.http("GET", "/users/u-1/recommendations")
    assert body["strategy"] == "trending"
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
