"""Experiment definitions: validation with field paths, deterministic weighted assignment, rank overrides."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import numpy as np
import pytest

from embrec.domain.experiments import (
    DEFAULT_VARIANT,
    ExperimentConfig,
    assign,
    bucket,
    parse_experiments,
)
from embrec.domain.learned_blend import LEARNED_BLEND_DEFAULT, ItemStats, LearnedBlend
from embrec.domain.ranking import BlendWeights, RankParams
from embrec.errors import InvalidInputError, NotFoundError

DOCUMENT: dict[str, Any] = {
    "experiments": [
        {
            "name": "blend-cf-heavy",
            "enabled": True,
            "control": "control",
            "variants": [
                {"name": "control", "weight": 70},
                {
                    "name": "cf-heavy",
                    "weight": 30,
                    "overrides": {
                        "weights": {"cf": 2.0, "trending": 0.0}, "diversity": 0.3,
                        "recency": {"half_life_events": None, "half_life_days": 30},
                    },
                },
            ],
        },
        {
            "name": "later",
            "enabled": True,
            "variants": [
                {"name": "a", "weight": 1},
                {"name": "b", "weight": 1, "overrides": {"strategy": "trending"}},
            ],
        },
    ]
}


def _users(n: int, prefix: str = "user-") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# ------------------------------------------------------------------------------------------- parsing
def test_parses_the_documented_format() -> None:
    config = parse_experiments(DOCUMENT)
    assert [e.name for e in config.experiments] == ["blend-cf-heavy", "later"]
    active = config.active
    assert active is not None and active.name == "blend-cf-heavy"  # the first enabled one
    heavy = active.variant("cf-heavy")
    assert heavy.weight == 30
    assert heavy.overrides.weights == BlendWeights(embedding=BlendWeights().embedding, cf=2.0, trending=0.0)
    assert heavy.overrides.diversity == 0.3 and heavy.overrides.strategy is None
    assert dict(heavy.overrides.recency) == {"half_life_days": 30.0, "half_life_events": None}
    assert config.get("later").control == "a"  # default control: the first variant
    with pytest.raises(NotFoundError):
        config.get("nope")


@pytest.mark.parametrize("document", [None, {}, {"experiments": []}])
def test_no_document_means_no_experiment(document: dict[str, Any] | None) -> None:
    config = parse_experiments(document)
    assert config.active is None
    assert assign(config, "u1").variant == DEFAULT_VARIANT and assign(config, "u1").experiment is None


def test_disabled_experiments_assign_nobody() -> None:
    document = copy.deepcopy(DOCUMENT)
    for experiment in document["experiments"]:
        experiment["enabled"] = False
    assert assign(parse_experiments(document), "u1").experiment is None


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["experiments"], "x", "experiments"),
        (["experiments", 0, "name"], "", "experiments[0].name"),
        (["experiments", 0, "name"], "has space", "experiments[0].name"),
        (["experiments", 1, "name"], "blend-cf-heavy", "experiments[1].name"),
        (["experiments", 0, "enabled"], "yes", "experiments[0].enabled"),
        (["experiments", 0, "variants"], [], "experiments[0].variants"),
        (["experiments", 0, "variants", 1, "name"], "control", "experiments[0].variants[1].name"),
        (["experiments", 0, "variants", 1, "weight"], -1, "experiments[0].variants[1].weight"),
        (["experiments", 0, "variants", 1, "weight"], "30", "experiments[0].variants[1].weight"),
        (["experiments", 0, "variants", 1, "weight"], KeyError, "experiments[0].variants[1].weight"),
        (
            ["experiments", 0, "variants", 1, "overrides", "weights", "cf"],
            -2,
            "experiments[0].variants[1].overrides.weights.cf",
        ),
        (
            ["experiments", 0, "variants", 1, "overrides", "weights", "cfx"],
            1,
            "experiments[0].variants[1].overrides.weights.cfx",
        ),
        (
            ["experiments", 0, "variants", 1, "overrides", "weights"],
            {"embedding": 0, "cf": 0, "trending": 0},
            "experiments[0].variants[1].overrides.weights",
        ),
        (
            ["experiments", 0, "variants", 1, "overrides", "diversity"],
            1.5,
            "experiments[0].variants[1].overrides.diversity",
        ),
        (
            ["experiments", 0, "variants", 1, "overrides", "strategy"],
            "random",
            "experiments[0].variants[1].overrides.strategy",
        ),
        (
            ["experiments", 0, "variants", 1, "overrides", "diversty"],
            0.1,
            "experiments[0].variants[1].overrides.diversty",
        ),
        (
            ["experiments", 0, "variants", 1, "overrides", "recency", "half_life_events"],
            0,
            "experiments[0].variants[1].overrides.recency.half_life_events",
        ),
        (
            ["experiments", 0, "variants", 1, "overrides", "recency", "half_life_days"],
            "30",
            "experiments[0].variants[1].overrides.recency.half_life_days",
        ),
        (
            ["experiments", 0, "variants", 1, "overrides", "recency", "half_life_hours"],
            1,
            "experiments[0].variants[1].overrides.recency.half_life_hours",
        ),
        (
            ["experiments", 0, "variants", 1, "overrides", "learned_blend"],
            "yes",
            "experiments[0].variants[1].overrides.learned_blend",
        ),
        (["experiments", 0, "control"], "treatment", "experiments[0].control"),
        (["experiments", 0, "colour"], "red", "experiments[0].colour"),
    ],
)
def test_invalid_documents_name_the_bad_field(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_experiments(_broken(path, value))
    assert raised.value.field == field


def test_weights_must_not_all_be_zero() -> None:
    document = _broken(["experiments", 0, "variants", 0, "weight"], 0)
    document["experiments"][0]["variants"][1]["weight"] = 0
    with pytest.raises(InvalidInputError) as raised:
        parse_experiments(document)
    assert raised.value.field == "experiments[0].variants"


# ------------------------------------------------------------------------------------------- assignment
def test_assignment_is_deterministic_and_salted_per_experiment() -> None:
    config = parse_experiments(DOCUMENT)
    first = [assign(config, u).variant for u in _users(500)]
    again = [assign(parse_experiments(copy.deepcopy(DOCUMENT)), u).variant for u in _users(500)]
    assert first == again
    assert all(0.0 <= bucket("x", u) < 1.0 for u in _users(500))
    # salted: a user's bucket in one experiment says nothing about another
    same = sum((bucket("a", u) < 0.5) == (bucket("b", u) < 0.5) for u in _users(2000))
    assert 850 < same < 1150


@pytest.mark.parametrize("weights", [(70, 30), (1, 1, 1), (5, 0, 95)])
def test_weights_respected_over_20k_users(weights: tuple[int, ...]) -> None:
    document = {
        "experiments": [
            {
                "name": "split",
                "enabled": True,
                "variants": [{"name": f"v{i}", "weight": w} for i, w in enumerate(weights)],
            }
        ]
    }
    config = parse_experiments(document)
    counts = Counter(assign(config, u).variant for u in _users(20_000))
    total = sum(weights)
    for i, weight in enumerate(weights):
        share = counts[f"v{i}"] / 20_000
        assert abs(share - weight / total) < 0.015, (i, share)  # ~4.5 standard errors at 50%
    assert counts["v1"] == 0 or weights[1] > 0  # a weight of 0 gets nobody


def test_adding_users_moves_nobody() -> None:
    config = parse_experiments(DOCUMENT)
    before = {u: assign(config, u).variant for u in _users(1000)}
    after = {u: assign(config, u).variant for u in _users(5000)}
    assert all(after[u] == before[u] for u in before)


def test_overrides_become_rank_params_and_explicit_diversity_wins() -> None:
    config = parse_experiments(DOCUMENT)
    heavy = next(u for u in _users(200) if assign(config, u).variant == "cf-heavy")
    control = next(u for u in _users(200) if assign(config, u).variant == "control")
    base = RankParams(k=5, diversity=0.0)
    params = assign(config, heavy).overrides.apply(base)
    assert params.weights == BlendWeights(BlendWeights().embedding, 2.0, 0.0)
    assert params.diversity == 0.3 and params.k == 5
    # recency: a null turns that decay off, a number replaces it, the rest of the profile is kept
    assert params.profile.half_life_events is None and params.profile.half_life_days == 30.0
    assert params.profile.max_history == base.profile.max_history
    assert (
        assign(config, heavy).overrides.apply(RankParams(diversity=0.9), diversity_explicit=True).diversity
        == 0.9
    )
    assert assign(config, control).overrides.apply(base) == base


def test_deployment_defaults_apply_to_everyone_and_a_variant_wins_key_by_key() -> None:
    # Given: deployment defaults (a tuned blend and recency) beside the experiments
    document = copy.deepcopy(DOCUMENT)
    document["defaults"] = {
        "weights": {"embedding": 0.1, "cf": 1.0, "trending": 0.05},
        "recency": {"half_life_days": None, "half_life_events": 5},
    }
    document["experiments"][0]["variants"][1]["overrides"]["recency"] = {"half_life_days": 30}
    config = parse_experiments(document)
    heavy = next(u for u in _users(200) if assign(config, u).variant == "cf-heavy")
    control = next(u for u in _users(200) if assign(config, u).variant == "control")
    base = RankParams(k=5)
    # Then: the control variant (no overrides of its own) is served the defaults
    served = assign(config, control).overrides.apply(base)
    assert served.weights == BlendWeights(0.1, 1.0, 0.05)
    assert served.profile.half_life_days is None and served.profile.half_life_events == 5.0
    # And a variant's own keys win, field by field for recency; the rest comes from the defaults
    served = assign(config, heavy).overrides.apply(base)
    assert served.weights == BlendWeights(BlendWeights().embedding, 2.0, 0.0)  # the variant's weights
    assert served.profile.half_life_days == 30.0 and served.profile.half_life_events == 5.0
    # And with no experiment enabled, everyone gets the defaults
    for experiment in document["experiments"]:
        experiment["enabled"] = False
    quiet = parse_experiments(document)
    assert assign(quiet, control).experiment is None
    assert assign(quiet, control).overrides.apply(base).weights == BlendWeights(0.1, 1.0, 0.05)
    # And a bad default names its path
    document["defaults"]["weights"]["cf"] = -1
    with pytest.raises(InvalidInputError) as caught:
        parse_experiments(document)
    assert caught.value.field == "defaults.weights.cf"


def test_learned_blend_is_switched_per_variant_and_by_the_deployment_defaults() -> None:
    ranker = LearnedBlend(np.zeros(1), np.zeros(1), np.ones(1), ItemStats(np.zeros(0), np.zeros(0)))
    document = copy.deepcopy(DOCUMENT)
    document["experiments"][0]["variants"][1]["overrides"] = {"learned_blend": True}
    config = parse_experiments(document)
    on = next(u for u in _users(200) if assign(config, u).variant == "cf-heavy")
    off = next(u for u in _users(200) if assign(config, u).variant == "control")
    base = RankParams(k=5)
    # A variant switches it on: the loaded version's ranker ranks; without a ranker in the version, nothing
    assert assign(config, on).overrides.apply(base, ranker=ranker).ranker is ranker
    assert assign(config, on).overrides.apply(base, ranker=None).ranker is None
    # The control, with no key of its own, follows the product default
    served = assign(config, off).overrides.apply(base, ranker=ranker).ranker
    assert served is (ranker if LEARNED_BLEND_DEFAULT else None)
    # Deployment defaults switch it on for everyone; a variant switches it off again
    document["defaults"] = {"learned_blend": True}
    document["experiments"][0]["variants"][1]["overrides"] = {"learned_blend": False}
    config = parse_experiments(document)
    assert assign(config, off).overrides.apply(base, ranker=ranker).ranker is ranker
    assert assign(config, on).overrides.apply(base, ranker=ranker).ranker is None
    # The rebuild trains it only when some request may use it
    assert config.uses_learned_blend and not parse_experiments(DOCUMENT).uses_learned_blend
    del document["defaults"]
    assert not parse_experiments(document).uses_learned_blend  # only switched off
    document["experiments"][0]["variants"][1]["overrides"] = {"learned_blend": True}
    assert parse_experiments(document).uses_learned_blend
    document["experiments"][0]["enabled"] = False  # the next enabled experiment is live, without it
    assert not parse_experiments(document).uses_learned_blend


def test_empty_config_is_the_default() -> None:
    assert ExperimentConfig().active is None
