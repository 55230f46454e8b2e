"""Observability in one module: the structured logger, metrics and tracer every function shares.

Log with keys, not f-strings (``logger.info("index loaded", extra={"index_version": v})``). Metrics are
CloudWatch EMF lines flushed by each handler's ``@metrics.log_metrics``; their names are constants here.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

__all__ = [
    "METRIC_CANDIDATES",
    "METRIC_COLD_START_LOAD_MS",
    "METRIC_EVENTS_ACCEPTED",
    "METRIC_EVENTS_REJECTED",
    "METRIC_INDEX_FALLBACK",
    "METRIC_INDEX_REFUSED",
    "METRIC_ROWS_ACCEPTED",
    "METRIC_ROWS_REJECTED",
    "METRIC_SHARED_CACHE_HIT",
    "METRIC_TRENDING_FALLBACK",
    "MetricUnit",
    "logger",
    "metrics",
    "tracer",
]

NAMESPACE = "embrec"
SERVICE = "embrec"

METRIC_COLD_START_LOAD_MS = "ArtifactLoadMs"
METRIC_INDEX_REFUSED = "IndexRefused"
METRIC_INDEX_FALLBACK = "IndexFallback"  # a cold start served an older verified version
METRIC_TRENDING_FALLBACK = "TrendingFallback"
METRIC_CANDIDATES = "Candidates"
METRIC_SHARED_CACHE_HIT = "SharedCacheHit"
METRIC_EVENTS_ACCEPTED = "EventsAccepted"
METRIC_EVENTS_REJECTED = "EventsRejected"
METRIC_ROWS_ACCEPTED = "CatalogRowsAccepted"
METRIC_ROWS_REJECTED = "CatalogRowsRejected"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
