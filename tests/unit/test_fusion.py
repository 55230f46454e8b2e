"""Multi-modal fusion: layout planning, fused rows, the query mapping, deltas, manifests, and a synthetic
catalog whose right answer is known (image vectors carry a label the text does not)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embrec.config import ENV_FUSION, ENV_FUSION_META_WEIGHT, Settings
from embrec.domain import ranking
from embrec.domain.fusion import (
    FusionConfig,
    FusionSpec,
    fuse_rows,
    index_fusion,
    meta_part,
    plan_fusion,
    profile_in_index_space,
    text_dim,
    to_index_space,
)
from embrec.engine.index import IndexDelta, VectorIndex, fuse_delta
from embrec.errors import CompatibilityError, ConfigurationError, InvalidInputError
from embrec.manifest import read_json, write_json

TEXT_DIM = 16
IMAGE_DIM = 8


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _spec(meta_weight: float = 0.0, image_dim: int = IMAGE_DIM) -> FusionSpec:
    spec = plan_fusion(FusionConfig(meta_weight=meta_weight), TEXT_DIM, [image_dim] if image_dim else [])
    assert spec is not None
    return spec


# ------------------------------------------------------------------ planning: the default stays plain text


def test_no_images_and_no_metadata_weight_is_the_plain_text_vector() -> None:
    assert plan_fusion(FusionConfig(), 384, []) is None


def test_off_never_fuses_even_with_images() -> None:
    assert plan_fusion(FusionConfig(mode="off", meta_weight=0.3), 384, [512, 512]) is None


def test_images_switch_fusion_on_with_the_most_common_image_dim() -> None:
    spec = plan_fusion(FusionConfig(), 384, [512, 512, 256])
    assert spec is not None
    assert (spec.text_dim, spec.image_dim, spec.meta_dim, spec.dim) == (384, 512, 0, 896)


def test_metadata_weight_alone_fuses_without_an_image_part() -> None:
    spec = plan_fusion(FusionConfig(meta_weight=0.2), 384, [])
    assert spec is not None and spec.image_dim == 0
    assert spec.meta_dim == spec.category_buckets + len(spec.price_band_edges) + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "always"},
        {"min_image_share": 1.5},
        {"image_weight": -1.0},
        {"text_weight": 0.0},
        {"price_band_edges": (10.0, 5.0)},
    ],
)
def test_bad_configs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        FusionConfig(**kwargs)  # type: ignore[arg-type]


def test_settings_read_the_fusion_environment() -> None:
    assert Settings.from_env({}, local=True).fusion_mode == "auto"
    assert Settings.from_env({}, local=True).fusion_meta_weight == 0.0
    # the settings' defaults are the domain's (config cannot import it): the rebuild and `embrec eval` agree
    assert FusionConfig.from_settings(Settings.from_env({}, local=True)) == FusionConfig()
    chosen = Settings.from_env({ENV_FUSION: "off", ENV_FUSION_META_WEIGHT: "0.25"}, local=True)
    assert FusionConfig.from_settings(chosen) == FusionConfig(mode="off", meta_weight=0.25)
    with pytest.raises(ConfigurationError):
        Settings.from_env({ENV_FUSION: "always"}, local=True)


# ------------------------------------------------------------------ the fused rows


def test_fused_rows_are_unit_with_zeros_for_a_missing_image() -> None:
    rng = np.random.default_rng(0)
    spec = _spec()
    text = _unit(rng, 3, TEXT_DIM)
    images = [rng.standard_normal(IMAGE_DIM).tolist(), None, [1.0] * (IMAGE_DIM + 1)]
    fused, counts = fuse_rows(spec, text, [{}, {}, {}], images)
    assert fused.shape == (3, spec.dim) and fused.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-6)
    assert np.all(fused[1:, TEXT_DIM:] == 0)  # no image, and an image of another dim: zeros
    assert counts == {"with_image": 1, "image_dim_mismatch": 1}
    # the text part keeps the text direction, the image part the image direction
    np.testing.assert_allclose(fused[1, :TEXT_DIM], text[1], atol=1e-6)
    image = np.asarray(images[0]) / np.linalg.norm(images[0])
    np.testing.assert_allclose(fused[0, TEXT_DIM:] / np.linalg.norm(fused[0, TEXT_DIM:]), image, atol=1e-6)
    ratio = np.linalg.norm(fused[0, TEXT_DIM:]) / np.linalg.norm(fused[0, :TEXT_DIM])
    assert ratio == pytest.approx(spec.image_weight / spec.text_weight, rel=1e-5)


def test_plain_layout_returns_the_text_vectors_unchanged() -> None:
    text = _unit(np.random.default_rng(1), 4, TEXT_DIM)
    fused, _ = fuse_rows(None, text, [{}] * 4)
    assert fused is text or np.array_equal(fused, text)


def test_meta_part_buckets_the_category_and_bands_the_price() -> None:
    spec = _spec(meta_weight=0.2, image_dim=0)
    a, b = meta_part(spec, "Comedy", 7.0), meta_part(spec, " comedy ", 9.99)
    np.testing.assert_array_equal(a, b)  # same bucket (case, spaces) and same band [5, 10)
    assert float(a @ meta_part(spec, "Comedy", 12.0)) == pytest.approx(0.5)  # same category, next band
    assert np.all(meta_part(spec, "", None) == 0)
    assert np.linalg.norm(meta_part(spec, "Drama", None)) == pytest.approx(1.0)


@settings(max_examples=50, deadline=None)
@given(
    image=st.one_of(
        st.none(), st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=IMAGE_DIM + 1)
    ),
    category=st.text(max_size=5),
    price=st.one_of(st.none(), st.floats(0, 1e6)),
)
def test_any_item_fuses_to_a_finite_unit_row(
    image: list[float] | None, category: str, price: float | None
) -> None:
    spec = _spec(meta_weight=0.3)
    text = _unit(np.random.default_rng(2), 1, TEXT_DIM)
    fused, _ = fuse_rows(spec, text, [{"category": category, "price": price}], [image])
    assert np.all(np.isfinite(fused))
    assert np.linalg.norm(fused) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------ the index records its layout; queries


def _fused_index(rng: np.random.Generator, n: int = 40) -> tuple[VectorIndex, np.ndarray, list[dict]]:
    text = _unit(rng, n, TEXT_DIM)
    rows = [
        {"title": f"t{i}", "image_embedding": rng.standard_normal(IMAGE_DIM).tolist() if i % 2 else None}
        for i in range(n)
    ]
    spec = _spec()
    fused, _ = fuse_rows(spec, text, rows)
    index = VectorIndex.build([f"i{i:03d}" for i in range(n)], fused, rows, fusion=spec.to_dict())
    return index, text, rows


def test_text_queries_rank_by_text_within_each_group_and_reach_items_without_images() -> None:
    rng = np.random.default_rng(3)
    index, text, _ = _fused_index(rng)
    for target in (0, 1):  # an item without an image, one with
        found = ranking.search(index, to_index_space(index, text[target]), 5, None)
        assert found[0].item_id == f"i{target:03d}"
    # every item's text part weighs the same inside a group: scores are the text cosines times a constant
    query = to_index_space(index, text[5])
    scores = dict(index.search(query, len(index)))
    for group in (range(0, 40, 2), range(1, 40, 2)):
        ids = [f"i{i:03d}" for i in group]
        by_fused = sorted(ids, key=lambda i: -scores[i])
        by_text = sorted(ids, key=lambda i: -float(text[int(i[1:])] @ text[5]))
        assert by_fused == by_text


def test_query_mapping_is_identity_for_a_plain_index_and_refuses_a_wrong_dim() -> None:
    rng = np.random.default_rng(4)
    plain = VectorIndex.build(["a", "b"], _unit(rng, 2, TEXT_DIM))
    vector = _unit(rng, 1, TEXT_DIM)[0]
    assert to_index_space(plain, vector) is vector or np.array_equal(to_index_space(plain, vector), vector)
    fused, _, _ = _fused_index(rng)
    mapped = to_index_space(fused, vector)
    assert mapped.shape == (fused.dim,) and np.all(mapped[TEXT_DIM:] == 0)
    assert text_dim(fused) == TEXT_DIM and text_dim(plain) == TEXT_DIM
    with pytest.raises(CompatibilityError):
        to_index_space(fused, np.ones(fused.dim, np.float32))
    # a profile stored by another encoder is ignored rather than failing the recommendation
    assert profile_in_index_space(fused, np.ones(7, np.float32)) is None
    assert profile_in_index_space(fused, vector) is not None


def test_layout_survives_save_and_load_and_a_tampered_layout_is_refused(tmp_path: Path) -> None:
    index, _, _ = _fused_index(np.random.default_rng(5))
    index.save(tmp_path / "ok")
    loaded = VectorIndex.load(tmp_path / "ok")
    assert index_fusion(loaded) == index_fusion(index)
    # a spec whose weights changed but whose id did not: refused by the spec check
    index.save(tmp_path / "bad")
    manifest = read_json(tmp_path / "bad" / "manifest.json")
    manifest["fusion"]["image_weight"] = 0.9
    write_json(tmp_path / "bad" / "manifest.json", manifest)
    with pytest.raises(CompatibilityError):
        index_fusion(VectorIndex.load(tmp_path / "bad"))
    # a spec that does not declare the index dim: refused by the index loader itself
    manifest["fusion"] = dict(index.fusion or {}, dim=TEXT_DIM)
    write_json(tmp_path / "bad" / "manifest.json", manifest)
    with pytest.raises(CompatibilityError):
        VectorIndex.load(tmp_path / "bad")


def test_unknown_fusion_format_is_refused() -> None:
    with pytest.raises(CompatibilityError):
        FusionSpec.from_dict({**_spec().to_dict(), "format": "embrec-fusion/99"})


# ------------------------------------------------------------------ deltas: text + images, fused on apply


def test_delta_images_round_trip_and_are_fused_into_the_index_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    index, _, _ = _fused_index(rng)
    new_text = _unit(rng, 3, TEXT_DIM)
    image = rng.standard_normal(IMAGE_DIM).tolist()
    delta = IndexDelta(
        item_ids=("n0", "n1", "n2"),
        vectors=new_text,
        metadata=({"title": "n0"}, {"title": "n1"}, {"title": "n2"}),
        images=(tuple(image), None, (1.0, 2.0)),
    )
    delta.save(tmp_path)
    loaded = IndexDelta.load(tmp_path, expected_dim=text_dim(index))
    assert loaded.images[1] is None and loaded.images[2] == (1.0, 2.0)
    np.testing.assert_allclose(np.asarray(loaded.images[0]), image, rtol=1e-6)
    index.apply(fuse_delta(index, loaded))
    assert index.contains("n1") and index.vectors_for(["n0"]).shape == (1, index.dim)
    assert ranking.search(index, to_index_space(index, new_text[1]), 1, None)[0].item_id == "n1"
    # a plain index takes the text vectors as they are
    plain = VectorIndex.build(["a"], _unit(rng, 1, TEXT_DIM))
    assert fuse_delta(plain, loaded) is loaded


def test_delta_without_images_keeps_the_old_file_layout(tmp_path: Path) -> None:
    delta = IndexDelta(item_ids=("a",), vectors=np.ones((1, 4), np.float32), images=(None,))
    assert delta.images == ()
    delta.save(tmp_path)
    assert IndexDelta.load(tmp_path).images == ()


# ------------------------------------------------------------------ a synthetic catalog with a known answer


def _label_precision(index: VectorIndex, labels: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's k nearest neighbours (itself excluded) that carry its hidden label."""
    ids = index.live_ids()
    vectors = index.vectors_for(ids)
    shares = []
    for position, item_id in enumerate(ids):
        found = index.search(vectors[position], k, exclude=[item_id])
        shares.append(np.mean([labels[int(other[1:])] == labels[position] for other, _ in found]))
    return float(np.mean(shares))


def test_image_vectors_that_carry_a_hidden_label_make_similar_items_recover_it() -> None:
    # Given 300 items whose text clusters by topic (5 topics) and whose image vectors cluster by a hidden
    # style label (6 styles) the text knows nothing about; a quarter of the items have no image
    rng = np.random.default_rng(7)
    n, topics, styles = 300, 5, 6
    topic = rng.integers(0, topics, n)
    style = rng.integers(0, styles, n)
    text = _unit(rng, topics, 64)[topic] + 0.35 * _unit(rng, n, 64)
    image_centres = _unit(rng, styles, 32)
    images = image_centres[style] + 0.35 * _unit(rng, n, 32)
    rows = [{"image_embedding": images[i].tolist() if i % 4 else None} for i in range(n)]
    ids = [f"i{i:03d}" for i in range(n)]
    plain = VectorIndex.build(ids, text)
    spec = plan_fusion(FusionConfig(image_weight=1.0), 64, [32])
    assert spec is not None
    fused_vectors, counts = fuse_rows(spec, text, rows)
    fused = VectorIndex.build(ids, fused_vectors, rows, fusion=spec.to_dict())
    assert counts["with_image"] == n - n // 4
    # When similar items are looked up; Then the fused index recovers the hidden style far above chance,
    # and the text-only index stays at chance
    with_image = np.array([bool(i % 4) for i in range(n)])
    text_share = _label_precision(plain, style)
    fused_share = _label_precision(fused, style)
    assert text_share < 0.3  # chance is 1/6
    assert fused_share > 0.6
    # and the text topic is not lost (queries by text still find the right topic)
    topic_share = _label_precision(fused, topic)
    assert topic_share > 0.9
    assert with_image.sum() == counts["with_image"]


def test_default_config_is_unchanged_behaviour_for_a_text_only_catalog() -> None:
    rng = np.random.default_rng(8)
    text = _unit(rng, 10, TEXT_DIM)
    spec = plan_fusion(FusionConfig(), TEXT_DIM, [])
    fused, _ = fuse_rows(spec, text, [{"category": "x", "price": 3.0}] * 10)
    assert spec is None and np.array_equal(fused, text)
    assert replace(FusionConfig(), meta_weight=0.0) == FusionConfig()


def test_one_stray_image_does_not_switch_fusion_on_unless_asked() -> None:
    # Given 10,000 items of which one carries a 4,096-value image embedding
    assert plan_fusion(FusionConfig(), 384, [4096], items=10_000) is None
    # a catalog where most items have one fuses in auto, and "on" fuses from a single one
    half = plan_fusion(FusionConfig(), 384, [512] * 5_000, items=10_000)
    assert half is not None and half.image_dim == 512
    assert plan_fusion(FusionConfig(min_image_share=0.6), 384, [512] * 5_000, items=10_000) is None
    forced = plan_fusion(FusionConfig(mode="on"), 384, [4096], items=10_000)
    assert forced is not None and forced.image_dim == 4096

