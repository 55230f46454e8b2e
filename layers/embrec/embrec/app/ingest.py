"""Catalog ingestion: rows in, every row accounted for, changed items encoded, stored and made recommendable.

:func:`ingest_rows` is the use case with its I/O injected (the item store, an encode function); the S3 and
SQS edges live in :mod:`embrec.app.service`. Counts always add up: ``total == accepted + unchanged +
rejected``, where *accepted* rows are new, changed or deleted items, *unchanged* rows match the stored content
hash and are skipped (no encoding, no write), and *rejected* rows carry their line number and reasons.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import numpy as np

from embrec.aws.store import ItemStore
from embrec.domain.catalog import Item, RowResult, content_hash, item_text
from embrec.domain.model import StoredItem
from embrec.engine.index import IndexDelta
from embrec.errors import InvalidInputError

__all__ = [
    "CatalogObject",
    "IngestCounts",
    "IngestOutcome",
    "chunk_rows",
    "index_metadata",
    "ingest_rows",
    "parse_ingest_message",
]

# Rows per encode call (and per write). The encoder sorts each call's texts by length before its own
# sub-batches, so a bigger call pads less: 2,000 MovieLens rows took +25-34% over one encoder call at 256,
# +7-22% at 512 and -1-+12% at 1,024 (same process, BENCHMARKS.md "Ingest"). 1,024 rows are ~1.5 MB of
# vectors; a Lambda invocation takes at most ROWS_PER_INVOCATION (20k) rows anyway.
ENCODE_BATCH = 1024


@dataclass
class IngestCounts:
    total: int = 0
    accepted: int = 0
    unchanged: int = 0
    rejected: int = 0
    deleted: int = 0
    encoded: int = 0

    def add(self, other: IngestCounts) -> IngestCounts:
        return IngestCounts(**{name: getattr(self, name) + getattr(other, name) for name in asdict(self)})

    def adds_up(self) -> bool:
        return self.total == self.accepted + self.unchanged + self.rejected


@dataclass
class IngestOutcome:
    counts: IngestCounts
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    delta: IndexDelta | None = None
    last_row: int = 0  # rows consumed from the file so far (for continuations)
    finished: bool = True


@dataclass(frozen=True)
class CatalogObject:
    """One version of one uploaded catalog file, and where a continuation resumes."""

    bucket: str
    key: str
    etag: str
    start_row: int = 0
    chunk: int = 0
    counts: dict[str, int] | None = None  # totals of the chunks before this one

    def to_message(self) -> str:
        return json.dumps({"embrec_continuation": asdict(self)})


def parse_ingest_message(body: str) -> list[CatalogObject]:
    """The catalog objects an SQS message names: an S3 notification, our continuation, or nothing.

    S3 URL-encodes keys in notifications (spaces as ``+``); they are decoded here. ``s3:TestEvent`` (sent
    when the notification is configured) names nothing and is acknowledged.
    """
    try:
        message = json.loads(body)
    except ValueError:
        raise InvalidInputError("message", "SQS message body is not JSON") from None
    if not isinstance(message, dict):
        raise InvalidInputError("message", "SQS message body is not a JSON object")
    if message.get("Event") == "s3:TestEvent":
        return []
    if "embrec_continuation" in message:
        return [CatalogObject(**message["embrec_continuation"])]
    records = message.get("Records")
    if not isinstance(records, list):
        raise InvalidInputError("message", "neither an S3 event notification nor a continuation")
    objects = []
    for record in records:
        try:
            if not str(record["eventName"]).startswith("ObjectCreated"):
                continue
            s3 = record["s3"]
            objects.append(
                CatalogObject(
                    bucket=s3["bucket"]["name"],
                    key=unquote_plus(s3["object"]["key"]),
                    etag=str(s3["object"].get("eTag") or s3["object"].get("etag") or ""),
                )
            )
        except (KeyError, TypeError):
            raise InvalidInputError("message", "malformed S3 event record") from None
    return objects


def index_metadata(item: Item) -> dict[str, Any]:
    """The part of an item the index keeps for filtering and for responses."""
    return {
        "title": item.title,
        "category": item.category,
        "tags": list(item.tags),
        "price": item.price,
        "available": item.available,
        "created_at": item.created_at,
    }


def chunk_rows(rows: Iterable[RowResult], start_row: int, max_rows: int) -> Iterator[RowResult]:
    """Rows ``start_row`` (0-based) up to ``start_row + max_rows`` of a file: one invocation's share."""
    for position, row in enumerate(rows):
        if position < start_row:
            continue
        if position >= start_row + max_rows:
            return
        yield row


def _rejection(row: RowResult) -> dict[str, Any]:
    return {"line": row.line, "errors": [error.to_dict() for error in row.errors], "raw": row.raw}


def ingest_rows(
    rows: Iterable[RowResult],
    items: ItemStore,
    encode: Callable[[Sequence[str]], np.ndarray],
    *,
    encoder_id: str,
    batch_size: int = ENCODE_BATCH,
    clock: Callable[[], float] = time.time,
    should_stop: Callable[[], bool] = lambda: False,
) -> IngestOutcome:
    """Validate, skip unchanged, encode changed, upsert; returns the counts, rejections and the index delta.

    Rows are processed in batches of ``batch_size``: one ``hashes_for`` read, one encode call and one batch
    write per batch. The write of a batch runs in a background thread while the next batch is read and
    encoded (one write in flight at most; in AWS it is network wait), and every write has finished before
    this returns; a failed write raises here. ``should_stop`` is asked between batches (the caller's time
    budget); when it says stop, the outcome is ``finished=False`` with ``last_row`` set so a continuation can
    resume there.
    """
    counts = IngestCounts()
    rejected: list[dict[str, Any]] = []
    delta_ids: list[str] = []
    delta_vectors: list[np.ndarray] = []
    delta_meta: list[dict[str, Any]] = []
    delta_images: list[tuple[float, ...] | None] = []  # fused into the index's layout when applied
    deletes: list[str] = []
    consumed = 0
    batch: list[RowResult] = []
    finished = True
    writes: list[Future[int]] = []

    def flush(writer: ThreadPoolExecutor) -> None:
        good = [row.item for row in batch if row.item is not None]
        stored = items.hashes_for(item.item_id for item in good)
        changed = [(item, content_hash(item)) for item in good]
        changed = [(item, digest) for item, digest in changed if stored.get(item.item_id) != digest]
        counts.unchanged += len(good) - len(changed)
        live = [(item, digest) for item, digest in changed if not item.deleted]
        vectors = encode([item_text(item) for item, _ in live]) if live else np.zeros((0, 0), np.float32)
        now = clock()
        records = [
            StoredItem(item.item_id, item.to_dict(), digest, None, now)
            for item, digest in changed
            if item.deleted
        ]
        for (item, digest), vector in zip(live, vectors, strict=True):
            records.append(StoredItem(item.item_id, item.to_dict(), digest, vector, now))
            delta_ids.append(item.item_id)
            delta_vectors.append(vector)
            delta_meta.append(index_metadata(item))
            delta_images.append(item.image_embedding)
        if writes:
            writes.pop().result()  # one write in flight: raises that write's error, if any
        writes.append(writer.submit(items.upsert, records))
        for item, _ in changed:
            if item.deleted:
                deletes.append(item.item_id)
        counts.accepted += len(changed)
        counts.deleted += len(changed) - len(live)
        counts.encoded += len(live)
        batch.clear()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embrec-ingest-write") as writer:
        for row in rows:
            consumed += 1
            counts.total += 1
            if row.item is None:
                counts.rejected += 1
                rejected.append(_rejection(row))
                continue
            batch.append(row)
            if len(batch) >= batch_size:
                flush(writer)
                if should_stop():
                    finished = False
                    break
        if batch:
            flush(writer)
        if writes:
            writes.pop().result()
    delta = None
    if delta_ids or deletes:
        # The readers reject a repeated item_id within a file, so no id is both upserted and deleted here.
        dim = delta_vectors[0].shape[0] if delta_vectors else 0
        delta = IndexDelta(
            item_ids=tuple(delta_ids),
            vectors=np.stack(delta_vectors) if delta_vectors else np.zeros((0, dim), np.float32),
            metadata=tuple(delta_meta),
            deletes=tuple(deletes),
            encoder_id=encoder_id,
            images=tuple(delta_images),
        )
    return IngestOutcome(counts, rejected, delta, consumed, finished)
