"""Ingest throughput: ``python -m bench ingest``.

Part 1, the pipeline in process. Ours: catalog rows end to end — JSON Lines bytes parsed and validated
(``read_catalog``), content-hashed, encoded, and written to the items table (``ingest_rows`` with an
``ItemStore`` on in-process moto DynamoDB). Baseline in the same process: the encoder alone on the same rows'
texts. The MovieLens catalog (data/ml-latest-small), ``BENCH_INGEST_ROWS`` rows (default 2,000). Best of
``BENCH_REPEATS`` (default 2).

Part 2, a large file through the local stack (issue 14 item 5). A synthetic JSON Lines catalog of
``BENCH_INGEST_MB`` MB (default 100; 0 skips the part) with rows of about ``BENCH_INGEST_ROW_BYTES`` bytes
(default 8,192: a product page's description, of which the encoder sees the first ~1,000 characters) is
uploaded to ``catalog/incoming/`` of the local stack (moto server, S3 -> SQS -> the ingest handler) with
``BENCH_INGEST_CHUNK_ROWS`` rows per invocation (default 2,500, so the file crosses several continuations,
each a ranged GET). Ours: upload to report (every row accounted for, nothing in the DLQ); baseline: the same
int8 encoder alone on the same rows' texts, in the same process. ``BENCH_INGEST_RUNS`` runs (default 3),
medians printed. ``BENCH_INGEST_ENCODER=stub`` swaps the encoder for a constant: what the file costs besides
encoding.
"""

from __future__ import annotations

import io
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from bench._data import ROOT, cached_encoder_dir, load_encoder, local_aws, machine_line
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
    pipeline_in_process()
    if float(os.environ.get("BENCH_INGEST_MB", "100")) > 0:
        large_file_through_the_local_stack()


def pipeline_in_process() -> None:
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


_VOCABULARY = (
    "waterproof lightweight leather cotton wireless ergonomic stainless compact adjustable rechargeable "
    "vintage organic premium durable portable handmade classic modern outdoor kitchen garden travel office "
    "running hiking camping cooking reading gaming music audio video camera phone tablet laptop desk chair "
    "lamp bottle bag jacket shoe watch ring necklace toy puzzle book novel guide set kit pack bundle edition"
)


def synthetic_rows(target_bytes: int, row_bytes: int, prefix: str, seed: int = 11) -> Iterable[bytes]:
    """JSON Lines rows of about ``row_bytes`` each until ``target_bytes``: title, category, tags, price, a
    long description (seeded words) and a few metadata fields."""
    vocabulary = _VOCABULARY.split()
    rng = random.Random(seed)
    written = 0
    number = 0
    while written < target_bytes:
        words = rng.choices(vocabulary, k=max(8, row_bytes // 8))
        row = {
            "item_id": f"{prefix}-{number:07d}",
            "title": " ".join(words[:5]).title(),
            "category": rng.choice(["Outdoor", "Home", "Electronics", "Fashion", "Toys", "Books"]),
            "tags": sorted(set(words[5:9])),
            "price": round(rng.uniform(1, 500), 2),
            "description": " ".join(words[9:]),
            "brand": f"brand-{rng.randrange(500)}",
            "rating": round(rng.uniform(1, 5), 1),
        }
        line = json.dumps(row).encode() + b"\n"
        written += len(line)
        number += 1
        yield line


def large_file_through_the_local_stack() -> None:
    from embrec.app import service
    from embrec.aws.artifacts import ArtifactStore
    from embrec.aws.clients import clients
    from embrec.domain.catalog import read_catalog
    from embrec_tools.demo import quiet_logs, wait_for_report
    from embrec_tools.local import LocalEnvironment

    megabytes = float(os.environ.get("BENCH_INGEST_MB", "100"))
    row_bytes = int(os.environ.get("BENCH_INGEST_ROW_BYTES", "8192"))
    chunk_rows = int(os.environ.get("BENCH_INGEST_CHUNK_ROWS", "2500"))
    runs = int(os.environ.get("BENCH_INGEST_RUNS", "3"))
    quiet_logs()
    if os.environ.get("BENCH_INGEST_ENCODER") == "stub":  # what the file costs besides the encoder
        from embrec.engine.encoder import TextEncoder

        TextEncoder.encode = lambda self, texts, *_, **__: np.ones((len(texts), 384), np.float32)  # type: ignore
    service.ROWS_PER_INVOCATION = chunk_rows  # several invocations per file: continuations are measured too
    encoder_dir = cached_encoder_dir("int8")

    def publish(settings: Settings) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            ArtifactStore(clients(settings).s3, settings.bucket, Path(scratch)).publish_encoder(encoder_dir)

    env = LocalEnvironment(ROOT, api_port=0, aws_port=0, aws_endpoint=None, schedule=False, serve_api=False,
                           prepare=publish)
    ingest_s, encode_s = [], []
    with env:
        settings = env.settings
        aws = clients(settings)
        dlq = env.resources.queue_urls["IngestDeadLetterQueue"] if env.resources else ""
        warm = aws.s3.put_object(Bucket=settings.bucket, Key="catalog/incoming/warm.jsonl",
                                 Body=b'{"item_id": "warm", "title": "warm up"}\n')
        wait_for_report(aws, settings.bucket, "catalog/incoming/warm.jsonl", warm["ETag"])  # encoder loaded
        encoder = load_encoder("int8")
        for run in range(runs):
            body = b"".join(synthetic_rows(int(megabytes * 1e6), row_bytes, prefix=f"r{run}", seed=run))
            texts = [item_text(row.item) for row in read_catalog(io.BytesIO(body), "jsonl") if row.item]
            key = f"catalog/incoming/large-{run}.jsonl"
            started = time.perf_counter()
            put = aws.s3.put_object(Bucket=settings.bucket, Key=key, Body=body)
            report = wait_for_report(aws, settings.bucket, key, put["ETag"], timeout=7200)
            ingest_s.append(time.perf_counter() - started)
            dead = aws.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
            assert report["total"] == report["accepted"] == len(texts), report
            assert int(dead["Attributes"]["ApproximateNumberOfMessages"]) == 0
            started = time.perf_counter()
            encoder.encode(texts)
            encode_s.append(max(time.perf_counter() - started, 1e-9))
            print(f"  run {run + 1}: {len(body) / 1e6:.1f} MB, {len(texts):,} rows, {report['chunks']} "
                  f"invocations: ingest {ingest_s[-1]:.1f} s, encoder alone {encode_s[-1]:.1f} s, "
                  f"x{ingest_s[-1] / encode_s[-1]:.3f}; DLQ 0", flush=True)
    ours, base = statistics.median(ingest_s), statistics.median(encode_s)
    if os.environ.get("BENCH_INGEST_ENCODER") == "stub":
        print(f"  stub encoder: everything but the encoder {len(texts) / ours:.1f} rows/s "
              f"({megabytes / ours:.2f} MB/s, median of {runs})")
        return
    print(f"  median of {runs}: ingest through the local stack {len(texts) / ours:8.1f} rows/s "
          f"({megabytes / ours:.2f} MB/s)\n"
          f"  base  encoder alone on the same texts                {len(texts) / base:8.1f} rows/s\n"
          f"  ratio x{ours / base:.3f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
