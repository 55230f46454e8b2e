"""The SASRec anchor's bridge to ``embrec eval`` (main venv): write the split, then score the anchor's lists.

Not a benchmark module (``bench/anchors`` has no ``__init__``, so ``python -m bench`` never imports it) and
never imported by the product or the tests. ``make anchor`` runs the three steps (EVALUATION.md, "Anchor"):

1. ``export``: :func:`evaluation.leave_last_out` of the dataset, as ``embrec eval`` makes it, written to
   ``<dir>/train.tsv``: every training interaction (the held-out events are not in it), one row per event
   with its ``position`` in the user's history (the split's own order, ties included, so the anchor's
   time sort cannot reorder equal timestamps); and ``cases.json``: the test users in case order with their
   history (oldest first) and held-out items.
2. ``sasrec_train.py`` (anchor venv) trains SASRec and writes ``ranked.json``: per test user, the top
   ``EVAL_K`` items over every item but the user's history.
3. ``score``: HR@10 / NDCG@10 / Recall@20 / MRR of those lists with ``evaluation``'s own metric functions,
   the hybrid's per-user figures from ``evaluation.run`` on the same split, and the paired 95% bootstrap
   interval of ``evaluation.paired_difference``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from embrec_tools.evaluation import (
    DATASETS,
    EVAL_K,
    Split,
    hit_rate,
    leave_last_out,
    load_dataset,
    ndcg,
    paired_difference,
    recall,
    reciprocal_rank,
    run,
)

from anchor_files import CASES_FILE, RANKED_FILE, SCORE_FILE, TRAIN_FILE

ANCHOR_METRICS = ("HR@10", "NDCG@10", "Recall@20", "MRR")


def _split(dataset: str, path: Path) -> Split:
    return leave_last_out(load_dataset(dataset, path).interactions)


def export(dataset: str, path: Path, out: Path) -> dict[str, int]:
    """Write ``train.tsv`` and ``cases.json`` of ``dataset``'s leave-last-out split into ``out``."""
    split = _split(dataset, path)
    positions: dict[str, int] = {}
    lines = ["user_id\titem_id\tposition"]
    for user, event in split.train:  # grouped by user, each user's events in the split's order
        position = positions.get(user, 0)
        positions[user] = position + 1
        lines.append(f"{user}\t{event.item_id}\t{position}")
    out.mkdir(parents=True, exist_ok=True)
    (out / TRAIN_FILE).write_text("\n".join(lines) + "\n")
    cases = [
        {"user_id": c.user_id, "history": [e.item_id for e in c.history], "targets": sorted(c.targets)}
        for c in split.cases
    ]
    (out / CASES_FILE).write_text(json.dumps({"dataset": dataset, "k": EVAL_K, "cases": cases}))
    return {"train_interactions": len(split.train), "users": len(positions), "test_users": len(cases)}


def score(dataset: str, path: Path, out: Path) -> dict[str, Any]:
    """Metrics of ``out/ranked.json`` over the split's test users, the hybrid's on the same users, and
    hybrid minus anchor per user (mean, 95% bootstrap interval)."""
    ranked: dict[str, list[str]] = json.loads((out / RANKED_FILE).read_text())["ranked"]
    split = _split(dataset, path)
    missing = [c.user_id for c in split.cases if c.user_id not in ranked]
    if missing or len(ranked) != len(split.cases):
        raise SystemExit(f"ranked.json does not hold the split's {len(split.cases)} test users "
                         f"(missing {missing[:5]}, {len(ranked)} lists)")
    anchor: dict[str, list[float]] = {m: [] for m in ANCHOR_METRICS}
    for case in split.cases:
        items = ranked[case.user_id]
        if set(items) & {e.item_id for e in case.history}:
            raise SystemExit(f"user {case.user_id}: the anchor's list holds history items")
        anchor["HR@10"].append(hit_rate(items, case.targets, 10))
        anchor["NDCG@10"].append(ndcg(items, case.targets, 10))
        anchor["Recall@20"].append(recall(items, case.targets, 20))
        anchor["MRR"].append(reciprocal_rank(items, case.targets))
    result, _ = run(dataset, path, strategies=("hybrid",), log=lambda line: print(line, file=sys.stderr))
    hybrid = result.per_case["hybrid"]
    n = len(split.cases)
    return {
        "users": n,
        "sasrec": {m: sum(values) / n for m, values in anchor.items()},
        "hybrid": {m: result.metrics["hybrid"][m] for m in ANCHOR_METRICS},
        "hybrid_minus_sasrec": {m: paired_difference(hybrid[m], anchor[m]) for m in ("HR@10", "NDCG@10")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("export", "score"))
    parser.add_argument("--dataset", choices=DATASETS, default="movielens")
    parser.add_argument("--path", type=Path, required=True, help="the dataset directory, as published")
    parser.add_argument("--out", type=Path, required=True, help="the anchor's working directory")
    args = parser.parse_args(argv)
    if args.step == "export":
        print(json.dumps(export(args.dataset, args.path, args.out)))
        return 0
    figures = score(args.dataset, args.path, args.out)
    (args.out / SCORE_FILE).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
