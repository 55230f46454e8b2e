"""A rebuild never publishes a near-empty index by accident (issue 15, item 4), through the real handlers.

A shrink past EMBREC_REBUILD_MAX_SHRINK (50%) of the live version is refused with a metric (and a template
alarm on it), unless forced (``embrec rebuild --allow-shrink``); an empty catalog gives an index of the
encoder's dimension that answers empty lists, not a 500.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from deployment import Deployment

from embrec.app import service
from embrec.app.runtime import get_runtime
from embrec.errors import UnprocessableError


def _upload(deployment: Deployment, key: str, rows: list[dict[str, Any]]) -> None:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    deployment.clients.s3.put_object(Bucket=deployment.env["EMBREC_BUCKET"], Key=key, Body=body)
    deployment.drain_ingest_queue()


def _pointer(deployment: Deployment) -> dict[str, Any]:
    s3, bucket = deployment.clients.s3, deployment.env["EMBREC_BUCKET"]
    return dict(json.loads(s3.get_object(Bucket=bucket, Key="index/current.json")["Body"].read()))


def test_a_90_percent_shrink_is_refused_with_a_metric_unless_forced(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"item_id": f"s-{i}", "title": f"Catalog item {i}", "category": "Drama"} for i in range(20)]
    _upload(deployment, "catalog/incoming/all.jsonl", rows)
    first = deployment.rebuild()
    assert first["status"] == "published" and first["items"] == 20

    # Given 18 of the 20 items tombstoned (a swapped or emptied table looks the same to the rebuild)
    gone = [{"item_id": f"s-{i}", "deleted": True} for i in range(18)]
    _upload(deployment, "catalog/incoming/gone.jsonl", gone)
    capsys.readouterr()

    # When the rebuild runs, it refuses: nothing published, a metric for the alarm
    with pytest.raises(UnprocessableError, match="--allow-shrink"):
        service.rebuild(get_runtime())
    assert _pointer(deployment)["version"] == first["version"]
    assert '"RebuildShrinkRefused"' in capsys.readouterr().out

    # When the operator forces it, the small index is published
    forced = service.rebuild(get_runtime(), allow_shrink=True)
    assert forced["status"] == "published" and forced["items"] == 2
    assert _pointer(deployment)["version"] == forced["version"]


def test_an_empty_catalog_publishes_an_index_of_the_encoders_dimension_and_search_answers_200(
    deployment: Deployment,
) -> None:
    # Given no live item at all (the first rebuild of a new deployment)
    built = deployment.rebuild()
    assert built["status"] == "published" and built["items"] == 0

    query = {"q": "anything at all", "k": 3}
    status, body, _ = deployment.http("GET", "/search", query, function="cold_start")
    assert status == 200 and body["items"] == []
    status, body, _ = deployment.http("GET", "/users/nobody/recommendations", {"k": 3})
    assert status == 200 and body["items"] == []
