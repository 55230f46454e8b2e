"""Observability in one module: the structured logger, metrics and tracer every function shares.

Log with keys, not f-strings (``logger.info("index loaded", extra={"index_version": v})``). Metrics are
CloudWatch EMF lines flushed by each handler's ``@metrics.log_metrics``; their names are constants here.
"""

from __future__ import annotations

import json

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

__all__ = [
    "METRIC_CANDIDATES",
    "METRIC_COLD_START_LOAD_MS",
    "METRIC_EVENTS_ACCEPTED",
    "METRIC_EVENTS_FAILED",
    "METRIC_EVENTS_IMPORTED",
    "METRIC_EVENTS_REJECTED",
    "METRIC_EXPERIMENT_SERVED",
    "METRIC_HISTORY_ROWS_REJECTED",
    "METRIC_IMPRESSION_FAILED",
    "METRIC_INDEX_FALLBACK",
    "METRIC_INDEX_REFUSED",
    "METRIC_INGEST_MESSAGES_REFUSED",
    "METRIC_ROWS_ACCEPTED",
    "METRIC_ROWS_REJECTED",
    "METRIC_SHARED_CACHE_HIT",
    "METRIC_SHRINK_REFUSED",
    "MetricUnit",
    "emit_experiment_variant",
    "logger",
    "metrics",
    "tracer",
]

NAMESPACE = "embrec"
SERVICE = "embrec"

METRIC_COLD_START_LOAD_MS = "ArtifactLoadMs"
METRIC_INDEX_REFUSED = "IndexRefused"
METRIC_INDEX_FALLBACK = "IndexFallback"  # a cold start served an older verified version
METRIC_CANDIDATES = "Candidates"
METRIC_SHARED_CACHE_HIT = "SharedCacheHit"
METRIC_EVENTS_ACCEPTED = "EventsAccepted"
METRIC_EVENTS_IMPORTED = "EventsImported"
METRIC_HISTORY_ROWS_REJECTED = "HistoryRowsRejected"
METRIC_EVENTS_REJECTED = "EventsRejected"
METRIC_EVENTS_FAILED = "EventsFailed"  # not written after retries: reported to the client as retryable
METRIC_ROWS_ACCEPTED = "CatalogRowsAccepted"
METRIC_ROWS_REJECTED = "CatalogRowsRejected"
METRIC_EXPERIMENT_SERVED = "ExperimentListsServed"  # its own EMF document, dimensions experiment, variant
METRIC_IMPRESSION_FAILED = "ImpressionWriteFailed"
METRIC_INGEST_MESSAGES_REFUSED = "IngestMessagesRefused"  # an SQS body that can never succeed, not retried
METRIC_SHRINK_REFUSED = "RebuildShrinkRefused"  # a rebuild found far fewer items than the live version

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)


def emit_experiment_variant(
    experiment: str,
    variant: str,
    *,
    users: int,
    impressions: int,
    clicks: int,
    conversions: int,
    ctr: float,
    conversion_rate: float,
    engagement_value: float,
    namespace: str | None = None,
) -> None:
    """One CloudWatch EMF document for one variant of an A/B report (dimensions experiment, variant),
    printed to stdout; ``ctr`` and ``conversion_rate`` are fractions (published as percent).

    In Lambda, CloudWatch Logs turns each line into metrics ``ExperimentUsers``, ``ExperimentImpressions``,
    ``ExperimentClicks``, ``ExperimentConversions`` (Count), ``ExperimentCTR``,
    ``ExperimentConversionRate`` (Percent) and ``ExperimentEngagementValue``.
    """
    emf = EphemeralMetrics(namespace=namespace or NAMESPACE, service=SERVICE)
    emf.add_dimension(name="experiment", value=experiment)
    emf.add_dimension(name="variant", value=variant)
    emf.add_metric(name="ExperimentUsers", unit=MetricUnit.Count, value=users)
    emf.add_metric(name="ExperimentImpressions", unit=MetricUnit.Count, value=impressions)
    emf.add_metric(name="ExperimentClicks", unit=MetricUnit.Count, value=clicks)
    emf.add_metric(name="ExperimentConversions", unit=MetricUnit.Count, value=conversions)
    emf.add_metric(name="ExperimentCTR", unit=MetricUnit.Percent, value=100 * ctr)
    emf.add_metric(name="ExperimentConversionRate", unit=MetricUnit.Percent, value=100 * conversion_rate)
    emf.add_metric(name="ExperimentEngagementValue", unit=MetricUnit.NoUnit, value=engagement_value)
    # printed, not flushed: an explicit request (``--emf``, a scheduled report) outranks the
    # POWERTOOLS_METRICS_DISABLED an interactive run sets to quiet the handlers' own metrics
    print(json.dumps(emf.serialize_metric_set(), separators=(",", ":")), flush=True)
