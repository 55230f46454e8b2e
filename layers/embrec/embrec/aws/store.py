"""DynamoDB adapters: one per table kind, each with an injected low-level client and its table name.

Tables (names from :class:`embrec.config.Settings`, schema in template.yaml):

- items: PK ``item_id``; the item's fields (``Item.to_dict()``), ``content_hash``, ``vector`` (Binary,
  float32 little-endian bytes), ``encoder_id`` (the encoder that made the vector), ``ingest_source`` (the
  catalog row that wrote it, ``"<file id>:<line>"``), ``updated_at`` (epoch s).
- interactions: PK ``user_id``, SK ``sk`` = ``"<ts ms, 13 digits>#<event_id>"``; ``item_id``, ``type``,
  ``ts`` (epoch ms), ``value``, ``recommendation_id``, ``variant``, ``event_id``, ``expires_at`` (TTL,
  epoch s), ``tb`` (time bucket, see :func:`time_bucket`). Global secondary index ``by_time`` (``tb``,
  ``ts``) serves the reads bounded by time (the rebuild's signal window, the A/B report since the
  experiment's first list): each is one key-conditioned query per (week, shard), never a scan. One more
  row per erased user: ``sk`` = :data:`ERASURE_SORT_KEY`, ``erased_before`` (epoch ms), ``status``,
  counts (no ``ts`` or ``tb``: time reads never see it).
- profiles: PK ``user_id``; ``vector`` (Binary float32), ``text``, ``updated_at``.
- idempotency: PK ``id``; ``status``, ``expiration`` (TTL, epoch s), free attributes.

Every botocore failure goes through :func:`embrec.aws.clients.aws_errors` (throttling and 5xx left after
botocore's retries become :class:`ServiceUnavailableError`); the few places that *expect* a conditional
failure catch
:class:`ConflictError` right there.

DynamoDB deletes TTL-expired items lazily (up to days later) and moto never does, so every read here ignores
items whose ``expires_at`` has passed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import queue
import random
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import numpy as np

from embrec.aws.clients import aws_errors, cancellation_codes, is_transaction_conflict
from embrec.domain.model import Impression, Interaction, ItemState, StoredItem
from embrec.domain.signals import EventPage
from embrec.errors import ConflictError, EmbrecError, InvalidInputError, ServiceUnavailableError

__all__ = [
    "ERASURE_SORT_KEY",
    "Erasure",
    "IdempotencyStore",
    "ImportWriteResult",
    "ImpressionStore",
    "InteractionStore",
    "ItemStore",
    "ProfileStore",
    "PutEventsResult",
    "StoredProfile",
    "UserEvent",
    "decode_vector",
    "encode_vector",
    "event_sort_key",
    "time_bucket",
]

_BATCH_WRITE_MAX = 25
_BATCH_GET_MAX = 100
_UNPROCESSED_ATTEMPTS = 8  # botocore already retried each call; these back off on partial batches
_ITEM_RESERVED = frozenset({"item_id", "content_hash", "vector", "updated_at", "encoder_id", "ingest_source"})
_ITEM_BOOKKEEPING = _ITEM_RESERVED - {"item_id"}  # stored beside the fields, never among them
# What the index is built from (embrec.engine._index_meta.parse_metadata + the vector and tombstone), and the
# encoder that made the vector (the rebuild refuses another encoder's vectors)
_INDEX_ATTRIBUTES = (
    "item_id", "vector", "deleted", "title", "category", "tags", "price", "available", "created_at",
    "encoder_id",
)
_SECONDS_PER_DAY = 86_400


# ---------------------------------------------------------------------------------------------- encoding


def encode_vector(vector: np.ndarray) -> bytes:
    """float32 little-endian bytes of a 1-d vector (dim,), as stored in a Binary attribute."""
    array = np.asarray(vector, dtype="<f4")
    if array.ndim != 1:
        raise InvalidInputError("vector", f"must be 1-d, got shape {array.shape}")
    return array.tobytes()


def decode_vector(blob: bytes) -> np.ndarray:
    """(dim,) float32 vector from the Binary attribute (a fresh, writable array)."""
    if len(blob) % 4:
        raise InvalidInputError("vector", f"{len(blob)} bytes is not a whole number of float32")
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _to_dynamo(value: Any) -> Any:
    """JSON-like Python value → a value TypeSerializer accepts (floats as Decimal, tuples as lists)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInputError("number", "NaN and infinity cannot be stored")
        return Decimal(repr(value))
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return {str(k): _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    if isinstance(value, np.generic):
        return _to_dynamo(value.item())
    raise InvalidInputError("value", f"cannot store a {type(value).__name__}")


def _from_dynamo(value: Any) -> Any:
    """Inverse of :func:`_to_dynamo` after TypeDeserializer: Decimal → int or float, Binary → bytes."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and int(value.as_tuple().exponent) >= 0:
            return int(value)
        return float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):  # sets are never written here, but tolerate hand-made rows
        return sorted(_from_dynamo(v) for v in value)
    if hasattr(value, "value") and isinstance(value.value, bytes):  # boto3 Binary
        return bytes(value.value)
    return value


@functools.cache
def _codecs() -> tuple[Any, Any]:
    # Built once (lazily: boto3 is imported on first use, not at import time); both are stateless.
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


def _serialize(document: Mapping[str, Any]) -> dict[str, Any]:
    serializer = _codecs()[0]
    return {k: serializer.serialize(_to_dynamo(v)) for k, v in document.items()}


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    deserializer = _codecs()[1]
    return {k: _from_dynamo(deserializer.deserialize(v)) for k, v in item.items()}


def _backoff(attempt: int) -> None:
    """Full-jitter exponential backoff for partially processed batches (50 ms base, 2 s cap)."""
    time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))


def _batch_write(client: Any, table: str, requests: Sequence[Mapping[str, Any]]) -> None:
    """BatchWriteItem in chunks of 25, re-sending UnprocessedItems with backoff until none are left."""
    for start in range(0, len(requests), _BATCH_WRITE_MAX):
        pending: list[Any] = list(requests[start : start + _BATCH_WRITE_MAX])
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            with aws_errors(table):
                response = client.batch_write_item(RequestItems={table: pending})
            pending = response.get("UnprocessedItems", {}).get(table, [])
            if not pending:
                break
            _backoff(attempt)
        else:
            raise ServiceUnavailableError(f"{table}: {len(pending)} writes still unprocessed after retries")


def _delete_queried(
    client: Any, table: str, query: dict[str, Any], key_names: Sequence[str], max_rows: int | None = None
) -> tuple[int, bool]:
    """Delete the rows a (paginated) query finds, by their primary key ``key_names``, at most ``max_rows``.

    ``(deleted, more)``: how many were deleted, and whether the query had rows left (call again).
    """
    deleted = 0
    query = dict(query)
    while True:
        if max_rows is not None:
            query["Limit"] = max_rows - deleted
        with aws_errors(table):
            response = client.query(**query)
        keys = [{name: row[name] for name in key_names} for row in response.get("Items", [])]
        _batch_write(client, table, [{"DeleteRequest": {"Key": key}} for key in keys])
        deleted += len(keys)
        last = response.get("LastEvaluatedKey")
        if not last:
            return deleted, False
        if max_rows is not None and deleted >= max_rows:
            return deleted, True
        query["ExclusiveStartKey"] = last


def _batch_get(
    client: Any,
    table: str,
    keys: Sequence[Mapping[str, Any]],
    projection: str | None = None,
    names: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """BatchGetItem in chunks of 100 keys, re-requesting UnprocessedKeys with backoff. Raw items."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), _BATCH_GET_MAX):
        request: dict[str, Any] = {"Keys": list(keys[start : start + _BATCH_GET_MAX])}
        if projection:
            request["ProjectionExpression"] = projection
        if names:
            request["ExpressionAttributeNames"] = dict(names)
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            with aws_errors(table):
                response = client.batch_get_item(RequestItems={table: request})
            found.extend(response.get("Responses", {}).get(table, []))
            unprocessed = response.get("UnprocessedKeys", {}).get(table)
            if not unprocessed or not unprocessed.get("Keys"):
                break
            request = unprocessed
            _backoff(attempt)
        else:
            raise ServiceUnavailableError(f"{table}: keys still unprocessed after retries")
    return found


def _parallel_scan(
    client: Any, table: str, segments: int, scan_kwargs: Mapping[str, Any], *, raw: bool = False
) -> Generator[dict[str, Any], None, None]:
    """Raw items of a parallel Scan (one thread per Segment), yielded as pages arrive; ``raw``: pages read
    with ``json.loads`` (:func:`_raw_page`: Binary values stay base64 text)."""
    if segments < 1:
        raise InvalidInputError("segments", "must be >= 1")
    requests = [
        {"TableName": table, "Segment": segment, "TotalSegments": segments, **scan_kwargs}
        for segment in range(segments)
    ]
    operation = functools.partial(_raw_page, client, table, "scan") if raw else client.scan
    return _parallel_pages(operation, table, requests, workers=segments)


def _parallel_pages(
    operation: Any, table: str, requests: Sequence[Mapping[str, Any]], workers: int
) -> Generator[dict[str, Any], None, None]:
    """Raw items of several paginated Scan or Query requests, ``workers`` at a time, as pages arrive."""
    for page in _pages(operation, table, requests, workers):
        yield from page


_RAW = threading.local()  # .on: this thread's current call wants its page unparsed (see _raw_page)
_RAW_BODY = "EmbrecRawBody"


def _keep_body(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's ``before-parse`` hook: on a :func:`_raw_page` call, keep the response's bytes and give
    botocore's parser an empty document instead (other calls, and error responses, are left alone)."""
    if getattr(_RAW, "on", False) and response_dict.get("status_code", 500) < 300:
        customized_response_dict[_RAW_BODY] = response_dict["body"]
        response_dict["body"] = b"{}"


def _raw_page(client: Any, table: str, operation: str, **request: Any) -> dict[str, Any]:
    """A DynamoDB Query or Scan (``operation``) whose page is read with ``json.loads``, not botocore's parser.

    botocore's shape-driven parse costs ~30 CPU-us a row of a ``by_time`` page, x8 a ``json.loads`` of the
    same bytes, and ~45 us an item of the index scan (``python -m bench window_parse``); at tens of millions
    of rows it was the rebuild's largest cost. The low-level client's parsed rows have the wire's shape
    (``{"S": ...}``, ``{"N": "..."}``), so the answer is the same document, except that a Binary value stays
    its base64 text. Retries, signing, errors and the CRC32 check are botocore's as before: only a successful
    body bypasses the parser.
    """
    client.meta.events.register("before-parse.dynamodb", _keep_body, unique_id="embrec-raw-page")
    _RAW.on = True
    try:
        response: dict[str, Any] = getattr(client, operation)(**request)
    finally:
        _RAW.on = False
    body = response.pop(_RAW_BODY, None)
    if body is None:  # a client whose events never reached the hook: botocore parsed it
        return response
    try:
        page: dict[str, Any] = json.loads(body)
    except ValueError as error:
        raise ServiceUnavailableError(f"{table}: a {operation} page that is not JSON ({error})") from error
    return page


def _pages(
    operation: Any, table: str, requests: Sequence[Mapping[str, Any]], workers: int
) -> Generator[list[dict[str, Any]], None, None]:
    """The pages (lists of raw items) of several paginated Scan or Query requests, ``workers`` at a time,
    yielded as they arrive.

    Pages go through a small bounded queue, so memory holds a few pages, not the table. If the consumer stops
    early (closes the generator), the workers notice and stop at their next page.
    """
    workers = max(1, min(workers, len(requests)))
    pages: queue.Queue[list[dict[str, Any]] | BaseException | None] = queue.Queue(maxsize=2 * workers)
    stop = threading.Event()

    def put(payload: list[dict[str, Any]] | BaseException | None) -> None:
        # A bounded put that gives up once the consumer has gone away.
        while not stop.is_set():
            try:
                pages.put(payload, timeout=0.1)
                return
            except queue.Full:
                continue

    def worker(request: Mapping[str, Any]) -> None:
        kwargs = dict(request)
        try:
            while not stop.is_set():
                with aws_errors(table):
                    response = operation(**kwargs)
                put(response.get("Items", []))
                last = response.get("LastEvaluatedKey")
                if not last:
                    break
                kwargs["ExclusiveStartKey"] = last
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(error)
        finally:
            put(None)

    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"read-{table}")
    try:
        for request in requests:
            executor.submit(worker, request)
        finished = 0
        while finished < len(requests):
            payload = pages.get()
            if payload is None:
                finished += 1
            elif isinstance(payload, BaseException):
                raise payload
            else:
                yield payload
    finally:
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)


_WRITE_WORKERS = 8  # conditional updates in flight at once during a backfill


def _update_if(client: Any, table: str, key: Mapping[str, Any], name: str, value: str) -> bool:
    """SET ``name`` on the row at ``key`` if it still exists without it; False when it does not (any more)."""
    try:
        with aws_errors(table):
            client.update_item(
                TableName=table,
                Key=dict(key),
                UpdateExpression="SET #a = :v",
                ConditionExpression=f"attribute_exists({next(iter(key))}) AND attribute_not_exists(#a)",
                ExpressionAttributeNames={"#a": name},
                ExpressionAttributeValues={":v": {"S": value}},
            )
    except ConflictError:
        return False
    return True


def _update_each(
    rows: Iterable[Mapping[str, Any]],
    update: Callable[[Mapping[str, Any]], bool],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """``update`` every row, ``_WRITE_WORKERS`` at a time, 1,000 rows a round: (rows, rows updated)."""
    found = updated = 0
    page: list[Mapping[str, Any]] = []
    with ThreadPoolExecutor(max_workers=_WRITE_WORKERS, thread_name_prefix="backfill") as writers:

        def flush() -> None:
            nonlocal found, updated
            found += len(page)
            updated += sum(writers.map(update, page))
            page.clear()
            if on_progress is not None:
                on_progress(found, updated)

        for row in rows:
            page.append(row)
            if len(page) >= 1_000:
                flush()
        flush()
    return found, updated


# ---------------------------------------------------------------------------------------------- items


class ItemStore:
    """The items table: catalog rows with their content hash and float32 vector."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    @staticmethod
    def _to_row(item: StoredItem) -> dict[str, Any]:
        document = {k: v for k, v in item.fields.items() if k not in _ITEM_RESERVED and v is not None}
        row = _serialize(document)
        row["item_id"] = {"S": item.item_id}
        row["content_hash"] = {"S": item.content_hash}
        row["updated_at"] = {"N": repr(float(item.updated_at or time.time()))}
        if item.vector is not None:
            row["vector"] = {"B": encode_vector(item.vector)}
        if item.encoder_id:
            row["encoder_id"] = {"S": item.encoder_id}
        if item.source:
            row["ingest_source"] = {"S": item.source}
        return row

    @staticmethod
    def _from_row(row: Mapping[str, Any]) -> StoredItem:
        blob = row.get("vector", {}).get("B")
        rest = {k: v for k, v in row.items() if k not in _ITEM_BOOKKEEPING}
        fields = _deserialize(rest)
        return StoredItem(
            item_id=row["item_id"]["S"],
            fields=fields,
            content_hash=row.get("content_hash", {}).get("S", ""),
            vector=decode_vector(base64.b64decode(blob) if isinstance(blob, str) else bytes(blob))
            if blob is not None
            else None,
            updated_at=float(row.get("updated_at", {}).get("N", 0.0)),
            encoder_id=row.get("encoder_id", {}).get("S", ""),
            source=row.get("ingest_source", {}).get("S", ""),
        )

    def get(self, item_id: str) -> StoredItem | None:
        """The item, or None when unknown (strongly consistent read)."""
        with aws_errors(self._table):
            response = self._client.get_item(
                TableName=self._table, Key={"item_id": {"S": item_id}}, ConsistentRead=True
            )
        row = response.get("Item")
        return self._from_row(row) if row else None

    def batch_get(self, item_ids: Iterable[str]) -> dict[str, StoredItem]:
        """``{item_id: StoredItem}`` for the ids that exist (duplicates and unknown ids ignored)."""
        keys = [{"item_id": {"S": i}} for i in dict.fromkeys(item_ids)]
        return {(s := self._from_row(r)).item_id: s for r in _batch_get(self._client, self._table, keys)}

    def states_for(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        """``{item_id: ItemState}`` of the stored ids (hash, encoder, source; projected: no vector, no text).

        Ingest skips rows whose state is unchanged; one BatchGetItem per 100 ids.
        """
        keys = [{"item_id": {"S": i}} for i in dict.fromkeys(item_ids)]
        names = {"#i": "item_id", "#h": "content_hash", "#e": "encoder_id", "#s": "ingest_source"}
        rows = _batch_get(self._client, self._table, keys, "#i, #h, #e, #s", names)
        return {
            r["item_id"]["S"]: ItemState(
                r.get("content_hash", {}).get("S", ""),
                r.get("encoder_id", {}).get("S", ""),
                r.get("ingest_source", {}).get("S", ""),
            )
            for r in rows
        }

    def upsert(self, items: Iterable[StoredItem]) -> int:
        """Write (replace) every item; UnprocessedItems re-sent with backoff. Returns the number written.

        Later duplicates of one item_id in the same call win (BatchWriteItem refuses duplicate keys).
        """
        rows = {item.item_id: self._to_row(item) for item in items}
        _batch_write(self._client, self._table, [{"PutRequest": {"Item": row}} for row in rows.values()])
        return len(rows)

    def delete(self, item_ids: Iterable[str]) -> int:
        """Remove rows outright (catalog tombstones are stored as items with ``deleted`` instead)."""
        keys = list(dict.fromkeys(item_ids))
        _batch_write(
            self._client, self._table, [{"DeleteRequest": {"Key": {"item_id": {"S": i}}}} for i in keys]
        )
        return len(keys)

    def scan_for_index(self, segments: int = 4, *, images: bool = False) -> Generator[StoredItem, None, None]:
        """Every item (tombstones included) with only what the rebuild's index uses: id, vector, tombstone,
        title, category, tags, price, available, created_at, and ``image_embedding`` when ``images``.

        A projection: descriptions and extra metadata (most of an item's bytes) never cross the wire or
        become Python objects (read units are still charged on whole items: DynamoDB bills scans by item
        size). Eventually consistent reads, half the units of strongly consistent ones: a write the scan
        misses by a moment still reaches every container, as its delta is re-applied from
        ``items_as_of`` minus the look-back (``embrec.aws.artifacts.DELTA_LOOKBACK_MS``, 5 minutes). Pages are
        read with ``json.loads`` (:func:`_raw_page`), not botocore's parser.
        """
        wanted = _INDEX_ATTRIBUTES + (("image_embedding",) if images else ())
        names = {f"#{k}": name for k, name in enumerate(wanted)}
        scan_kwargs = {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
        for row in _parallel_scan(self._client, self._table, segments, scan_kwargs, raw=True):
            yield self._from_row(row)

    def scan_all(self, segments: int = 4) -> Generator[StoredItem, None, None]:
        """Every item (tombstones included, so the caller decides), via a parallel scan of ``segments``.

        Order is unspecified; consistent reads so the rebuild sees every write acknowledged before it began.
        """
        for row in _parallel_scan(self._client, self._table, segments, {"ConsistentRead": True}):
            yield self._from_row(row)


# ---------------------------------------------------------------------------------------------- events


class _InteractionLike(Protocol):
    item_id: str
    type: str
    timestamp: float
    value: float | None
    event_id: str
    recommendation_id: str | None


@dataclass(frozen=True)
class UserEvent:
    """An interaction with its user (and the A/B variant that served it), as stored."""

    user_id: str
    interaction: Interaction | _InteractionLike
    variant: str | None = None


@dataclass
class PutEventsResult:
    """Per-event outcome of :meth:`InteractionStore.put_events`, keyed by event_id.

    ``stored``: written now; ``duplicates``: already stored by an earlier delivery (not written again);
    ``expired``: older than the retention period (not written); ``failed``: not written because DynamoDB
    stayed unavailable (nothing partial left behind: the client may resend them).
    """

    stored: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[EmbrecError] = field(default_factory=list, repr=False)


@dataclass
class ImportWriteResult:
    """Outcome of :meth:`InteractionStore.import_events`: rows written, past the retention, repeated."""

    stored: int = 0
    expired: int = 0
    repeated: int = 0


#: The sort key of a user's erasure marker. Event keys start with 13 digits, and "~" sorts after every digit,
#: so a newest-first query of the user meets the marker first: reads learn of an erasure for free.
ERASURE_SORT_KEY = "~erasure"


@dataclass(frozen=True)
class Erasure:
    """A user's erasure: every event at or before ``erased_before`` (epoch s) is erased.

    Reads hide those events from the moment it is requested; ``status`` turns from ``"pending"`` to
    ``"complete"`` when the job has deleted them (and the user's served-list records). Epoch seconds.
    """

    user_id: str
    erased_before: float
    status: str
    requested_at: float
    events_deleted: int = 0
    impressions_deleted: int = 0
    completed_at: float | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def event_sort_key(timestamp_s: float, event_id: str) -> str:
    """The interactions sort key ``"<epoch ms, 13 digits>#<event_id>"``: newest-first order by time."""
    return f"{round(timestamp_s * 1000):013d}#{event_id}"


#: The interactions table's index of time-bounded reads, its partition key and the bucket layout.
TIME_INDEX = "by_time"
TIME_BUCKET_DAYS = 7
# Writes to one bucket are spread over this many partition keys: one GSI partition key takes ~1,000 writes/s,
# and every live event lands in the current week. Raising it later is safe (reads ask for every shard below
# the current count, and rows written under a smaller count sit in a subset of them); lowering it is not.
TIME_SHARDS = 4
_BUCKET_MS = TIME_BUCKET_DAYS * _SECONDS_PER_DAY * 1000
# Reads look this far past ``now`` too: the API accepts timestamps up to 5 minutes ahead (clock skew).
_FUTURE_SKEW_MS = 600_000
_READ_WORKERS = 8


def time_bucket(ts_ms: int, sort_key: str) -> str:
    """``"<week since the epoch>#<shard>"``: the ``by_time`` partition of an event (epoch ms, its sort key).

    The shard is a hash of the sort key, so a re-delivered event lands in the same place.
    """
    return f"{ts_ms // _BUCKET_MS}#{zlib.crc32(sort_key.encode()) % TIME_SHARDS}"


def _bucket_queries(table: str, since: float, clock: float, extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One ``by_time`` query per (week, shard) from ``since`` to ``clock`` (epoch s; plus the accepted clock
    skew), keyed on ``ts >= since``.

    Within a bucket the sort key bounds the read, so no event before ``since`` is read (or billed).
    """
    since_ms = max(0, round(since * 1000))
    until_ms = round(clock * 1000) + _FUTURE_SKEW_MS
    requests = []
    for week in range(since_ms // _BUCKET_MS, until_ms // _BUCKET_MS + 1):
        for shard in range(TIME_SHARDS):
            request: dict[str, Any] = {
                "TableName": table,
                "IndexName": TIME_INDEX,
                "KeyConditionExpression": "tb = :tb AND ts >= :since",
                **extra,
            }
            request["ExpressionAttributeValues"] = {
                ":tb": {"S": f"{week}#{shard}"},
                ":since": {"N": str(since_ms)},
                **extra.get("ExpressionAttributeValues", {}),
            }
            requests.append(request)
    return requests


def _event_token(user_id: str, event_id: str) -> str:
    # Hashed, so the idempotency table holds no user id in clear and survives a user's erasure as a tombstone.
    digest = hashlib.sha256(f"{user_id}\x1f{event_id}".encode()).hexdigest()
    return f"event#{digest}"


class InteractionStore:
    """The interactions table (per-user event history, TTL'd), with exactly-once writes per event_id.

    Idempotency scheme: each event is a pair of Puts inside a ``TransactWriteItems`` — a *conditional* Put
    of the record ``event#sha256(user_id, event_id)`` in the idempotency table (``attribute_not_exists(id)``)
    and the Put of the interaction itself; up to 50 events (100 actions) share one transaction. A
    transaction is all-or-nothing, so after a crash, a timeout or a failed chunk every event is either fully
    stored (its record exists: a retry hits the condition and is reported as a duplicate) or not at all (a
    retry stores it). When some records already exist, the cancellation reasons name exactly which, and the
    rest are re-sent. A deterministic sort key alone would not do: a client that resends an event with a
    different or server-assigned timestamp would get a second row. The record expires with the event (same
    TTL), so the table does not grow without bound, and it is kept on erasure, so a late retry
    cannot resurrect an erased event (it holds only a hash, no user id).

    Erasure (:meth:`request_erasure`, :meth:`delete_erased`) is a marker row read with the history, then a
    job that deletes the events below it in bounded steps (see :data:`ERASURE_SORT_KEY`).
    """

    def __init__(
        self,
        client: Any,
        table: str,
        idempotency_table: str,
        ttl_days: int = 365,
        events_per_transaction: int = 50,
    ) -> None:
        self._client = client
        self._table = table
        self._idempotency_table = idempotency_table
        self._ttl_s = int(ttl_days) * _SECONDS_PER_DAY
        # TransactWriteItems takes at most 100 actions; each event is two.
        self._per_transaction = max(1, min(50, events_per_transaction))

    def _row(self, event: UserEvent) -> tuple[dict[str, Any], int]:
        interaction = event.interaction
        if not event.user_id:
            raise InvalidInputError("user_id", "must not be empty")
        if not interaction.event_id:
            raise InvalidInputError("event_id", "must not be empty")
        ts_ms = round(float(interaction.timestamp) * 1000)
        expires_at = ts_ms // 1000 + self._ttl_s
        sort_key = event_sort_key(interaction.timestamp, interaction.event_id)
        row: dict[str, Any] = {
            "user_id": {"S": event.user_id},
            "sk": {"S": sort_key},
            "tb": {"S": time_bucket(ts_ms, sort_key)},
            "event_id": {"S": interaction.event_id},
            "item_id": {"S": interaction.item_id},
            "type": {"S": interaction.type},
            "ts": {"N": str(ts_ms)},
            "expires_at": {"N": str(expires_at)},
        }
        if interaction.value is not None:
            row["value"] = _serialize({"v": float(interaction.value)})["v"]
        if interaction.recommendation_id:
            row["recommendation_id"] = {"S": interaction.recommendation_id}
        if event.variant:
            row["variant"] = {"S": event.variant}
        return row, expires_at

    def _actions(self, event: UserEvent, row: dict[str, Any], expires_at: int) -> list[dict[str, Any]]:
        record = {
            "id": {"S": _event_token(event.user_id, event.interaction.event_id)},
            "status": {"S": "stored"},
            "sk": row["sk"],
            "expiration": {"N": str(expires_at)},
        }
        return [
            {
                "Put": {
                    "TableName": self._idempotency_table,
                    "Item": record,
                    "ConditionExpression": "attribute_not_exists(id)",
                }
            },
            {"Put": {"TableName": self._table, "Item": row}},
        ]

    def _write_chunk(
        self, chunk: list[tuple[UserEvent, list[dict[str, Any]]]], result: PutEventsResult
    ) -> None:
        """One transaction for the chunk; events whose record exists are dropped and the rest re-sent."""
        pending = list(chunk)
        attempt = 0
        while pending:
            try:
                with aws_errors(self._table):
                    self._client.transact_write_items(TransactItems=[a for _, pair in pending for a in pair])
            except ConflictError as error:
                # Action 2i is event i's idempotency record: its failed condition marks a duplicate.
                codes = cancellation_codes(error)
                duplicate = {
                    i for i in range(len(pending)) if codes[2 * i : 2 * i + 1] == ["ConditionalCheckFailed"]
                }
                if not duplicate:  # a condition we did not write failed: should not happen
                    raise
                result.duplicates.extend(pending[i][0].interaction.event_id for i in sorted(duplicate))
                pending = [p for i, p in enumerate(pending) if i not in duplicate]
                continue
            except ServiceUnavailableError as error:
                # botocore does not retry a transaction cancelled by a concurrent one (the same events
                # delivered twice at once): back off and retry; the loser then sees its conditions fail.
                attempt += 1
                if is_transaction_conflict(error) and attempt < _UNPROCESSED_ATTEMPTS:
                    _backoff(attempt)
                    continue
                result.failed.extend(event.interaction.event_id for event, _ in pending)
                result.errors.append(error)
                return
            result.stored.extend(event.interaction.event_id for event, _ in pending)
            return

    def put_events(
        self,
        events: Iterable[UserEvent | tuple[str, Interaction | _InteractionLike]],
        now: float | None = None,
    ) -> PutEventsResult:
        """Store each event exactly once (see the class docstring); safe to call again with the same batch.

        ``now`` (epoch s, default the clock) decides which events are already past their TTL. Events are
        written ``events_per_transaction`` at a time, each chunk all-or-nothing. A chunk that could not be
        written (DynamoDB unavailable after retries) has its events listed in ``failed``, none of them
        partly stored; if *every* event failed, the first error is raised instead (typically
        :class:`ServiceUnavailableError`: the whole batch may be retried as is). An event_id repeated
        within the batch is stored once and its repeats reported as duplicates.
        """
        clock = time.time() if now is None else now
        result = PutEventsResult()
        seen: set[tuple[str, str]] = set()
        prepared: list[tuple[UserEvent, list[dict[str, Any]]]] = []
        for raw in events:
            event = raw if isinstance(raw, UserEvent) else UserEvent(raw[0], raw[1])
            row, expires_at = self._row(event)
            identity = (event.user_id, event.interaction.event_id)
            if expires_at <= clock:
                result.expired.append(event.interaction.event_id)
            elif identity in seen:
                result.duplicates.append(event.interaction.event_id)
            else:
                seen.add(identity)
                prepared.append((event, self._actions(event, row, expires_at)))
        size = self._per_transaction
        for start in range(0, len(prepared), size):
            self._write_chunk(prepared[start : start + size], result)
        if prepared and len(result.failed) == len(prepared):
            raise result.errors[0]
        return result

    @staticmethod
    def _interaction(row: Mapping[str, Any]) -> Interaction:
        value = row.get("value", {}).get("N")
        recommendation = row.get("recommendation_id", {}).get("S")
        return Interaction(
            item_id=row["item_id"]["S"],
            type=row["type"]["S"],
            timestamp=int(row["ts"]["N"]) / 1000.0,
            value=float(value) if value is not None else None,
            event_id=row.get("event_id", {}).get("S", row["sk"]["S"].partition("#")[2]),
            recommendation_id=recommendation,
        )

    @staticmethod
    def _live(row: Mapping[str, Any], now: float) -> bool:
        expires = row.get("expires_at", {}).get("N")
        return expires is None or float(expires) > now

    def history(self, user_id: str, limit: int | None = None, now: float | None = None) -> list[Interaction]:
        """The user's interactions, newest first, at most ``limit``; TTL-expired and erased ones left out.

        One query of ``limit`` + 1 rows (the +1 is the erasure marker's slot) when the newest rows are live,
        as they are: TTL expires the oldest first. Pages on only past expired rows. Events at or before a
        requested erasure are never returned, even while the erasure job is still deleting them.
        """
        clock = time.time() if now is None else now
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "user_id = :u",
            "FilterExpression": "attribute_not_exists(expires_at) OR expires_at > :now",
            "ExpressionAttributeValues": {":u": {"S": user_id}, ":now": {"N": str(int(clock))}},
            "ScanIndexForward": False,
        }
        if limit is not None:
            if limit <= 0:
                return []
            kwargs["Limit"] = limit + 1
        found: list[Interaction] = []
        erased_before_ms: int | None = None
        while True:
            with aws_errors(self._table):
                response = self._client.query(**kwargs)
            for row in response.get("Items", []):
                if row["sk"]["S"] == ERASURE_SORT_KEY:
                    erased_before_ms = int(row["erased_before"]["N"])
                    continue
                if erased_before_ms is not None and int(row["ts"]["N"]) <= erased_before_ms:
                    return found  # newest first: every row from here on is erased (or being erased)
                if self._live(row, clock):
                    found.append(self._interaction(row))
                    if limit is not None and len(found) >= limit:
                        return found
            last = response.get("LastEvaluatedKey")
            if not last:
                return found
            kwargs["ExclusiveStartKey"] = last

    # ------------------------------------------------------------------------------------------ erasure

    def request_erasure(self, user_id: str, now: float | None = None) -> Erasure:
        """Mark every event of the user at or before ``now`` as erased (reads hide them from now on).

        The marker expires when those events would have (their TTL): then nothing it hides can remain.
        A second request moves the cut to its own time and starts over.
        """
        clock = time.time() if now is None else now
        cut_ms = math.floor(clock * 1000)
        erasure = Erasure(user_id, cut_ms / 1000.0, "pending", clock)
        with aws_errors(self._table):
            self._client.put_item(
                TableName=self._table,
                Item={
                    "user_id": {"S": user_id},
                    "sk": {"S": ERASURE_SORT_KEY},
                    "erased_before": {"N": str(cut_ms)},
                    "status": {"S": erasure.status},
                    "requested_at": {"N": repr(float(clock))},
                    "events_deleted": {"N": "0"},
                    "impressions_deleted": {"N": "0"},
                    "expires_at": {"N": str(cut_ms // 1000 + self._ttl_s)},
                },
            )
        return erasure

    def erasure(self, user_id: str) -> Erasure | None:
        """The user's latest erasure request, or None (strongly consistent)."""
        with aws_errors(self._table):
            response = self._client.get_item(
                TableName=self._table,
                Key={"user_id": {"S": user_id}, "sk": {"S": ERASURE_SORT_KEY}},
                ConsistentRead=True,
            )
        row = response.get("Item")
        if not row:
            return None
        completed = row.get("completed_at", {}).get("N")
        return Erasure(
            user_id=user_id,
            erased_before=int(row["erased_before"]["N"]) / 1000.0,
            status=row["status"]["S"],
            requested_at=float(row["requested_at"]["N"]),
            events_deleted=int(row.get("events_deleted", {}).get("N", "0")),
            impressions_deleted=int(row.get("impressions_deleted", {}).get("N", "0")),
            completed_at=float(completed) if completed is not None else None,
        )

    def delete_erased(self, user_id: str, erased_before: float, max_rows: int) -> tuple[int, bool]:
        """Delete up to ``max_rows`` of the user's events at or before ``erased_before`` (epoch s).

        A key-range query (``sk`` below the cut), keys only, then batched deletes: ``(deleted, more)``.
        """
        cut_ms = round(erased_before * 1000)
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "user_id = :u AND sk < :cut",
            "ExpressionAttributeValues": {":u": {"S": user_id}, ":cut": {"S": f"{cut_ms + 1:013d}"}},
            "ProjectionExpression": "user_id, sk",
            "ConsistentRead": True,
        }
        return _delete_queried(self._client, self._table, kwargs, ("user_id", "sk"), max_rows)

    def record_erasure(
        self, erasure: Erasure, events: int, impressions: int, complete: bool, now: float | None = None
    ) -> bool:
        """Add one job step's counts to the marker (and mark it complete); False when a newer request for the
        user has replaced this one (its own job finishes the work)."""
        clock = time.time() if now is None else now
        update = "ADD events_deleted :e, impressions_deleted :i"
        values: dict[str, Any] = {
            ":e": {"N": str(events)},
            ":i": {"N": str(impressions)},
            ":cut": {"N": str(round(erasure.erased_before * 1000))},
        }
        if complete:
            update += " SET #s = :done, completed_at = :at"
            values.update({":done": {"S": "complete"}, ":at": {"N": repr(float(clock))}})
        try:
            with aws_errors(self._table):
                self._client.update_item(
                    TableName=self._table,
                    Key={"user_id": {"S": erasure.user_id}, "sk": {"S": ERASURE_SORT_KEY}},
                    UpdateExpression=update,
                    ConditionExpression="erased_before = :cut",
                    ExpressionAttributeValues=values,
                    **({"ExpressionAttributeNames": {"#s": "status"}} if complete else {}),
                )
        except ConflictError:
            return False
        return True

    def import_events(self, events: Iterable[UserEvent], now: float | None = None) -> ImportWriteResult:
        """Write history rows in bulk: BatchWriteItem, 25 rows a call, no transaction, no idempotency record.

        Idempotent by key: a row's key is its user and ``event_sort_key(timestamp, event_id)``, so a
        re-delivered row overwrites itself. Rows past the retention (``expires_at <= now``) are not written
        and come back in ``expired``; a row repeating an earlier key of the same call is written once and
        counted in ``repeated``. UnprocessedItems are re-sent with backoff; a call that still fails raises.
        """
        clock = time.time() if now is None else now
        result = ImportWriteResult()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for event in events:
            row, expires_at = self._row(event)
            if expires_at <= clock:
                result.expired += 1
                continue
            key = (row["user_id"]["S"], row["sk"]["S"])
            if key in rows:
                result.repeated += 1
            rows[key] = row
        _batch_write(self._client, self._table, [{"PutRequest": {"Item": row}} for row in rows.values()])
        result.stored = len(rows)
        return result

    def read_window(self, since: float, now: float | None = None) -> Iterator[EventPage]:
        """The live events at or after ``since`` (epoch s), for the rebuild: user, item, type and time, as
        one :class:`~embrec.domain.signals.EventPage` per DynamoDB page (order unspecified).

        A bounded read: one ``by_time`` query per (week, shard) of the window, the sort key cutting at
        ``since`` (no older event is read or billed), run ``_READ_WORKERS`` at a time. Only the four
        attributes the signals use travel (a projection), expired rows are dropped by DynamoDB (a filter:
        still billed, not sent), and each page is read with ``json.loads`` (:func:`_raw_page`) into columns:
        no object per event.
        """
        clock = time.time() if now is None else now
        extra = {
            "ProjectionExpression": "user_id, item_id, #type, ts",
            "FilterExpression": "attribute_not_exists(expires_at) OR expires_at > :now",
            "ExpressionAttributeNames": {"#type": "type"},
            "ExpressionAttributeValues": {":now": {"N": f"{clock:.3f}"}},
        }
        requests = _bucket_queries(self._table, since, clock, extra)
        query = functools.partial(_raw_page, self._client, self._table, "query")
        for rows in _pages(query, self._table, requests, _READ_WORKERS):
            yield self._event_page(rows)

    @staticmethod
    def _event_page(rows: Sequence[Mapping[str, Any]]) -> EventPage:
        return EventPage(
            users=[row["user_id"]["S"] for row in rows],
            items=[row["item_id"]["S"] for row in rows],
            types=[row["type"]["S"] for row in rows],
            timestamps=np.array([row["ts"]["N"] for row in rows], dtype=np.float64) / 1000.0,
        )

    def read_attributed(self, since: float, now: float | None = None) -> Iterator[tuple[str, Interaction]]:
        """Like :meth:`read_window`, only the events that carry a ``recommendation_id`` (A/B report)."""
        return self._read_time_range(since, now, {"FilterExpression": "attribute_exists(recommendation_id)"})

    def count_since(self, since: float, now: float | None = None) -> int:
        """How many events were stored at or after ``since`` (epoch s): the ``by_time`` queries of
        :meth:`read_window` with ``Select=COUNT``, so only that range is read (and billed), never a scan."""
        clock = time.time() if now is None else now
        total = 0
        for request in _bucket_queries(self._table, since, clock, {"Select": "COUNT"}):
            while True:
                with aws_errors(self._table):
                    page = self._client.query(**request)
                total += int(page.get("Count", 0))
                last = page.get("LastEvaluatedKey")
                if not last:
                    break
                request = {**request, "ExclusiveStartKey": last}
        return total

    def backfill_time_buckets(
        self, segments: int = 4, on_progress: Callable[[int, int], None] | None = None
    ) -> tuple[int, int]:
        """Give each event row that lacks one its ``tb`` (rows written before the ``by_time`` index existed).

        A one-off over the whole table, not a scheduled read: a parallel Scan of the rows without ``tb``
        (keys and ``ts`` only; DynamoDB still bills the scan of every row), then one UpdateItem each,
        ``_WRITE_WORKERS`` at a time, conditioned on the row still being there without ``tb`` (an erased or
        re-written row is left alone). Idempotent: a second run finds nothing to do. Returns (rows found, rows
        updated); ``on_progress(found, updated)`` after each 1,000 rows' updates.
        """
        scan = {
            "FilterExpression": "attribute_not_exists(tb) AND attribute_exists(ts)",
            "ProjectionExpression": "user_id, sk, ts",
        }

        def update(row: Mapping[str, Any]) -> bool:
            bucket = time_bucket(int(row["ts"]["N"]), row["sk"]["S"])
            key = {"user_id": row["user_id"], "sk": row["sk"]}
            return _update_if(self._client, self._table, key, "tb", bucket)

        return _update_each(_parallel_scan(self._client, self._table, segments, scan), update, on_progress)

    def _read_time_range(
        self, since: float, now: float | None, extra: Mapping[str, Any]
    ) -> Iterator[tuple[str, Interaction]]:
        clock = time.time() if now is None else now
        requests = _bucket_queries(self._table, since, clock, extra)
        for row in _parallel_pages(self._client.query, self._table, requests, _READ_WORKERS):
            if self._live(row, clock):
                yield row["user_id"]["S"], self._interaction(row)


# ---------------------------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class StoredProfile:
    """A user's onboarding profile: (dim,) float32 vector, the text it was encoded from, epoch s."""

    user_id: str
    vector: np.ndarray
    text: str
    updated_at: float
    interests: tuple[str, ...] = ()  # the onboarding interests, for reasons ("matches your interest in X")


class ProfileStore:
    """The profiles table: one cold-start vector per user."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def put(
        self,
        user_id: str,
        vector: np.ndarray,
        text: str,
        updated_at: float | None = None,
        interests: tuple[str, ...] = (),
    ) -> StoredProfile:
        """Store (replace) the profile; returns what was stored."""
        if not user_id:
            raise InvalidInputError("user_id", "must not be empty")
        profile = StoredProfile(
            user_id,
            np.asarray(vector, dtype=np.float32),
            text,
            time.time() if updated_at is None else updated_at,
            tuple(interests),
        )
        row: dict[str, Any] = {
            "user_id": {"S": user_id},
            "vector": {"B": encode_vector(profile.vector)},
            "text": {"S": text},
            "updated_at": {"N": repr(float(profile.updated_at))},
        }
        if profile.interests:
            row["interests"] = {"L": [{"S": interest} for interest in profile.interests]}
        with aws_errors(self._table):
            self._client.put_item(TableName=self._table, Item=row)
        return profile

    def get(self, user_id: str) -> StoredProfile | None:
        with aws_errors(self._table):
            response = self._client.get_item(TableName=self._table, Key={"user_id": {"S": user_id}})
        row = response.get("Item")
        if not row:
            return None
        return StoredProfile(
            user_id=user_id,
            vector=decode_vector(bytes(row["vector"]["B"])),
            text=row.get("text", {}).get("S", ""),
            updated_at=float(row.get("updated_at", {}).get("N", 0.0)),
            interests=tuple(value["S"] for value in row.get("interests", {}).get("L", [])),
        )

    def delete(self, user_id: str) -> bool:
        """Remove the profile; True if there was one."""
        with aws_errors(self._table):
            response = self._client.delete_item(
                TableName=self._table, Key={"user_id": {"S": user_id}}, ReturnValues="ALL_OLD"
            )
        return bool(response.get("Attributes"))


# ---------------------------------------------------------------------------------------------- idempotency


class IdempotencyStore:
    """Claim/complete records for at-least-once triggers (e.g. one S3 object version ingested once).

    ``claim(key)`` atomically takes the record if it is absent, or if a previous claim is still
    ``in_progress`` but older than ``lease_seconds`` (its worker died); it returns False when the work is
    ``complete`` or another worker holds a live lease. ``complete(key)`` marks it done; ``release(key)``
    gives it back after a failure so the retry can claim it at once.
    """

    def __init__(self, client: Any, table: str, ttl_days: int = 7, lease_seconds: float = 900.0) -> None:
        self._client = client
        self._table = table
        self._ttl_s = int(ttl_days) * _SECONDS_PER_DAY
        self._lease_s = lease_seconds

    @staticmethod
    def ingest_key(bucket: str, key: str, etag: str) -> str:
        """The record id for one version of one catalog object."""
        return f"ingest#{bucket}/{key}#{etag.strip(chr(34))}"

    def claim(self, key: str, now: float | None = None) -> bool:
        clock = time.time() if now is None else now
        try:
            with aws_errors(self._table):
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        "id": {"S": key},
                        "status": {"S": "in_progress"},
                        "claimed_at": {"N": repr(float(clock))},
                        "expiration": {"N": str(int(clock) + self._ttl_s)},
                    },
                    ConditionExpression=(
                        "attribute_not_exists(id) OR expiration <= :now "
                        "OR (#s = :in_progress AND claimed_at < :stale)"
                    ),
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={
                        ":now": {"N": str(int(clock))},
                        ":in_progress": {"S": "in_progress"},
                        ":stale": {"N": repr(float(clock - self._lease_s))},
                    },
                )
        except ConflictError:
            return False
        return True

    def complete(self, key: str, result: Mapping[str, Any] | None = None, now: float | None = None) -> None:
        clock = time.time() if now is None else now
        item: dict[str, Any] = {
            "id": {"S": key},
            "status": {"S": "complete"},
            "completed_at": {"N": repr(float(clock))},
            "expiration": {"N": str(int(clock) + self._ttl_s)},
        }
        if result:
            item["result"] = {"M": _serialize(result)}
        with aws_errors(self._table):
            self._client.put_item(TableName=self._table, Item=item)

    def release(self, key: str) -> None:
        with aws_errors(self._table):
            self._client.delete_item(TableName=self._table, Key={"id": {"S": key}})

    def status(self, key: str, now: float | None = None) -> str | None:
        """ "in_progress", "complete", or None (absent or expired)."""
        clock = time.time() if now is None else now
        with aws_errors(self._table):
            response = self._client.get_item(
                TableName=self._table, Key={"id": {"S": key}}, ConsistentRead=True
            )
        row = response.get("Item")
        if not row or float(row.get("expiration", {}).get("N", "inf")) <= clock:
            return None
        return str(row["status"]["S"])


# ---------------------------------------------------------------------------------------------- impressions


class ImpressionStore:
    """The impressions table: one row per served recommendation list, for the A/B report.

    PK ``recommendation_id``; ``user_id``, ``experiment`` (absent outside experiments), ``variant``, ``ts``
    (epoch ms), ``item_count``, ``expires_at`` (TTL, epoch s: kept as long as the events).
    Global secondary index ``by_user`` (``user_id``, keys only) serves the user's erasure; ``by_experiment``
    (``xs`` = ``"<experiment>#<shard>"``, sort key ``ts``), a sparse index of the lists served inside an
    experiment, serves the A/B report a read bounded by the experiment and its start, not the table.
    """

    USER_INDEX = "by_user"
    EXPERIMENT_INDEX = "by_experiment"
    # One index partition key takes ~1,000 writes/s; an experiment's lists are spread over this many.
    EXPERIMENT_SHARDS = 4

    def __init__(self, client: Any, table: str, ttl_days: int = 365) -> None:
        self._client = client
        self._table = table
        self._ttl_s = int(ttl_days) * _SECONDS_PER_DAY

    def put(self, impression: Impression) -> None:
        ts_ms = round(float(impression.ts) * 1000)
        row: dict[str, Any] = {
            "recommendation_id": {"S": impression.recommendation_id},
            "user_id": {"S": impression.user_id},
            "variant": {"S": impression.variant},
            "ts": {"N": str(ts_ms)},
            "item_count": {"N": str(int(impression.items))},
            "expires_at": {"N": str(ts_ms // 1000 + self._ttl_s)},
        }
        if impression.experiment:
            row["experiment"] = {"S": impression.experiment}
            row["xs"] = {"S": self._experiment_shard(impression.experiment, impression.recommendation_id)}
        with aws_errors(self._table):
            self._client.put_item(TableName=self._table, Item=row)

    def set_size(self, recommendation_id: str, items: int) -> None:
        """Correct a recorded list's ``item_count`` (the list came out shorter than asked)."""
        with aws_errors(self._table):
            self._client.update_item(
                TableName=self._table,
                Key={"recommendation_id": {"S": recommendation_id}},
                UpdateExpression="SET item_count = :n",
                ExpressionAttributeValues={":n": {"N": str(int(items))}},
            )

    def delete_user(self, user_id: str, max_rows: int | None = None) -> tuple[int, bool]:
        """Erase the user's impressions, at most ``max_rows`` (query of ``by_user``, batched deletes):
        ``(deleted, more)``.

        The index is eventually consistent: a list served in the last second may be missed (its row then
        expires with its TTL).
        """
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": self.USER_INDEX,
            "KeyConditionExpression": "user_id = :u",
            "ExpressionAttributeValues": {":u": {"S": user_id}},
        }
        return _delete_queried(self._client, self._table, kwargs, ("recommendation_id",), max_rows)

    @classmethod
    def _experiment_shard(cls, experiment: str, recommendation_id: str) -> str:
        return f"{experiment}#{zlib.crc32(recommendation_id.encode()) % cls.EXPERIMENT_SHARDS}"

    def experiment_impressions(
        self, experiment: str, since: float | None = None, now: float | None = None
    ) -> Iterator[Impression]:
        """Every live impression of ``experiment`` served at or after ``since`` (epoch s); any order.

        One ``by_experiment`` query per shard, cut at ``since`` by the sort key: no other experiment's list,
        no list outside an experiment and none before ``since`` is read (or billed).
        """
        clock = time.time() if now is None else now
        since_ms = 0 if since is None else max(0, round(since * 1000))
        requests = [
            {
                "TableName": self._table,
                "IndexName": self.EXPERIMENT_INDEX,
                "KeyConditionExpression": "xs = :xs AND ts >= :since",
                "ExpressionAttributeValues": {
                    ":xs": {"S": f"{experiment}#{shard}"}, ":since": {"N": str(since_ms)},
                },
            }
            for shard in range(self.EXPERIMENT_SHARDS)
        ]
        for row in _parallel_pages(self._client.query, self._table, requests, self.EXPERIMENT_SHARDS):
            expires = row.get("expires_at", {}).get("N")
            if expires is not None and float(expires) <= clock:
                continue
            yield Impression(
                recommendation_id=row["recommendation_id"]["S"],
                user_id=row["user_id"]["S"],
                experiment=row.get("experiment", {}).get("S"),
                variant=row["variant"]["S"],
                ts=int(row["ts"]["N"]) / 1000.0,
                items=int(row.get("item_count", {}).get("N", "0")),
            )

    def backfill_experiment_index(
        self, segments: int = 4, on_progress: Callable[[int, int], None] | None = None
    ) -> tuple[int, int]:
        """Give each experiment impression stored before ``by_experiment`` its ``xs``: (found, updated).

        A one-off like :meth:`InteractionStore.backfill_time_buckets` (a Scan of the rows with an experiment
        and no ``xs``, one conditional UpdateItem each); a second run finds nothing to do.
        """
        scan = {
            "FilterExpression": "attribute_exists(experiment) AND attribute_not_exists(xs)",
            "ProjectionExpression": "recommendation_id, experiment",
        }

        def update(row: Mapping[str, Any]) -> bool:
            shard = self._experiment_shard(row["experiment"]["S"], row["recommendation_id"]["S"])
            return _update_if(self._client, self._table, {"recommendation_id": row["recommendation_id"]},
                              "xs", shard)

        rows = _parallel_scan(self._client, self._table, segments, scan)
        return _update_each(rows, update, on_progress)
