"""Offline evaluation and tuning on public datasets, through the same ``ranking.recommend`` the API uses.

Protocols (:func:`leave_last_out`, :func:`item_cold_start`) turn a dataset's ``(user_id, Interaction)``
pairs into a :class:`Split`: the training interactions (CF neighbours and popularity are computed from
them, nothing else) and one :class:`Case` per test user (the history the ranking sees, the held-out items,
the clock). Strategies (:data:`EVAL_STRATEGIES`) are :class:`ranking.RankParams` settings, never a second
ranking implementation. Metrics (:func:`hit_rate`, :func:`ndcg`, :func:`recall`, :func:`reciprocal_rank`,
:func:`coverage`, :func:`intra_list_diversity`, :func:`novelty`) are pure functions over ranked id lists.

Every interaction counts as relevant (a rating says the user engaged with the item, whatever the stars);
the ranking excludes every history item and ranks all other items of the catalog (``EVAL_K`` long lists).
Trending is replayed as the API would have served it at each test user's request (:class:`Replay`): the
training events inside the product's window (``SignalParams``: 14 days, half-life 3 days) before the held-out
event's time, not one figure anchored at the dataset's last day (the datasets span decades, so that window
would hold nothing for almost every user) nor all-time counts (what a deployment never serves).

Tuning (:func:`tune`) searches CF parameters, the profile half-lives (in days and in events) and the blend
weights on a validation split carved from the training interactions only (each user's last *training*
event), never the test split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from embrec.config import DEFAULT_HISTORY_LIMIT, Settings
from embrec.domain.catalog import item_text, validate_row
from embrec.domain.fusion import DEFAULT_META_WEIGHT, FusionConfig, fuse_rows, plan_fusion
from embrec.domain.learned_blend import ItemStats, LearnedBlend, fit, item_stats
from embrec.domain.model import Interaction
from embrec.domain.profiles import SECONDS_PER_DAY, ProfileParams, event_order
from embrec.domain.ranking import BlendWeights, RankParams, learning_example, recommend
from embrec.domain.signals import SignalParams, Signals, compute_signals, trending_scores
from embrec.engine.index import VectorIndex
from embrec.errors import InvalidInputError
from embrec_tools.datasets import Dataset, load_amazon2018, load_movielens

__all__ = [
    "DATASETS",
    "EVAL_K",
    "EVAL_STRATEGIES",
    "METRICS",
    "PROTOCOLS",
    "Case",
    "EvalResult",
    "Replay",
    "Split",
    "TuneResult",
    "add_cli",
    "build_index",
    "coverage",
    "encode_catalog",
    "evaluate",
    "evaluate_strategies",
    "hit_rate",
    "intra_list_diversity",
    "item_cold_start",
    "leave_last_out",
    "load_dataset",
    "markdown_table",
    "ndcg",
    "novelty",
    "paired_difference",
    "paired_table",
    "ranked_lists",
    "recall",
    "reciprocal_rank",
    "run",
    "sample_cases",
    "strategy_params",
    "train_learned_blend",
    "tune",
    "validation_split",
]

# List length: the pool, max(candidate_pool 100, 3k), stays the API default's (k <= 33), so the top 10 is what
# the API serves at k=10; MRR is MRR@30 (MRR@50 with lists of 50 and a pool of 200 before session 18).
EVAL_K = 30
DATASETS = ("movielens", "amazon-magazines")
PROTOCOLS = ("leave-last-out", "item-cold-start")
EVAL_STRATEGIES = ("popularity", "embedding", "cf", "hybrid", "hybrid+diversity", "multi-interest", "learned")
METRICS = ("HR@10", "NDCG@10", "Recall@20", "MRR", "coverage@10", "diversity@10", "novelty@10")
HYBRID_DIVERSITY = 0.3
#: Side-information weights (`SignalParams.side_weight`) the tune tries with the default CF model.
SIDE_WEIGHT_GRID = (0.0, 100.0, 1000.0)


# --------------------------------------------------------------------------- metrics (pure)


def hit_rate(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1.0 if any relevant item is in the top ``k`` of ``ranked``, else 0.0."""
    rel = set(relevant)
    return 1.0 if any(item in rel for item in ranked[:k]) else 0.0


def ndcg(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Binary NDCG@k: sum of 1/log2(rank + 1) over relevant hits (rank from 1) / the ideal for |relevant|."""
    rel = set(relevant)
    if not rel:
        return 0.0
    dcg = sum(1.0 / math.log2(pos + 2) for pos, item in enumerate(ranked[:k]) if item in rel)
    ideal = sum(1.0 / math.log2(pos + 2) for pos in range(min(len(rel), k)))
    return dcg / ideal


def recall(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """|relevant in top k| / |relevant| (0.0 for no relevant items)."""
    rel = set(relevant)
    if not rel:
        return 0.0
    return len(rel.intersection(ranked[:k])) / len(rel)


def reciprocal_rank(ranked: Sequence[str], relevant: Iterable[str]) -> float:
    """1 / rank of the first relevant item (rank from 1); 0.0 when none is in the list."""
    rel = set(relevant)
    for pos, item in enumerate(ranked):
        if item in rel:
            return 1.0 / (pos + 1)
    return 0.0


def coverage(lists: Iterable[Sequence[str]], catalog_size: int, k: int) -> float:
    """Share of the catalog that appears in at least one top-``k`` list."""
    if catalog_size <= 0:
        return 0.0
    shown: set[str] = set()
    for ranked in lists:
        shown.update(ranked[:k])
    return len(shown) / catalog_size


def intra_list_diversity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance (1 - cos) of a list's item vectors (n, d); 0.0 for n < 2."""
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        return 0.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sims = x @ x.T
    mean_sim = (float(sims.sum()) - float(np.trace(sims))) / (n * (n - 1))
    return 1.0 - mean_sim


def novelty(ranked: Sequence[str], popularity: Mapping[str, int], n_users: int, k: int) -> float:
    """Mean ``-log2 p(i)`` over the top ``k``, ``p(i) = (users with i + 1) / (n_users + 1)`` (smoothed so an
    item nobody has touched, e.g. a cold item, stays finite). 0.0 for an empty list."""
    top = ranked[:k]
    if not top:
        return 0.0
    return float(np.mean([-math.log2((popularity.get(i, 0) + 1) / (n_users + 1)) for i in top]))


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Case:
    """One test user: ``history`` (what the ranking sees, oldest first), ``targets`` (held-out item ids),
    ``now`` (epoch s passed to ``recommend``)."""

    user_id: str
    history: tuple[Interaction, ...]
    targets: frozenset[str]
    now: float


@dataclass(frozen=True)
class Split:
    """``train``: the interactions signals are built from; ``cases``: test users sorted by user id;
    ``new_items``: items that joined the catalog after the signals were built (the rebuild did not know
    them; they are still in the index, as ingestion puts them there at once)."""

    protocol: str
    train: list[tuple[str, Interaction]]
    cases: list[Case]
    info: dict[str, Any] = field(default_factory=dict)
    new_items: frozenset[str] = frozenset()

    def replay(self, index: VectorIndex, params: SignalParams | None = None) -> Replay:
        """The signals a rebuild would have made from ``train``, over the index's items but ``new_items``
        (their index vectors as the CF solve's side information, as the rebuild passes them), with trending
        replayed per request time (:class:`Replay`)."""
        items = [item_id for item_id in index.live_ids() if item_id not in self.new_items]
        params = params or SignalParams()
        vectors = index.vectors_for(items) if params.side_weight > 0 else None
        return Replay(compute_signals(self.train, items, params, item_vectors=vectors), self.train, params)


class Replay:
    """The signals each test request would have been served: CF from the whole of ``train`` (leave-last-out's
    usual reading: other users' later events count), trending from the training events at or before the
    request time ``now``, with ``params``' window, half-life and type weights
    (:func:`signals.trending_scores`, as a rebuild at ``now`` computes it). :meth:`at` costs O(events in the
    window) plus a copy of the signals' id map."""

    def __init__(
        self, signals: Signals, train: Iterable[tuple[str, Interaction]], params: SignalParams
    ) -> None:
        self.signals, self.params = signals, params
        users: dict[str, int] = {}
        rows = [
            (users.setdefault(user, len(users)), pos, float(params.type_weights.get(event.type, 0.0)),
             float(event.timestamp))
            for user, event in train
            if (pos := signals.position(event.item_id)) is not None
        ]
        columns = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        order = np.argsort(columns[:, 3], kind="stable")
        self._users, self._items = columns[order, 0].astype(np.int64), columns[order, 1].astype(np.int64)
        self._weights, self._times = columns[order, 2], columns[order, 3]

    def at(self, now: float) -> Signals:
        """The signals with trending as of ``now`` (epoch s)."""
        start = int(np.searchsorted(self._times, now - self.params.trending_window_days * SECONDS_PER_DAY))
        stop = int(np.searchsorted(self._times, now, side="right"))
        part = slice(start, stop)
        trending = trending_scores(
            self._users[part], self._items[part], self._weights[part], self._times[part], len(self.signals),
            now, self.params.trending_half_life_days, self.params.trending_window_days,
        )
        return replace(self.signals, trending=trending)


def _by_user(interactions: Iterable[tuple[str, Interaction]]) -> dict[str, list[Interaction]]:
    grouped: dict[str, list[Interaction]] = defaultdict(list)
    for user, event in interactions:
        grouped[user].append(event)
    for events in grouped.values():
        events.sort(key=event_order)  # the product's rule for which event is the newer
    return grouped


def _served_history(events: Sequence[Interaction]) -> tuple[Interaction, ...]:
    """The newest :data:`~embrec.config.DEFAULT_HISTORY_LIMIT` of a user's events (oldest first): what a
    request reads from the interactions table (its newest-first query) and so all the API excludes as seen.
    The training set keeps every event (the rebuild reads them all)."""
    return tuple(events[-DEFAULT_HISTORY_LIMIT:])


def leave_last_out(interactions: Iterable[tuple[str, Interaction]], min_events: int = 3) -> Split:
    """Temporal leave-last-out: per user with >= ``min_events`` events, the newest event (ties: the larger
    (item id, event id) is the later one) is held out; the history is that user's earlier events (every
    other event of the held-out item is dropped too, so the target is never in the history), the newest
    ``DEFAULT_HISTORY_LIMIT`` of them as a request reads them (:func:`_served_history`); ``now`` is the
    held-out timestamp. ``train`` = every interaction except the held-out ones (other users' later events
    included: the usual leave-last-out, not a global time cut)."""
    grouped = _by_user(interactions)
    train: list[tuple[str, Interaction]] = []
    cases: list[Case] = []
    for user in sorted(grouped):
        events = grouped[user]
        if len(events) < min_events:
            train.extend((user, e) for e in events)
            continue
        last = events[-1]
        history = tuple(e for e in events[:-1] if e.item_id != last.item_id)
        train.extend((user, e) for e in history)
        if history:
            held_out = frozenset({last.item_id})
            cases.append(Case(user, _served_history(history), held_out, float(last.timestamp)))
    return Split("leave-last-out", train, cases, {"min_events": min_events, "test_users": len(cases)})


def item_cold_start(interactions: Iterable[tuple[str, Interaction]], fraction: float = 0.1) -> Split:
    """Item cold start: the newest ``fraction`` of items with interactions (by first interaction time, ties
    by item id) is withheld from every training interaction. A test user has >= 1 event on a cold item and
    >= 1 on a warm one: history = the user's warm events (the newest ``DEFAULT_HISTORY_LIMIT``, as a request
    reads them), targets = the user's cold items, ``now`` = the user's newest event. The index still holds
    the cold items (their content is known at ingest)."""
    if not 0 < fraction < 1:
        raise InvalidInputError("fraction", f"must be in (0, 1), got {fraction}")
    pairs = list(interactions)
    first_seen: dict[str, float] = {}
    for _, event in pairs:
        ts = float(event.timestamp)
        if event.item_id not in first_seen or ts < first_seen[event.item_id]:
            first_seen[event.item_id] = ts
    newest_first = sorted(first_seen, key=lambda i: (-first_seen[i], i))
    cold = frozenset(newest_first[: max(1, math.ceil(fraction * len(newest_first)))])
    train = [(user, e) for user, e in pairs if e.item_id not in cold]
    cases: list[Case] = []
    grouped = _by_user(pairs)
    for user in sorted(grouped):
        events = grouped[user]
        warm = tuple(e for e in events if e.item_id not in cold)
        targets = frozenset(e.item_id for e in events if e.item_id in cold)
        if warm and targets:
            cases.append(Case(user, _served_history(warm), targets, float(events[-1].timestamp)))
    info = {"fraction": fraction, "cold_items": len(cold), "test_users": len(cases)}
    return Split("item-cold-start", train, cases, info, new_items=cold)


def validation_split(split: Split) -> Split:
    """The same protocol applied again to ``split.train`` only, so a choice never sees a test target.

    Leave-last-out: each user's last *training* event is held out. Item cold start: the newest items of the
    training interactions become new to the signals; the test's new items (``split.new_items``) did not
    exist yet at that time, so the caller removes them from the index (:func:`run` does)."""
    if split.protocol == "item-cold-start":
        return item_cold_start(split.train, fraction=split.info["fraction"])
    return leave_last_out(split.train)


def sample_cases(cases: Sequence[Case], n: int | None, seed: int = 0) -> list[Case]:
    """``n`` cases drawn without replacement with ``random.Random(seed)`` (all when ``n`` is None or
    larger), returned sorted by user id."""
    if n is None or n >= len(cases):
        return list(cases)
    picked = random.Random(seed).sample(list(cases), n)
    return sorted(picked, key=lambda c: c.user_id)


# --------------------------------------------------------------------------- strategies


def strategy_params(
    name: str,
    *,
    weights: BlendWeights | None = None,
    profile: ProfileParams | None = None,
    k: int = EVAL_K,
    ranker: LearnedBlend | None = None,
) -> RankParams:
    """The :class:`RankParams` of a strategy (``weights``/``profile`` default to the API defaults).

    popularity: the ``trending`` strategy; embedding / cf: that weight alone, one user vector; hybrid: the
    blend, one user vector; hybrid+diversity: the same with MMR diversity 0.3; multi-interest: the blend
    with up to ``max_interests`` interest vectors (the API default profile); learned: hybrid re-scored by
    ``ranker`` (:func:`train_learned_blend`; None, too little data: exactly hybrid).
    """
    weights = weights or BlendWeights()
    profile = profile or ProfileParams()
    single = replace(profile, max_interests=1)
    if name == "popularity":
        return RankParams(k=k, strategy="trending", profile=single)
    if name == "embedding":
        return RankParams(k=k, weights=BlendWeights(embedding=1.0, cf=0.0, trending=0.0), profile=single)
    if name == "cf":
        return RankParams(k=k, weights=BlendWeights(embedding=0.0, cf=1.0, trending=0.0), profile=single)
    if name == "hybrid":
        return RankParams(k=k, weights=weights, profile=single)
    if name == "learned":
        return RankParams(k=k, weights=weights, profile=single, ranker=ranker)
    if name == "hybrid+diversity":
        return RankParams(k=k, weights=weights, profile=single, diversity=HYBRID_DIVERSITY)
    if name == "multi-interest":
        multi = profile if profile.max_interests > 1 else replace(profile, max_interests=3)
        return RankParams(k=k, weights=weights, profile=multi)
    raise InvalidInputError("strategy", f"must be one of {', '.join(EVAL_STRATEGIES)}, got {name!r}")


# --------------------------------------------------------------------------- running


@dataclass
class EvalResult:
    """Metrics per strategy (``metrics[strategy][metric]``) and what produced them."""

    dataset: str
    protocol: str
    users: int
    metrics: dict[str, dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)
    per_case: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def paired(self, versus: str = "hybrid") -> dict[str, dict[str, tuple[float, float, float]]]:
        """``versus`` minus each other strategy: HR@10 / NDCG@10 ``(mean, low, high)``
        (:func:`paired_difference`); empty without ``versus``."""
        if versus not in self.per_case:
            return {}
        return {
            name: {m: paired_difference(self.per_case[versus][m], values[m]) for m in ("HR@10", "NDCG@10")}
            for name, values in self.per_case.items()
            if name != versus
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "protocol": self.protocol, "users": self.users,
            "metrics": self.metrics, "info": self.info, "hybrid_minus": self.paired(),
        }


def _popularity(train: Iterable[tuple[str, Interaction]]) -> tuple[Counter[str], int]:
    users_per_item: dict[str, set[str]] = defaultdict(set)
    users: set[str] = set()
    for user, event in train:
        users_per_item[event.item_id].add(user)
        users.add(user)
    return Counter({item: len(u) for item, u in users_per_item.items()}), len(users)


def ranked_lists(
    index: VectorIndex, replay: Replay, cases: Sequence[Case], params: Mapping[str, RankParams]
) -> dict[str, list[list[str]]]:
    """The item ids ``recommend`` ranks for each case (in case order) under each named ``params``: the
    lists every metric is computed from. Case by case, so each request's replayed signals
    (:meth:`Replay.at`) are built once for every strategy; no onboarding profile (a test user has a
    history)."""
    lists: dict[str, list[list[str]]] = {name: [] for name in params}
    for case in cases:
        signals = replay.at(case.now)
        for name, rank_params in params.items():
            result = recommend(index, signals, case.history, None, rank_params, case.now)
            lists[name].append([item.item_id for item in result.items])
    return lists


def evaluate_strategies(
    index: VectorIndex,
    replay: Replay,
    cases: Sequence[Case],
    params: Mapping[str, RankParams],
    popularity: Mapping[str, int],
    n_users: int,
    per_case: dict[str, dict[str, list[float]]] | None = None,
) -> dict[str, dict[str, float]]:
    """Average the metrics of each named ``params``' lists (:func:`ranked_lists`) over ``cases`` (coverage
    over the index's live items). ``per_case``: when given, each case's HR@10 and NDCG@10 are appended
    under ``per_case[name]["HR@10"]`` etc. (in case order), for paired comparisons
    (:func:`paired_difference`)."""
    lists = ranked_lists(index, replay, cases, params)
    return {
        name: _metrics(
            index, cases, lists[name], popularity, n_users,
            None if per_case is None else per_case.setdefault(name, {}),
        )
        for name in params
    }


def _metrics(
    index: VectorIndex,
    cases: Sequence[Case],
    lists: Sequence[Sequence[str]],
    popularity: Mapping[str, int],
    n_users: int,
    per_case: dict[str, list[float]] | None,
) -> dict[str, float]:
    sums: dict[str, float] = dict.fromkeys(METRICS, 0.0)
    for case, ranked in zip(cases, lists, strict=True):
        hit, gain = hit_rate(ranked, case.targets, 10), ndcg(ranked, case.targets, 10)
        if per_case is not None:
            per_case.setdefault("HR@10", []).append(hit)
            per_case.setdefault("NDCG@10", []).append(gain)
        sums["HR@10"] += hit
        sums["NDCG@10"] += gain
        sums["Recall@20"] += recall(ranked, case.targets, 20)
        sums["MRR"] += reciprocal_rank(ranked, case.targets)
        top = ranked[:10]
        if len(top) >= 2:
            sums["diversity@10"] += intra_list_diversity(index.vectors_for(list(top)))
        sums["novelty@10"] += novelty(ranked, popularity, n_users, 10)
    n = max(len(cases), 1)
    out = {name: value / n for name, value in sums.items()}
    out["coverage@10"] = coverage(lists, len(index), 10)
    return out


def evaluate(
    index: VectorIndex,
    split: Split,
    cases: Sequence[Case],
    *,
    strategies: Sequence[str] = EVAL_STRATEGIES,
    signal_params: SignalParams | None = None,
    weights: BlendWeights | None = None,
    profile: ProfileParams | None = None,
    replay: Replay | None = None,
    per_case: dict[str, dict[str, list[float]]] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[str, float]]:
    """Metrics per strategy for ``cases``; signals from ``split.train`` (:meth:`Split.replay`) unless given.
    ``per_case``: filled with each strategy's per-case HR@10 / NDCG@10 (see :func:`evaluate_strategies`)."""
    if replay is None:
        replay = split.replay(index, signal_params)
    popularity, n_users = _popularity(split.train)
    ranker = None
    if "learned" in strategies:
        ranker = train_learned_blend(
            index, split, signal_params=signal_params, weights=weights, profile=profile, log=log
        )
    params = {
        name: strategy_params(name, weights=weights, profile=profile, ranker=ranker) for name in strategies
    }
    return evaluate_strategies(index, replay, cases, params, popularity, n_users, per_case)


def _item_stats(
    signals: Signals, train: Iterable[tuple[str, Interaction]], params: SignalParams
) -> ItemStats:
    """:class:`ItemStats` of ``train``'s positive events over the positions of ``signals``."""
    rows = [
        (pos, float(event.timestamp))
        for _, event in train
        if params.type_weights.get(event.type, 0.0) > 0
        and (pos := signals.position(event.item_id)) is not None
    ]
    columns = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    return item_stats(len(signals), columns[:, 0].astype(np.int64), columns[:, 1])


def train_learned_blend(
    index: VectorIndex,
    split: Split,
    *,
    signal_params: SignalParams | None = None,
    weights: BlendWeights | None = None,
    profile: ProfileParams | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> LearnedBlend | None:
    """The learned blend as a rebuild over ``split.train`` would train it, with no test case in sight: the
    lists are the validation split carved from ``split.train`` (each user's last *training* event held out,
    signals and item statistics from the rest, trending replayed at each list's time); the model serves
    with the item statistics of the whole of ``split.train``. None below ``learned_blend.MIN_LISTS`` lists."""
    signal_params = signal_params or SignalParams()
    validation = replace(leave_last_out(split.train), new_items=split.new_items)  # the same signals items
    replay = validation.replay(index, signal_params)
    stats = _item_stats(replay.signals, validation.train, signal_params)
    params = strategy_params("hybrid", weights=weights, profile=profile)
    examples = [
        example
        for case in validation.cases
        for target in sorted(case.targets)
        if (example := learning_example(
            index, replay.at(case.now), stats, case.history, target, params, case.now
        )) is not None
    ]
    model = fit(examples, _item_stats(replay.signals, split.train, signal_params))
    log(f"learned blend: {len(examples)} of {len(validation.cases)} validation lists hold their target; "
        + (json.dumps(dict(model.info)) if model is not None else "too few: the weighted blend serves"))
    return model


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired cases and its 95% percentile-bootstrap interval (``resamples`` draws of
    the cases with replacement, ``numpy.random.default_rng(seed)``): ``(mean, low, high)``. An interval that
    holds 0 says the two strategies are not told apart by these cases."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size == 0:
        return 0.0, 0.0, 0.0
    draws = np.random.default_rng(seed).integers(0, diff.size, size=(resamples, diff.size))
    means = diff[draws].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(diff.mean()), float(low), float(high)


def paired_table(
    paired: Mapping[str, Mapping[str, tuple[float, float, float]]], versus: str = "hybrid"
) -> str:
    """Markdown of :meth:`EvalResult.paired`: mean difference [95% bootstrap interval] per strategy."""
    rows = [
        f"| {versus} - strategy | HR@10 difference [95% CI] | NDCG@10 difference [95% CI] |",
        "| --- | ---: | ---: |",
    ]
    for name, metrics in paired.items():
        cells = [f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]" for mean, low, high in metrics.values()]
        rows.append(f"| {versus} - {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- data + vectors


def load_dataset(name: str, path: Path) -> Dataset:
    """``movielens``: the ml-latest-small directory; ``amazon-magazines``: the directory holding
    ``Magazine_Subscriptions.csv`` and ``meta_Magazine_Subscriptions.json[.gz]``."""
    path = Path(path)
    if name == "movielens":
        return load_movielens(path)
    if name == "amazon-magazines":
        meta = path / "meta_Magazine_Subscriptions.json"
        if not meta.is_file() and (path / "meta_Magazine_Subscriptions.json.gz").is_file():
            meta = path / "meta_Magazine_Subscriptions.json.gz"
        return load_amazon2018(path / "Magazine_Subscriptions.csv", meta, name="amazon-magazines")
    raise InvalidInputError("dataset", f"must be one of {', '.join(DATASETS)}, got {name!r}")


def encode_catalog(
    dataset: Dataset, encode: Callable[[list[str]], np.ndarray], encoder_id: str, cache_dir: Path | None
) -> tuple[list[str], np.ndarray]:
    """Item ids and (n, d) float32 vectors of ``item_text`` per catalog row, cached in ``cache_dir`` as
    ``<dataset>-<texts sha256[:16]>-<encoder_id[:16]>.npz`` (no pickle) so reruns skip the encoder."""
    items = [validate_row(row) for row in dataset.catalog_rows]
    ids = [item.item_id for item in items]
    texts = [item_text(item) for item in items]
    digest = hashlib.sha256("\x1e".join(i + "\x1f" + t for i, t in zip(ids, texts, strict=True)).encode())
    safe_id = "".join(c if c.isalnum() else "_" for c in encoder_id)[:32]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{dataset.name}-{digest.hexdigest()[:16]}-{safe_id}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                return ids, data["vectors"].astype(np.float32)
    vectors = np.asarray(encode(texts), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=vectors)
        tmp.replace(path)
    return ids, vectors


def build_index(
    dataset: Dataset,
    ids: Sequence[str],
    vectors: np.ndarray,
    encoder_id: str,
    fusion: FusionConfig | None = None,
) -> VectorIndex:
    """A :class:`VectorIndex` over the catalog, with the catalog metadata (as ingestion stores it), in the
    layout the rebuild would choose for it (``fusion`` default: the product default, auto; images count
    only when enough of the catalog's items carry one, as in the rebuild)."""
    metadata = [validate_row(row).to_dict() for row in dataset.catalog_rows]
    images = [row.get("image_embedding") for row in metadata]
    spec = plan_fusion(
        fusion or FusionConfig(), vectors.shape[1], (len(i) for i in images if i), items=len(metadata)
    )
    fused, _ = fuse_rows(spec, vectors, metadata, images)
    layout = None if spec is None else spec.to_dict()
    return VectorIndex.build(list(ids), fused, metadata, encoder_id=encoder_id, fusion=layout)


# --------------------------------------------------------------------------- tuning


@dataclass
class TuneResult:
    """Chosen parameters and the validation / test figures (hybrid strategy) before and after."""

    signal_params: SignalParams
    weights: BlendWeights
    profile: ProfileParams
    validation: dict[str, dict[str, float]]
    trials: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        sp = self.signal_params
        return {
            "cf_model": sp.cf_model, "neighbours": sp.neighbours, "shrinkage": sp.shrinkage,
            "ease_lambda": sp.ease_lambda, "slist_alpha": sp.slist_alpha,
            "slist_half_life_events": sp.slist_half_life_events, "side_weight": sp.side_weight,
            "weights": {"embedding": self.weights.embedding, "cf": self.weights.cf,
                        "trending": self.weights.trending},
            "half_life_days": self.profile.half_life_days, "half_life_events": self.profile.half_life_events,
            "validation": self.validation, "trials": self.trials,
        }


def _objective(metrics: Mapping[str, float]) -> tuple[float, float]:
    return (round(metrics["NDCG@10"], 6), round(metrics["HR@10"], 6))


def tune(
    index: VectorIndex,
    split: Split,
    *,
    users: int | None = 150,
    seed: int = 0,
    cf_grid: Sequence[SignalParams] | None = None,
    half_lives: Sequence[float | None] = (30.0, None),
    event_half_lives: Sequence[float | None] = (6.0, None),
    passes: int = 1,
    weight_grid: Mapping[str, Sequence[float]] | None = None,
    depth: int = 3,
    log: Callable[[str], None] = lambda _: None,
) -> TuneResult:
    """Coordinate search on ``depth`` validation splits carved from ``split.train`` only: the first is
    :func:`leave_last_out` of it (each user's last *training* event held out), each next one leave-last-out of
    the previous one's training data (the event before). Their cases (``users`` sampled per split) are pooled:
    a choice made on one split of a few hundred users follows its noise. Hybrid strategy, objective pooled
    NDCG@10 then HR@10: CF parameters first (with default weights), then the profile half-life in days, then
    in events, then each blend weight in turn (``passes`` passes)."""
    if depth < 1:
        raise InvalidInputError("depth", f"must be >= 1, got {depth}")
    validations: list[Split] = []
    train = split.train
    for _ in range(depth):
        validations.append(leave_last_out(train))
        train = validations[-1].train
    cases = [sample_cases(v.cases, users, seed) for v in validations]
    counts = [_popularity(v.train) for v in validations]
    default_sp = SignalParams()
    cf_grid = list(cf_grid) if cf_grid is not None else [
        default_sp,
        replace(default_sp, cf_model="cooccurrence"),
        replace(default_sp, cf_model="ease"),
        replace(default_sp, ease_lambda=default_sp.ease_lambda / 2),
        replace(default_sp, ease_lambda=default_sp.ease_lambda * 2),
        *(
            replace(default_sp, slist_alpha=alpha)
            for alpha in (0.2, 0.5, 0.8)
            if alpha != default_sp.slist_alpha
        ),
        *(
            replace(default_sp, side_weight=beta)
            for beta in SIDE_WEIGHT_GRID
            if beta != default_sp.side_weight
        ),
    ]
    weight_grid = weight_grid or {
        "embedding": (0.05, 0.1, 0.5),
        "trending": (0.05, 0.1, 0.5),
        "cf": (0.5, 2.0),
    }
    trials: list[dict[str, Any]] = []
    replays: dict[tuple[int, int], Replay] = {}

    def score(sp_i: int, weights: BlendWeights, profile: ProfileParams) -> dict[str, float]:
        params = {"hybrid": strategy_params("hybrid", weights=weights, profile=profile)}
        sums = {"HR@10": 0.0, "NDCG@10": 0.0}
        for v_i, validation in enumerate(validations):
            if (sp_i, v_i) not in replays:
                replays[sp_i, v_i] = validation.replay(index, cf_grid[sp_i])
            popularity, n_users = counts[v_i]
            part = evaluate_strategies(index, replays[sp_i, v_i], cases[v_i], params, popularity, n_users)
            for name in sums:
                sums[name] += part["hybrid"][name] * len(cases[v_i])
        metrics = {name: value / max(sum(map(len, cases)), 1) for name, value in sums.items()}
        sp = cf_grid[sp_i]
        trial = {
            "cf_model": sp.cf_model, "neighbours": sp.neighbours, "shrinkage": sp.shrinkage,
            "ease_lambda": sp.ease_lambda, "slist_alpha": sp.slist_alpha, "side_weight": sp.side_weight,
            "half_life_days": profile.half_life_days,
            "half_life_events": profile.half_life_events,
            "weights": [weights.embedding, weights.cf, weights.trending],
            "NDCG@10": metrics["NDCG@10"], "HR@10": metrics["HR@10"],
        }
        trials.append(trial)
        log(json.dumps(trial))
        return metrics

    weights, profile = BlendWeights(), ProfileParams()
    best_sp, best = 0, score(0, weights, profile)
    baseline = best
    for i in range(1, len(cf_grid)):
        m = score(i, weights, profile)
        if _objective(m) > _objective(best):
            best_sp, best = i, m
    recency = [("days", value) for value in half_lives] + [("events", value) for value in event_half_lives]
    for unit, value in recency:
        if unit == "days":
            candidate = replace(profile, half_life_days=value)
        else:
            candidate = replace(profile, half_life_events=value)
        if candidate == profile:
            continue
        m = score(best_sp, weights, candidate)
        if _objective(m) > _objective(best):
            profile, best = candidate, m
    for _ in range(passes):
        for name, values in weight_grid.items():
            for value in values:
                if value == getattr(weights, name):
                    continue
                try:
                    candidate_w = replace(weights, **{name: value})
                except InvalidInputError:
                    continue
                m = score(best_sp, candidate_w, profile)
                if _objective(m) > _objective(best):
                    weights, best = candidate_w, m
    return TuneResult(
        cf_grid[best_sp], weights, profile,
        {
            "default": baseline, "tuned": best,
            "users": {"count": sum(map(len, cases)), "splits": depth, "seed": seed},
        },
        trials,
    )


# --------------------------------------------------------------------------- report + CLI


def markdown_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """Strategies as rows, :data:`METRICS` as columns, 4 decimals (novelty in bits, 2 decimals)."""
    header = "| strategy | " + " | ".join(METRICS) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in METRICS) + " |"
    rows = []
    for name, values in metrics.items():
        cells = [f"{values[m]:.2f}" if m == "novelty@10" else f"{values[m]:.4f}" for m in METRICS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows])


def plot(result: EvalResult, path: Path) -> None:
    """Grouped bar chart of the ranking metrics per strategy (matplotlib, the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInputError(
            "plot", "matplotlib is not installed: pip install 'embrec[plot]' (or drop --plot)"
        ) from None
    shown = ("HR@10", "NDCG@10", "Recall@20", "MRR", "coverage@10")
    names = list(result.metrics)
    x = np.arange(len(shown))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, name in enumerate(names):
        ax.bar(x + i * width, [result.metrics[name][m] for m in shown], width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, shown)
    ax.set_title(f"{result.dataset} — {result.protocol} ({result.users} users)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _default_encoder_dir(cache_dir: Path) -> Path:
    """The build the API serves (:data:`~embrec_tools.encoder_build.SERVED_QUANTIZE`), built on first use
    under ``cache_dir/encoders`` with the demo's cache key."""
    from embrec_tools.encoder_build import SERVED_QUANTIZE, cached_build

    return cached_build(cache_dir / "encoders", SERVED_QUANTIZE)[0]


def run(
    dataset_name: str,
    path: Path,
    *,
    protocol: str = "leave-last-out",
    users: int | None = None,
    seed: int = 0,
    encoder_dir: Path | None = None,
    cache_dir: Path = Path(".cache/eval"),
    strategies: Sequence[str] = EVAL_STRATEGIES,
    fusion: FusionConfig | None = None,
    do_tune: bool = False,
    tune_users: int | None = 100,
    on_validation: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[EvalResult, TuneResult | None]:
    """Load, encode (cached), index, split, evaluate; with ``do_tune`` also tune on the validation splits and
    add a ``hybrid (tuned)`` row evaluated on the test cases. ``on_validation``: evaluate on the validation
    split carved from the test split's training part (:func:`validation_split`) instead of the test split,
    to choose without the test cases."""
    from embrec.engine.encoder import TextEncoder

    if protocol not in PROTOCOLS:
        raise InvalidInputError("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    started = time.perf_counter()
    dataset = load_dataset(dataset_name, path)
    # The eval touches no AWS resource: only the encoder's thread count comes from the settings, read as the
    # local tooling reads them (no bucket or table names required).
    threads = Settings.from_env(local=True).encoder_threads
    encoder = TextEncoder.load(encoder_dir or _default_encoder_dir(cache_dir), threads=threads)
    ids, vectors = encode_catalog(dataset, lambda texts: encoder.encode(texts), encoder.encoder_id, cache_dir)
    index = build_index(dataset, ids, vectors, encoder.encoder_id, fusion)
    split = leave_last_out(dataset.interactions) if protocol == "leave-last-out" else item_cold_start(
        dataset.interactions
    )
    if on_validation:
        if split.new_items:
            index.delete(sorted(split.new_items))  # the test's new items did not exist yet
        split = validation_split(split)
    cases = sample_cases(split.cases, users, seed)
    log(f"loaded {dataset.name}: {len(ids)} items, {len(split.cases)} test users, {len(cases)} evaluated "
        f"({time.perf_counter() - started:.1f}s)")
    per_case: dict[str, dict[str, list[float]]] = {}
    metrics = evaluate(index, split, cases, strategies=strategies, per_case=per_case, log=log)
    log(markdown_table(metrics) + f"\n({time.perf_counter() - started:.1f}s)")
    tuned: TuneResult | None = None
    if do_tune:
        tuned = tune(index, split, users=tune_users, seed=seed, log=log)
        popularity, n_users = _popularity(split.train)
        params = {
            f"{name} (tuned)": strategy_params(name, weights=tuned.weights, profile=tuned.profile)
            for name in ("hybrid", "multi-interest")
        }
        replay = split.replay(index, tuned.signal_params)
        metrics |= evaluate_strategies(index, replay, cases, params, popularity, n_users)
    info = {
        "items": len(index), "test_users_total": len(split.cases), "seed": seed, "k": EVAL_K,
        "train_interactions": len(split.train), "encoder_id": encoder.encoder_id,
        "seconds": round(time.perf_counter() - started, 1),
        "split": "validation" if on_validation else "test",
        **split.info,
    }
    return EvalResult(dataset_name, protocol, len(cases), metrics, info, per_case), tuned


def _cli(args: argparse.Namespace) -> int:
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result, tuned = run(
        args.dataset, Path(args.path), protocol=args.protocol, users=args.users, seed=args.seed,
        encoder_dir=Path(args.encoder) if args.encoder else None, cache_dir=Path(args.cache),
        do_tune=args.tune, tune_users=args.tune_users, on_validation=args.validation, log=log,
        strategies=tuple(args.strategies.split(",")) if args.strategies else EVAL_STRATEGIES,
        fusion=FusionConfig(meta_weight=args.meta_weight),
    )
    document = result.to_dict() | ({"tuned": tuned.to_dict()} if tuned is not None else {})
    save_results(document, Path(args.out) if args.out else Path(args.cache) / RESULTS_FILE)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(f"## {result.dataset} — {result.protocol} ({result.info['split']} split) — "
              f"{result.users} users (seed {args.seed}), "
              f"{result.info['items']} items, lists of {EVAL_K}\n")
        print(markdown_table(result.metrics))
        paired = result.paired()
        if paired:
            print("\nPaired over the same users (mean difference, 95% bootstrap interval, 2,000 draws):\n")
            print(paired_table(paired))
        if "learned" in result.per_case:
            print("\n" + paired_table(result.paired("learned"), "learned"))
        if tuned is not None:
            chosen = {k: v for k, v in tuned.to_dict().items() if k not in ("trials", "validation")}
            print("\nTuned on 3 validation splits (each user's last 3 training events, pooled):")
            print(json.dumps(chosen))
            before, after = tuned.validation["default"], tuned.validation["tuned"]
            print("validation NDCG@10 / HR@10, default -> tuned: "
                  f"{before['NDCG@10']:.4f} / {before['HR@10']:.4f} -> "
                  f"{after['NDCG@10']:.4f} / {after['HR@10']:.4f}")
    if args.plot:
        plot(result, Path(args.plot))
    return 0


#: Under ``--cache``: where ``embrec eval`` saves its latest results unless ``--out`` says otherwise (the
#: console's evaluation page reads ``.cache/eval/latest.json``).
RESULTS_FILE = "latest.json"


def save_results(document: Mapping[str, Any], path: Path) -> None:
    """Write the results document (plus ``finished_at``, UTC) to ``path`` atomically (temp file, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {**document, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(stamped, indent=2))
    scratch.replace(path)


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``embrec eval``."""
    cmd = subparsers.add_parser("eval", help="offline evaluation (and tuning) on a public dataset")
    cmd.add_argument("--dataset", required=True, choices=DATASETS)
    cmd.add_argument("--path", required=True, help="directory with the dataset files as published")
    cmd.add_argument("--protocol", choices=PROTOCOLS, default="leave-last-out")
    cmd.add_argument("--users", type=int, default=None, help="sample this many test users (default: all)")
    cmd.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    cmd.add_argument("--json", action="store_true", help="print JSON instead of the markdown table")
    cmd.add_argument("--plot", default=None, help="write a PNG chart here (needs matplotlib)")
    cmd.add_argument(
        "--out", default=None,
        help=f"save the results as JSON here (default: --cache/{RESULTS_FILE}, which `embrec console` shows)",
    )
    cmd.add_argument("--tune", action="store_true", help="tune on a validation split carved from training")
    cmd.add_argument(
        "--validation", action="store_true",
        help="evaluate on the validation split carved from training (leave-last-out: each user's last "
        "training event; item cold start: the newest training items), not test",
    )
    cmd.add_argument(
        "--tune-users", type=int, default=100, help="validation users sampled per validation split for tuning"
    )
    cmd.add_argument(
        "--encoder", default=None,
        help="built encoder directory (default: the build the API serves, int8, built into --cache)",
    )
    cmd.add_argument(
        "--strategies", default=None, help=f"comma-separated subset of {','.join(EVAL_STRATEGIES)}"
    )
    cmd.add_argument(
        "--meta-weight", type=float, default=DEFAULT_META_WEIGHT,
        help="weight of the category/price-band part of item vectors (embrec.domain.fusion; 0 = text only)",
    )
    cmd.add_argument("--cache", default=".cache/eval", help="cache for encoded item vectors and the encoder")
    cmd.set_defaults(handler=_cli)
