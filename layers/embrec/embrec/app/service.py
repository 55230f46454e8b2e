"""The use cases the handlers and the CLI call: one function per route or trigger.

Each takes the container's :class:`~embrec.app.runtime.Runtime` (stores, artifacts, clock) plus the raw
request parts, validates them with :mod:`embrec.edge.contract`, calls the pure core
(:mod:`embrec.domain.ranking`,
:mod:`embrec.app.ingest`, :mod:`embrec.app.build`) and returns a JSON-ready dict. No HTTP and no boto3 here.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aws_lambda_powertools.metrics import single_metric

from embrec.app.build import INDEX_DIR, build_version
from embrec.app.history_import import HistoryObject, ImportCounts, import_rows, parse_import_message
from embrec.app.ingest import (
    CatalogObject,
    IngestCounts,
    IngestDelivery,
    ingest_rows,
    parse_ingest_message,
)
from embrec.app.runtime import LoadedModel, Runtime
from embrec.aws.artifacts import HISTORY_INCOMING_PREFIX, INDEX_PREFIX, ArtifactStore
from embrec.aws.store import Erasure, IdempotencyStore, StoredProfile, UserEvent
from embrec.domain import experiments, ranking, reporting
from embrec.domain.catalog import RowResult, read_catalog_named, resumable
from embrec.domain.fusion import FusionConfig, profile_in_index_space, to_index_space
from embrec.domain.model import Impression, Interaction
from embrec.domain.profiles import SECONDS_PER_DAY, ProfileParams, onboarding_text
from embrec.domain.signals import SignalParams
from embrec.edge import contract as api
from embrec.edge.auth import Caller, require_users
from embrec.edge.history_file import history_format, read_history
from embrec.errors import (
    EmbrecError,
    EncoderMissingError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
    UnprocessableError,
)
from embrec.manifest import MANIFEST_FILE
from embrec.observability import (
    METRIC_CANDIDATES,
    METRIC_EVENTS_ACCEPTED,
    METRIC_EVENTS_FAILED,
    METRIC_EVENTS_IMPORTED,
    METRIC_EVENTS_REJECTED,
    METRIC_EXPERIMENT_SERVED,
    METRIC_HISTORY_ROWS_REJECTED,
    METRIC_IMPRESSION_FAILED,
    METRIC_INGEST_MESSAGES_REFUSED,
    METRIC_ROWS_ACCEPTED,
    METRIC_ROWS_REJECTED,
    METRIC_SHRINK_REFUSED,
    NAMESPACE,
    MetricUnit,
    emit_experiment_variant,
    logger,
    metrics,
)

__all__ = [
    "delete_user",
    "emit_report_metrics",
    "encoder_retry_seconds",
    "erase_step",
    "erasure_status",
    "experiment_report",
    "health",
    "import_message",
    "import_object",
    "ingest_message",
    "ingest_object",
    "onboard",
    "rebuild",
    "recommendations",
    "record_events",
    "search",
    "similar",
]

# A file is processed in chunks of at most this many rows per invocation (the delta of one chunk stays a few
# tens of MB); the rest goes on in a continuation message. The time budget may end a chunk sooner.
ROWS_PER_INVOCATION = 20_000
# A history file is imported in chunks of this many rows per invocation (~1-2 minutes of BatchWriteItem in
# AWS, well inside the 300 s timeout); the rest goes on in a continuation message from the byte it reached.
ROWS_PER_IMPORT = 200_000
ATTRIBUTION_SLACK_SECONDS = 86_400.0
# An erasure step deletes at most this many rows, for at most this long (the events function has 10 s), then
# queues the next step: every invocation is bounded, whatever the user's history.
ERASE_ROWS_PER_STEP = 20_000
ERASE_SECONDS_PER_STEP = 5.0
ERASE_ROWS_PER_CALL = 1_000
# With a short history the onboarding profile still counts; past this many events it is not used.
PROFILE_HISTORY_LIMIT = 20
DEFAULT_VARIANT = experiments.DEFAULT_VARIANT


def _require_model(runtime: Runtime) -> LoadedModel:
    model = runtime.model()
    if model is None:
        raise ServiceUnavailableError("no index has been published yet: upload a catalog and run the rebuild")
    return model


def _items(
    model: LoadedModel, recommended: list[ranking.Recommendation], explain: bool
) -> list[dict[str, Any]]:
    rows = []
    for rec in recommended:
        meta = model.index.metadata(rec.item_id)
        row: dict[str, Any] = {
            "item_id": rec.item_id,
            "score": round(float(rec.score), 6),
            "title": meta.get("title", ""),
            "category": meta.get("category", ""),
        }
        if explain:
            row["reasons"] = list(rec.reasons)
        rows.append(row)
    return rows


class _Served:
    """A list's identity and its impression, recorded *while* the list is computed, not after it.

    The impression holds what is known before ranking (id, user, experiment, variant, time) and the list size
    asked for; its PutItem runs on the I/O pool beside the history and profile reads, so it adds no round trip
    of its own. :meth:`finish` waits for it before the answer leaves (a Lambda function is frozen when it
    returns: a write left running could land late or never, and the list's clicks would lose their
    denominator) and, only when the list came out shorter than asked (a small catalog, tight filters, an
    empty list), corrects the stored size with one UpdateItem. The write is best-effort: a DynamoDB outage
    costs the report one list, not the user's answer.
    """

    def __init__(
        self, runtime: Runtime, user_id: str, assignment: experiments.Assignment, k: int, now: float
    ) -> None:
        self._runtime = runtime
        self.assignment = assignment
        self.impression = Impression(
            uuid.uuid4().hex, user_id, assignment.experiment, assignment.variant, now, k
        )
        self._write = runtime.io.submit(runtime.impressions.put, self.impression)

    def finish(self, ranked: ranking.RankedList) -> dict[str, Any]:
        try:
            self._write.result()
            if len(ranked.items) != self.impression.items:
                self._runtime.impressions.set_size(self.impression.recommendation_id, len(ranked.items))
        except ServiceUnavailableError as error:
            metrics.add_metric(name=METRIC_IMPRESSION_FAILED, unit=MetricUnit.Count, value=1)
            logger.warning("impression not recorded", extra={"error": error.code, "detail": error.message})
        assignment = self.assignment
        if assignment.experiment is not None:
            # its own EMF document: a variant dimension on the shared metrics would split every other metric
            with single_metric(
                name=METRIC_EXPERIMENT_SERVED, unit=MetricUnit.Count, value=1, namespace=NAMESPACE
            ) as served:
                served.add_dimension(name="experiment", value=assignment.experiment)
                served.add_dimension(name="variant", value=assignment.variant)
        return {
            "recommendation_id": self.impression.recommendation_id,
            "user_id": self.impression.user_id,
            "experiment": assignment.experiment,
            "variant": assignment.variant,
        }


def _history(runtime: Runtime, user_id: str, now: float) -> list[Interaction]:
    """The user's newest events, at most ``EMBREC_HISTORY_LIMIT``: one bounded query, whatever the history."""
    return runtime.interactions.history(user_id, limit=runtime.settings.history_limit, now=now)


def _user_state(runtime: Runtime, user_id: str, now: float) -> tuple[list[Interaction], StoredProfile | None]:
    """The user's newest events and (with a short history) onboarding profile: two reads, concurrently.

    The profile read does not wait for the history to say whether it is needed: one small GetItem costs
    less than a second round trip in series.
    """
    profile = runtime.io.submit(runtime.profiles.get, user_id)
    history = _history(runtime, user_id, now)
    stored = profile.result()
    return history, stored if len(history) < PROFILE_HISTORY_LIMIT else None


def recommendations(runtime: Runtime, user_id: str, params: dict[str, str] | None) -> dict[str, Any]:
    """``GET /users/{user_id}/recommendations``: personalised, else onboarding, else trending.

    The user's A/B variant (if an experiment is live) overrides the blend weights, diversity, strategy and
    whether the version's learned blend ranks; a ``diversity`` given in the query still wins.
    """
    user_id = api.parse_user_id(user_id)
    query = api.parse_recommend_query(params)
    model = _require_model(runtime)
    now = runtime.clock()
    assignment = experiments.assign(runtime.experiments(), user_id)
    served = _Served(runtime, user_id, assignment, query.k, now)
    history, profile = _user_state(runtime, user_id, now)
    rank_params = assignment.overrides.apply(
        ranking.RankParams(
            k=query.k, filters=query.filters, diversity=query.diversity, explain=query.explain,
            profile=ProfileParams(type_weights=runtime.type_weights),
        ),
        diversity_explicit=bool((params or {}).get("diversity")),
        ranker=model.ranker,
    )
    ranked = ranking.recommend(
        model.index,
        model.signals,
        history,
        None if profile is None else profile_in_index_space(model.index, profile.vector),
        rank_params,
        now,
        profile_interests=() if profile is None else profile.interests,
    )
    metrics.add_metric(name=METRIC_CANDIDATES, unit=MetricUnit.Count, value=len(ranked.items))
    return {
        **served.finish(ranked),
        "strategy": ranked.strategy,
        "index_version": model.version,
        "items": _items(model, ranked.items, query.explain),
    }


def similar(runtime: Runtime, item_id: str, params: dict[str, str] | None) -> dict[str, Any]:
    """``GET /items/{item_id}/similar``: not personal, so cached per container for a short time."""
    item_id = api.parse_item_id(item_id)
    query = api.parse_similar_query(params)
    model = _require_model(runtime)

    def compute() -> dict[str, Any]:
        found = ranking.similar_items(
            model.index, model.signals, item_id, query.k, query.filters, explain=query.explain,
            now=runtime.clock(),
        )
        items = _items(model, found, query.explain)
        return {"item_id": item_id, "index_version": model.version, "items": items}

    return runtime.shared_cache.get(("similar", model.version, item_id, query), compute)


def search(runtime: Runtime, params: dict[str, str] | None) -> dict[str, Any]:
    """``GET /search?q=``: free-text semantic search (the cold-start function holds the encoder)."""
    text, query = api.parse_search_query(params)
    model = _require_model(runtime)

    def compute() -> dict[str, Any]:
        vector = runtime.encoder(model.index.encoder_id).encode([text])[0]
        found = ranking.search(model.index, to_index_space(model.index, vector), query.k, query.filters)
        return {"query": text, "index_version": model.version, "items": _items(model, found, False)}

    return runtime.shared_cache.get(("search", model.version, text, query), compute)


def onboard(runtime: Runtime, user_id: str, body: str | None) -> dict[str, Any]:
    """``POST /users/{user_id}/onboarding``: encode the answers once, store the profile, first picks."""
    user_id = api.parse_user_id(user_id)
    answers = api.parse_onboarding(api.parse_body(body))
    model = _require_model(runtime)
    now = runtime.clock()
    history = runtime.io.submit(_history, runtime, user_id, now)  # read while the answers are encoded
    text = onboarding_text(answers.interests, answers.goals, answers.experience)
    vector = runtime.encoder(model.index.encoder_id).encode([text])[0]
    runtime.profiles.put(user_id, vector, text, interests=answers.interests)
    assignment = experiments.assign(runtime.experiments(), user_id)
    served = _Served(runtime, user_id, assignment, api.DEFAULT_K, now)
    ranked = ranking.recommend(
        model.index,
        model.signals,
        history.result(),
        to_index_space(model.index, vector),  # profiles store the text vector
        assignment.overrides.apply(
            ranking.RankParams(
                k=api.DEFAULT_K, explain=True, profile=ProfileParams(type_weights=runtime.type_weights)
            )
        ),
        now,
        profile_interests=answers.interests,
    )
    return {
        **served.finish(ranked),
        "strategy": ranked.strategy,
        "index_version": model.version,
        "profile": {
            "text": text,
            "interests": list(answers.interests),
            "goals": list(answers.goals),
            "experience": answers.experience,
        },
        "items": _items(model, ranked.items, True),
    }


def record_events(runtime: Runtime, body: str | None, caller: Caller | None = None) -> dict[str, Any]:
    """``POST /events``: each event accepted (stored exactly once), rejected with its field and reason, or
    ``failed`` (``retryable``: DynamoDB stayed unavailable for its chunk; not written, nothing partial).

    "accepted" and "duplicate" mean written. When nothing could be written the whole batch is a 503.

    A JWT ``caller`` may only send its own events: one event for another user refuses the whole batch (403)
    before anything is written.
    """
    now = runtime.clock()
    accepted, rejected = api.parse_events(api.parse_body(body), now, runtime.type_weights.keys())
    require_users(caller, {event.user_id for event in accepted})
    stored = runtime.interactions.put_events(
        [
            UserEvent(
                event.user_id,
                Interaction(
                    item_id=event.item_id,
                    type=event.type,
                    timestamp=event.timestamp,
                    value=event.value,
                    event_id=event.event_id,
                    recommendation_id=event.recommendation_id,
                ),
            )
            for event in accepted
        ],
        now=now,
    )
    expired = set(stored.expired)
    failed = set(stored.failed)
    results = [
        {"index": r.index, "event_id": r.event_id, "status": "rejected", "field": r.field, "reason": r.reason}
        for r in rejected
    ]
    duplicates = set(stored.duplicates)
    for event in accepted:
        if event.event_id in expired:
            results.append(
                {
                    "event_id": event.event_id,
                    "status": "rejected",
                    "field": "timestamp",
                    "reason": "older than the retention period",
                }
            )
        elif event.event_id in failed:
            # not written (DynamoDB unavailable after retries) and nothing partial: the client resends it
            results.append(
                {
                    "event_id": event.event_id,
                    "status": "failed",
                    "retryable": True,
                    "reason": "not written: storage unavailable, send this event again",
                }
            )
        else:
            status = "duplicate" if event.event_id in duplicates else "accepted"
            results.append({"event_id": event.event_id, "status": status})
    written = len(accepted) - len(expired) - len(failed)
    rejected_count = len(rejected) + len(expired)
    metrics.add_metric(name=METRIC_EVENTS_ACCEPTED, unit=MetricUnit.Count, value=written)
    metrics.add_metric(name=METRIC_EVENTS_REJECTED, unit=MetricUnit.Count, value=rejected_count)
    if failed:
        metrics.add_metric(name=METRIC_EVENTS_FAILED, unit=MetricUnit.Count, value=len(failed))
        logger.warning("events not written after retries", extra={"failed": len(failed), "written": written})
    return {"accepted": written, "rejected": rejected_count, "failed": len(failed), "results": results}


def delete_user(runtime: Runtime, user_id: str) -> dict[str, Any]:
    """``DELETE /users/{user_id}``: the erasure is accepted at once (202) and always completes.

    The erasure marker is written first: from then on every read hides the user's events up to now (the
    next request is trending). The profile goes at once (one row); the events and served-list records, as
    many as there are, are deleted by the erasure job in bounded steps (:func:`erase_step`, through SQS).
    ``GET /users/{user_id}/erasure`` says when it is complete.
    """
    user_id = api.parse_user_id(user_id)
    erasure = runtime.interactions.request_erasure(user_id, now=runtime.clock())
    profile = runtime.profiles.delete(user_id)
    runtime.enqueue_erasure(_erasure_message(erasure))
    logger.info("user erasure requested", extra={"profile_deleted": profile})
    return {**_erasure_body(erasure), "profile_deleted": profile}


def erasure_status(runtime: Runtime, user_id: str) -> dict[str, Any]:
    """``GET /users/{user_id}/erasure``: the latest erasure of the user, ``pending`` or ``complete``."""
    user_id = api.parse_user_id(user_id)
    erasure = runtime.interactions.erasure(user_id)
    if erasure is None:
        raise NotFoundError("no erasure was requested for this user")
    return _erasure_body(erasure)


def erase_step(runtime: Runtime, body: str) -> dict[str, Any]:
    """One step of an erasure job (an SQS message): delete at most ``ERASE_ROWS_PER_STEP`` rows for at most
    ``ERASE_SECONDS_PER_STEP``, then hand the rest to the next step, or mark the erasure complete. Safe to run
    twice (deletes are idempotent)."""
    try:
        erasure = _parse_erasure_message(body)
    except InvalidInputError as error:
        # can never succeed: acknowledged (not retried into the DLQ), and said loudly
        logger.error("erasure message dropped", extra={"field": error.field, "reason": error.reason})
        return {"status": "dropped"}
    started = time.monotonic()
    events = impressions = 0
    more_events = more_impressions = True

    def budget() -> int:  # rows this step may still delete (0: hand over to the next step)
        if time.monotonic() - started >= ERASE_SECONDS_PER_STEP:
            return 0
        return min(ERASE_ROWS_PER_CALL, ERASE_ROWS_PER_STEP - events - impressions)

    while more_events and (rows := budget()) > 0:
        user, before = erasure.user_id, erasure.erased_before
        deleted, more_events = runtime.interactions.delete_erased(user, before, rows)
        events += deleted
    while not more_events and more_impressions and (rows := budget()) > 0:
        deleted, more_impressions = runtime.impressions.delete_user(erasure.user_id, rows)
        impressions += deleted
    complete = not (more_events or more_impressions)
    current = runtime.interactions.record_erasure(erasure, events, impressions, complete, now=runtime.clock())
    if current and not complete:
        runtime.enqueue_erasure(body)
    status = "superseded" if not current else "complete" if complete else "continued"
    logger.info("erasure step", extra={"status": status, "events_deleted": events,
                                       "impressions_deleted": impressions})
    return {"status": status, "events_deleted": events, "impressions_deleted": impressions}


def _iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def _erasure_body(erasure: Erasure) -> dict[str, Any]:
    return {
        "user_id": erasure.user_id,
        "status": erasure.status,
        "erased_before": _iso(erasure.erased_before),
        "requested_at": _iso(erasure.requested_at),
        "completed_at": _iso(erasure.completed_at),
        "events_deleted": erasure.events_deleted,
        "impressions_deleted": erasure.impressions_deleted,
        "status_url": f"/users/{quote(erasure.user_id, safe='')}/erasure",
    }


def _erasure_message(erasure: Erasure) -> str:
    return json.dumps({"erase_user": erasure.user_id, "erased_before": erasure.erased_before})


def _parse_erasure_message(body: str) -> Erasure:
    try:
        message = json.loads(body)
    except ValueError:
        raise InvalidInputError("body", "not JSON") from None
    if not isinstance(message, dict):
        raise InvalidInputError("body", "must be an object")
    before = message.get("erased_before")
    if not isinstance(before, int | float) or isinstance(before, bool):
        raise InvalidInputError("erased_before", "must be epoch seconds")
    return Erasure(api.parse_user_id(message.get("erase_user")), float(before), "pending", float(before))


def health(runtime: Runtime) -> tuple[dict[str, Any], int]:
    """``GET /health``: 200 once the service can take uploads; says what index (if any) it serves.

    The route is unauthenticated: it names no bucket, key or table, and a failure answers only its error
    code; what failed, and where, goes to the log.
    """
    body: dict[str, Any] = {"status": "ok"}
    try:
        model = runtime.model()
    except EmbrecError as error:
        logger.exception("health check failed", extra={"error_code": error.code})
        return {"status": "degraded", "error": error.code, "message": "the index cannot be served"}, 503
    if model is None:
        body.update(index_version=None, items=0, encoder_id=None, loaded_at=None)
    else:
        body.update(
            index_version=model.version,
            items=len(model.index),
            encoder_id=model.index.encoder_id,
            loaded_at=model.loaded_at_iso,
            deltas_applied=model.deltas_applied,
        )
    return body, 200


def ingest_message(runtime: Runtime, delivery: IngestDelivery) -> list[dict[str, Any]]:
    """One SQS message: an S3 notification (possibly several records), a continuation, or a test event.

    A body that can never succeed (not JSON, not a notification or continuation) is acknowledged at once,
    logged with its head and counted in ``IngestMessagesRefused``: retrying it 5 times would change nothing.
    A missing encoder (``encoder/current.json`` not published yet: a stack that is still starting) makes the
    message visible again in :func:`encoder_retry_seconds` rather than the queue's 30 minutes; the record
    fails, so the retry counts towards the queue's ``maxReceiveCount``.
    """
    try:
        targets = parse_ingest_message(delivery.body)
    except InvalidInputError as error:
        metrics.add_metric(name=METRIC_INGEST_MESSAGES_REFUSED, unit=MetricUnit.Count, value=1)
        logger.error(
            "ingest message refused: it can never succeed, not retried",
            extra={"reason": error.reason, "body_head": delivery.body[:500]},
        )
        return [{"status": "refused", "reason": error.reason}]
    try:
        return [ingest_object(runtime, target, should_stop=delivery.should_stop) for target in targets]
    except EncoderMissingError:
        delay = encoder_retry_seconds(delivery.receive_count)
        logger.warning("no encoder published yet: ingest retried shortly", extra={"retry_in_s": delay})
        if delivery.receipt_handle:
            runtime.retry_ingest_in(delivery.receipt_handle, delay)
        raise


def encoder_retry_seconds(receive_count: int) -> int:
    """How long a message waits for an encoder that is not published yet: 10 s, 20 s, 40 s, ... (<= 300)."""
    return int(min(300, 10 * 2 ** max(0, receive_count - 1)))


def ingest_object(
    runtime: Runtime, target: CatalogObject, *, should_stop: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    """Ingest one catalog object (or one chunk of it), idempotent per (bucket, key, etag, chunk).

    A chunk ends after ``ROWS_PER_INVOCATION`` rows or when ``should_stop`` says the time budget is spent
    (asked between batches); the rest goes on in a continuation message. A JSON Lines file resumes at the
    byte offset where the chunk ended (a ranged GET: earlier rows are never read again; a gzipped one is
    decompressed from the start and the earlier bytes skipped unparsed); JSON arrays and CSV re-read the rows
    before the chunk (use JSON Lines for catalogs larger than one invocation's share).
    """
    claim_key = IdempotencyStore.ingest_key(target.bucket, target.key, f"{target.etag}#{target.chunk}")
    if not runtime.idempotency.claim(claim_key):
        logger.info("duplicate catalog event skipped", extra={"key": target.key, "chunk": target.chunk})
        return {"key": target.key, "status": "duplicate"}
    try:
        encoder = runtime.encoder()
        byte_resume = resumable(target.key)
        gzipped = target.key.lower().endswith(".gz")
        start = target.resume_offset if byte_resume and not gzipped else 0
        with runtime.open_upload(target.key, target.etag, start) as stream:
            if byte_resume:
                rows: Iterator[RowResult] = read_catalog_named(stream, target.key, resume=target.resume)
            else:
                rows = itertools.islice(read_catalog_named(stream, target.key), target.start_row, None)
            outcome = ingest_rows(
                rows,
                runtime.items,
                encoder.encode,
                encoder_id=encoder.encoder_id,
                source_id=target.file_id,
                max_rows=ROWS_PER_INVOCATION,
                clock=runtime.clock,
                should_stop=should_stop,
            )
        if outcome.delta is not None:
            with tempfile.TemporaryDirectory() as scratch:
                outcome.delta.save(Path(scratch))
                runtime.artifacts.publish_delta(Path(scratch))
        totals = IngestCounts(**(target.counts or {})).add(outcome.counts)
        suffix = "" if target.chunk == 0 else f".part{target.chunk:04d}"
        if outcome.rejected_rows:
            key = runtime.artifacts.rejected_key(_strip_incoming(target.key))
            stem = key.removesuffix(".jsonl")  # only the last ".jsonl": "a.jsonl" -> "a.jsonl.part0001.jsonl"
            runtime.artifacts.put_lines(f"{stem}{suffix}.jsonl", outcome.rejected_rows)
        more = not outcome.finished
        if more:
            resume = outcome.resume or target.resume
            runtime.enqueue_ingest(
                replace(
                    target,
                    start_row=target.start_row + outcome.rows,
                    chunk=target.chunk + 1,
                    counts=asdict(totals),
                    resume_offset=resume.offset,
                    resume_line=resume.line,
                ).to_message()
            )
        else:
            report = {
                "bucket": target.bucket,
                "key": target.key,
                "etag": target.etag,
                "chunks": target.chunk + 1,
                **asdict(totals),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            runtime.artifacts.put_json(runtime.artifacts.report_key(_strip_incoming(target.key)), report)
    except BaseException:
        runtime.idempotency.release(claim_key)
        raise
    runtime.idempotency.complete(claim_key, asdict(outcome.counts))
    metrics.add_metric(name=METRIC_ROWS_ACCEPTED, unit=MetricUnit.Count, value=outcome.counts.accepted)
    metrics.add_metric(name=METRIC_ROWS_REJECTED, unit=MetricUnit.Count, value=outcome.counts.rejected)
    logger.info(
        "catalog chunk ingested", extra={"key": target.key, "chunk": target.chunk, **asdict(outcome.counts)}
    )
    return {"key": target.key, "status": "continued" if more else "complete", **asdict(totals)}


def import_message(runtime: Runtime, body: str) -> list[dict[str, Any]]:
    """One SQS message of the import queue: an S3 notification, a continuation, or a test event."""
    return [import_object(runtime, target) for target in parse_import_message(body)]


def import_object(runtime: Runtime, target: HistoryObject) -> dict[str, Any]:
    """Import one history file (or one chunk of it), idempotent per (bucket, key, etag, chunk).

    Writes ``interactions/reports/<name>.json`` (``status`` ``in_progress`` while chunks remain and every
    ``progress_every`` rows, then ``complete``; or ``refused`` for a file whose name is no known format) and
    the chunk's rejected rows to ``interactions/rejected/``.
    """
    claim_key = IdempotencyStore.ingest_key(target.bucket, target.key, f"{target.etag}#{target.chunk}")
    if not runtime.idempotency.claim(claim_key):
        logger.info("duplicate history event skipped", extra={"key": target.key, "chunk": target.chunk})
        return {"key": target.key, "status": "duplicate"}
    name = target.key.removeprefix(HISTORY_INCOMING_PREFIX)
    report_key = ArtifactStore.history_report_key(name)
    base = {"bucket": target.bucket, "key": target.key, "etag": target.etag}
    try:
        try:
            _, gzipped = history_format(target.key)
        except InvalidInputError as error:
            runtime.artifacts.put_json(report_key, {**base, "status": "refused", "error": error.to_dict()})
            runtime.idempotency.complete(claim_key, {"status": "refused"})
            return {"key": target.key, "status": "refused"}
        prior = ImportCounts(**(target.counts or {}))
        prior_unknown = Counter(target.unknown_types or {})

        def report(counts: ImportCounts, unknown: Counter[str], status: str) -> None:
            runtime.artifacts.put_json(
                report_key,
                {
                    **base,
                    "status": status,
                    "chunks": target.chunk + 1,
                    **asdict(prior.add(counts)),
                    "unknown_types": dict(prior_unknown + unknown),
                    "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )

        now = runtime.clock()
        with runtime.open_upload(target.key, target.etag, 0 if gzipped else target.offset) as stream:
            rows = read_history(
                stream, target.key, runtime.type_weights.keys(), now,
                offset=target.offset, first_line=target.line,
                header=None if target.header is None else list(target.header),
            )
            outcome = import_rows(
                rows,
                lambda events: runtime.interactions.import_events(events, now=now),
                max_rows=ROWS_PER_IMPORT,
                header=target.header,
                on_progress=lambda counts: report(counts, Counter(), "in_progress"),
            )
        if outcome.rejected_rows:
            runtime.artifacts.put_lines(
                ArtifactStore.history_rejected_key(name, target.chunk), outcome.rejected_rows
            )
        totals = prior.add(outcome.counts)
        if not outcome.finished:
            runtime.enqueue_import(
                HistoryObject(
                    target.bucket, target.key, target.etag, outcome.offset, outcome.line, target.chunk + 1,
                    outcome.header, asdict(totals), dict(prior_unknown + outcome.unknown_types),
                ).to_message()
            )
        report(outcome.counts, outcome.unknown_types, "complete" if outcome.finished else "in_progress")
    except BaseException:
        runtime.idempotency.release(claim_key)
        raise
    runtime.idempotency.complete(claim_key, asdict(outcome.counts))
    metrics.add_metric(name=METRIC_EVENTS_IMPORTED, unit=MetricUnit.Count, value=outcome.counts.accepted)
    rejected = outcome.counts.rejected
    metrics.add_metric(name=METRIC_HISTORY_ROWS_REJECTED, unit=MetricUnit.Count, value=rejected)
    logger.info(
        "history chunk imported", extra={"key": target.key, "chunk": target.chunk, **asdict(outcome.counts)}
    )
    return {"key": target.key, "status": "complete" if outcome.finished else "continued", **asdict(totals)}


def _strip_incoming(key: str) -> str:
    prefix = "catalog/incoming/"
    return key[len(prefix) :] if key.startswith(prefix) else key


def rebuild(
    runtime: Runtime, *, report_experiment: bool = False, allow_shrink: bool = False
) -> dict[str, Any]:
    """Scheduled rebuild: scan, build index + signals, publish atomically (or lose the race cleanly), prune.

    The pointer is read before the scan starts, so a rebuild that another one overtook while it was working
    loses the conditional swap instead of publishing older data over newer. A build with fewer than
    ``1 - EMBREC_REBUILD_MAX_SHRINK`` of the live version's items (a swapped or emptied table) is refused
    with a metric (:data:`METRIC_SHRINK_REFUSED`) and a :class:`UnprocessableError`, unless
    ``allow_shrink`` (``embrec rebuild --allow-shrink``). ``report_experiment`` (the scheduled function):
    then write the live experiment's report as EMF metrics per variant, best-effort. The learned blend is
    trained only when ``config/experiments.json`` can serve it (its training is most of the signal phase,
    BENCHMARKS.md section 10).
    """
    started = runtime.clock()
    base = runtime.artifacts.read_current()
    encoder_manifest = runtime.encoder_manifest()
    window_start = started - runtime.settings.signal_window_days * SECONDS_PER_DAY
    fusion = FusionConfig.from_settings(runtime.settings)
    with tempfile.TemporaryDirectory() as scratch:
        built = build_version(
            runtime.items.scan_for_index(images=fusion.mode != "off" and fusion.image_weight > 0),
            runtime.interactions.read_window(window_start, now=started),
            Path(scratch),
            encoder_id=encoder_manifest["encoder_id"],
            now=started,
            text_dim=int(encoder_manifest["dim"]),
            signal_params=SignalParams(type_weights=runtime.type_weights),
            fusion=fusion,
            memory_budget=runtime.settings.index_memory_bytes,
            train_ranker=runtime.experiments().uses_learned_blend,
        )
        if base is not None and not allow_shrink:
            _refuse_a_shrink(runtime, base.version, built.items)
        published = runtime.artifacts.publish_version(
            Path(scratch), items_as_of=int(started * 1000), base=base
        )
    pruned = runtime.artifacts.prune_versions(keep=runtime.settings.keep_versions)
    result = {
        "version": published.version,
        "status": published.status,
        "items": built.items,
        "interactions": built.interactions,
        "skipped_items": built.skipped_items,
        "learned_blend": "ranker" in built.details,
        "pruned_versions": len(pruned.deleted_versions),
        "pruned_deltas": len(pruned.deleted_deltas),
        "seconds": {phase: round(value, 3) for phase, value in built.details["seconds"].items()},
    }
    logger.info("rebuild finished", extra=result)
    if report_experiment:
        result["experiment_report"] = _report_live_experiment(runtime)
    return result


def _refuse_a_shrink(runtime: Runtime, live_version: str, items: int) -> None:
    """UnprocessableError (and the metric) when ``items`` is below what the live version's size allows."""
    key = f"{INDEX_PREFIX}{live_version}/{INDEX_DIR}/{MANIFEST_FILE}"
    document, _ = runtime.artifacts.get_json(key) or ({}, "")
    live = int(document.get("count", 0) or 0)
    floor = live * (1.0 - runtime.settings.rebuild_max_shrink)
    if items >= floor or live == 0:
        return
    with single_metric(name=METRIC_SHRINK_REFUSED, unit=MetricUnit.Count, value=1, namespace=NAMESPACE):
        pass
    logger.error(
        "rebuild refused: the catalog shrank too much",
        extra={"live_version": live_version, "live_items": live, "built_items": items},
    )
    raise UnprocessableError(
        "items",
        f"the rebuild found {items:,} live items, the live version {live_version} has {live:,}: more than "
        f"{runtime.settings.rebuild_max_shrink:.0%} fewer (EMBREC_REBUILD_MAX_SHRINK); nothing published. "
        "If this is intended, run `embrec rebuild --allow-shrink`",
    )


def _report_live_experiment(runtime: Runtime) -> str | None:
    """EMF metrics per variant of the live experiment (its name), None without one; never fails the caller."""
    try:
        live = runtime.experiments().active
        if live is None:
            return None
        experiment_report(runtime, live.name, emit=True)
    except EmbrecError as error:
        logger.warning("experiment report failed", extra={"error": error.code, "detail": error.message})
        return None
    return live.name


def emit_report_metrics(report: reporting.Report) -> None:
    """The report as CloudWatch EMF, one document per variant (``embrec.observability``)."""
    for v in report.variants:
        emit_experiment_variant(
            report.experiment,
            v.variant,
            users=v.users,
            impressions=v.impressions,
            clicks=v.clicks,
            conversions=v.conversions,
            ctr=v.ctr,
            conversion_rate=v.conversion_rate,
            engagement_value=v.engagement_value,
        )


def experiment_report(
    runtime: Runtime, name: str, since: float | None = None, *, emit: bool = False
) -> reporting.Report:
    """The online A/B report of experiment ``name`` (see :mod:`embrec.domain.reporting` for the definitions).

    Reads the impressions of the experiment (served at or after ``since``, epoch s; a query of the
    impressions' ``by_experiment`` index, bounded by the experiment, not the table), then reads the events
    that carry a ``recommendation_id`` from the first of those lists on (a read bounded by time through the
    interactions' ``by_time`` index: an event is attributed only to a list served before it); variants
    and control come from ``config/experiments.json`` when the
    experiment is still defined there (else from the impressions). ``emit``: also write the CloudWatch EMF
    metrics per variant (a scheduled Lambda; the CLI only with ``--emf``).
    """
    try:
        defined: experiments.Experiment | None = runtime.experiments().get(name)
    except NotFoundError:
        defined = None
    now = runtime.clock()
    impressions = list(runtime.impressions.experiment_impressions(name, since, now=now))
    # Event timestamps are the client's clock: a day of slack keeps a clock that runs behind attributed.
    first_served = min((impression.ts for impression in impressions), default=now) - ATTRIBUTION_SLACK_SECONDS
    report = reporting.experiment_report(
        impressions,
        runtime.interactions.read_attributed(first_served, now=now),
        name,
        since,
        control=None if defined is None else defined.control,
        variants=() if defined is None else [v.name for v in defined.variants],
    )
    if defined is None and not report.variants:
        raise NotFoundError(f"no experiment named {name!r}: not in config/experiments.json, no impressions")
    if emit:
        emit_report_metrics(report)
    return report
