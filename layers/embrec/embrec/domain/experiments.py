"""A/B experiments: definitions from ``config/experiments.json``, deterministic assignment, rank overrides.

Pure: no I/O. The runtime reads the document through :class:`embrec.aws.artifacts.WatchedJson` (warm
containers pick up a new version like the index) and hands it to :func:`parse_experiments`.

Document format::

    {"experiments": [
      {"name": "blend-cf-heavy", "enabled": true, "control": "control",
       "variants": [
         {"name": "control", "weight": 50},
         {"name": "cf-heavy", "weight": 50,
          "overrides": {"weights": {"embedding": 0.3, "cf": 1.5, "trending": 0.1},
                        "diversity": 0.2, "strategy": "personalized",
                        "recency": {"half_life_days": 30, "half_life_events": null},
                        "learned_blend": true}}]}]}

- ``name``: 1-64 characters from ``A-Z a-z 0-9 _ . -``, unique (experiments; variants within one).
- ``enabled``: only the *first* enabled experiment is live; the others are kept for their reports.
- ``weight``: traffic share, any numbers >= 0 (normalised by their sum, which must be > 0).
- ``overrides`` (optional, every key optional): ``weights`` (blend weights; missing ones keep the
  defaults of :class:`embrec.domain.ranking.BlendWeights`), ``diversity`` (0..1, MMR; a request's explicit
  ``diversity`` still wins), ``strategy`` (one of :data:`embrec.domain.ranking.STRATEGIES`), ``recency``
  (``half_life_days`` / ``half_life_events`` of :class:`embrec.domain.profiles.ProfileParams`: a number > 0,
  or
  ``null`` for no decay of that kind; a missing key keeps the default), ``learned_blend`` (``true``: the
  index version's learned blend re-scores personalised lists when the version has one; ``false``: the
  weighted blend; missing: :data:`embrec.domain.learned_blend.LEARNED_BLEND_DEFAULT`). Unknown keys are
  refused, so a typo cannot silently run an experiment that changes nothing.
- ``control``: the variant the others are tested against (default: the first variant).
- ``defaults`` (optional, top level, the same keys as ``overrides``): this deployment's ranking defaults,
  e.g. the blend and recency ``embrec eval --tune`` chose on its own data. They apply to every request, in
  or out of an experiment; a variant's overrides win key by key (``recency`` field by field).

Assignment: ``sha256(name + "\\x1f" + user_id)``, its first 8 bytes as an integer / 2**64, is the user's
bucket in [0, 1); the variant is the first whose cumulative share exceeds the bucket. Deterministic, salted
per experiment (a user's buckets in two experiments are independent), and stable: adding users or
containers never moves anyone; changing the weights moves only the users between the old and new edges.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from embrec.domain.learned_blend import LEARNED_BLEND_DEFAULT, LearnedBlend
from embrec.domain.profiles import ProfileParams
from embrec.domain.ranking import STRATEGIES, BlendWeights, RankParams
from embrec.errors import InvalidInputError, NotFoundError

__all__ = [
    "DEFAULT_VARIANT",
    "EXPERIMENTS_KEY",
    "Assignment",
    "Experiment",
    "ExperimentConfig",
    "Overrides",
    "Variant",
    "assign",
    "bucket",
    "parse_experiments",
]

EXPERIMENTS_KEY = "config/experiments.json"
DEFAULT_VARIANT = "default"
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_OVERRIDE_KEYS = frozenset({"weights", "diversity", "strategy", "recency", "learned_blend"})
_RECENCY_KEYS = frozenset({"half_life_days", "half_life_events"})
_WEIGHT_KEYS = frozenset({"embedding", "cf", "trending"})
_EXPERIMENT_KEYS = frozenset({"name", "enabled", "variants", "control", "description"})
_VARIANT_KEYS = frozenset({"name", "weight", "overrides", "description"})


@dataclass(frozen=True)
class Overrides:
    """The ranking knobs a variant changes (None: unchanged)."""

    weights: BlendWeights | None = None
    diversity: float | None = None
    strategy: str | None = None
    recency: tuple[tuple[str, float | None], ...] = ()  # (ProfileParams field, value) pairs
    learned_blend: bool | None = None

    def then(self, later: Overrides) -> Overrides:
        """These overrides with ``later``'s on top: each key ``later`` sets wins (``recency`` by field)."""
        recency = dict(self.recency) | dict(later.recency)
        return Overrides(
            later.weights if later.weights is not None else self.weights,
            later.diversity if later.diversity is not None else self.diversity,
            later.strategy if later.strategy is not None else self.strategy,
            tuple(sorted(recency.items())),
            later.learned_blend if later.learned_blend is not None else self.learned_blend,
        )

    def apply(
        self, params: RankParams, *, diversity_explicit: bool = False, ranker: LearnedBlend | None = None
    ) -> RankParams:
        """``params`` with these overrides; an explicit request ``diversity`` is kept. ``ranker``: the loaded
        version's learned blend, set on the result when ``learned_blend`` (or, unset, the default) says so."""
        changes: dict[str, Any] = {}
        use = self.learned_blend if self.learned_blend is not None else LEARNED_BLEND_DEFAULT
        wanted = ranker if use else None
        if wanted is not params.ranker:
            changes["ranker"] = wanted
        if self.recency:
            changes["profile"] = _with_recency(params.profile, self.recency)
        if self.weights is not None:
            changes["weights"] = self.weights
        if self.diversity is not None and not diversity_explicit:
            changes["diversity"] = self.diversity
        if self.strategy is not None:
            changes["strategy"] = self.strategy
        return replace(params, **changes) if changes else params


@dataclass(frozen=True)
class Variant:
    name: str
    weight: float
    overrides: Overrides = field(default_factory=Overrides)


@dataclass(frozen=True)
class Experiment:
    """One experiment: variants with traffic weights (> 0 in total) and the control variant's name."""

    name: str
    enabled: bool
    variants: tuple[Variant, ...]
    control: str

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise NotFoundError(f"experiment {self.name!r} has no variant {name!r}")

    def assign(self, user_id: str) -> Variant:
        """The user's variant: deterministic in (experiment name, user_id), shares as the weights."""
        point = bucket(self.name, user_id) * sum(v.weight for v in self.variants)
        cumulative = 0.0
        chosen = None
        for variant in self.variants:
            if variant.weight <= 0:
                continue
            cumulative += variant.weight
            chosen = variant
            if point < cumulative:
                return variant
        assert chosen is not None  # validated: the weights sum to > 0
        return chosen  # float rounding at the top edge


@dataclass(frozen=True)
class ExperimentConfig:
    """Every defined experiment; :attr:`active` is the one that assigns traffic (the first enabled)."""

    experiments: tuple[Experiment, ...] = ()
    defaults: Overrides = field(default_factory=Overrides)

    @property
    def active(self) -> Experiment | None:
        return next((e for e in self.experiments if e.enabled), None)

    @property
    def uses_learned_blend(self) -> bool:
        """Whether any request may be ranked by the learned blend: the default, the deployment ``defaults``
        or a variant of the live experiment switches it on (the rebuild trains it only then)."""
        default = self.defaults.learned_blend
        if default if default is not None else LEARNED_BLEND_DEFAULT:
            return True
        active = self.active
        return active is not None and any(v.overrides.learned_blend for v in active.variants)

    def get(self, name: str) -> Experiment:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        raise NotFoundError(f"no experiment named {name!r} in {EXPERIMENTS_KEY}")


@dataclass(frozen=True)
class Assignment:
    """What a request is served with: ``experiment`` None and variant ``"default"`` outside experiments."""

    experiment: str | None
    variant: str
    overrides: Overrides = field(default_factory=Overrides)


def bucket(experiment: str, user_id: str) -> float:
    """The user's point in [0, 1): first 8 bytes of sha256(name, 0x1f, user_id) as an integer / 2**64."""
    digest = hashlib.sha256(f"{experiment}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(config: ExperimentConfig, user_id: str) -> Assignment:
    """The active experiment's variant for the user, or the default variant when none is enabled; its
    overrides are the deployment's ``defaults`` with the variant's on top."""
    experiment = config.active
    if experiment is None:
        return Assignment(None, DEFAULT_VARIANT, config.defaults)
    variant = experiment.assign(user_id)
    return Assignment(experiment.name, variant.name, config.defaults.then(variant.overrides))


# ------------------------------------------------------------------------------------------- validation


def _object(value: Any, path: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(path or "document", "must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise InvalidInputError(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInputError(path, f"must be 1-64 characters from A-Z a-z 0-9 _ . -, got {value!r}")
    return value


def _number(value: Any, path: str, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(path, f"must be a finite number, got {value!r}")
    if not low <= value <= high:
        bounds = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise InvalidInputError(path, f"must be {bounds}, got {value!r}")
    return float(value)


def _overrides(value: Any, path: str) -> Overrides:
    if value is None:
        return Overrides()
    raw = _object(value, path, _OVERRIDE_KEYS)
    weights = None
    if raw.get("weights") is not None:
        given = _object(raw["weights"], f"{path}.weights", _WEIGHT_KEYS)
        numbers = {k: _number(v, f"{path}.weights.{k}", 0.0) for k, v in given.items()}
        try:
            weights = BlendWeights(**numbers)
        except InvalidInputError as error:
            raise InvalidInputError(f"{path}.{error.field}", error.reason) from None
    diversity = None if raw.get("diversity") is None else _number(raw["diversity"], f"{path}.diversity", 0, 1)
    strategy = raw.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise InvalidInputError(
            f"{path}.strategy", f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
    learned = raw.get("learned_blend")
    if learned is not None and not isinstance(learned, bool):
        raise InvalidInputError(f"{path}.learned_blend", f"must be true or false, got {learned!r}")
    return Overrides(weights, diversity, strategy, _recency(raw.get("recency"), f"{path}.recency"), learned)


def _recency(value: Any, path: str) -> tuple[tuple[str, float | None], ...]:
    if value is None:
        return ()
    raw = _object(value, path, _RECENCY_KEYS)
    pairs = tuple(
        (key, None if raw[key] is None else _number(raw[key], f"{path}.{key}", 0.0))
        for key in sorted(raw)
    )
    try:
        _with_recency(ProfileParams(), pairs)  # the same bounds as the defaults (> 0 and finite, or None)
    except InvalidInputError as error:
        raise InvalidInputError(f"{path}.{error.field}", error.reason) from None
    return pairs


def _with_recency(profile: ProfileParams, recency: Sequence[tuple[str, float | None]]) -> ProfileParams:
    for key, value in recency:
        if key == "half_life_days":
            profile = replace(profile, half_life_days=value)
        else:
            profile = replace(profile, half_life_events=value)
    return profile


def _experiment(value: Any, path: str) -> Experiment:
    raw = _object(value, path, _EXPERIMENT_KEYS)
    name = _name(raw.get("name"), f"{path}.name")
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise InvalidInputError(f"{path}.enabled", f"must be true or false, got {enabled!r}")
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, Sequence) or isinstance(variants_raw, str) or not variants_raw:
        raise InvalidInputError(f"{path}.variants", "must be a non-empty list")
    variants: list[Variant] = []
    for i, item in enumerate(variants_raw):
        where = f"{path}.variants[{i}]"
        fields = _object(item, where, _VARIANT_KEYS)
        variant_name = _name(fields.get("name"), f"{where}.name")
        if any(v.name == variant_name for v in variants):
            raise InvalidInputError(f"{where}.name", f"duplicate variant name {variant_name!r}")
        weight = _number(fields.get("weight"), f"{where}.weight", 0.0)
        variants.append(
            Variant(variant_name, weight, _overrides(fields.get("overrides"), f"{where}.overrides"))
        )
    if sum(v.weight for v in variants) <= 0:
        raise InvalidInputError(f"{path}.variants", "the weights must sum to more than 0")
    control = raw.get("control", variants[0].name)
    if not any(v.name == control for v in variants):
        names = ", ".join(v.name for v in variants)
        raise InvalidInputError(
            f"{path}.control", f"must name one of the variants ({names}), got {control!r}"
        )
    return Experiment(name, enabled, tuple(variants), control)


def parse_experiments(document: Mapping[str, Any] | None) -> ExperimentConfig:
    """Validate the ``config/experiments.json`` document (None or ``{}``: no experiments).

    Raises :class:`InvalidInputError` whose ``field`` is the path of the first bad value, e.g.
    ``experiments[0].variants[1].overrides.weights.cf``.
    """
    if document is None or not document:
        return ExperimentConfig()
    raw = _object(document, "", frozenset({"experiments", "defaults"}))
    items = raw.get("experiments", [])
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise InvalidInputError("experiments", "must be a list")
    experiments: list[Experiment] = []
    for i, item in enumerate(items):
        experiment = _experiment(item, f"experiments[{i}]")
        if any(e.name == experiment.name for e in experiments):
            raise InvalidInputError(
                f"experiments[{i}].name", f"duplicate experiment name {experiment.name!r}"
            )
        experiments.append(experiment)
    return ExperimentConfig(tuple(experiments), _overrides(raw.get("defaults"), "defaults"))
