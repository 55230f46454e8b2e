"""Ingest throughput: ``python -m bench ingest``.

Ours: catalog rows end to end — JSON Lines bytes parsed and validated (``read_catalog``), content-hashed,
encoded, and written to the items table (``ingest_rows`` with an ``ItemStore`` on in-process moto DynamoDB).
Baseline in the same process: the encoder alone on the same rows' texts. The MovieLens catalog
(data/ml-latest-small), ``BENCH_INGEST_ROWS`` rows (default 2,000). Best of ``BENCH_REPEATS`` (default 2).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable
from typing import Any

from bench._data import ROOT, load_encoder, local_aws, machine_line
from embrec.app.ingest import ingest_rows
from embrec.aws.store import ItemStore
from embrec.config import Settings
from embrec.domain.catalog import item_text, read_catalog, validate_row
from embrec.domain.model import ItemState, StoredItem
from embrec_tools.datasets import load_movielens, to_jsonl

__all__ = ["NullItemStore", "main"]


class NullItemStore:
    """An items table that stores nothing: isolates parse/validate/hash/encode from the DynamoDB write."""

    def states_for(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        list(item_ids)
        return {}

    def upsert(self, items: Iterable[StoredItem]) -> int:
        return len(list(items))


def main() -> None:
    print(machine_line())
    n_rows = int(os.environ.get("BENCH_INGEST_ROWS", "2000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "2"))
    rows = load_movielens(ROOT / "data" / "ml-latest-small").catalog_rows[:n_rows]
    payload = to_jsonl(rows)
    texts = [item_text(validate_row(row)) for row in rows]
    encoder = load_encoder("int8")
    encoder.encode(texts[:64])  # warm-up
    print(
        f"rows: {len(rows):,} MovieLens catalog rows ({len(payload) / 1e3:.0f} kB JSON Lines); "
        f"encoder {encoder.encoder_id} (int8), {len(os.sched_getaffinity(0))} threads"
    )
    best_encode = best_ingest = best_null = float("inf")
    settings = Settings()
    with local_aws() as clients:
        for attempt in range(repeats):
            started = time.perf_counter()
            encoder.encode(texts)
            best_encode = min(best_encode, time.perf_counter() - started)
            # a fresh table each time, so every row is new (no unchanged-row skipping)
            table = f"{settings.items_table}-bench-{attempt}"
            clients.dynamodb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "item_id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "item_id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            store = ItemStore(clients.dynamodb, table)
            started = time.perf_counter()
            outcome = ingest_rows(
                read_catalog(io.BytesIO(payload), "jsonl"),
                store,
                encoder.encode,
                encoder_id=encoder.encoder_id,
            )
            best_ingest = min(best_ingest, time.perf_counter() - started)
            assert outcome.counts.encoded == len(rows), outcome.counts
            null_store: Any = NullItemStore()
            started = time.perf_counter()
            ingest_rows(
                read_catalog(io.BytesIO(payload), "jsonl"),
                null_store,
                encoder.encode,
                encoder_id=encoder.encoder_id,
            )
            best_null = min(best_null, time.perf_counter() - started)
    ours, base = len(rows) / best_ingest, len(rows) / best_encode
    print(
        f"  ours  ingest end to end (parse, validate, hash, encode, moto DynamoDB write) {ours:8.1f} rows/s\n"
        f"  (same pipeline, no-op store instead of moto: {len(rows) / best_null:8.1f} rows/s, "
        f"overhead {(best_null / best_encode - 1) * 100:+.1f}%)\n"
        f"  base  encoder alone on the same texts                                     {base:8.1f} rows/s\n"
        f"  ratio encoder/ingest time x{best_ingest / best_encode:.3f} (overhead "
        f"{(best_ingest / best_encode - 1) * 100:+.1f}%; goal <= +25%)"
    )


if __name__ == "__main__":
    main()
