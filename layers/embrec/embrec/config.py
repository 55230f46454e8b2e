"""Settings, read once from the environment into a frozen object.

Every environment variable embrec reads is named here as a constant, and nowhere else. ``Settings.from_env``
checks values up front, so a bad deployment fails at start with the variable's name, not mid-request: a
:class:`~embrec.errors.ConfigurationError`, which the functions raise while they start
(``embrec.app.runtime.settings_at_start``) and which clients only ever see as a generic 500. Resource names
(bucket, tables) have defaults only for the local stack (an ``EMBREC_AWS_ENDPOINT``, or ``local=True`` from
the tooling); in AWS they must be set.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from embrec.errors import ConfigurationError

__all__ = ["DEFAULT_HISTORY_LIMIT", "RESOURCE_VARIABLES", "Settings", "get_settings"]

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
ENV_IMPORT_QUEUE_URL = "EMBREC_IMPORT_QUEUE_URL"
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
# The deployment's event types and their weights ("watch=1,share=2,skip=-1"); unset: the six built-ins
ENV_EVENT_TYPES = "EMBREC_EVENT_TYPES"
# Days of interactions the rebuild reads for its signals (CF and trending): a bounded read, not the history
ENV_SIGNAL_WINDOW_DAYS = "EMBREC_SIGNAL_WINDOW_DAYS"
ENV_HISTORY_LIMIT = "EMBREC_HISTORY_LIMIT"
# Multi-modal fusion (embrec.domain.fusion): auto|off, and the weights of the image and metadata parts
ENV_FUSION = "EMBREC_FUSION"
ENV_FUSION_IMAGE_WEIGHT = "EMBREC_FUSION_IMAGE_WEIGHT"
ENV_FUSION_META_WEIGHT = "EMBREC_FUSION_META_WEIGHT"
ENV_FUSION_MIN_IMAGE_SHARE = "EMBREC_FUSION_MIN_IMAGE_SHARE"
# Memory an index may take in one serving container (MB): checked by the rebuild before it publishes and by
# every container before it loads a version. 0 = no limit; unset in Lambda: 70% of the function's memory.
ENV_INDEX_MEMORY_MB = "EMBREC_INDEX_MEMORY_MB"
ENV_LAMBDA_MEMORY_MB = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"  # set by the Lambda runtime
# A rebuild that would shrink the live version by more than this fraction is refused (unless forced)
ENV_REBUILD_MAX_SHRINK = "EMBREC_REBUILD_MAX_SHRINK"

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
_EVENT_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_EVENT_TYPES = 50
DEFAULT_PORT = 3000
#: How many of a user's newest events a request reads (``EMBREC_HISTORY_LIMIT``): the offline evaluation gives
#: each test user the same cut, so it measures the lists the API serves.
DEFAULT_HISTORY_LIMIT = 500


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


def _event_types(env: Mapping[str, str]) -> tuple[tuple[str, float], ...]:
    """``EMBREC_EVENT_TYPES`` as ``((type, weight), ...)``; empty when unset (the built-in types apply).

    Format: ``name=weight`` pairs separated by commas; names are lower-case ``[a-z][a-z0-9_]``, weights finite
    (negative: the type counts against an item, like ``dislike``).
    """
    raw = env.get(ENV_EVENT_TYPES, "").strip()
    if not raw:
        return ()
    pairs: dict[str, float] = {}
    for part in raw.split(","):
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or not _EVENT_TYPE_NAME.match(name):
            reason = f"each entry must be name=weight with a lower-case name, got {part.strip()!r}"
            raise ConfigurationError(ENV_EVENT_TYPES, reason)
        try:
            value = float(weight)
        except ValueError:
            reason = f"{name}: weight must be a number, got {weight!r}"
            raise ConfigurationError(ENV_EVENT_TYPES, reason) from None
        if not math.isfinite(value):
            raise ConfigurationError(ENV_EVENT_TYPES, f"{name}: weight must be finite")
        if name in pairs:
            raise ConfigurationError(ENV_EVENT_TYPES, f"{name} is declared twice")
        pairs[name] = value
    if len(pairs) > MAX_EVENT_TYPES:
        raise ConfigurationError(ENV_EVENT_TYPES, f"at most {MAX_EVENT_TYPES} types, got {len(pairs)}")
    return tuple(pairs.items())


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
    import_queue_url: str = ""
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
    event_types: tuple[tuple[str, float], ...] = ()  # (type, weight) pairs; () = the built-in six
    signal_window_days: int = 180
    # A request reads at most this many of the user's newest events: its cost is bounded by what ranking
    # uses (the newest 200 build the profile; every event read is excluded from the list), not by history.
    history_limit: int = DEFAULT_HISTORY_LIMIT
    fusion_mode: str = "auto"
    fusion_image_weight: float = 0.5  # embrec.domain.fusion.DEFAULT_IMAGE_WEIGHT
    fusion_meta_weight: float = 0.0  # embrec.domain.fusion.DEFAULT_META_WEIGHT
    fusion_min_image_share: float = 0.5  # embrec.domain.fusion.DEFAULT_MIN_IMAGE_SHARE
    index_memory_mb: int = 0
    rebuild_max_shrink: float = 0.5

    @property
    def index_memory_bytes(self) -> int | None:
        """The index memory budget in bytes, None = no limit."""
        return self.index_memory_mb * 1024 * 1024 if self.index_memory_mb else None

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
        if fusion_mode not in ("auto", "on", "off"):
            raise ConfigurationError(ENV_FUSION, f"must be auto, on or off, got {fusion_mode!r}")
        lambda_mb = _int(env, ENV_LAMBDA_MEMORY_MB, 0)
        max_shrink = _float(env, ENV_REBUILD_MAX_SHRINK, defaults.rebuild_max_shrink)
        if max_shrink > 1:
            raise ConfigurationError(ENV_REBUILD_MAX_SHRINK, f"must be in [0, 1], got {max_shrink}")
        image_share = _float(env, ENV_FUSION_MIN_IMAGE_SHARE, defaults.fusion_min_image_share)
        if image_share > 1:
            raise ConfigurationError(ENV_FUSION_MIN_IMAGE_SHARE, f"must be in [0, 1], got {image_share}")
        return cls(
            bucket=env.get(ENV_BUCKET, defaults.bucket),
            items_table=env.get(ENV_ITEMS_TABLE, defaults.items_table),
            interactions_table=env.get(ENV_INTERACTIONS_TABLE, defaults.interactions_table),
            profiles_table=env.get(ENV_PROFILES_TABLE, defaults.profiles_table),
            idempotency_table=env.get(ENV_IDEMPOTENCY_TABLE, defaults.idempotency_table),
            impressions_table=env.get(ENV_IMPRESSIONS_TABLE, defaults.impressions_table),
            ingest_queue_url=env.get(ENV_INGEST_QUEUE_URL, ""),
            import_queue_url=env.get(ENV_IMPORT_QUEUE_URL, ""),
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
            event_types=_event_types(env),
            signal_window_days=_int(env, ENV_SIGNAL_WINDOW_DAYS, defaults.signal_window_days, 1),
            history_limit=_int(env, ENV_HISTORY_LIMIT, defaults.history_limit, 1),
            fusion_mode=fusion_mode,
            fusion_image_weight=_float(env, ENV_FUSION_IMAGE_WEIGHT, defaults.fusion_image_weight),
            fusion_meta_weight=_float(env, ENV_FUSION_META_WEIGHT, defaults.fusion_meta_weight),
            fusion_min_image_share=image_share,
            index_memory_mb=_int(env, ENV_INDEX_MEMORY_MB, lambda_mb * 7 // 10),
            rebuild_max_shrink=max_shrink,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings.from_env()

