"""Multi-modal items through the deployed functions: S3 upload -> ingest -> rebuild -> search, onboarding,
recommendations and similar items on a fused index, then a delta in the fused layout on a warm container."""

from __future__ import annotations

import json

import numpy as np
from deployment import Deployment

from embrec.app.runtime import get_runtime
from embrec.engine.index import VectorIndex

IMAGE_DIM = 12
COLD = "cold_start"
CATALOG = [
    ("moon", "Moon landing documentary", "Space"),
    ("rover", "Mars rover photo book", "Space"),
    ("bread", "Sourdough bread baking guide", "Food"),
    ("pasta", "Fresh pasta cookbook", "Food"),
    ("jazz", "Jazz piano lessons", "Music"),
    ("violin", "Violin for beginners", "Music"),
]


def _upload(deployment: Deployment, key: str, rows: list[dict[str, object]]) -> None:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    deployment.clients.s3.put_object(Bucket=deployment.env["EMBREC_BUCKET"], Key=key, Body=body)
    deployment.drain_ingest_queue()


def _index() -> VectorIndex:
    model = get_runtime().model()
    assert model is not None
    return model.index


def test_fused_catalog_serves_every_route_and_takes_deltas(deployment: Deployment) -> None:
    # Given a catalog where only the Food and Music items have image embeddings (so do not the Space ones)
    rng = np.random.default_rng(0)
    rows: list[dict[str, object]] = []
    for item_id, title, category in CATALOG:
        row: dict[str, object] = {"item_id": item_id, "title": title, "category": category}
        if category != "Space":
            row["image_embedding"] = rng.standard_normal(IMAGE_DIM).round(4).tolist()
        rows.append(row)
    _upload(deployment, "catalog/incoming/multimodal.jsonl", rows)

    # When the rebuild runs (EMBREC_FUSION unset: auto)
    rebuilt = deployment.rebuild()
    assert rebuilt["status"] == "published" and rebuilt["items"] == len(CATALOG)
    index = _index()
    assert index.fusion is not None and index.dim == 384 + IMAGE_DIM

    # Then text search reaches items without an image and with one
    status, body, _ = deployment.http("GET", "/search", {"q": "astronaut on the moon", "k": 2}, function=COLD)
    assert status == 200 and {item["item_id"] for item in body["items"]} == {"moon", "rover"}
    status, body, _ = deployment.http("GET", "/search", {"q": "baking recipes", "k": 2}, function=COLD)
    assert status == 200 and {item["item_id"] for item in body["items"]} == {"bread", "pasta"}
    # and onboarding (a text profile mapped into the fused space) and the next recommendations work
    answers = {"interests": ["music"], "goals": ["learn an instrument"], "experience": "beginner"}
    status, body, _ = deployment.http("POST", "/users/u-1/onboarding", body=answers, function=COLD)
    assert status == 200 and body["strategy"] == "onboarding"
    assert {item["item_id"] for item in body["items"][:2]} == {"jazz", "violin"}
    status, body, _ = deployment.http("GET", "/users/u-1/recommendations", {"k": 2})
    assert status == 200 and body["strategy"] == "onboarding"
    assert {item["item_id"] for item in body["items"]} == {"jazz", "violin"}
    status, body, _ = deployment.http("GET", "/items/bread/similar", {"k": 1})
    assert status == 200 and body["items"][0]["item_id"] == "pasta"

    # When a new item with an image arrives after the rebuild, its delta (text vector + raw image) is applied
    # by the warm container in the fused layout
    _upload(deployment, "catalog/incoming/more.jsonl", [
        {"item_id": "cello", "title": "Cello suites for beginners", "category": "Music",
         "image_embedding": [0.25] * IMAGE_DIM},
    ])
    status, body, _ = deployment.http("GET", "/search", {"q": "cello lessons", "k": 1}, function=COLD)
    assert status == 200 and body["items"][0]["item_id"] == "cello"
    assert _index().contains("cello")
