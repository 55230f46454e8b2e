"""Train RecTools' SASRec on the split ``sasrec_split.py export`` wrote, and rank every test user's items.

Runs in the anchor's own venv (``make anchor-venv``: CPU torch + RecTools, pinned in
``bench/anchors/requirements.txt``), never in the product's: nothing here is imported by embrec or its tests.

SASRec: Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018, as RecTools implements it
(``rectools.models.SASRecModel``: the paper's shifted-sequence objective, every position of a user's last
``--max-len`` training events predicts the next one; full-softmax cross-entropy over all items, the loss
RecTools' maintainers found strongest, Klenitskiy & Vasilev, RecSys 2023). Early stopping on a validation
split carved from training: each user's last *training* event (the event before embrec's held-out one) is
masked out of training and its loss is the validation loss; ``--patience`` epochs without a lower one stop
the run, and so does the wall-clock ``--budget-minutes``. The best validation epoch's weights are kept.

Ranking, as ``embrec eval`` ranks: each test user's input is the whole training history (validation event
included; the last ``--max-len`` events), every history item is excluded (``filter_viewed``), every other
item the training events touch competes; the top ``k`` of ``cases.json`` go to ``ranked.json`` with the
run's settings, epochs, wall time and versions. Catalog items no training event touches have no learned
embedding: they are left out of the lists, i.e. ranked last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import rectools
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from rectools import Columns
from rectools.dataset import Dataset
from rectools.models import SASRecModel

from anchor_files import CASES_FILE, RANKED_FILE, TRAIN_FILE


def last_training_event(interactions: pd.DataFrame) -> np.ndarray:
    """The validation mask: each user's newest training event (positions are unique per user)."""
    newest = interactions.groupby(Columns.User)[Columns.Datetime].transform("max")
    return (interactions[Columns.Datetime] == newest).to_numpy()


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (the wall time depends on the machine's load)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class EpochLog(Callback):
    """Each validation epoch's loss and the wall seconds since training started."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.epochs: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics["val_loss"])
        self.epochs.append({"epoch": trainer.current_epoch, "val_loss": round(loss, 5),
                            "seconds": round(time.perf_counter() - self.started, 1)})
        print(json.dumps(self.epochs[-1]), file=sys.stderr, flush=True)


def load_training(work: Path) -> Dataset:
    """RecTools' dataset of ``train.tsv``: weight 1 per event, ``position`` as the event time."""
    frame = pd.read_csv(work / TRAIN_FILE, sep="\t", dtype={"user_id": str, "item_id": str})
    frame = frame.rename(columns={"user_id": Columns.User, "item_id": Columns.Item})
    frame[Columns.Weight] = 1.0
    frame[Columns.Datetime] = pd.to_datetime(frame.pop("position"), unit="s")
    return Dataset.construct(frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="the export's directory")
    parser.add_argument(
        "--max-len", type=int, default=200, help="the newest events a sequence (200 beat 50 on val loss)"
    )
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.5, help="chosen over 0.2 on the validation loss")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32, help="users per step (610 users: 20 steps an epoch)")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=5, help="epochs without a lower validation loss")
    parser.add_argument("--budget-minutes", type=float, default=35.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, verbose=False)
    work = args.dir.resolve()
    exported = json.loads((work / CASES_FILE).read_text())
    dataset = load_training(work)

    def trainer() -> pl.Trainer:
        best = ModelCheckpoint(dirpath=work / "checkpoints", monitor="val_loss", mode="min", save_top_k=1)
        return pl.Trainer(
            max_epochs=args.max_epochs, max_time={"minutes": args.budget_minutes}, accelerator="cpu",
            devices=1, deterministic=True, enable_progress_bar=False, enable_model_summary=False,
            logger=False, callbacks=[EpochLog(), best, EarlyStopping("val_loss", patience=args.patience)],
        )

    model = SASRecModel(
        n_blocks=args.blocks, n_heads=args.heads, n_factors=args.hidden, dropout_rate=args.dropout,
        session_max_len=args.max_len, loss="softmax", lr=args.lr, batch_size=args.batch,
        item_net_block_types=(rectools.models.nn.item_net.IdEmbeddingsItemNet,),
        get_val_mask_func=last_training_event, get_trainer_func=trainer,
        recommend_torch_device="cpu", deterministic=True,
    )
    load_before = os.getloadavg()[0]
    model.fit(dataset)
    # RecTools fits a deep copy of the trainer made above: its callbacks are the ones that ran
    fitted = model.fit_trainer
    log = next(c for c in fitted.callbacks if isinstance(c, EpochLog))
    train_seconds = time.perf_counter() - log.started
    model.load_weights_from_checkpoint(fitted.checkpoint_callback.best_model_path)
    started = time.perf_counter()
    users = [case["user_id"] for case in exported["cases"]]
    lists = model.recommend(users, dataset, k=int(exported["k"]), filter_viewed=True)
    ranked = {
        str(user): [str(item) for item in group.sort_values(Columns.Rank)[Columns.Item]]
        for user, group in lists.groupby(Columns.User)
    }
    chosen = min(log.epochs, key=lambda e: e["val_loss"])
    stopped_by = "max epochs" if len(log.epochs) >= args.max_epochs else "budget"
    if fitted.early_stopping_callback.stopped_epoch > 0:
        stopped_by = f"early stopping (patience {args.patience})"
    run = {
        "epochs_run": len(log.epochs), "best_epoch": chosen["epoch"], "best_val_loss": chosen["val_loss"],
        "stopped_by": stopped_by,
        "train_seconds": round(train_seconds, 1), "rank_seconds": round(time.perf_counter() - started, 1),
        "process_cpu_seconds": round(cpu_seconds(), 1),
        "items_in_model": dataset.item_id_map.size, "per_epoch": log.epochs,
        "settings": vars(args) | {"dir": str(args.dir), "loss": "softmax"},
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "versions": {"rectools": rectools.__version__, "torch": torch.__version__,
                     "pytorch_lightning": pl.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}",
    }
    (work / RANKED_FILE).write_text(json.dumps({"ranked": ranked, "run": run}))
    print(json.dumps(run, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
