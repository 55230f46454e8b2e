"""A learned blend: a listwise linear ranker over the candidates' features, trained on users' last events.

The weighted blend (:func:`embrec.domain.ranking._blend`) combines the normalised signals with three fixed
weights. This model re-scores the same candidate pool from :data:`FEATURES` — that blend itself, each
signal's normalised score and its rank in the pool, the item's popularity and age, the similarity to the
user's newest item, and the history length crossed with the two personal signals (alone it is the same for
every candidate of a list, so it cannot move a list) — with one weight per feature.

Training is self-supervised, the next-event split the offline evaluation makes: for each sampled user with
at least three events, the newest event is held out, the signals are built without the held-out events, and
the request the user would have made just before it gives one list (the pool's features, the held-out item's
row). :func:`fit` minimises the listwise softmax cross-entropy of the held-out item over its pool
(``-log softmax(Z w)[target]``, convex) by Newton's method, with an L2 pull towards the blend feature alone
(at its best scale, fitted first), so a model that learned nothing ranks exactly as the weighted blend. Lists
whose pool misses the held-out item carry no gradient and are dropped; with fewer than :data:`MIN_LISTS` left
:func:`fit` returns None and ranking keeps the weighted blend.

Features are standardised with the training mean and scale. An item no signal has evidence on has its
evidence features (:data:`EVIDENCE_FEATURES`) pulled to the training mean by its coverage. A *fresh* item
(new, or added since the rebuild, and untouched: coverage 0 in :func:`embrec.domain.ranking._gather`) is
not the model's to rank at all: no training list can hold one as its target (a list is a user's next event,
on an item with evidence), and a model fitted on warm items sinks it below warm items the weighted blend
puts under it (item cold start collapsed). So at serving :func:`keep_fresh_slots` gives every fresh item the
rank the weighted blend gives it, and the model only reorders the other items; training lists leave fresh
candidates out (:func:`embrec.domain.ranking.learning_example`).

Pure numpy; saved as one ``ranker.npz`` (no pickle) with a manifest, beside the index and the signals.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embrec.domain.model import Interaction
from embrec.domain.profiles import SECONDS_PER_DAY
from embrec.domain.signals import EventColumns
from embrec.errors import CompatibilityError, IntegrityError, InvalidInputError
from embrec.manifest import (
    MANIFEST_FILE,
    VerifiedDirectory,
    describe_files,
    directory_of,
    read_json,
    require_verified,
    write_json,
)

__all__ = [
    "EVIDENCE_FEATURES",
    "FEATURES",
    "L2",
    "LEARNED_BLEND_DEFAULT",
    "MIN_LISTS",
    "RANKER_FILE",
    "Example",
    "Holdout",
    "ItemStats",
    "LearnedBlend",
    "candidate_features",
    "fit",
    "holdout",
    "input_digest",
    "item_age_days",
    "item_popularity",
    "item_stats",
    "keep_fresh_slots",
    "prior_weights",
]

FEATURES = (
    "blend",
    "embedding",
    "cf",
    "trending",
    "embedding_rank",
    "cf_rank",
    "trending_rank",
    "popularity",
    "age",
    "last_similarity",
    "history_x_embedding",
    "history_x_cf",
)
#: Features that only mean something for an item the signals have evidence on (see the module docstring).
EVIDENCE_FEATURES = ("cf", "trending", "cf_rank", "trending_rank", "popularity", "age", "history_x_cf")
#: Fewer training lists (held-out item inside its pool) than this: no model, the weighted blend serves.
MIN_LISTS = 200
#: Whether a request uses the learned blend when the version has one and no experiment override says
#: otherwise. Off: on MovieLens validation splits it did not beat the weighted blend (EVALUATION.md).
LEARNED_BLEND_DEFAULT = False
#: The blend feature's starting weight (per standard deviation) before its scale is fitted, and the least
#: it may end at: a blend that predicts nothing still orders a model that learned nothing, never reverses it.
PRIOR_BLEND_WEIGHT = 1.0
#: Users (with >= 3 events) sampled for the rebuild's training lists: bounds its cost (one request each).
MAX_TRAINING_USERS = 2000
#: A training user's history is cut to this many newest events (the items every request excludes).
MAX_TRAINING_HISTORY = 500
#: The pull towards the blend: chosen on MovieLens validation lists (EVALUATION.md) from 0.01 / 0.05 / 0.2 /
#: 1 / 5, by NDCG@10 then HR@10, as every default; all five were below the weighted blend there.
L2 = 5.0
RANKER_FILE = "ranker.npz"
_FORMAT_VERSION = 1
_EVIDENCE_MASK = np.asarray([name in EVIDENCE_FEATURES for name in FEATURES])


@dataclass(frozen=True)
class ItemStats:
    """Per item of the signals (same positions as ``Signals.item_ids``): ``popularity`` float32 (m,),
    log1p of the number of positive events on it (within the rebuild's window); ``first_seen`` float64
    (m,), epoch s of its first event (NaN: none)."""

    popularity: np.ndarray
    first_seen: np.ndarray

    def __len__(self) -> int:
        return int(self.popularity.shape[0])


def item_stats(n_items: int, items: np.ndarray, times: np.ndarray) -> ItemStats:
    """:class:`ItemStats` from event columns: ``items`` (item positions < ``n_items``) and ``times`` (epoch
    s), one row a (positive) event."""
    items = np.asarray(items, dtype=np.int64)
    first = np.full(n_items, np.inf)
    np.minimum.at(first, items, np.asarray(times, dtype=np.float64))
    return _item_stats(np.bincount(items, minlength=n_items), first)


def _item_stats(counts: np.ndarray, first: np.ndarray) -> ItemStats:
    return ItemStats(np.log1p(counts).astype(np.float32), np.where(np.isfinite(first), first, np.nan))


@dataclass
class Holdout:
    """The rebuild's training split: ``train_events`` (a view of the events without each sampled user's
    newest one, nor the user's other events on that item), ``cases`` ((history oldest first, held-out item,
    its time) per sampled user), ``stats_train`` / ``stats_full`` the :class:`ItemStats` without / with the
    held-out events."""

    train_events: EventColumns
    cases: list[tuple[list[Interaction], str, float]]
    stats_train: ItemStats
    stats_full: ItemStats


def holdout(
    events: EventColumns, *, max_users: int = MAX_TRAINING_USERS, seed: int = 0, min_events: int = 3
) -> Holdout:
    """Hold out the newest event of up to ``max_users`` users with >= ``min_events`` events (sampled with
    ``numpy.random.default_rng(seed)`` over the sorted user ids; equal times: the larger item id is the
    later, as the offline evaluation splits).

    Memory: per-user arrays and one chunk's temporaries at a time, never a second copy of the columns:
    ``train_events`` shares ``events``' arrays. The held-out rows are moved out of the shared chunks and
    appended to ``events`` as one chunk of their own (``events`` still holds every event; signals do not
    depend on the order of events)."""
    events.finish()
    n_items, n_users = len(events.item_ids), len(events.users)
    counts = np.zeros(n_users, dtype=np.int64)
    last_ts = np.full(n_users, -np.inf)
    last_item = np.full(n_users, -1, dtype=np.int64)
    for u, i, _, ts in events.chunks:
        counts += np.bincount(u, minlength=n_users)
        order = np.lexsort((i, ts, u))  # the chunk's last row per user is its newest event
        ends = order[np.r_[u[order][1:] != u[order][:-1], True]] if order.size else order
        users = u[ends]
        newer = (ts[ends] > last_ts[users]) | ((ts[ends] == last_ts[users]) & (i[ends] > last_item[users]))
        last_ts[users[newer]], last_item[users[newer]] = ts[ends][newer], i[ends][newer]
    eligible = np.flatnonzero(counts >= min_events)
    picked = np.sort(np.random.default_rng(seed).choice(eligible, size=min(max_users, eligible.size),
                                                        replace=False))
    full = _stats_of(events.chunks, n_items)
    if picked.size == 0:  # no user with enough events: nothing to hold out
        view = copy.copy(events)
        view.chunks, view.users = list(events.chunks), dict(events.users)
        return Holdout(view, [], full, full)
    sampled = np.zeros(n_users, dtype=bool)
    sampled[picked] = True
    held: list[tuple[np.ndarray, ...]] = []
    mine: list[tuple[np.ndarray, ...]] = []
    for k, chunk in enumerate(events.chunks):
        u, i = chunk[0], chunk[1]
        of_sampled = sampled[u]
        out = of_sampled & (i == last_item[u])
        mine.append(tuple(column[of_sampled & ~out] for column in chunk))
        if out.any():
            held.append(tuple(column[out] for column in chunk))
            events.chunks[k] = (chunk[0][~out], chunk[1][~out], chunk[2][~out], chunk[3][~out])
    removed = tuple(np.concatenate([part[c] for part in held]) for c in range(4)) if held else None
    train = copy.copy(events)
    train.chunks = list(events.chunks)
    train.users = dict(events.users)
    if removed is not None:
        events.chunks.append(removed)  # type: ignore[arg-type]
    stats_train = _stats_of(train.chunks, n_items)
    u, i, t, ts = (np.concatenate([part[c] for part in mine]) for c in range(4))
    order = np.lexsort((i, ts, u))
    bounds = np.searchsorted(u[order], picked, "left"), np.searchsorted(u[order], picked, "right")
    names, ids = events.type_names, events.item_ids
    cases = []
    for user, lo, hi in zip(picked.tolist(), *bounds, strict=True):
        rows = order[max(lo, hi - MAX_TRAINING_HISTORY) : hi].tolist()
        history = [Interaction(ids[i[r]], names[t[r]], float(ts[r])) for r in rows]
        cases.append((history, ids[last_item[user]], float(last_ts[user])))
    return Holdout(train, cases, stats_train, full)


def _stats_of(chunks: Sequence[tuple[np.ndarray, ...]], n_items: int) -> ItemStats:
    counts = np.zeros(n_items, dtype=np.int64)
    first = np.full(n_items, np.inf)
    for _, i, _, ts in chunks:
        counts += np.bincount(i, minlength=n_items)
        order = np.lexsort((ts, i))
        starts = order[np.r_[True, i[order][1:] != i[order][:-1]]] if order.size else order
        first[i[starts]] = np.minimum(first[i[starts]], ts[starts])
    return _item_stats(counts, first)


def _rank_gain(values: np.ndarray) -> np.ndarray:
    """1 / log2(2 + rank) by ``values`` descending (ties by position); 0 where the value is <= 0."""
    order = np.lexsort((np.arange(values.size), -values))
    gain = np.empty(values.size, dtype=np.float64)
    gain[order] = 1.0 / np.log2(np.arange(values.size) + 2.0)
    return np.where(values > 0, gain, 0.0)


def candidate_features(
    blend: np.ndarray,
    embedding: np.ndarray,
    cf: np.ndarray,
    trending: np.ndarray,
    popularity: np.ndarray,
    age_days: np.ndarray,
    last_similarity: np.ndarray,
    history_length: int,
) -> np.ndarray:
    """float64 (n, len(FEATURES)) for one request's pool of n candidates.

    ``blend``: the weighted blend's relevance; ``embedding``, ``cf``, ``trending``: the signals normalised
    over the pool as the blend reads them (in [0, 1]); ``popularity``: log1p users; ``age_days``: days since
    the item's first event (NaN: none, taken as 0); ``last_similarity``: cosine to the user's newest history
    item; ``history_length``: the user's known history events.
    """
    history = math.log1p(max(history_length, 0))
    age = np.log1p(np.maximum(np.nan_to_num(np.asarray(age_days, dtype=np.float64), nan=0.0), 0.0))
    columns = (
        blend, embedding, cf, trending, _rank_gain(embedding), _rank_gain(cf), _rank_gain(trending),
        popularity, age, last_similarity, history * embedding, history * cf,
    )
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])


def item_age_days(stats: ItemStats, positions: np.ndarray, now: float) -> np.ndarray:
    """Days from each item's first event to ``now`` (NaN for positions < 0 or items without events)."""
    first = np.where(positions >= 0, stats.first_seen[np.maximum(positions, 0)], np.nan)
    return (now - first) / SECONDS_PER_DAY


def item_popularity(stats: ItemStats, positions: np.ndarray) -> np.ndarray:
    """log1p users per item (0 for positions < 0)."""
    return np.where(positions >= 0, stats.popularity[np.maximum(positions, 0)], 0.0).astype(np.float64)


@dataclass(frozen=True)
class Example:
    """One training list: ``features`` float64 (n, F), ``evidence`` float64 (n,) in [0, 1] (the pool's CF
    coverage), ``target`` the held-out item's row."""

    features: np.ndarray
    evidence: np.ndarray
    target: int


def prior_weights() -> np.ndarray:
    """The weights a model starts from and is pulled towards: the weighted blend's order, nothing else."""
    weights = np.zeros(len(FEATURES))
    weights[FEATURES.index("blend")] = PRIOR_BLEND_WEIGHT
    return weights


@dataclass(frozen=True)
class LearnedBlend:
    """A fitted ranker: ``weights``, ``mean``, ``scale`` float64 (F,) over :data:`FEATURES`; ``stats`` the
    serving items' :class:`ItemStats`; ``info`` what it was trained on (lists, loss before / after)."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    stats: ItemStats
    info: Mapping[str, Any] = field(default_factory=dict)

    def standardise(self, features: np.ndarray, evidence: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        z[:, _EVIDENCE_MASK] *= np.clip(np.asarray(evidence, dtype=np.float64), 0.0, 1.0)[:, None]
        return z

    def score(self, features: np.ndarray, evidence: np.ndarray) -> np.ndarray:
        """float64 (n,): the model's relevance, min-max over the pool to [0, 1] (the scale MMR reads)."""
        raw = self.standardise(features, evidence) @ self.weights
        lo, hi = (float(raw.min()), float(raw.max())) if raw.size else (0.0, 0.0)
        return (raw - lo) / (hi - lo) if hi > lo else np.zeros(raw.shape)

    def save(self, directory: Path, input_sha256: str) -> dict[str, Any]:
        """Write ``ranker.npz`` then ``manifest.json``; ``input_sha256``: what the model is a function of."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / RANKER_FILE,
            allow_pickle=False,
            format_version=np.asarray(_FORMAT_VERSION, dtype=np.int64),
            features=np.frombuffer("\0".join(FEATURES).encode(), np.uint8),
            weights=self.weights, mean=self.mean, scale=self.scale,
            popularity=self.stats.popularity, first_seen=self.stats.first_seen,
        )
        manifest = {
            "files": describe_files(directory, [RANKER_FILE]),
            "format_version": _FORMAT_VERSION,
            "features": list(FEATURES),
            "items": len(self.stats),
            "info": dict(self.info),
            "input_sha256": input_sha256,
        }
        write_json(directory / MANIFEST_FILE, manifest)
        return manifest

    @classmethod
    def load(cls, directory: Path | VerifiedDirectory) -> LearnedBlend | None:
        """The model saved under ``directory``, or None when the version has none (built before the learned
        blend, or with too little data). :class:`IntegrityError` for a tampered or malformed file,
        :class:`CompatibilityError` for another format or feature list than this code's."""
        source, path = directory, directory_of(directory)
        if not (path / MANIFEST_FILE).is_file():
            return None
        files = read_json(path / MANIFEST_FILE).get("files")
        if not isinstance(files, dict) or RANKER_FILE not in files:
            raise IntegrityError(f"the ranker manifest does not list {RANKER_FILE}")
        require_verified(source, {RANKER_FILE: files[RANKER_FILE]})
        try:
            with np.load(path / RANKER_FILE, allow_pickle=False) as data:
                version = int(data["format_version"])
                names = tuple(data["features"].tobytes().decode("utf-8").split("\0"))
                if version != _FORMAT_VERSION or names != FEATURES:
                    raise CompatibilityError(
                        f"{RANKER_FILE}: format {version} with features {names} is not this code's "
                        f"({_FORMAT_VERSION}, {FEATURES}): rebuild, or deploy the matching code"
                    )
                stats = ItemStats(
                    data["popularity"].astype(np.float32), data["first_seen"].astype(np.float64)
                )
                return cls(data["weights"], data["mean"], data["scale"], stats)
        except (OSError, KeyError, ValueError) as error:
            raise IntegrityError(f"{RANKER_FILE}: unreadable ({error})") from None


def _softmax_terms(
    z: np.ndarray, starts: np.ndarray, segment: np.ndarray, targets: np.ndarray, w: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean listwise loss and the probabilities (rows) for weights ``w``."""
    s = z @ w
    top = np.maximum.reduceat(s, starts)
    e = np.exp(s - top[segment])
    total = np.add.reduceat(e, starts)
    loss = float(np.mean(np.log(total) + top - s[targets]))
    return loss, e / total[segment]


def fit(
    examples: Sequence[Example],
    stats: ItemStats,
    *,
    l2: float = L2,
    min_lists: int = MIN_LISTS,
    iterations: int = 30,
) -> LearnedBlend | None:
    """Fit the listwise model on ``examples`` (None below ``min_lists`` lists); ``stats``: the serving items'
    statistics the model is stored with. Loss: mean over lists of ``-log softmax(Z w)[target]`` plus
    ``l2 / 2 x |w - prior|^2``, ``prior`` the blend feature alone at its best scale (fitted first, from
    :func:`prior_weights`); Newton steps with backtracking, deterministic."""
    if l2 <= 0:
        raise InvalidInputError("l2", f"must be > 0, got {l2}")
    lists = [e for e in examples if e.features.shape[0] > 0 and 0 <= e.target < e.features.shape[0]]
    if len(lists) < min_lists:
        return None
    x = np.concatenate([e.features for e in lists])
    evidence = np.concatenate([e.evidence for e in lists])
    sizes = np.asarray([e.features.shape[0] for e in lists], dtype=np.int64)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    segment = np.repeat(np.arange(len(lists)), sizes)
    targets = starts + np.asarray([e.target for e in lists], dtype=np.int64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = LearnedBlend(prior_weights(), mean, scale, stats).standardise(x, evidence)
    del x
    lists_of = (z, starts, segment, targets)
    # First the blend's own scale (the prior's temperature: its order is the weighted blend's whatever the
    # scale), then every weight, pulled towards that calibrated blend.
    blend_only = np.asarray([name == "blend" for name in FEATURES])
    prior, prior_loss = _newton(lists_of, prior_weights(), prior_weights(), 1e-6, blend_only, iterations)
    prior = np.maximum(prior, prior_weights())
    w, loss = _newton(lists_of, prior, prior, l2, np.ones(len(FEATURES), dtype=bool), iterations)
    info = {"lists": len(lists), "loss_blend": round(prior_loss, 6), "loss": round(loss, 6), "l2": l2}
    return LearnedBlend(w, mean, scale, stats, info)


def _newton(
    lists: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    start: np.ndarray,
    prior: np.ndarray,
    l2: float,
    free: np.ndarray,
    iterations: int,
) -> tuple[np.ndarray, float]:
    """Newton steps with backtracking on the ``free`` weights (the others stay at ``start``): minimises the
    mean listwise loss plus ``l2 / 2 x |w - prior|^2``. Returns (weights, mean listwise loss)."""
    z, starts, segment, targets = lists
    n = starts.size

    def objective(weights: np.ndarray) -> tuple[float, float, np.ndarray]:
        loss, p = _softmax_terms(z, starts, segment, targets, weights)
        return loss + 0.5 * l2 * float(np.sum((weights - prior) ** 2)), loss, p

    w = start.copy()
    total, loss, p = objective(w)
    zf = z[:, free]
    for _ in range(iterations):
        pz = p[:, None] * zf
        mu = np.add.reduceat(pz, starts)  # (lists, free): expected features under the model
        grad = (mu.sum(axis=0) - zf[targets].sum(axis=0)) / n + l2 * (w - prior)[free]
        hessian = (pz.T @ zf - mu.T @ mu) / n + l2 * np.eye(grad.size)
        step = np.zeros_like(w)
        step[free] = np.linalg.solve(hessian, grad)
        t = 1.0
        while t > 1e-4:
            new_total, new_loss, new_p = objective(w - t * step)
            if new_total <= total:
                break
            t /= 2
        else:
            break
        w, converged = w - t * step, total - new_total < 1e-9
        total, loss, p = new_total, new_loss, new_p
        if converged:
            break
    return w, loss


def keep_fresh_slots(learned: np.ndarray, blend: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """``learned`` scores (n,) with each ``fresh`` item (new and untouched, bool (n,)) put back in the slot
    the weighted ``blend`` gives it: after as many of the other items as the blend ranks above it, the
    other items in the model's order. Returns scores min-max to [0, 1] in that order.

    The model never saw a fresh item in training (its lists are the users' next events, on items with
    evidence), so it has no say on where one goes: the blend's rank of every fresh item is kept exactly
    (ties with another item go to the fresh one), and the model only reorders the items it was trained on.
    """
    learned = np.asarray(learned, dtype=np.float64)
    fresh = np.asarray(fresh, dtype=bool)
    if not fresh.any():
        return learned
    blend = np.asarray(blend, dtype=np.float64)
    warm = np.flatnonzero(~fresh)
    ranked = np.sort(learned[warm])[::-1]  # the other items' scores, best first
    top, bottom = (float(ranked[0]), float(ranked[-1])) if ranked.size else (0.0, 0.0)
    step = (top - bottom) / ranked.size if top > bottom else 1.0
    bounds = np.r_[top + step, ranked, bottom - step]  # slot s lies between bounds[s] and bounds[s + 1]
    new = np.flatnonzero(fresh)
    new = new[np.lexsort((new, -blend[new]))]  # the blend's order (ties by position, as ranking breaks them)
    above = np.searchsorted(np.sort(-blend[warm]), -blend[new], side="left")  # others the blend ranks above
    out = learned.copy()
    for slot in np.unique(above):
        group = new[above == slot]  # fresh items between the slot-th and the next of the others
        high, low = bounds[slot], bounds[slot + 1]
        out[group] = high - (np.arange(group.size) + 1.0) / (group.size + 1.0) * (high - low)
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.zeros(out.shape)


def input_digest(signals_digest: str, info: Mapping[str, Any]) -> str:
    """What a stored model is a function of: the signals' input digest and how it was trained."""
    document = json.dumps({"signals": signals_digest, "training": dict(info)}, sort_keys=True)
    return hashlib.sha256(document.encode()).hexdigest()
