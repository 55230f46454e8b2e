"""Recommendations on real data: the MovieLens slice, encoded by the real encoder, through the real index."""

from __future__ import annotations

from pathlib import Path

import pytest

from embrec.domain.catalog import item_text, validate_row
from embrec.domain.model import Interaction
from embrec.domain.ranking import BlendWeights, RankParams, recommend, similar_items
from embrec.domain.signals import Signals, compute_signals
from embrec.engine.encoder import TextEncoder
from embrec.engine.index import VectorIndex
from embrec_tools.datasets import load_movielens

MOVIELENS = Path(__file__).resolve().parents[1] / "fixtures" / "movielens-slice"
KIDS_FILMS = ("ml-1", "ml-364", "ml-588", "ml-594")  # Toy Story, Lion King, Aladdin, Snow White


@pytest.fixture(scope="module")
def movielens(encoder: TextEncoder) -> tuple[VectorIndex, Signals]:
    dataset = load_movielens(MOVIELENS)
    items = [validate_row(row) for row in dataset.catalog_rows]
    vectors = encoder.encode([item_text(item) for item in items])
    ids = [item.item_id for item in items]
    index = VectorIndex.build(ids, vectors, [item.to_dict() for item in items], encoder_id=encoder.encoder_id)
    signals = compute_signals(dataset.interactions, dataset.item_ids)
    return index, signals


def _is_animation(index: VectorIndex, item_id: str) -> bool:
    return "Animation" in index.metadata(item_id)["tags"]


def test_animated_childrens_films_bring_back_animation(movielens: tuple[VectorIndex, Signals]) -> None:
    # Given a user who watched and liked only animated children's films
    index, signals = movielens
    now = 1_700_000_000.0
    history = [Interaction(item_id, "like", now - 86_400 * n) for n, item_id in enumerate(KIDS_FILMS)]
    watched_titles = {index.metadata(item_id)["title"] for item_id in KIDS_FILMS}

    # When we ask for five explained recommendations with the default blend
    result = recommend(index, signals, history, None, RankParams(k=5, explain=True), now)
    # Then they are personalised, led by animation, none already watched, each with a readable reason.
    # (The slice's few users also rated 90s hits next to these films, so CF rightly brings some in.)
    assert result.strategy == "personalized"
    ids = [item.item_id for item in result.items]
    assert len(ids) == 5 and not set(ids) & set(KIDS_FILMS)
    assert all(_is_animation(index, item_id) for item_id in ids[:2])
    for item in result.items:
        assert item.reasons
        assert any(title in reason for reason in item.reasons for title in watched_titles), item.reasons
    # The leading reason points back at the history: the user's own like, or what others who liked it liked
    assert result.items[0].reasons[0].startswith(("Because you liked ", "People who liked ")), result.items[0]

    # When the blend is content-led (a variant without CF and trending)
    content = RankParams(k=5, explain=True, weights=BlendWeights(embedding=1.0, cf=0.0, trending=0.0))
    ids = [item.item_id for item in recommend(index, signals, history, None, content, now).items]
    # Then it is mostly animation
    titles = [index.metadata(item_id)["title"] for item_id in ids]
    assert sum(_is_animation(index, item_id) for item_id in ids) >= 4, titles


def test_similar_to_toy_story_is_animation(movielens: tuple[VectorIndex, Signals]) -> None:
    index, signals = movielens
    similar = similar_items(index, signals, "ml-1", 3)
    assert sum(_is_animation(index, item.item_id) for item in similar) >= 2
