"""Settings, read once from the environment into a frozen object.

Every environment variable embrec reads is named here as a constant, and nowhere else. ``Settings.from_env``
checks values up front, so a bad deployment fails at start with the variable's name, not mid-request: a
:class:`~embrec.errors.ConfigurationError`, which the functions raise while they start
(``embrec.app.runtime.settings_at_start``) and which clients only ever see as a generic 500. Resource names
(bucket, tables) have defaults only for the local stack (an ``EMBREC_AWS_ENDPOINT``, or ``local=True`` from
the tooling); in AWS they must be set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from embrec.errors import ConfigurationError

__all__ = ["RESOURCE_VARIABLES", "Settings", "get_settings"]

#: Every variable embrec reads starts with this (but for the AWS region).
ENV_PREFIX = "EMBREC_"
# Resource names (set by template.yaml in AWS, by the local stack on a laptop)
ENV_BUCKET = "EMBREC_BUCKET"
ENV_ITEMS_TABLE = "EMBREC_ITEMS_TABLE"
ENV_INTERACTIONS_TABLE = "EMBREC_INTERACTIONS_TABLE"
ENV_PROFILES_TABLE = "EMBREC_PROFILES_TABLE"
ENV_IDEMPOTENCY_TABLE = "EMBREC_IDEMPOTENCY_TABLE"
ENV_IMPRESSIONS_TABLE = "EMBREC_IMPRESSIONS_TABLE"
ENV_INGEST_QUEUE_URL = "EMBREC_INGEST_QUEUE_URL"
ENV_ERASURE_QUEUE_URL = "EMBREC_ERASURE_QUEUE_URL"
# Where AWS is: a real region, or a local endpoint (moto server, LocalStack)
ENV_AWS_ENDPOINT = "EMBREC_AWS_ENDPOINT"
ENV_AWS_PORT = "EMBREC_AWS_PORT"
ENV_AWS_REGION = "AWS_REGION"
ENV_AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
# Local API
ENV_PORT = "EMBREC_PORT"
ENV_REBUILD_SECONDS = "EMBREC_REBUILD_SECONDS"
ENV_AUTH = "EMBREC_AUTH"
# Runtime behaviour
ENV_ENCODER_ID = "EMBREC_ENCODER_ID"
ENV_ENCODER_THREADS = "EMBREC_ENCODER_THREADS"
ENV_CACHE_DIR = "EMBREC_CACHE_DIR"
ENV_INDEX_REFRESH_SECONDS = "EMBREC_INDEX_REFRESH_SECONDS"
ENV_SHARED_CACHE_SECONDS = "EMBREC_SHARED_CACHE_SECONDS"
ENV_EVENT_TTL_DAYS = "EMBREC_EVENT_TTL_DAYS"
ENV_KEEP_VERSIONS = "EMBREC_KEEP_VERSIONS"
ENV_HISTORY_LIMIT = "EMBREC_HISTORY_LIMIT"
# Multi-modal fusion (embrec.domain.fusion): auto|off, and the weights of the image and metadata parts
ENV_FUSION = "EMBREC_FUSION"
ENV_FUSION_IMAGE_WEIGHT = "EMBREC_FUSION_IMAGE_WEIGHT"
ENV_FUSION_META_WEIGHT = "EMBREC_FUSION_META_WEIGHT"

#: Resource names: required outside the local stack.
RESOURCE_VARIABLES = (
    ENV_BUCKET,
    ENV_ITEMS_TABLE,
    ENV_INTERACTIONS_TABLE,
    ENV_PROFILES_TABLE,
    ENV_IDEMPOTENCY_TABLE,
    ENV_IMPRESSIONS_TABLE,
)

DEFAULT_AWS_PORT = 4566
DEFAULT_PORT = 3000


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(name, f"must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(name, f"must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(name, f"must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise ConfigurationError(name, f"must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything embrec reads from the environment, validated."""

    bucket: str = "embrec-local"
    items_table: str = "embrec-items"
    interactions_table: str = "embrec-interactions"
    profiles_table: str = "embrec-profiles"
    idempotency_table: str = "embrec-idempotency"
    impressions_table: str = "embrec-impressions"
    ingest_queue_url: str = ""
    erasure_queue_url: str = ""
    aws_endpoint: str | None = None
    aws_port: int = DEFAULT_AWS_PORT
    region: str = "us-east-1"
    port: int = DEFAULT_PORT
    rebuild_seconds: int = 300
    auth: str = "none"
    encoder_id: str = ""
    encoder_threads: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    cache_dir: str = "/tmp/embrec"
    index_refresh_seconds: float = 10.0
    shared_cache_seconds: float = 30.0
    event_ttl_days: int = 365
    keep_versions: int = 5
    # A request reads at most this many of the user's newest events: its cost is bounded by what ranking
    # uses (the newest 200 build the profile; every event read is excluded from the list), not by history.
    history_limit: int = 500
    fusion_mode: str = "auto"
    fusion_image_weight: float = 0.5  # embrec.domain.fusion.DEFAULT_IMAGE_WEIGHT
    fusion_meta_weight: float = 0.0  # embrec.domain.fusion.DEFAULT_META_WEIGHT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, local: bool | None = None) -> Settings:
        """The settings in ``env`` (default ``os.environ``), checked; ConfigurationError names the variable.

        ``local``: the local stack, where resource names default to its own (default: True when
        ``EMBREC_AWS_ENDPOINT`` is set). Elsewhere every resource name must be set: a missing bucket
        must not silently become another one.
        """
        env = os.environ if env is None else env
        defaults = cls()
        if local is None:
            local = bool(env.get(ENV_AWS_ENDPOINT))
        if not local:
            missing = [name for name in RESOURCE_VARIABLES if not env.get(name)]
            if missing:
                raise ConfigurationError(", ".join(missing), "must be set (template.yaml sets it in AWS)")
        auth = env.get(ENV_AUTH, "none").lower() or "none"
        if auth not in ("none", "jwt", "iam"):
            raise ConfigurationError(ENV_AUTH, f"must be none, jwt or iam, got {auth!r}")
        aws_port = _int(env, ENV_AWS_PORT, DEFAULT_AWS_PORT, 1)
        fusion_mode = env.get(ENV_FUSION, "auto").lower() or "auto"
        if fusion_mode not in ("auto", "off"):
            raise ConfigurationError(ENV_FUSION, f"must be auto or off, got {fusion_mode!r}")
        return cls(
            bucket=env.get(ENV_BUCKET, defaults.bucket),
            items_table=env.get(ENV_ITEMS_TABLE, defaults.items_table),
            interactions_table=env.get(ENV_INTERACTIONS_TABLE, defaults.interactions_table),
            profiles_table=env.get(ENV_PROFILES_TABLE, defaults.profiles_table),
            idempotency_table=env.get(ENV_IDEMPOTENCY_TABLE, defaults.idempotency_table),
            impressions_table=env.get(ENV_IMPRESSIONS_TABLE, defaults.impressions_table),
            ingest_queue_url=env.get(ENV_INGEST_QUEUE_URL, ""),
            erasure_queue_url=env.get(ENV_ERASURE_QUEUE_URL, ""),
            aws_endpoint=env.get(ENV_AWS_ENDPOINT) or None,
            aws_port=aws_port,
            region=env.get(ENV_AWS_REGION) or env.get(ENV_AWS_DEFAULT_REGION) or defaults.region,
            port=_int(env, ENV_PORT, DEFAULT_PORT, 1),
            rebuild_seconds=_int(env, ENV_REBUILD_SECONDS, defaults.rebuild_seconds, 1),
            auth=auth,
            encoder_id=env.get(ENV_ENCODER_ID, ""),
            encoder_threads=_int(env, ENV_ENCODER_THREADS, defaults.encoder_threads, 1),
            cache_dir=env.get(ENV_CACHE_DIR, defaults.cache_dir),
            index_refresh_seconds=_float(env, ENV_INDEX_REFRESH_SECONDS, defaults.index_refresh_seconds),
            shared_cache_seconds=_float(env, ENV_SHARED_CACHE_SECONDS, defaults.shared_cache_seconds),
            event_ttl_days=_int(env, ENV_EVENT_TTL_DAYS, defaults.event_ttl_days, 1),
            keep_versions=_int(env, ENV_KEEP_VERSIONS, defaults.keep_versions, 1),
            history_limit=_int(env, ENV_HISTORY_LIMIT, defaults.history_limit, 1),
            fusion_mode=fusion_mode,
            fusion_image_weight=_float(env, ENV_FUSION_IMAGE_WEIGHT, defaults.fusion_image_weight),
            fusion_meta_weight=_float(env, ENV_FUSION_META_WEIGHT, defaults.fusion_meta_weight),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings.from_env()

