"""Composition: what one container holds, built once by cached factories (and reset by tests).

A :class:`Runtime` owns the settings, the boto3 clients, one adapter per table, the artifact store, the live
index (loaded on first use and kept fresh by :class:`~embrec.aws.artifacts.LiveArtifact`), the encoders it has
loaded and a short-lived cache for non-personal answers. Nothing is built at import time; everything on
first use, so the events function never downloads an index and the recommend function never an encoder.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from embrec.app.build import load_ranker, load_version
from embrec.aws.artifacts import ENCODER_MANIFEST, ENCODER_PREFIX, ArtifactStore, LiveArtifact, WatchedJson
from embrec.aws.clients import AwsClients, aws_errors, buffered, clients
from embrec.aws.store import IdempotencyStore, ImpressionStore, InteractionStore, ItemStore, ProfileStore
from embrec.config import Settings, get_settings
from embrec.domain.experiments import EXPERIMENTS_KEY, ExperimentConfig, parse_experiments
from embrec.domain.fusion import text_dim
from embrec.domain.learned_blend import LearnedBlend
from embrec.domain.profiles import declared_type_weights
from embrec.domain.signals import Signals
from embrec.engine.encoder import TextEncoder
from embrec.engine.index import IndexDelta, VectorIndex, fuse_delta
from embrec.errors import ConfigurationError, InvalidInputError, NotFoundError
from embrec.manifest import VerifiedDirectory
from embrec.observability import (
    METRIC_COLD_START_LOAD_MS,
    METRIC_INDEX_FALLBACK,
    METRIC_INDEX_REFUSED,
    METRIC_SHARED_CACHE_HIT,
    MetricUnit,
    logger,
    metrics,
)

__all__ = ["LoadedModel", "Runtime", "SharedCache", "get_runtime", "reset_runtime", "settings_at_start"]

T = TypeVar("T")

#: A request overlaps at most this many DynamoDB calls (history, profile, impression).
IO_THREADS = 4


@dataclass(frozen=True)
class LoadedVersion:
    """What one published version serves: index, signals and learned blend (None: the version has none)."""

    index: VectorIndex
    signals: Signals
    ranker: LearnedBlend | None


@dataclass(frozen=True)
class LoadedModel:
    """The index, signals and learned blend (None: the version has none) one request is served from, and
    where they came from."""

    index: VectorIndex
    signals: Signals
    version: str
    loaded_at: float
    deltas_applied: int
    ranker: LearnedBlend | None = None

    @property
    def loaded_at_iso(self) -> str:
        return datetime.fromtimestamp(self.loaded_at, UTC).isoformat(timespec="seconds")


class SharedCache:
    """A small TTL + LRU cache for answers that are the same for everyone (similar items, search)."""

    def __init__(
        self, ttl_seconds: float, max_entries: int = 2048, clock: Callable[[], float] = time.monotonic
    ):
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if self._ttl <= 0:
            return compute()
        now = self._clock()
        with self._lock:
            found = self._entries.get(key)
            if found is not None and now - found[0] < self._ttl:
                self._entries.move_to_end(key)
                metrics.add_metric(name=METRIC_SHARED_CACHE_HIT, unit=MetricUnit.Count, value=1)
                return found[1]
        value = compute()
        with self._lock:
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return value


def _model_loader(
    memory_budget: int | None,
) -> Callable[[VerifiedDirectory, Mapping[str, Any]], LoadedVersion]:
    def load(directory: VerifiedDirectory, manifest: Mapping[str, Any]) -> LoadedVersion:
        # hashed as downloaded: not hashed again; a version over the budget is refused before it is loaded
        index, signals = load_version(directory, memory_budget=memory_budget)
        return LoadedVersion(index, signals, load_ranker(directory, signals))

    return load


def _apply_delta(value: LoadedVersion, delta_dir: Path) -> None:
    index = value.index
    # Deltas carry text vectors + raw images (ingestion does not know the layout): fuse them here.
    delta = IndexDelta.load(delta_dir, expected_encoder_id=index.encoder_id, expected_dim=text_dim(index))
    index.apply(fuse_delta(index, delta))


def _on_artifact_event(name: str, fields: Mapping[str, Any]) -> None:
    if name == "loaded":
        metrics.add_metric(
            name=METRIC_COLD_START_LOAD_MS,
            unit=MetricUnit.Milliseconds,
            value=float(fields.get("seconds", 0.0)) * 1000.0,
        )
        logger.info("index loaded", extra=dict(fields))
    elif name == "refused":
        metrics.add_metric(name=METRIC_INDEX_REFUSED, unit=MetricUnit.Count, value=1)
        # "message" is a LogRecord attribute: logging refuses it as an extra key
        extra = {("detail" if key == "message" else key): value for key, value in fields.items()}
        logger.warning("artifact refused", extra=extra)
    elif name == "fallback":
        metrics.add_metric(name=METRIC_INDEX_FALLBACK, unit=MetricUnit.Count, value=1)
        logger.warning("serving an older verified index version", extra=dict(fields))
    else:
        logger.debug(name, extra=dict(fields))


class Runtime:
    """Everything a container reuses across invocations. Build with :func:`get_runtime`."""

    def __init__(
        self,
        settings: Settings,
        aws: AwsClients | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._aws = aws
        self._encoders: dict[str, TextEncoder] = {}
        self._encoder_lock = threading.Lock()
        self.shared_cache = SharedCache(settings.shared_cache_seconds)
        self._experiments_parsed: tuple[dict[str, Any], ExperimentConfig] | None = None

    @cached_property
    def aws(self) -> AwsClients:
        return self._aws or clients(self.settings)

    @cached_property
    def io(self) -> ThreadPoolExecutor:
        """Threads for a request's independent DynamoDB calls (boto3 clients are thread-safe)."""
        return ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="embrec-io")

    @cached_property
    def items(self) -> ItemStore:
        return ItemStore(self.aws.dynamodb, self.settings.items_table)

    @cached_property
    def interactions(self) -> InteractionStore:
        return InteractionStore(
            self.aws.dynamodb,
            self.settings.interactions_table,
            self.settings.idempotency_table,
            ttl_days=self.settings.event_ttl_days,
        )

    @cached_property
    def profiles(self) -> ProfileStore:
        return ProfileStore(self.aws.dynamodb, self.settings.profiles_table)

    @cached_property
    def impressions(self) -> ImpressionStore:
        return ImpressionStore(
            self.aws.dynamodb, self.settings.impressions_table, ttl_days=self.settings.event_ttl_days
        )

    @cached_property
    def _experiments_document(self) -> WatchedJson:
        refresh = self.settings.index_refresh_seconds
        return WatchedJson(self.artifacts, EXPERIMENTS_KEY, refresh_seconds=refresh)

    def experiments(self) -> ExperimentConfig:
        """The A/B experiments of ``config/experiments.json`` (re-read like the index pointer).

        A document that fails validation is logged and ignored: the last valid one keeps serving (none
        before any: no experiment), so a bad upload never fails requests.
        """
        document = self._experiments_document.get()
        cached = self._experiments_parsed
        if cached is not None and cached[0] is document:
            return cached[1]
        try:
            parsed = parse_experiments(document)
        except InvalidInputError as error:
            logger.error(
                "experiments document refused",
                extra={"key": EXPERIMENTS_KEY, "field": error.field, "reason": error.reason},
            )
            parsed = cached[1] if cached is not None else ExperimentConfig()
        self._experiments_parsed = (document, parsed)
        return parsed

    @cached_property
    def idempotency(self) -> IdempotencyStore:
        return IdempotencyStore(self.aws.dynamodb, self.settings.idempotency_table)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.aws.s3, self.settings.bucket, Path(self.settings.cache_dir))

    @cached_property
    def _live(self) -> LiveArtifact[LoadedVersion]:
        return LiveArtifact(
            self.artifacts,
            _model_loader(self.settings.index_memory_bytes),
            refresh_seconds=self.settings.index_refresh_seconds,
            apply_delta=_apply_delta,
            on_event=_on_artifact_event,
        )

    def model(self) -> LoadedModel | None:
        """The live index and signals (None before the first rebuild has published anything)."""
        try:
            loaded = self._live.get()
        except NotFoundError:
            return None
        value = loaded.value
        return LoadedModel(
            value.index, value.signals, loaded.version, loaded.loaded_at, len(loaded.applied_deltas),
            value.ranker,
        )

    def encoder(self, encoder_id: str | None = None) -> TextEncoder:
        """A verified encoder from S3 (default: ``encoder/current.json``), loaded once per container."""
        wanted = encoder_id or self.settings.encoder_id or self.artifacts.current_encoder_id()
        with self._encoder_lock:
            if wanted not in self._encoders:
                directory = self.artifacts.fetch_encoder(wanted)
                self._encoders[wanted] = TextEncoder.load(directory, threads=self.settings.encoder_threads)
            return self._encoders[wanted]

    def encoder_manifest(self, encoder_id: str | None = None) -> dict[str, Any]:
        """``encoder.json`` of an encoder (default: the current one): its id and dim, without the model.

        The rebuild needs only these to check the items' vectors; downloading the 70-90 MB model for it
        would be work in the wrong place.
        """
        wanted = encoder_id or self.artifacts.current_encoder_id()
        found = self.artifacts.get_json(f"{ENCODER_PREFIX}{wanted}/{ENCODER_MANIFEST}")
        assert found is not None  # no If-None-Match: never a 304
        return found[0]

    @contextmanager
    def open_upload(self, key: str, etag: str | None, start: int = 0) -> Iterator[BinaryIO]:
        """Stream one uploaded file (a catalog or a history) from byte ``start`` (a ranged GET), read in 1 MiB
        blocks. ``IfMatch`` on the notified ETag when there is one, so every chunk reads the same version."""
        kwargs: dict[str, Any] = {"Bucket": self.settings.bucket, "Key": key}
        if etag:
            kwargs["IfMatch"] = etag
        if start:
            kwargs["Range"] = f"bytes={start}-"
        with aws_errors(f"s3://{self.settings.bucket}/{key}"):
            body = self.aws.s3.get_object(**kwargs)["Body"]
        try:
            yield buffered(body)
        finally:
            body.close()

    def enqueue_import(self, message: str) -> None:
        """Hand the rest of a large history file to another import invocation."""
        with aws_errors("sqs import queue"):
            self.aws.sqs.send_message(QueueUrl=self.settings.import_queue_url, MessageBody=message)

    @cached_property
    def type_weights(self) -> Mapping[str, float]:
        """The deployment's event types and weights (``EMBREC_EVENT_TYPES``, else the six built-ins)."""
        return declared_type_weights(self.settings.event_types)

    def enqueue_ingest(self, message: str) -> None:
        """Hand the rest of a large catalog file to another ingest invocation."""
        with aws_errors("sqs ingest queue"):
            self.aws.sqs.send_message(QueueUrl=self.settings.ingest_queue_url, MessageBody=message)

    def retry_ingest_in(self, receipt_handle: str, seconds: int) -> None:
        """Make a received ingest message visible again after ``seconds`` (instead of the queue's timeout)."""
        with aws_errors("sqs ingest queue"):
            self.aws.sqs.change_message_visibility(
                QueueUrl=self.settings.ingest_queue_url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=seconds,
            )

    def enqueue_erasure(self, message: str) -> None:
        """Hand (the rest of) a user's erasure to the erasure job (the events function, through SQS)."""
        with aws_errors("sqs erasure queue"):
            self.aws.sqs.send_message(QueueUrl=self.settings.erasure_queue_url, MessageBody=message)


def settings_at_start() -> Settings:
    """Called by every function's module as it starts (Lambda's init phase): a bad setting stops the container
    there, logged with the variable's name, instead of failing requests later with a client-facing error."""
    try:
        return get_settings()
    except ConfigurationError as error:
        logger.error("bad configuration", extra={"variable": error.variable, "reason": error.reason})
        raise


@functools.cache
def get_runtime() -> Runtime:
    """The container's runtime, built on first use from the environment."""
    return Runtime(get_settings())


def reset_runtime() -> None:
    """Forget the cached settings and runtime (tests; the local stack after it changes the environment)."""
    get_settings.cache_clear()
    get_runtime.cache_clear()
