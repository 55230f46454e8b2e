"""The files the anchor's steps hand each other (stdlib only: read from both venvs)."""

TRAIN_FILE = "train.tsv"  # sasrec_split.py export -> sasrec_train.py: user_id, item_id, position
CASES_FILE = "cases.json"  # sasrec_split.py export -> sasrec_train.py: test users, histories, targets, k
RANKED_FILE = "ranked.json"  # sasrec_train.py -> sasrec_split.py score: top-k lists and the training log
SCORE_FILE = "score.json"  # sasrec_split.py score: the figures EVALUATION.md quotes
