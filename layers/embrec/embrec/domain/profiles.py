"""User vectors: how a history of interactions (and an onboarding profile) becomes one or a few vectors.

Everything here is pure numpy. Item vectors come from the index (never re-encoded at request time); the
functions take them as arrays so they can be tested with small seeded data.

- :func:`interaction_weights`: type weight x recency decay in time and in position, both relative to the
  *newest* event, so a history that is ten years old weighs exactly like the same history shifted to today
  (no 0/0, no underflow), and the last few events lead even when a whole history falls on one day.
- :func:`user_vector`: the weighted, L2-normalised sum (negative types subtract); ``None`` when nothing is
  left (e.g. only dislikes that cancel).
- :func:`interest_vectors`: up to ``max_interests`` vectors for a diverse history (weighted spherical
  k-means, deterministic).
- :func:`onboarding_text` and :func:`blend_with_profile`: the cold-start profile, and how a short history
  takes over from it as events accumulate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from embrec.domain.model import Interaction
from embrec.errors import InvalidInputError

__all__ = [
    "DEFAULT_TYPE_WEIGHTS",
    "INTERACTION_VERBS",
    "ProfileParams",
    "blend_with_profile",
    "declared_type_weights",
    "event_order",
    "interaction_weights",
    "interest_vectors",
    "onboarding_text",
    "recent_history",
    "user_vector",
]

SECONDS_PER_DAY = 86_400.0

DEFAULT_TYPE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "like": 3.0, "purchase": 5.0, "dislike": -2.0}
)


def declared_type_weights(declared: Sequence[tuple[str, float]]) -> Mapping[str, float]:
    """The deployment's type weights: its declared ``(type, weight)`` pairs, else the six built-ins."""
    return MappingProxyType(dict(declared)) if declared else DEFAULT_TYPE_WEIGHTS


#: Past-tense verb per interaction type, for reasons ("Because you liked <title>").
INTERACTION_VERBS: Mapping[str, str] = MappingProxyType(
    {
        "view": "viewed",
        "click": "clicked",
        "add_to_cart": "added to cart",
        "like": "liked",
        "purchase": "bought",
        "dislike": "disliked",
    }
)

_DEFAULT_DECAY_PER_DAY = 0.1


@dataclass(frozen=True)
class ProfileParams:
    """How interactions weigh.

    ``half_life_days``: an event this many days older than the newest one counts half (default
    ln 2 / 0.1 ≈ 6.93 days, i.e. ``exp(-0.1 x age_days)``); ``None`` disables recency decay.
    ``half_life_events``: an event with this many newer events after it counts half (``0.5 ** (rank / h)``,
    rank 0 = the newest); ``None`` disables it. Time decay alone cannot tell the order of a session: a user
    who rates forty films in an evening gives them all the same weight, while the next film follows the
    last few (MovieLens leave-last-out, EASE alone: NDCG@10 0.0476 -> 0.0607 with 3; EVALUATION.md). 4 since
    SLIST's training half-life moved with it (pooled validation NDCG@10 0.0728 -> 0.0743).
    ``taste_half_life_days`` / ``taste_half_life_events``: the same two decays for the *taste* vector
    (:meth:`taste`), the query a new item nobody has touched is ranked against: its text is all the evidence
    it has, and what a user likes lasts longer than what they did last. 10 events and no time decay, chosen on
    the item cold start validation splits (MovieLens HR@10 0.250 -> 0.283, Amazon NDCG@10 0.102 -> 0.110;
    leave-last-out validation unchanged; EVALUATION.md, "New items meet the user's taste").
    ``max_history``: only the newest events build the vector (all fetched events are still excluded from
    recommendations). ``diversity_threshold``: a history whose weighted mean pairwise cosine is below this
    is split into several interests. ``profile_strength``: the ``c`` in ``w_p = c / (c + n_events)``.
    Unknown interaction types weigh 0 (an old event type must not break a user's recommendations).
    """

    type_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TYPE_WEIGHTS)
    half_life_days: float | None = math.log(2.0) / _DEFAULT_DECAY_PER_DAY
    half_life_events: float | None = 4.0
    taste_half_life_days: float | None = None
    taste_half_life_events: float | None = 10.0
    max_history: int = 200
    max_interests: int = 3
    diversity_threshold: float = 0.35
    profile_strength: float = 3.0

    def __post_init__(self) -> None:
        for name in ("half_life_days", "half_life_events", "taste_half_life_days", "taste_half_life_events"):
            half_life = getattr(self, name)
            if half_life is not None and not (half_life > 0 and math.isfinite(half_life)):
                raise InvalidInputError(name, f"must be a positive number or None, got {half_life}")
        if self.max_history < 1:
            raise InvalidInputError("max_history", f"must be >= 1, got {self.max_history}")
        if self.max_interests < 1:
            raise InvalidInputError("max_interests", f"must be >= 1, got {self.max_interests}")
        if self.profile_strength < 0:
            raise InvalidInputError("profile_strength", f"must be >= 0, got {self.profile_strength}")
        for name, weight in self.type_weights.items():
            if not math.isfinite(weight):
                raise InvalidInputError("type_weights", f"{name}: weight must be finite, got {weight}")

    @classmethod
    def with_decay(cls, decay_per_day: float, **kwargs: object) -> ProfileParams:
        """Params from a decay rate (``exp(-decay x age_days)``) instead of a half-life; 0 = no decay."""
        if decay_per_day < 0 or not math.isfinite(decay_per_day):
            raise InvalidInputError("decay_per_day", f"must be >= 0, got {decay_per_day}")
        half_life = None if decay_per_day == 0 else math.log(2.0) / decay_per_day
        return cls(half_life_days=half_life, **kwargs)  # type: ignore[arg-type]

    def taste(self) -> ProfileParams:
        """These params with the taste decays in place of the request's (what :func:`interaction_weights`
        reads)."""
        return replace(
            self, half_life_days=self.taste_half_life_days, half_life_events=self.taste_half_life_events
        )

    def engagement(self) -> ProfileParams:
        """These params with every positive type weight 1 (dislikes and unknown types keep theirs): the
        weights of a request's CF sources when the CF model read engagement
        (``Signals.cf_reads_engagement``)."""
        return replace(
            self, type_weights={name: 1.0 if w > 0 else w for name, w in self.type_weights.items()}
        )

    @property
    def decay_per_day(self) -> float:
        return 0.0 if self.half_life_days is None else math.log(2.0) / self.half_life_days


def event_order(event: Interaction) -> tuple[float, str, str, str, bool, float]:
    """The sort key of "later": the timestamp, equal times broken by item id, then event id, type and value (a
    total order). The one rule for which of two events is the newer: the profile's position weights
    (:func:`recent_history`), the CF sequences (``signals``: the larger item position is the newer) and the
    evaluation's held-out event all read it."""
    return (float(event.timestamp), event.item_id, event.event_id, event.type, event.value is not None,
            event.value or 0.0)


def recent_history(history: Iterable[Interaction], max_history: int) -> list[Interaction]:
    """The newest ``max_history`` interactions, newest first by :func:`event_order` (a total order, so the
    result, and the position weights of :func:`interaction_weights`, do not depend on the order the events
    were fetched in)."""
    return sorted(history, key=event_order, reverse=True)[:max_history]


def interaction_weights(
    types: Sequence[str], timestamps: Sequence[float] | np.ndarray, params: ProfileParams | None = None
) -> np.ndarray:
    """Weight of each interaction: ``type_weight x exp(-decay x (newest - t) / 1 day) x 0.5 ** (rank / h)``.

    ``types``: n strings; ``timestamps``: n epoch seconds. Returns float64 (n,). Ages are measured from the
    newest event, so they are >= 0, the newest event has decay 1 and the result does not depend on how
    old the whole history is. ``rank``: how many events are newer (equal timestamps: the earlier in the
    input is the newer, as :func:`recent_history` lists them); ``h``: ``params.half_life_events`` (no
    position decay when ``None``). Non-finite timestamps raise :class:`InvalidInputError`.
    """
    params = params or ProfileParams()
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if len(types) != ts.shape[0]:
        raise InvalidInputError("timestamps", f"{ts.shape[0]} timestamps for {len(types)} types")
    if ts.size == 0:
        return np.zeros(0, dtype=np.float64)
    if not np.all(np.isfinite(ts)):
        raise InvalidInputError("timestamp", "must be a finite number of epoch seconds")
    weight_of = params.type_weights.get  # a bound method: the request path calls this for ~200 events
    type_w = np.fromiter((weight_of(t, 0.0) for t in types), dtype=np.float64, count=len(types))
    age_days = (ts.max() - ts) / SECONDS_PER_DAY
    decay = np.exp(-params.decay_per_day * age_days)  # in (0, 1]; the newest is exactly 1
    if params.half_life_events is not None:
        rank = np.empty(ts.shape[0], dtype=np.float64)
        rank[np.argsort(-ts, kind="stable")] = np.arange(ts.shape[0], dtype=np.float64)
        decay = decay * np.exp2(-rank / params.half_life_events)
    return type_w * decay


def user_vector(item_vectors: np.ndarray, weights: np.ndarray, *, eps: float = 1e-6) -> np.ndarray | None:
    """The L2-normalised weighted sum of item vectors, or ``None`` if it (nearly) vanishes.

    ``item_vectors``: (n, d) float; ``weights``: (n,) (negative weights subtract). Returns (d,) float32.
    ``None`` for an empty history, no positive weight (only dislikes say what to avoid, not what to
    show), or when the sum's norm is below ``eps`` x sum |w| (e.g. a like and a dislike of the same item).
    """
    vectors = np.asarray(item_vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if vectors.ndim != 2 or vectors.shape[0] != w.shape[0]:
        raise InvalidInputError("item_vectors", f"shape {vectors.shape} does not match {w.shape[0]} weights")
    scale = float(np.abs(w).sum())
    if vectors.shape[0] == 0 or not scale > 0 or not np.any(w > 0):
        return None
    total = (w / scale) @ vectors  # scaled first so huge weights cannot overflow
    norm = float(np.linalg.norm(total))
    if not norm > eps or not math.isfinite(norm):
        return None
    return (total / norm).astype(np.float32)


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _spherical_kmeans(
    x: np.ndarray, w: np.ndarray, k: int, iterations: int = 25, restarts: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted spherical k-means, deterministic: farthest-first seeding from each of the ``restarts``
    heaviest items, keeping the run with the highest weighted cosine to the centroids.

    ``x``: (n, d) unit rows; ``w``: (n,) > 0. Returns (labels (n,) int, centroids (k, d) unit rows).
    """
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for first in np.argsort(-w, kind="stable")[:restarts]:
        labels, centroids = _kmeans_from(x, w, k, int(first), iterations)
        cohesion = float(w @ np.einsum("ij,ij->i", x, centroids[labels]))
        if best is None or cohesion > best[0] + 1e-12:
            best = (cohesion, labels, centroids)
    assert best is not None
    return best[1], best[2]


def _kmeans_from(
    x: np.ndarray, w: np.ndarray, k: int, first: int, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    seeds = [first]
    closest = x @ x[seeds[0]]
    for _ in range(1, k):
        seeds.append(int(np.argmin(closest)))
        closest = np.maximum(closest, x @ x[seeds[-1]])
    centroids = x[seeds].copy()
    labels = np.full(x.shape[0], -1)
    rows = np.arange(x.shape[0])
    membership = np.zeros((x.shape[0], k), dtype=x.dtype)
    for _ in range(iterations):
        new_labels = np.argmax(x @ centroids.T, axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        membership[:] = 0.0
        membership[rows, labels] = w
        sums = membership.T @ x  # (k, d): each cluster's weighted sum, one product for all clusters
        filled = np.bincount(labels, minlength=k) > 0
        centroids = _normalise_rows(np.where(filled[:, None], sums, centroids))  # an empty cluster stays put
    return labels, centroids


def _weighted_mean_pairwise_cosine(x: np.ndarray, w: np.ndarray) -> float:
    """sum_{i != j} w_i w_j cos(i, j) / sum_{i != j} w_i w_j for unit rows ``x`` (O(n d), no n x n matrix)."""
    s = w @ x
    num = float(s @ s - np.sum(w * w))
    den = float(w.sum() ** 2 - np.sum(w * w))
    return num / den if den > 0 else 1.0


def interest_vectors(
    item_vectors: np.ndarray,
    weights: np.ndarray,
    max_interests: int = 3,
    *,
    diversity_threshold: float = 0.35,
    min_gain: float = 0.05,
    min_share: float = 0.15,
    min_items: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a history into up to ``max_interests`` interest vectors.

    ``item_vectors``: (n, d); ``weights``: (n,) from :func:`interaction_weights`. Returns
    ``(vectors (m, d) float32 unit rows, shares (m,) float64 summing to 1)``, m = 0 when no user vector
    exists. A coherent history (weighted mean pairwise cosine of the positively weighted items >=
    ``diversity_threshold``) gives m = 1, the :func:`user_vector`. Otherwise k = 2..max_interests is
    tried with weighted spherical k-means; k is kept while it raises the weighted mean cosine to the
    centroid by at least ``min_gain`` and every cluster holds >= ``min_share`` of the weight and >=
    ``min_items`` items (one stray item is not an interest). Negative
    weights (dislikes) are subtracted from every interest in proportion to its share.
    """
    vectors = np.asarray(item_vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    single = user_vector(vectors, w)
    if single is None:
        return np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), np.float32), np.zeros(0)
    positive = w > 0
    x = _normalise_rows(vectors[positive])
    wp = w[positive] / w[positive].sum()
    one = (single[None, :], np.ones(1))
    if max_interests < 2 or x.shape[0] < 4 or _weighted_mean_pairwise_cosine(x, wp) >= diversity_threshold:
        return one
    cohesion = float(wp @ (x @ _normalise_rows((wp @ x)[None, :])[0]))
    best: tuple[np.ndarray, np.ndarray] | None = None
    for k in range(2, min(max_interests, x.shape[0] // max(min_items, 1)) + 1):
        labels, centroids = _spherical_kmeans(x, wp, k)
        shares = np.bincount(labels, weights=wp, minlength=k)
        if shares.min() < min_share or np.bincount(labels, minlength=k).min() < min_items:
            break
        new_cohesion = float(wp @ np.einsum("ij,ij->i", x, centroids[labels]))
        if new_cohesion - cohesion < min_gain:
            break
        cohesion, best = new_cohesion, (labels, shares)
    if best is None:
        return one
    labels, shares = best
    negative_total = w[~positive] @ vectors[~positive] if (~positive).any() else 0.0
    raw_positive = vectors[positive]
    out_vectors: list[np.ndarray] = []
    out_shares: list[float] = []
    for c in np.argsort(-shares, kind="stable"):
        members = labels == c
        total = w[positive][members] @ raw_positive[members] + shares[c] * negative_total
        norm = float(np.linalg.norm(total))
        if norm > 1e-9:
            out_vectors.append(total / norm)
            out_shares.append(float(shares[c]))
    if not out_vectors:
        return one
    share_arr = np.asarray(out_shares)
    return np.asarray(out_vectors, dtype=np.float32), share_arr / share_arr.sum()


_SPACES = re.compile(r"\s+")


def _clean_list(values: Iterable[str] | str | None, field_name: str, limit: int = 20) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        if not isinstance(value, str):
            raise InvalidInputError(field_name, "must be a list of strings")
        text = _SPACES.sub(" ", value).strip()[:100]
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    if len(out) > limit:
        raise InvalidInputError(field_name, f"at most {limit} entries")
    return out


def onboarding_text(
    interests: Iterable[str] | None, goals: Iterable[str] | None = None, experience: str | None = None
) -> str:
    """The text a cold-start profile is encoded from (encoded once, at onboarding).

    Deterministic: whitespace collapsed, duplicates (case-insensitive) dropped, order kept. At least one
    interest or goal is required (:class:`InvalidInputError` on ``interests`` otherwise).
    """
    interest_list = _clean_list(interests, "interests")
    goal_list = _clean_list(goals, "goals")
    if experience is not None and not isinstance(experience, str):
        raise InvalidInputError("experience", "must be a string")
    level = _SPACES.sub(" ", experience or "").strip()[:100]
    if not interest_list and not goal_list:
        raise InvalidInputError("interests", "at least one interest or goal is required")
    parts = []
    if interest_list:
        parts.append("Interested in " + ", ".join(interest_list) + ".")
    if goal_list:
        parts.append("Goals: " + ", ".join(goal_list) + ".")
    if level:
        parts.append("Experience: " + level + ".")
    return " ".join(parts)


def blend_with_profile(
    history_vector: np.ndarray | None,
    profile_vector: np.ndarray | None,
    n_events: int,
    profile_strength: float = 3.0,
) -> np.ndarray | None:
    """``normalise(h + w_p x p)`` with ``w_p = c / (c + n_events)``: the profile fades as history grows.

    Both vectors are (d,) unit vectors (either may be ``None``). Returns (d,) float32 or ``None``.
    """
    if profile_vector is None:
        return None if history_vector is None else np.asarray(history_vector, dtype=np.float32)
    p = np.asarray(profile_vector, dtype=np.float64).reshape(-1)
    p_norm = float(np.linalg.norm(p))
    if not p_norm > 0 or not math.isfinite(p_norm):
        return None if history_vector is None else np.asarray(history_vector, dtype=np.float32)
    p = p / p_norm
    if history_vector is None:
        return p.astype(np.float32)
    h = np.asarray(history_vector, dtype=np.float64).reshape(-1)
    if h.shape != p.shape:
        raise InvalidInputError("profile_vector", f"dimension {p.shape[0]} does not match {h.shape[0]}")
    denominator = profile_strength + max(n_events, 0)
    w_p = profile_strength / denominator if denominator > 0 else 0.0
    total = h + w_p * p
    norm = float(np.linalg.norm(total))
    if not norm > 1e-9:
        return h.astype(np.float32)
    return (total / norm).astype(np.float32)
