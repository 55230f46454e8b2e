"""A catalog where some items carry image embeddings: ingested into DynamoDB (moto), rebuilt into a fused
index, searched by text (items without images included), and updated by a delta in the fused layout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from embrec.app.build import build_version, load_version
from embrec.app.ingest import ingest_rows
from embrec.aws.clients import AwsClients
from embrec.aws.store import ItemStore
from embrec.config import Settings
from embrec.domain import ranking
from embrec.domain.catalog import read_catalog
from embrec.domain.fusion import FusionConfig, index_fusion, text_dim, to_index_space
from embrec.engine.encoder import TextEncoder
from embrec.engine.index import IndexDelta, fuse_delta

IMAGE_DIM = 12

ROWS = [
    ("moon", "Moon landing documentary", "Space"),
    ("rover", "Mars rover photo book", "Space"),
    ("bread", "Sourdough bread baking guide", "Food"),
    ("pasta", "Fresh pasta cookbook", "Food"),
    ("jazz", "Jazz piano lessons", "Music"),
    ("violin", "Violin for beginners", "Music"),
]


def _catalog(with_images: set[str]) -> bytes:
    rng = np.random.default_rng(0)
    lines = []
    for item_id, title, category in ROWS:
        row: dict[str, object] = {"item_id": item_id, "title": title, "category": category, "price": 12.5}
        if item_id in with_images:
            row["image_embedding"] = rng.standard_normal(IMAGE_DIM).round(4).tolist()
        lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


def _ingest(store: ItemStore, encoder: TextEncoder, data: bytes) -> IndexDelta | None:
    outcome = ingest_rows(
        read_catalog(io.BytesIO(data), "jsonl"), store, encoder.encode, encoder_id=encoder.encoder_id
    )
    assert outcome.counts.adds_up() and outcome.counts.rejected == 0
    return outcome.delta


def test_catalog_with_some_images_indexes_fused_and_searches_by_text(
    aws_clients: AwsClients, settings: Settings, encoder: TextEncoder, tmp_path: Path
) -> None:
    # Given a catalog where half the items have an image embedding, ingested
    store = ItemStore(aws_clients.dynamodb, settings.items_table)
    _ingest(store, encoder, _catalog({"moon", "bread", "jazz"}))
    # the items table keeps the text vector (the encoder's space) and the raw image
    stored = store.get("moon")
    assert stored is not None and stored.vector is not None and stored.vector.shape == (encoder.dim,)
    assert len(stored.fields["image_embedding"]) == IMAGE_DIM

    # When the rebuild runs with the default (auto) fusion
    built = build_version(store.scan_all(), [], tmp_path / "v1", encoder_id=encoder.encoder_id, now=0.0)
    index, _ = load_version(tmp_path / "v1", expected_encoder_id=encoder.encoder_id)

    # Then the index is fused (text + image parts), recorded in the manifest, every item indexed
    spec = index_fusion(index)
    assert spec is not None and (spec.text_dim, spec.image_dim) == (encoder.dim, IMAGE_DIM)
    assert index.dim == encoder.dim + IMAGE_DIM and built.dim == encoder.dim
    assert built.details["fusion"]["with_image"] == 3 and len(index) == len(ROWS)
    # and text search finds items with and without images
    searches = (("bread recipes", {"bread", "pasta"}), ("learn an instrument", {"jazz", "violin"}))
    for query, expected in searches:
        vector = to_index_space(index, encoder.encode([query])[0])
        found = {rec.item_id for rec in ranking.search(index, vector, 2, None)}
        assert found == expected

    # When a later upload adds an item (with an image) and changes one (without), its delta is applied
    telescope = {"item_id": "telescope", "title": "Backyard telescope guide", "image_embedding": [0.5] * 12}
    more = [*_catalog(set()).decode().splitlines()[:1], json.dumps(telescope)]
    delta = _ingest(store, encoder, ("\n".join(more) + "\n").encode())
    assert delta is not None and delta.dim == encoder.dim
    delta.save(tmp_path / "delta")
    loaded = IndexDelta.load(
        tmp_path / "delta", expected_encoder_id=index.encoder_id, expected_dim=text_dim(index)
    )
    index.apply(fuse_delta(index, loaded))

    # Then the fused index serves the new item, and the changed one lost its image part
    assert index.contains("telescope") and len(index) == len(ROWS) + 1
    vector = to_index_space(index, encoder.encode(["telescope for stargazing"])[0])
    assert ranking.search(index, vector, 1, None)[0].item_id == "telescope"
    assert np.all(index.vectors_for(["moon"])[0][encoder.dim :] == 0)


def test_text_only_catalog_keeps_the_plain_text_index(
    aws_clients: AwsClients, settings: Settings, encoder: TextEncoder, tmp_path: Path
) -> None:
    store = ItemStore(aws_clients.dynamodb, settings.items_table)
    _ingest(store, encoder, _catalog(set()))
    build_version(store.scan_all(), [], tmp_path / "v", encoder_id=encoder.encoder_id, now=0.0)
    index, _ = load_version(tmp_path / "v")
    assert index.fusion is None and index.dim == encoder.dim
    assert "fusion" not in json.loads((tmp_path / "v" / "index" / "manifest.json").read_text())
    # and fusion can be turned off even when images are present
    _ingest(store, encoder, _catalog({"moon"}))
    build_version(
        store.scan_all(), [], tmp_path / "off", encoder_id=encoder.encoder_id, now=0.0,
        fusion=FusionConfig(mode="off"),
    )
    assert load_version(tmp_path / "off")[0].dim == encoder.dim
