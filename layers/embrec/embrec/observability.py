"""Observability in one module: the structured logger, metrics and tracer every function shares.

Log with keys, not f-strings (``logger.info("index loaded", extra={"index_version": v})``). Metrics are
CloudWatch EMF lines flushed by each handler's ``@metrics.log_metrics``; their names are constants here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

if TYPE_CHECKING:
    from embrec.domain.reporting import Report

__all__ = [
    "METRIC_CANDIDATES",
    "METRIC_COLD_START_LOAD_MS",
    "METRIC_EVENTS_ACCEPTED",
    "METRIC_EVENTS_FAILED",
    "METRIC_EVENTS_REJECTED",
    "METRIC_INDEX_FALLBACK",
    "METRIC_INDEX_REFUSED",
    "METRIC_ROWS_ACCEPTED",
    "METRIC_ROWS_REJECTED",
    "METRIC_SHARED_CACHE_HIT",
    "MetricUnit",
    "emit_report_metrics",
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
METRIC_EVENTS_REJECTED = "EventsRejected"
METRIC_EVENTS_FAILED = "EventsFailed"  # not written after retries: reported to the client as retryable
METRIC_ROWS_ACCEPTED = "CatalogRowsAccepted"
METRIC_ROWS_REJECTED = "CatalogRowsRejected"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)


def emit_report_metrics(report: Report, namespace: str | None = None) -> None:
    """One CloudWatch EMF document per variant (dimensions experiment, variant), printed to stdout.

    In Lambda, CloudWatch Logs turns each line into metrics ``ExperimentUsers``, ``ExperimentImpressions``,
    ``ExperimentClicks``, ``ExperimentConversions`` (Count), ``ExperimentCTR``,
    ``ExperimentConversionRate`` (Percent) and ``ExperimentEngagementValue``.
    """
    for v in report.variants:
        emf = EphemeralMetrics(namespace=namespace or NAMESPACE, service=SERVICE)
        emf.add_dimension(name="experiment", value=report.experiment)
        emf.add_dimension(name="variant", value=v.variant)
        emf.add_metric(name="ExperimentUsers", unit=MetricUnit.Count, value=v.users)
        emf.add_metric(name="ExperimentImpressions", unit=MetricUnit.Count, value=v.impressions)
        emf.add_metric(name="ExperimentClicks", unit=MetricUnit.Count, value=v.clicks)
        emf.add_metric(name="ExperimentConversions", unit=MetricUnit.Count, value=v.conversions)
        emf.add_metric(name="ExperimentCTR", unit=MetricUnit.Percent, value=100 * v.ctr)
        emf.add_metric(
            name="ExperimentConversionRate", unit=MetricUnit.Percent, value=100 * v.conversion_rate
        )
        emf.add_metric(name="ExperimentEngagementValue", unit=MetricUnit.NoUnit, value=v.engagement_value)
        # printed, not flushed: an explicit request (``--emf``, a scheduled report) outranks the
        # POWERTOOLS_METRICS_DISABLED an interactive run sets to quiet the handlers' own metrics
        print(json.dumps(emf.serialize_metric_set(), separators=(",", ":")), flush=True)
