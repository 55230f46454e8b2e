"""A re-run of the same build changes nothing; a real change publishes (issue 8, line 7, second half).

Through the real rebuild handler under moto: the graph file of two identical builds differs byte for byte
(hnswlib), so the version name (content hash) differs too, but the input identity recorded in the pointer
(embrec.aws.artifacts.input_identity) is the same, and the second rebuild is "unchanged" with nothing written.
"""

from __future__ import annotations

import json
from typing import Any

from deployment import ROOT, Deployment

from embrec_tools.datasets import load_movielens, to_jsonl

SLICE = ROOT / "tests" / "fixtures" / "movielens-slice"


def _objects(deployment: Deployment) -> dict[str, str]:
    s3, bucket = deployment.clients.s3, deployment.env["EMBREC_BUCKET"]
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="index/"):
        found.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return found


def _pointer(deployment: Deployment) -> dict[str, Any]:
    s3, bucket = deployment.clients.s3, deployment.env["EMBREC_BUCKET"]
    return dict(json.loads(s3.get_object(Bucket=bucket, Key="index/current.json")["Body"].read()))


def test_rebuild_twice_without_change_is_unchanged_then_a_new_item_publishes(deployment: Deployment) -> None:
    rows = load_movielens(SLICE).catalog_rows[:60]
    bucket = deployment.env["EMBREC_BUCKET"]
    deployment.clients.s3.put_object(Bucket=bucket, Key="catalog/incoming/a.jsonl", Body=to_jsonl(rows))
    deployment.drain_ingest_queue()
    first = deployment.rebuild()
    assert first["status"] == "published"
    pointer, objects = _pointer(deployment), _objects(deployment)

    # When the same rebuild runs again with nothing changed in between
    second = deployment.rebuild()

    # Then it is "unchanged": same version, the pointer and every index object untouched
    assert second["status"] == "unchanged" and second["version"] == first["version"]
    assert _pointer(deployment) == pointer and _objects(deployment) == objects

    # When one new item arrives, the next rebuild publishes a new version
    new = {"item_id": "rerun-new-1", "title": "A brand new film", "category": "Drama"}
    deployment.clients.s3.put_object(Bucket=bucket, Key="catalog/incoming/b.jsonl", Body=to_jsonl([new]))
    deployment.drain_ingest_queue()
    third = deployment.rebuild()
    assert third["status"] == "published" and third["version"] != first["version"]
    assert third["items"] == first["items"] + 1
    assert _pointer(deployment)["version"] == third["version"] != pointer["version"]
