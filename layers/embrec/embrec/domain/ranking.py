"""Ranking: candidates from the index, CF neighbours and trending, blended, filtered, diversified, explained.

The request path (no encoder): :func:`recommend` picks a strategy —

- ``personalized``: the history holds an item the index knows. User vector(s) from the newest
  ``ProfileParams.max_history`` events (several interest vectors for a diverse history, each retrieving
  its share of the pool), blended with the onboarding profile while the history is short;
- ``onboarding``: no usable history, but a stored profile vector;
- ``trending``: neither.

Candidates are the union of ANN neighbours (filters and seen items pushed into the index search as one
allowed mask per request, so a selective filter does not lose recall), CF neighbours of recent history
items (weighted by interaction weights) and trending items. Scales: embedding similarity min-max over the
pool; CF (weighted mean neighbour similarity to the history) divided by the pool's maximum; trending min-max
over the pool, gated by that personal relevance; missing = 0. (Measured on MovieLens leave-last-out: min-max
embedding beat a median..max scale, 0.072 vs 0.030 HR@10 at the default weights.) They are
blended with :class:`BlendWeights` over the signals that *cover* each item (an item the signals have no
events on, e.g. added since the rebuild, is ranked on its embedding score alone instead of carrying a 0
for CF and trending; see :func:`_blend`), then MMR re-ranks with ``lambda = 1 - diversity``. Every fetched
history item is excluded, not only the recent ones. Ties break by item id: equal input, equal output.

Scores: with ``diversity == 0`` an item's score is its blended relevance; with ``diversity > 0`` it is the
MMR marginal score at selection, which is non-increasing along the list by construction.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from embrec.domain import learned_blend
from embrec.domain.learned_blend import Example, ItemStats, LearnedBlend
from embrec.domain.model import Filters, Interaction, ItemIndex
from embrec.domain.profiles import (
    INTERACTION_VERBS,
    SECONDS_PER_DAY,
    ProfileParams,
    blend_with_profile,
    interaction_weights,
    interest_vectors,
    recent_history,
    user_vector,
)
from embrec.domain.signals import Signals
from embrec.errors import InvalidInputError, NotFoundError

__all__ = [
    "SIMILAR_WEIGHTS",
    "STRATEGIES",
    "BlendWeights",
    "RankParams",
    "RankedList",
    "Recommendation",
    "learning_example",
    "mmr",
    "recommend",
    "search",
    "similar_items",
    "trending",
]

STRATEGIES = ("personalized", "onboarding", "trending")
MAX_K = 500
REASON_TRENDING = "Popular this week"
REASON_NEW = "New in the catalog"
_NEWEST_SCAN_LIMIT = 50_000
#: How many new, untouched items nearest the user's taste a personal request adds to its pool (at least
#: ``k``). On both item cold start validation splits 10 already gave the top 10 that 200 gave (session 16:
#: MovieLens and Amazon HR@10 and NDCG@10 equal at 10, 25, 50, 100 and 200; 1 and 5 lower); 50 leaves room
#: above the default k. Fewer candidates is what the taste costs: at 100k items with 1% of them new, 200 took
#: the pool from 400 to 596 (BENCHMARKS.md section 1).
TASTE_POOL = 50


@dataclass(frozen=True)
class BlendWeights:
    """Weights of the normalised signals in the blend (any non-negative numbers; not required to sum to 1)."""

    # Chosen on three pooled validation splits of MovieLens training data (each user's last, second-to-last
    # and third-to-last training event; EVALUATION.md, "How the defaults were chosen"), the position half-life
    # of 3 events and trending replayed as served at each request: content and trending are light touches on
    # a catalog whose users' next item CF predicts far better (embedding alone HR@10 0.015, trending 0.03,
    # SLIST 0.12). Re-tuned for SLIST (EVALUATION.md, "Side information in the CF solve"): embedding
    # 0.1 -> 0.2 (pooled NDCG@10 0.0718 -> 0.0723; cold-start validation 24 -> 25 of 92 users).
    embedding: float = 0.2
    cf: float = 1.0
    trending: float = 0.1

    def __post_init__(self) -> None:
        for name in ("embedding", "cf", "trending"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidInputError(f"weights.{name}", f"must be a finite number >= 0, got {value}")
        if self.embedding + self.cf + self.trending <= 0:
            raise InvalidInputError("weights", "at least one weight must be > 0")


#: /similar's blend: "items like this one" leans on content more than a personal list does (the weights
#: the personal blend used before its re-tuning; not tuned for /similar on its own).
SIMILAR_WEIGHTS = BlendWeights(embedding=0.5, cf=1.0, trending=0.0)


def _pool_size(candidate_pool: int, k: int) -> int:
    """How many candidates each signal adds before the blend for a list of ``k``: ``candidate_pool``, at
    least ``3 x k``."""
    return max(candidate_pool, 3 * k)


@dataclass(frozen=True)
class RankParams:
    """One request's ranking knobs.

    ``k``: 1..500 items. ``filters``: request filters (``embrec.domain.model.Filters``); unavailable items are
    excluded unless ``include_unavailable`` or the filter sets ``available`` itself. ``diversity``: 0 =
    pure relevance order, 1 = maximal MMR diversity. ``strategy``: force a strategy (it still falls
    back down personalized → onboarding → trending when its input is missing). ``candidate_pool``: how
    many candidates each signal contributes before blending (at least ``3 x k``): 100 since session 18,
    when 100 and 200 gave the same HR@10 / NDCG@10 at k = 10 on all four validation splits (MovieLens and
    Amazon, leave-last-out and item cold start; EVALUATION.md) and 100 took a fifth off the request at 100k
    items (the ANN over-fetch and its beam shrink with it; BENCHMARKS.md section 1). ``cf_floor``: CF scores
    are divided by ``max(pool maximum, cf_floor)``; 0 (scale-free) measured best on MovieLens (a floor of 0.3
    cost a quarter of HR@10), a floor keeps thin co-occurrence evidence from being stretched to 1.
    ``new_item_days``: an item is *new* when the signals were built without it (added since the rebuild) or
    its ``created_at`` is at most this many days before ``now``; a new item nobody has touched yet is ranked
    on its content alone (see :func:`_gather`), an old untouched one carries its CF and trending 0.
    ``ranker``: a :class:`~embrec.domain.learned_blend.LearnedBlend` re-scores the personalised pool instead
    of the weighted blend (None: the weighted blend; it is set from the loaded version by the A/B overrides).
    """

    k: int = 10
    filters: Filters | None = None
    diversity: float = 0.0
    explain: bool = False
    weights: BlendWeights = field(default_factory=BlendWeights)
    strategy: str | None = None
    candidate_pool: int = 100
    include_unavailable: bool = False
    profile: ProfileParams = field(default_factory=ProfileParams)
    max_cf_sources: int = 50
    cf_floor: float = 0.0
    new_item_days: float = 30.0
    ranker: LearnedBlend | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_K:
            raise InvalidInputError("k", f"must be an integer in 1..{MAX_K}, got {self.k!r}")
        if not (isinstance(self.diversity, int | float) and 0.0 <= self.diversity <= 1.0):
            raise InvalidInputError("diversity", f"must be a number in [0, 1], got {self.diversity!r}")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            allowed = ", ".join(STRATEGIES)
            raise InvalidInputError("strategy", f"must be one of {allowed}, got {self.strategy!r}")
        if self.candidate_pool < 1 or self.max_cf_sources < 0:
            raise InvalidInputError("candidate_pool", "must be >= 1")
        if not (math.isfinite(self.cf_floor) and self.cf_floor >= 0):
            raise InvalidInputError("cf_floor", f"must be a finite number >= 0, got {self.cf_floor}")
        if not (isinstance(self.new_item_days, int | float) and 0.0 <= self.new_item_days < math.inf):
            raise InvalidInputError("new_item_days", f"must be a number >= 0, got {self.new_item_days!r}")

    @property
    def pool(self) -> int:
        """How many candidates each signal adds before the blend (:func:`_pool_size`)."""
        return _pool_size(self.candidate_pool, self.k)

    def effective_filters(self) -> Filters | None:
        if self.include_unavailable or (self.filters is not None and self.filters.available is not None):
            return self.filters
        return replace(self.filters, available=True) if self.filters is not None else Filters(available=True)


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class RankedList:
    strategy: str
    items: list[Recommendation]


# --------------------------------------------------------------------------- pure helpers


def _minmax(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] over the pool; a constant signal carries no information and becomes 0."""
    if values.size == 0:
        return values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.float64)
    return (values - lo) / (hi - lo)


def _relevance_order(relevance: np.ndarray) -> np.ndarray:
    """Indices by relevance descending, ties by position (callers pre-sort candidates by item id)."""
    return np.lexsort((np.arange(relevance.size), -relevance))


def _mmr_scores(
    vectors: np.ndarray, relevance: np.ndarray, k: int, lam: float
) -> tuple[list[int], list[float]]:
    n = int(relevance.shape[0])
    k = max(0, min(k, n))
    if lam >= 1.0 or k == 0:
        order = _relevance_order(relevance)[:k]
        return [int(i) for i in order], [float(relevance[i]) for i in order]
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    rel = np.asarray(relevance, dtype=np.float64)
    max_sim = np.zeros(n, dtype=np.float64)
    chosen = np.zeros(n, dtype=bool)
    selected: list[int] = []
    scores: list[float] = []
    for step in range(k):
        marginal = lam * rel - (1.0 - lam) * max_sim
        marginal[chosen] = -np.inf
        tied = np.flatnonzero(marginal == marginal.max())
        best = int(tied[np.lexsort((tied, -rel[tied]))[0]])  # ties: more relevant, then lower position
        selected.append(best)
        scores.append(float(marginal[best]))
        chosen[best] = True
        if step + 1 < k:
            # Starting from 0 (not -inf) and only ever growing keeps the marginal scores non-increasing:
            # an item opposite to the picks is not rewarded beyond its own relevance.
            max_sim = np.maximum(max_sim, x @ x[best])
    return selected, scores


def mmr(vectors: np.ndarray, relevance: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: ``k`` indices maximising ``lam x rel - (1 - lam) x max cos to picked``.

    ``vectors``: (n, d); ``relevance``: (n,). ``lam = 1`` returns exactly the relevance order (ties by
    index); ``lam = 0`` only avoids redundancy after the first (most relevant) pick. Deterministic.
    """
    if not 0.0 <= lam <= 1.0:
        raise InvalidInputError("lam", f"must be in [0, 1], got {lam}")
    relevance = np.asarray(relevance, dtype=np.float64).reshape(-1)
    if np.asarray(vectors).shape[0] != relevance.shape[0]:
        raise InvalidInputError("vectors", "row count does not match relevance")
    return _mmr_scores(np.asarray(vectors), relevance, k, lam)[0]


def _title(index: ItemIndex, item_id: str) -> str:
    try:
        title = index.metadata(item_id).get("title")
    except (KeyError, NotFoundError):
        title = None
    return str(title) if title else item_id


_WORDS = re.compile(r"[\w']+")


def _matching_interest(interests: Sequence[str], metadata: Mapping[str, object]) -> str:
    """The onboarding interest sharing the most words with the item's title, category and tags."""
    tags = metadata.get("tags") or ()
    text = " ".join([str(metadata.get("title") or ""), str(metadata.get("category") or "")])
    text += " " + " ".join(str(t) for t in tags) if isinstance(tags, list | tuple) else ""
    item_words = {w.lower() for w in _WORDS.findall(text)}
    best, best_overlap = interests[0], 0
    for interest in interests:
        overlap = len({w.lower() for w in _WORDS.findall(interest)} & item_words)
        if overlap > best_overlap:
            best, best_overlap = interest, overlap
    return best


# --------------------------------------------------------------------------- candidate sources


@dataclass(frozen=True)
class _Aligned:
    """The signals re-keyed by index position, so a request works on arrays instead of per-id lookups.

    ``sig_to_pos``: int64 (len(signals),), the index position of each signals item, -1 when not live.
    ``known``: bool (positions,), the signals were built with the item (False: added since the rebuild).
    ``silence``: the share of the known live items that have any event, i.e. how much an item's *lack* of
    events says (near 1 on a mature catalog, near 0 on a young one).
    ``trending``: float64 (positions,), trending score per position (0 where none). ``interacted``: bool
    (positions,), :meth:`Signals.interacted_mask` per position. ``trending_order``: int64, live positions with
    trending > 0, best first, ties by item id (:meth:`Signals.trending_order`). ``pos_to_sig``: int64
    (positions,), the signals position of each index position, -1 when the signals do not know it.
    ``created_at``: float64 (positions,), each item's ``created_at`` epoch seconds, NaN where it has none.
    ``new_by_since`` / ``since``: the live untouched items that can be new (int64 positions) and, ascending,
    the ``new_since`` up to which each still is (its created_at; inf when the signals do not know it):
    :meth:`untouched_new_positions`, :meth:`may_hold_new`.
    """

    sig_to_pos: np.ndarray
    known: np.ndarray
    silence: float
    trending: np.ndarray
    interacted: np.ndarray
    trending_order: np.ndarray
    pos_to_sig: np.ndarray
    created_at: np.ndarray
    new_by_since: np.ndarray
    since: np.ndarray

    def untouched_new_positions(self, new_since: float) -> np.ndarray:
        """int64: the live positions where :meth:`untouched_new` holds, in the same order for the same set,
        in O(log n + found) instead of a pass over every position."""
        return self.new_by_since[int(np.searchsorted(self.since, new_since, side="left")) :]

    def may_hold_new(self, new_since: float) -> bool:
        """Whether any live item is new and untouched for a request whose ``new_since`` this is (O(1): a
        request on a catalog without one skips the taste altogether)."""
        return bool(self.since.size) and float(self.since[-1]) >= new_since

    def untouched_new(self, positions: np.ndarray | slice, new_since: float) -> np.ndarray:
        """bool: at ``positions``, items that are *new* (the signals were built without them, or created at
        or after ``new_since``) and that nobody has touched: ranked on their content alone."""
        with np.errstate(invalid="ignore"):  # NaN (no created_at) is not new by its date
            new = ~self.known[positions] | (self.created_at[positions] >= new_since)
        return new & ~self.interacted[positions]


# One entry: a container serves one (index, signals) pair at a time. Weak references, so a replaced index
# is freed at once; keyed on ``index.generation``, which changes with every upsert or delete.
_ALIGNED: list[tuple[weakref.ref[ItemIndex], tuple[int, int], weakref.ref[Signals], _Aligned]] = []


def _aligned(index: ItemIndex, signals: Signals) -> _Aligned:
    """:class:`_Aligned` for this pair (O(len(signals)) once per index generation, then cached)."""
    if _ALIGNED:
        index_ref, generation, signals_ref, cached = _ALIGNED[0]
        if index_ref() is index and generation == index.generation and signals_ref() is signals:
            return cached
    sig_to_pos = index.positions_of(signals.item_ids)
    live = sig_to_pos >= 0
    known = np.zeros(index.positions, dtype=bool)
    known[sig_to_pos[live]] = True
    trending = np.zeros(index.positions, dtype=np.float64)
    trending[sig_to_pos[live]] = signals.trending[live]
    interacted = np.zeros(index.positions, dtype=bool)
    interacted[sig_to_pos[live]] = signals.interacted_mask()[live]
    order = sig_to_pos[signals.trending_order()]
    silence = float(interacted[known].mean()) if known.any() else 0.0
    pos_to_sig = np.full(index.positions, -1, dtype=np.int64)
    pos_to_sig[sig_to_pos[live]] = np.flatnonzero(live)
    created_at = index.created_at_of(np.arange(index.positions, dtype=np.int64))
    # A live untouched item the signals do not know is new at any time, one they know from its created_at on
    untouched = np.flatnonzero(index.allowed_mask(None) & ~interacted)
    since = np.where(known[untouched], created_at[untouched], math.inf)
    dated = ~np.isnan(since)
    untouched, since = untouched[dated], since[dated]
    by_since = np.argsort(since, kind="stable")
    aligned = _Aligned(
        sig_to_pos, known, silence, trending, interacted, order[order >= 0], pos_to_sig, created_at,
        untouched[by_since], since[by_since],
    )
    _ALIGNED[:] = [(weakref.ref(index), index.generation, weakref.ref(signals), aligned)]
    return aligned


def _first_allowed(positions: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` of ``positions`` (int64, in order) where ``allowed`` (bool over positions) holds."""
    out = np.zeros(0, dtype=np.int64)
    chunk = max(4 * n, 256)
    for start in range(0, positions.shape[0], chunk):
        part = positions[start : start + chunk]
        out = np.concatenate([out, part[allowed[part]]])
        if out.shape[0] >= n:
            break
    return out[:n]


def _newest(index: ItemIndex, n: int, allowed: np.ndarray) -> list[str]:
    """Fill for a catalog without interactions: newest allowed items (created_at desc, then id)."""
    live = index.ids_at(np.flatnonzero(allowed))
    if len(live) > _NEWEST_SCAN_LIMIT:  # too many to read metadata per request: plain id order
        return sorted(live)[:n]

    def created(item_id: str) -> float:
        value = index.metadata(item_id).get("created_at")
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else -math.inf

    return sorted(live, key=lambda item_id: (-created(item_id), item_id))[:n]


@dataclass
class _Pool:
    """Candidate scores gathered from every source (raw, before normalisation).

    ``*_covered``: float (n,) in [0, 1], how far that signal's score counts for the item in this request
    (see :func:`_gather`): 1 = a covered item whose 0 is a real "no", 0 = no evidence at all.
    """

    ids: list[str]
    embedding: np.ndarray
    cf: np.ndarray
    trending: np.ndarray
    cf_source: dict[str, str]
    embedding_covered: np.ndarray | None = None
    cf_covered: np.ndarray | None = None
    trending_covered: np.ndarray | None = None
    positions: np.ndarray | None = None  # int64 (n,) index positions of ``ids``
    fresh: np.ndarray | None = None  # bool (n,): new and untouched (no evidence for CF nor trending)


@dataclass(frozen=True)
class _CF:
    """CF evidence for one request, over index positions: ``positions`` (m,) int64 sorted, ``scores`` (m,)
    float64 (sum over sources of weight x similarity), ``active`` the number of sources that have neighbours.
    Per neighbour pair, ``inverse`` (its item's index into ``positions``), ``similarity`` and ``source_row``
    (its source's index into ``source_ids``): what :meth:`sources` names each item's source from, only when
    asked (a request scoring through the whole CF matrix names them there, :func:`_matrix_cf`)."""

    positions: np.ndarray
    scores: np.ndarray
    active: int
    inverse: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    similarity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    source_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    source_ids: Sequence[str] = ()

    def sources(self) -> list[str]:
        """(m,) the id of the history item most similar to each item (not weight x similarity: the recency
        decay would name the newest event for nearly every item); ties keep the heavier source (earlier in
        the flat order)."""
        inverse = self.inverse
        order = np.lexsort((np.arange(inverse.shape[0]), -self.similarity, inverse))
        first = order[np.r_[True, inverse[order][1:] != inverse[order][:-1]]] if order.size else order
        best = np.empty(self.positions.shape[0], dtype=np.int64)
        best[inverse[first]] = self.source_row[first]
        return [self.source_ids[int(r)] for r in best]


def _cf(
    signals: Signals, aligned: _Aligned, cf_sources: Sequence[tuple[str, float]], allowed: np.ndarray
) -> _CF:
    sources = [
        (item_id, weight, pos)
        for item_id, weight in cf_sources
        if weight > 0 and (pos := signals.position(item_id)) is not None
    ]
    if not sources:
        return _CF(np.zeros(0, np.int64), np.zeros(0), 0)
    rows = np.asarray([pos for _, _, pos in sources], dtype=np.int64)
    neighbours = signals.cf_neighbours[rows].astype(np.int64)  # (S, N) signals positions, -1 padded
    similarity = signals.cf_scores[rows].astype(np.float64)
    has = neighbours >= 0
    active = int(np.count_nonzero(has.any(axis=1)))
    positions = np.where(has, aligned.sig_to_pos[np.maximum(neighbours, 0)], -1)
    keep = positions >= 0
    keep[keep] = allowed[positions[keep]]
    weights = np.asarray([weight for _, weight, _ in sources], dtype=np.float64)
    flat = positions[keep]
    contribution = (weights[:, None] * similarity)[keep]
    source_row = np.nonzero(keep)[0]  # row-major: flat order is source order (heaviest first)
    unique, inverse = np.unique(flat, return_inverse=True)
    scores = np.bincount(inverse, weights=contribution, minlength=unique.shape[0])
    source_ids = [item_id for item_id, _, _ in sources]
    return _CF(unique, scores, active, inverse, similarity[keep], source_row, source_ids)


def _matrix_cf(
    signals: Signals, aligned: _Aligned, cf_sources: Sequence[tuple[str, float]], candidates: np.ndarray
) -> tuple[np.ndarray, list[str]] | None:
    """The candidates' CF scores read from the model's whole matrix
    (:class:`~embrec.domain.signals.CFMatrix`): ``sum_i w_i B[i, j]`` over every source ``i`` the model
    solved for, small and negative weights included, as the model itself scores a user's row. Returns
    float64 (C,) scores (0 where the model has no row for the candidate) and per candidate the source with
    the largest positive weight to it ("" where none); None without a matrix or a source in it.
    O(sources x candidates) float16 reads."""
    matrix = signals.cf_matrix
    if matrix is None:
        return None
    sources = [
        (int(row), weight, item_id)
        for item_id, weight in cf_sources
        if weight > 0 and (pos := signals.position(item_id)) is not None and (row := matrix.rows[pos]) >= 0
    ]
    if not sources:
        return None
    sig = aligned.pos_to_sig[candidates]
    cols = np.where(sig >= 0, matrix.rows[np.maximum(sig, 0)], -1)
    scored = cols >= 0
    rows = np.asarray([row for row, _, _ in sources], dtype=np.int64)
    part = matrix.weights[np.ix_(rows, cols[scored])].astype(np.float64)  # (S, scored candidates)
    scores = np.zeros(candidates.shape[0], dtype=np.float64)
    scores[scored] = np.asarray([weight for _, weight, _ in sources]) @ part
    # As in _CF.sources: the source most similar to the item (ties: the heavier source, first in order).
    best = part.argmax(axis=0) if part.size else np.zeros(0, dtype=np.int64)
    named = np.full(candidates.shape[0], "", dtype=object)
    has_positive = part.max(axis=0) > 0 if part.size else np.zeros(0, dtype=bool)
    named[np.flatnonzero(scored)[has_positive]] = [sources[int(r)][2] for r in best[has_positive]]
    return scores, named.tolist()


def _gather(
    index: ItemIndex,
    signals: Signals | None,
    queries: np.ndarray,
    shares: np.ndarray,
    cf_sources: Sequence[tuple[str, float]],
    pool: int,
    filters: Filters | None,
    exclude: Collection[str],
    use_trending: bool,
    new_since: float,
    taste: np.ndarray | None = None,
    taste_pool: int = TASTE_POOL,
) -> _Pool:
    """Candidates from the ANN (per query), CF neighbours of ``cf_sources`` ((item id, weight) heaviest
    first) and trending; raw per-signal scores and coverage for each.

    Coverage (float (n,) per signal, the share of the signal's weight an item's score counts against; see
    :func:`_blend`): embedding covers every candidate (1) when the request has a query vector. CF and
    trending cover (1) an item the signals saw any event on (:meth:`Signals.interacted_mask`; its CF 0 is a
    real "no"). An item nobody has touched is covered in proportion to what that silence says:
    ``_Aligned.silence`` (the share of the catalog with events) for an old item, 0 for a *new* one — the
    signals were built without it (added since the rebuild) or its ``created_at`` is at or after
    ``new_since`` (epoch s) — which has had no chance to gather evidence and is ranked on its content. So on
    a mature catalog an untouched old item carries its 0s, on a young one (few events) content leads, and a
    new item can reach a list at once. CF covers only when the request has CF sources with neighbours,
    trending only when it is used.

    ``taste`` ((d,) unit vector, :meth:`ProfileParams.taste`): such an item, new and untouched, is found and
    scored against the user's taste instead of ``queries``: the ANN adds ``taste_pool`` of them nearest the
    taste, and each one's content score is its place in the pool's range of taste cosines, mapped onto the
    range of the other items' ``queries`` scores (:func:`_taste_scores`: they keep their scores and normalised
    places).
    """
    allowed = index.allowed_mask(filters, index.positions_of(list(exclude)))
    found = [np.zeros(0, dtype=np.int64)]
    for q, share in zip(queries, shares, strict=True):
        found.append(index.search_positions(q, max(1, math.ceil(pool * float(share))), allowed)[0])
    aligned = _aligned(index, signals) if signals is not None else None
    place_fresh = False  # some allowed item is new and untouched, and a taste is to place it
    if taste is not None and aligned is not None and queries.shape[0]:
        # The same few positions request after request: the index scores them as one block (search_among).
        new_items = aligned.untouched_new_positions(new_since)
        nearest = new_items
        if new_items.size:
            nearest = index.search_among(taste, taste_pool, new_items, allowed)[0]
        place_fresh = bool(nearest.size)
        found.append(nearest)
    cf = _CF(np.zeros(0, np.int64), np.zeros(0), 0)
    if aligned is not None and signals is not None:
        cf = _cf(signals, aligned, cf_sources, allowed)
        top = np.lexsort((cf.positions, -cf.scores))[: 2 * pool]
        found.append(cf.positions[top])
        if use_trending:
            found.append(_first_allowed(aligned.trending_order, allowed, pool))
    candidates = np.unique(np.concatenate(found))
    candidates = candidates[allowed[candidates]]
    unsorted_ids = index.ids_at(candidates)
    by_id = sorted(range(len(unsorted_ids)), key=unsorted_ids.__getitem__)
    candidates = candidates[np.asarray(by_id, dtype=np.int64)]
    ids = [unsorted_ids[i] for i in by_id]
    nothing_new = np.zeros(len(ids), dtype=bool)  # without signals, no item is told new
    fresh = aligned.untouched_new(candidates, new_since) if aligned is not None else nothing_new
    if queries.shape[0] and ids:
        vectors = index.vectors_at(candidates).astype(np.float64)
        cosines = vectors @ queries.T.astype(np.float64)  # (pool, m)
        if queries.shape[0] > 1:
            # Rank-based per interest: interest m owns the top share_m of the pool, so the list interleaves
            # interests in proportion to their weight instead of letting the tightest cluster crowd out the
            # others (its centroid sits closer to its items, so raw cosines favour it).
            ranks = np.empty_like(cosines)
            for m in range(queries.shape[0]):
                order = np.argsort(-cosines[:, m], kind="stable")  # ids are sorted: ties by item id
                ranks[order, m] = np.arange(len(ids))
            shares_arr = np.maximum(np.asarray(shares, dtype=np.float64), 1e-9)
            cosines = 1.0 - ranks / (shares_arr[None, :] * len(ids))
        embedding = cosines.max(axis=1)
        if place_fresh and taste is not None:
            embedding = _taste_scores(embedding, vectors @ taste.astype(np.float64), fresh)
    else:
        embedding = np.zeros(len(ids))
    # CF as the weighted mean similarity to the history: an absolute scale, so thin evidence (a pair seen
    # by one user, damped by shrinkage) stays small instead of being stretched to 1 by min-max.
    # The neighbour rows found the CF candidates; the whole matrix, when the signals keep it, scores them.
    exact = None
    if aligned is not None and signals is not None:
        exact = _matrix_cf(signals, aligned, cf_sources, candidates)
    if exact is not None:
        cf_raw, named = exact
        cf_source = {ids[i]: named[i] for i in range(len(ids)) if named[i]}
    else:
        at = np.minimum(np.searchsorted(cf.positions, candidates), max(cf.positions.shape[0] - 1, 0))
        has_cf = cf.positions[at] == candidates if cf.positions.size else np.zeros(len(ids), dtype=bool)
        cf_raw = np.where(has_cf, cf.scores[at] if cf.scores.size else 0.0, 0.0)
        named = cf.sources()
        cf_source = {ids[i]: named[int(at[i])] for i in np.flatnonzero(has_cf)}
    source_weight = sum(w for _, w in cf_sources if w > 0)
    if source_weight > 0:
        cf_raw /= source_weight
    if aligned is not None:
        trend = aligned.trending[candidates]
        evidence = np.where(aligned.interacted[candidates], 1.0, np.where(fresh, 0.0, aligned.silence))
    else:
        trend, evidence = np.zeros(len(ids)), np.zeros(len(ids))
    none = np.zeros(len(ids))
    return _Pool(
        ids, embedding, cf_raw, trend, cf_source,
        np.full(len(ids), float(bool(queries.shape[0]))),
        evidence if cf.active > 0 else none,
        evidence if use_trending else none,
        candidates,
        fresh if aligned is not None else None,
    )


def _taste_scores(embedding: np.ndarray, taste: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """``embedding`` with the ``fresh`` items' scores replaced by their ``taste`` cosines, mapped linearly
    from the range of ``taste`` over the pool onto the range of ``embedding`` over the other items: a fresh
    item takes the place it has in the pool under the taste, and every other item keeps its normalised
    score (the pool's range stays theirs).
    """
    if not fresh.any():
        return embedding
    others = embedding[~fresh] if not fresh.all() else embedding
    low, high = float(others.min()), float(others.max())
    t_low, t_high = float(taste.min()), float(taste.max())
    if t_high <= t_low:
        return embedding
    placed = low + (taste - t_low) / (t_high - t_low) * (high - low)
    return np.where(fresh, placed, embedding)


def _blend(
    pool: _Pool, weights: BlendWeights, cf_floor: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Blended relevance (n,) and the three weighted parts, all float64 (n,).

    Coverage-aware: an item's blend is ``sum(w_s x s(item)) / sum(w_s over the signals covering it)``
    (coverage: :func:`_gather`), so a new item CF cannot score yet is ranked on the signals that can score
    it rather than carrying a 0 for CF; a covered item with no CF relation to the user keeps its 0. Items
    covered by every signal keep the plain weighted-sum order. The parts are divided by the same per-item
    denominator (they still sum to the relevance).

    Trending is gated by personal relevance (max of the normalised embedding and CF scores): popularity
    lifts what the user would plausibly like, but a hit from an unrelated genre cannot jump the queue on
    popularity alone. (The "trending" strategy ranks by trending directly.)
    """
    e_norm = _minmax(pool.embedding)
    cf_max = max(float(pool.cf.max()) if pool.cf.size else 0.0, cf_floor)
    c_norm = pool.cf / cf_max if cf_max > 0 else np.zeros_like(pool.cf)
    gate = np.maximum(e_norm, c_norm)
    e = weights.embedding * e_norm
    c = weights.cf * c_norm
    t = weights.trending * _minmax(pool.trending) * gate
    if pool.cf_covered is not None:
        denom = np.zeros(len(pool.ids), dtype=np.float64)
        covered = (pool.embedding_covered, pool.cf_covered, pool.trending_covered)
        for weight, cov in zip((weights.embedding, weights.cf, weights.trending), covered, strict=True):
            if cov is not None:
                denom += weight * cov
        # Nothing covers the item (no query vector and no evidence): it keeps its (zero) sum.
        denom = np.where(denom > 0, denom, 1.0)
        e, c, t = e / denom, c / denom, t / denom
    return e + c + t, e, c, t


def _select(
    index: ItemIndex, ids: list[str], relevance: np.ndarray, k: int, diversity: float
) -> tuple[list[int], list[float]]:
    """Top-``k`` positions into ``ids`` (sorted by id) by relevance, or by MMR when ``diversity > 0``."""
    if diversity <= 0 or len(ids) <= 1:
        return _mmr_scores(np.zeros((len(ids), 1)), relevance, k, 1.0)
    order = _relevance_order(relevance)[: max(4 * k, 50)]  # MMR over the best part of the pool only
    vectors = index.vectors_for([ids[i] for i in order])
    picked, scores = _mmr_scores(vectors, relevance[order], k, 1.0 - diversity)
    return [int(order[i]) for i in picked], scores


# --------------------------------------------------------------------------- public API


def recommend(
    index: ItemIndex,
    signals: Signals | None,
    history: Sequence[Interaction],
    profile_vector: np.ndarray | None,
    params: RankParams,
    now: float,
    *,
    profile_interests: Sequence[str] = (),
) -> RankedList:
    """Recommendations for one user. ``history``: every fetched event (all are excluded from the result);
    ``profile_vector``: (d,) onboarding vector or ``None``; ``profile_interests``: the onboarding interests
    (for reasons only); ``now``: epoch seconds (events stamped in the future are treated as now)."""
    request = _request(index, history, params, now)
    if profile_vector is not None:
        profile_vector = np.asarray(profile_vector, dtype=np.float32).reshape(-1)
        if profile_vector.shape[0] != index.dim or not np.all(np.isfinite(profile_vector)):
            profile_vector = None  # a stale profile from another encoder must not break the request
    start = STRATEGIES.index(params.strategy) if params.strategy else 0
    for strategy in STRATEGIES[start:]:
        if strategy == "personalized" and request.known:
            result = _personalized(index, signals, request, profile_vector, params, now)
            if result is not None:
                return result
        elif strategy == "onboarding" and profile_vector is not None:
            return _onboarding(
                index, signals, profile_vector, profile_interests, params, request.filters, request.seen,
                request.new_since,
            )
    items = trending(index, signals, params.k, request.filters, exclude=request.seen, explain=params.explain)
    return RankedList("trending", items)


@dataclass(frozen=True)
class _Request:
    """What a personalised request works from: its filters, the ids it excludes, the newest events (newest
    first, future stamps clamped to ``now``), those of them the index knows and their index positions, and
    the time after which an item counts as new."""

    filters: Filters | None
    seen: frozenset[str]
    recent: list[Interaction]
    known: list[Interaction]
    known_positions: np.ndarray
    new_since: float


def _request(index: ItemIndex, history: Sequence[Interaction], params: RankParams, now: float) -> _Request:
    filters = params.effective_filters()
    seen = frozenset(event.item_id for event in history)
    recent = [
        replace(event, timestamp=min(float(event.timestamp), now)) if event.timestamp > now else event
        for event in recent_history(history, params.profile.max_history)
    ]
    recent_positions = index.positions_of([event.item_id for event in recent])
    known = [event for event, pos in zip(recent, recent_positions.tolist(), strict=True) if pos >= 0]
    return _Request(
        filters, seen, recent, known, recent_positions[recent_positions >= 0],
        now - params.new_item_days * SECONDS_PER_DAY,
    )


def _personalized(
    index: ItemIndex,
    signals: Signals | None,
    request: _Request,
    profile_vector: np.ndarray | None,
    params: RankParams,
    now: float,
) -> RankedList | None:
    found = _personal_pool(index, signals, request, profile_vector, params)
    if found is None:
        return None
    pool, weights, history_vectors = found
    if not pool.ids:
        return RankedList("personalized", [])
    relevance, e, c, t = _blend(pool, params.weights, params.cf_floor)
    if params.ranker is not None and signals is not None:
        features, evidence = _learned_features(
            index, signals, params.ranker.stats, params.cf_floor, pool, relevance, history_vectors, now
        )
        learned = params.ranker.score(features, evidence)
        # New untouched items: the model never trained on one, so they keep the weighted blend's slots.
        if pool.fresh is not None:
            learned = learned_blend.keep_fresh_slots(learned, relevance, pool.fresh)
        relevance = learned
    trend_rank = _minmax(pool.trending)  # "popular" only for the upper half of the pool's trending range
    picked, scores = _select(index, pool.ids, relevance, params.k, params.diversity)
    items = []
    positive = weights > 0
    for pos, score in zip(picked, scores, strict=True):
        item_id = pool.ids[pos]
        reasons: tuple[str, ...] = ()
        if params.explain:
            notable = bool(trend_rank[pos] >= 0.5)
            reasons = _personal_reasons(
                index, item_id, request.known, weights, history_vectors, positive, pool,
                e[pos], c[pos], t[pos], notable,
            )
        items.append(Recommendation(item_id, float(score), reasons))
    return RankedList("personalized", items)


def _personal_pool(
    index: ItemIndex,
    signals: Signals | None,
    request: _Request,
    profile_vector: np.ndarray | None,
    params: RankParams,
) -> tuple[_Pool, np.ndarray, np.ndarray] | None:
    """The personalised candidate pool, the known events' interaction weights and their vectors (float64,
    newest first); None when the history gives neither a query vector nor a CF source."""
    profile, known, recent = params.profile, request.known, request.recent
    types, times = [e.type for e in known], [e.timestamp for e in known]
    weights = interaction_weights(types, times, profile)
    history_vectors = index.vectors_at(request.known_positions).astype(np.float64)
    queries, shares = interest_vectors(
        history_vectors, weights, profile.max_interests, diversity_threshold=profile.diversity_threshold
    )
    if profile_vector is not None:
        strength = profile.profile_strength
        blended = [blend_with_profile(q, profile_vector, len(known), strength) for q in queries]
        queries = np.asarray([q for q in blended if q is not None], dtype=np.float32).reshape(-1, index.dim)
    taste = None  # only when some item can be new and untouched now (see _gather)
    if signals is not None and queries.shape[0] and _aligned(index, signals).may_hold_new(request.new_since):
        taste = user_vector(history_vectors, interaction_weights(types, times, profile.taste()))
        if profile_vector is not None:
            taste = blend_with_profile(taste, profile_vector, len(known), profile.profile_strength)
    # CF sources: recent positive events (the item may be gone from the index and still be a good signal),
    # weighed as the CF model weighed its rows: by recency alone when it read engagement.
    source_profile = profile.engagement() if signals is not None and signals.cf_reads_engagement else profile
    recent_weights = interaction_weights(
        [e.type for e in recent], [e.timestamp for e in recent], source_profile
    )
    sources: dict[str, float] = {}
    for event, weight in zip(recent, recent_weights, strict=True):
        if len(sources) >= params.max_cf_sources and event.item_id not in sources:
            continue
        sources[event.item_id] = sources.get(event.item_id, 0.0) + float(weight)
    cf_sources = sorted(sources.items(), key=lambda kv: (-kv[1], kv[0]))
    if queries.shape[0] == 0 and not any(w > 0 for _, w in cf_sources):
        return None
    if queries.shape[0] != shares.shape[0]:
        shares = np.ones(queries.shape[0]) / max(queries.shape[0], 1)
    pool_size = params.pool
    use_trending = params.weights.trending > 0
    pool = _gather(
        index, signals, queries, shares, cf_sources, pool_size, request.filters, request.seen, use_trending,
        request.new_since, taste, min(pool_size, max(TASTE_POOL, params.k)),
    )
    return pool, weights, history_vectors


def _learned_features(
    index: ItemIndex,
    signals: Signals,
    stats: ItemStats,
    cf_floor: float,
    pool: _Pool,
    relevance: np.ndarray,
    history_vectors: np.ndarray,
    now: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The pool's :data:`~embrec.domain.learned_blend.FEATURES` (float64 (n, F)) and evidence (n,): the
    signals normalised as :func:`_blend` reads them, the items' ``stats``, the cosine to the newest known
    history item (``history_vectors[0]``)."""
    assert pool.positions is not None
    sig = _aligned(index, signals).pos_to_sig[pool.positions]
    sig = np.where(sig < len(stats), sig, -1)  # stats of another signals version: no evidence
    cf_max = max(float(pool.cf.max()) if pool.cf.size else 0.0, cf_floor)
    # Index rows are unit vectors (as _gather's cosines assume): one float32 product, no per-row norms.
    last = (history_vectors[0] / max(float(np.linalg.norm(history_vectors[0])), 1e-12)).astype(np.float32)
    similarity = (index.vectors_at(pool.positions) @ last).astype(np.float64)
    features = learned_blend.candidate_features(
        relevance,
        _minmax(pool.embedding),
        pool.cf / cf_max if cf_max > 0 else np.zeros_like(pool.cf),
        _minmax(pool.trending),
        learned_blend.item_popularity(stats, sig),
        learned_blend.item_age_days(stats, sig, now),
        similarity,
        history_vectors.shape[0],
    )
    evidence = pool.cf_covered if pool.cf_covered is not None else np.zeros(len(pool.ids))
    return features, np.where(sig >= 0, evidence, 0.0)


def learning_example(
    index: ItemIndex,
    signals: Signals,
    stats: ItemStats,
    history: Sequence[Interaction],
    target: str,
    params: RankParams,
    now: float,
) -> Example | None:
    """One training list for :func:`embrec.domain.learned_blend.fit`: the pool the personalised request
    with ``history`` at ``now`` gathers (no onboarding profile) and ``target``'s row in it (None when the
    history gives no pool or the pool misses ``target``). ``stats``: the items' statistics at that time."""
    request = _request(index, history, params, now)
    if not request.known:
        return None
    found = _personal_pool(index, signals, request, None, params)
    if found is None or target not in found[0].ids:
        return None
    pool, _, history_vectors = found
    relevance = _blend(pool, params.weights, params.cf_floor)[0]
    features, evidence = _learned_features(
        index, signals, stats, params.cf_floor, pool, relevance, history_vectors, now
    )
    row = pool.ids.index(target)
    if pool.fresh is None or not pool.fresh.any():
        return Example(features, evidence, row)
    # Fresh items keep the blend's slots when the model serves (keep_fresh_slots): not the model's to rank.
    if pool.fresh[row]:
        return None
    keep = ~pool.fresh
    return Example(features[keep], evidence[keep], int(np.count_nonzero(keep[:row])))


def _personal_reasons(
    index: ItemIndex,
    item_id: str,
    known: Sequence[Interaction],
    weights: np.ndarray,
    history_vectors: np.ndarray,
    positive: np.ndarray,
    pool: _Pool,
    e: float,
    c: float,
    t: float,
    trending_is_notable: bool,
) -> tuple[str, ...]:
    candidates: list[tuple[float, str]] = []
    if positive.any() and (e > 0 or (c <= 0 and t <= 0)):
        vector = index.vectors_for([item_id])[0].astype(np.float64)
        # The positive history item most similar to this one (ties: the newer), as for the CF reason: with
        # position weights, weight x similarity would name the newest event for nearly every item.
        best = int(np.argmax(np.where(positive, history_vectors @ vector, -np.inf)))
        event = known[best]
        verb = INTERACTION_VERBS.get(event.type, "viewed")
        candidates.append((e, f"Because you {verb} {_title(index, event.item_id)}"))
    source = pool.cf_source.get(item_id)
    if c > 0 and source is not None and index.contains(source):  # no reason naming a deleted item
        candidates.append((c, f"People who liked {_title(index, source)} also liked this"))
    if trending_is_notable and t > 0:
        candidates.append((t, REASON_TRENDING))
    candidates.sort(key=lambda pair: -pair[0])
    return tuple(dict.fromkeys(text for _, text in candidates))


def _onboarding(
    index: ItemIndex,
    signals: Signals | None,
    profile_vector: np.ndarray,
    profile_interests: Sequence[str],
    params: RankParams,
    filters: Filters | None,
    seen: frozenset[str],
    new_since: float,
) -> RankedList:
    norm = float(np.linalg.norm(profile_vector))
    query = (profile_vector / norm).reshape(1, -1) if norm > 0 else np.zeros((0, index.dim), np.float32)
    pool = _gather(
        index, signals, query, np.ones(query.shape[0]), (), params.pool,
        filters, seen, use_trending=params.weights.trending > 0, new_since=new_since,
    )
    if not pool.ids:
        return RankedList("onboarding", [])
    relevance, e, _, t = _blend(pool, params.weights)
    picked, scores = _select(index, pool.ids, relevance, params.k, params.diversity)
    interests = [text for text in profile_interests if text.strip()]
    items = []
    for pos, score in zip(picked, scores, strict=True):
        item_id = pool.ids[pos]
        reasons: list[tuple[float, str]] = []
        if params.explain:
            if interests:
                interest = _matching_interest(interests, index.metadata(item_id))
                reasons.append((e[pos], f"Matches your interest in {interest}"))
            else:
                reasons.append((e[pos], "Matches your profile"))
            if t[pos] >= 0.5 * params.weights.trending > 0:
                reasons.append((t[pos], REASON_TRENDING))
            reasons.sort(key=lambda pair: -pair[0])
        items.append(Recommendation(item_id, float(score), tuple(text for _, text in reasons)))
    return RankedList("onboarding", items)


def trending(
    index: ItemIndex,
    signals: Signals | None,
    k: int,
    filters: Filters | None = None,
    exclude: Collection[str] = (),
    *,
    explain: bool = False,
) -> list[Recommendation]:
    """Top-``k`` trending items that match ``filters`` and are not excluded; score = trending score.

    When fewer than ``k`` items have trending activity (a new deployment) the list is filled with the
    newest matching items (score 0).
    """
    allowed = index.allowed_mask(filters, index.positions_of(list(exclude)))
    top: list[str] = []
    if signals is not None:
        top = index.ids_at(_first_allowed(_aligned(index, signals).trending_order, allowed, k))
    items = [
        Recommendation(
            item_id,
            signals.trending_score(item_id) if signals is not None else 0.0,
            (REASON_TRENDING,) if explain else (),
        )
        for item_id in top
    ]
    if len(items) < k:
        allowed[index.positions_of(top)] = False
        fill = _newest(index, k - len(items), allowed)
        items.extend(Recommendation(item_id, 0.0, (REASON_NEW,) if explain else ()) for item_id in fill)
    return items


def search(
    index: ItemIndex,
    query_vector: np.ndarray,
    k: int,
    filters: Filters | None = None,
    exclude: Collection[str] = (),
) -> list[Recommendation]:
    """Semantic search: the ``k`` items nearest to ``query_vector`` (d,), score = cosine."""
    if not 1 <= k <= MAX_K:
        raise InvalidInputError("k", f"must be in 1..{MAX_K}, got {k}")
    query = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    if query.shape[0] != index.dim:
        raise InvalidInputError("query_vector", f"dim {query.shape[0]} is not the index dim {index.dim}")
    hits = index.search(query, k, filters, exclude)
    return [Recommendation(item_id, float(score)) for item_id, score in hits]


def similar_items(
    index: ItemIndex,
    signals: Signals | None,
    item_id: str,
    k: int,
    filters: Filters | None = None,
    *,
    weights: BlendWeights | None = None,
    explain: bool = False,
    candidate_pool: int = 100,
    now: float | None = None,
    new_item_days: float = RankParams.new_item_days,
) -> list[Recommendation]:
    """Items like ``item_id``: embedding neighbours blended with CF neighbours (trending not used).

    Unknown ``item_id`` raises :class:`NotFoundError`. Blend weights default to :data:`SIMILAR_WEIGHTS`.
    ``now`` (epoch s) with ``new_item_days`` tells new items by ``created_at`` (see :func:`_gather`); without
    it only items added since the rebuild count as new.
    """
    if not 1 <= k <= MAX_K:
        raise InvalidInputError("k", f"must be in 1..{MAX_K}, got {k}")
    if not index.contains(item_id):
        raise NotFoundError(f"item {item_id!r} is not in the index")
    weights = weights or SIMILAR_WEIGHTS
    query = index.vectors_for([item_id]).astype(np.float32)
    pool = _gather(
        index, signals, query, np.ones(1), ((item_id, 1.0),), _pool_size(candidate_pool, k), filters,
        frozenset({item_id}), use_trending=False,
        new_since=math.inf if now is None else now - new_item_days * SECONDS_PER_DAY,
    )
    if not pool.ids:
        return []
    blend = BlendWeights(embedding=weights.embedding, cf=weights.cf, trending=0.0) if (
        weights.embedding + weights.cf > 0
    ) else BlendWeights(trending=0.0)
    relevance, e, c, _ = _blend(pool, blend)
    picked, scores = _select(index, pool.ids, relevance, k, 0.0)
    title = _title(index, item_id)
    items = []
    for pos, score in zip(picked, scores, strict=True):
        reasons: tuple[str, ...] = ()
        if explain:
            ranked = sorted(
                [(e[pos], f"Similar to {title}"), (c[pos], f"People who liked {title} also liked this")],
                key=lambda pair: -pair[0],
            )
            reasons = tuple(text for value, text in ranked if value > 0) or (f"Similar to {title}",)
        items.append(Recommendation(pool.ids[pos], float(score), reasons))
    return items
