"""Issue 8, reliability: duplicates, malformed input, bad rows, injected faults, corrupt index, mismatches.

Everything runs through the real handlers of template.yaml under in-process moto (the ``Deployment`` of
test_lifecycle.py). Faults are injected with botocore event hooks on the runtime's own clients, so the
retry configuration under test is the one Lambda uses. Lines already proven elsewhere are listed in the
README section "Guarantees" with their tests.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError
from deployment import Deployment

from embrec.app import service
from embrec.app.runtime import get_runtime, reset_runtime
from embrec.errors import CompatibilityError
from embrec_tools.datasets import load_movielens, to_jsonl

ROOT = Path(__file__).resolve().parents[2]
SLICE = ROOT / "tests" / "fixtures" / "movielens-slice"
# A small catalog: enough to build an index, quick to encode.
CATALOG = load_movielens(SLICE).catalog_rows[:40]


def _sqs_record(message_id: str, body: str) -> dict[str, Any]:
    return {
        "messageId": message_id, "receiptHandle": f"rh-{message_id}", "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:embrec-ingest",
        "awsRegion": "us-east-1",
    }


def _s3_notification(bucket: str, key: str, etag: str) -> str:
    """The SQS body S3 sends for one upload: the key URL-encoded the way S3 does it (space as '+')."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/"), "eTag": etag}},
    }]})


def _put(deployment: Deployment, key: str, body: bytes) -> str:
    response = deployment.clients.s3.put_object(Bucket=deployment.env["EMBREC_BUCKET"], Key=key, Body=body)
    return str(response["ETag"]).strip('"')


def _ingest(deployment: Deployment, *bodies: str) -> dict[str, Any]:
    event = {"Records": [_sqs_record(f"m-{i}", body) for i, body in enumerate(bodies)]}
    return deployment.function("ingest").invoke(event)


def _get_json(deployment: Deployment, key: str) -> Any:
    body = deployment.clients.s3.get_object(Bucket=deployment.env["EMBREC_BUCKET"], Key=key)["Body"].read()
    return json.loads(body)


def _rejected(deployment: Deployment, key: str) -> list[dict[str, Any]]:
    body = deployment.clients.s3.get_object(Bucket=deployment.env["EMBREC_BUCKET"], Key=key)["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


def _item_count(deployment: Deployment) -> int:
    return int(deployment.clients.dynamodb.scan(TableName=deployment.env["EMBREC_ITEMS_TABLE"],
                                                Select="COUNT")["Count"])


def _seed(deployment: Deployment) -> dict[str, Any]:
    """Upload CATALOG (no S3 notification is drained: the test feeds events itself), ingest, rebuild."""
    bucket = deployment.env["EMBREC_BUCKET"]
    etag = _put(deployment, "catalog/incoming/seed.jsonl", to_jsonl(CATALOG))
    deployment.drain_ingest_queue()
    result = _ingest(deployment, _s3_notification(bucket, "catalog/incoming/seed.jsonl", etag))
    assert result["batchItemFailures"] == []
    return deployment.rebuild()


# ------------------------------------------------------------------------------------------- 1. duplicates
def test_the_same_s3_event_twice_and_concurrently_writes_items_once_and_reports_once(
    deployment: Deployment,
) -> None:
    bucket = deployment.env["EMBREC_BUCKET"]
    etag = _put(deployment, "catalog/incoming/dup.jsonl", to_jsonl(CATALOG[:8]))
    deployment.discard_queued()
    body = _s3_notification(bucket, "catalog/incoming/dup.jsonl", etag)
    written: list[int] = []
    dynamodb = get_runtime().aws.dynamodb
    dynamodb.meta.events.register("before-send.dynamodb.BatchWriteItem", lambda **_: written.append(1))
    get_runtime().encoder()  # loaded once, so both threads race on the claim and not on the ONNX session

    # When the same notification arrives twice at the same time (two pollers), then again later
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(_ingest(deployment, body))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.append(_ingest(deployment, body))

    # Then every delivery is acknowledged, the items were written by exactly one of them, and counted once
    assert all(r["batchItemFailures"] == [] for r in results)
    assert _item_count(deployment) == 8
    assert len(written) == 1
    report = _get_json(deployment, "catalog/reports/dup.jsonl.json")
    assert (report["total"], report["accepted"], report["rejected"]) == (8, 8, 0)


# ---------------------------------------------------------------------------------- 2. malformed records
def test_one_malformed_record_fails_alone_test_event_is_acknowledged_and_encoded_keys_are_read(
    deployment: Deployment,
) -> None:
    bucket = deployment.env["EMBREC_BUCKET"]
    key = "catalog/incoming/summer sale+extra (v2).jsonl"
    etag = _put(deployment, key, to_jsonl(CATALOG[:3]))
    deployment.discard_queued()
    test_event = (ROOT / "tests" / "events" / "s3_test_event.json").read_text()

    result = _ingest(deployment, _s3_notification(bucket, key, etag), "{not json", test_event,
                     json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}))

    # a body that can never succeed is acknowledged (logged, counted), not retried: issue 15 item 9
    assert result["batchItemFailures"] == []
    report = _get_json(deployment, "catalog/reports/summer sale+extra (v2).jsonl.json")
    assert report["key"] == key and report["accepted"] == 3


# ------------------------------------------------------------------------------------------- 3. bad rows
def test_bad_rows_are_rejected_with_line_and_reason_and_the_counts_add_up(deployment: Deployment) -> None:
    good = [dict(row) for row in CATALOG[:5]]
    lines = [
        json.dumps(good[0]).encode(),
        json.dumps({"title": "no id"}).encode(),                                        # 2 missing id
        json.dumps({"item_id": "nan-price", "title": "t", "price": float("nan")}).encode(),  # 3 NaN
        json.dumps(good[1]).encode(),
        json.dumps({"item_id": "huge", "title": "t", "description": "x" * (10 * 1024 * 1024)}).encode(),  # 5
        b'{"item_id": "latin1", "title": "caf\xe9"}',                                 # 6 bad UTF-8
        json.dumps({"item_id": ["a"], "title": 5, "tags": {"x": 1}}).encode(),        # 7 wrong types
        json.dumps(good[2]).encode(),
        json.dumps(good[0]).encode(),                                                   # 9 duplicate id
        json.dumps(good[3]).encode(),
        json.dumps(good[4]).encode(),
    ]
    bucket = deployment.env["EMBREC_BUCKET"]
    etag = _put(deployment, "catalog/incoming/messy.jsonl", b"\n".join(lines) + b"\n")
    deployment.discard_queued()

    result = _ingest(deployment, _s3_notification(bucket, "catalog/incoming/messy.jsonl", etag))

    assert result["batchItemFailures"] == []
    report = _get_json(deployment, "catalog/reports/messy.jsonl.json")
    assert report["total"] == len(lines)
    assert report["accepted"] == 5 and report["rejected"] == 6
    assert report["total"] == report["accepted"] + report["unchanged"] + report["rejected"]
    rejected = _rejected(deployment, "catalog/rejected/messy.jsonl.jsonl")
    assert [row["line"] for row in rejected] == [2, 3, 5, 6, 7, 9]
    assert all(row["errors"] and all(e["reason"] for e in row["errors"]) for row in rejected)
    assert _item_count(deployment) == 5


# -------------------------------------------------------------------------------------------- 4. faults
def _throttle(client: Any, operation: str, failures: int) -> dict[str, int]:
    """Answer the next ``failures`` calls of ``operation`` with DynamoDB throttling (HTTP 400)."""
    state = {"left": failures, "calls": 0}

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        state["calls"] += 1
        if state["left"] <= 0:
            return None
        state["left"] -= 1
        body = (b'{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",'
                b'"message":"throttled"}')
        return AWSResponse(request.url, 400, {"x-amzn-RequestId": "t"}, _Raw(body))

    client.meta.events.register(f"before-send.dynamodb.{operation}", hook)
    return state


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body

    def read(self, *_: Any) -> bytes:
        return self._body


def test_dynamodb_throttling_on_reads_and_writes_is_absorbed(deployment: Deployment) -> None:
    _seed(deployment)
    dynamodb = get_runtime().aws.dynamodb
    writes = _throttle(dynamodb, "TransactWriteItems", 2)
    reads = _throttle(dynamodb, "Query", 2)
    event = {"event_id": "t-1", "user_id": "u-t", "item_id": CATALOG[0]["item_id"], "type": "like"}

    status, body, _ = deployment.http("POST", "/events", body={"events": [event]}, function="events")
    assert status == 202 and body["accepted"] == 1
    status, body, _ = deployment.http("GET", "/users/u-t/recommendations", {"k": 5})
    assert status == 200 and body["strategy"] == "personalized"
    assert writes["left"] == 0 and reads["left"] == 0


def test_when_retries_run_out_the_api_answers_503_json_with_no_partial_write_and_the_retry_lands(
    deployment: Deployment,
) -> None:
    dynamodb = get_runtime().aws.dynamodb
    events = {"events": [
        {"event_id": f"x-{i}", "user_id": "u-x", "item_id": "i-1", "type": "view"} for i in range(3)
    ]}

    def down(request: Any, **_: Any) -> None:
        raise EndpointConnectionError(endpoint_url=request.url)

    dynamodb.meta.events.register("before-send.dynamodb", down)
    status, body, _ = deployment.http("POST", "/events", body=events, function="events")
    assert status == 503 and body["error"] == "service_unavailable"
    assert "Traceback" not in json.dumps(body)
    dynamodb.meta.events.unregister("before-send.dynamodb", down)
    stored = deployment.clients.dynamodb.query(
        TableName=deployment.env["EMBREC_INTERACTIONS_TABLE"], KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": "u-x"}})
    assert stored["Count"] == 0  # nothing partial

    # The client retries the same batch: every event lands exactly once
    status, body, _ = deployment.http("POST", "/events", body=events, function="events")
    assert status == 202 and body["accepted"] == 3
    status, body, _ = deployment.http("POST", "/events", body=events, function="events")
    assert [r["status"] for r in body["results"]] == ["duplicate"] * 3


def test_when_the_second_transaction_of_a_batch_fails_only_the_written_half_is_accepted(
    deployment: Deployment,
) -> None:
    # Given a batch of 100 events (two transactions of 50) and DynamoDB down for the second one only
    dynamodb = get_runtime().aws.dynamodb
    events = {"events": [
        {"event_id": f"t-{i:03d}", "user_id": "u-t", "item_id": "i-1", "type": "view"} for i in range(100)
    ]}

    def second_half_down(request: Any, **_: Any) -> None:
        if b'"t-099"' in bytes(request.body or b""):
            raise EndpointConnectionError(endpoint_url=request.url)

    dynamodb.meta.events.register("before-send.dynamodb.TransactWriteItems", second_half_down)
    status, body, _ = deployment.http("POST", "/events", body=events, function="events")
    dynamodb.meta.events.unregister("before-send.dynamodb.TransactWriteItems", second_half_down)

    # Then "accepted" counts only what was written; the rest is failed and retryable, not silently lost
    assert status == 202
    assert body["accepted"] == 50 and body["failed"] == 50
    statuses = {r["event_id"]: r for r in body["results"]}
    assert {statuses[f"t-{i:03d}"]["status"] for i in range(50)} == {"accepted"}
    assert all(statuses[f"t-{i:03d}"]["status"] == "failed" and statuses[f"t-{i:03d}"]["retryable"]
               for i in range(50, 100))
    stored = deployment.clients.dynamodb.query(
        TableName=deployment.env["EMBREC_INTERACTIONS_TABLE"], KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": "u-t"}}, Select="COUNT")
    assert stored["Count"] == 50

    # When the client resends the whole batch, Then the failed half lands and the written half is a duplicate
    status, body, _ = deployment.http("POST", "/events", body=events, function="events")
    assert status == 202 and (body["accepted"], body["failed"]) == (100, 0)
    assert [r["status"] for r in body["results"]] == ["duplicate"] * 50 + ["accepted"] * 50


# ------------------------------------------------------------------------------------ 5. corrupt index
def test_a_cold_container_refuses_a_corrupt_index_and_serves_the_last_verified_one_with_a_metric(
    deployment: Deployment, capsys: pytest.CaptureFixture[str],
) -> None:
    first = _seed(deployment)
    extra = {"item_id": "late-1", "title": "A late addition", "category": "Drama"}
    bucket = deployment.env["EMBREC_BUCKET"]
    _put(deployment, "catalog/incoming/late.jsonl", to_jsonl([extra]))
    deployment.drain_ingest_queue()
    second = deployment.rebuild()
    assert second["status"] == "published" and second["version"] != first["version"]

    # Given one byte flipped in the live version's graph (its manifest hash no longer matches)
    key = f"index/{second['version']}/index/graph.hnsw"
    data = bytearray(deployment.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    deployment.clients.s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))

    # When a new container starts
    reset_runtime()
    capsys.readouterr()
    status, body, _ = deployment.http("GET", "/users/nobody/recommendations", {"k": 3})

    # Then it refuses the corrupt version, answers from the previous verified one (trending for a new user),
    # and says so in metrics; the item added since then still reaches it as a delta
    assert status == 200 and body["strategy"] == "trending"
    assert body["index_version"] == first["version"]
    logs = capsys.readouterr().out
    assert '"IndexRefused"' in logs and '"IndexFallback"' in logs
    status, health, _ = deployment.http("GET", "/health")
    assert health["index_version"] == first["version"] and health["items"] == len(CATALOG) + 1


# ------------------------------------------------------------------------------------- 6. mismatches
def test_rebuild_refuses_to_publish_items_of_another_encoder_dimension(deployment: Deployment) -> None:
    _seed(deployment)
    before = _get_json(deployment, "index/current.json")
    runtime = get_runtime()
    real = runtime.encoder_manifest()
    runtime.encoder_manifest = lambda encoder_id=None: {**real, "dim": 768}  # type: ignore[method-assign]

    with pytest.raises(CompatibilityError):
        service.rebuild(runtime)
    assert _get_json(deployment, "index/current.json") == before
