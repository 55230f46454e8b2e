"""The recommendation request over the local HTTP API, with its split: ``python -m bench request_http``.

The local stack in this process (real template and handlers, embedded moto server) on ``EMBREC_PORT`` /
``EMBREC_AWS_PORT``, the int8 encoder published, the demo catalog (MovieLens ml-latest-small) ingested
through S3 -> SQS -> ingest and rebuilt; a user with 50 events posted through ``POST /events``. Then
``BENCH_REQUESTS`` (300) ``GET /users/{id}/recommendations?k=10`` over HTTP, and per request: the client's
wall time, the function's (handler) time, the DynamoDB calls' time (botocore hooks on the runtime's own
client; calls that overlap count once), ranking (``ranking.recommend``). The API emulator's share is the
client's time minus the handler's. Figures are moto's, on a laptop, not AWS's. Goal (issue 14): p50 <= 25 ms.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import requests

from bench._data import ROOT, cached_encoder_dir, machine_line, percentiles_ms

__all__ = ["main"]

HISTORY_EVENTS = 50


class _Split:
    """Per-request durations (s) of the pieces, filled by hooks while a request runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, float] = defaultdict(float)
        self.open_calls: dict[int, float] = {}
        self.calls = 0
        self.busy_since: float | None = None

    def call_started(self, **_: Any) -> None:
        with self.lock:
            if not self.open_calls:
                self.busy_since = time.perf_counter()
            self.open_calls[threading.get_ident()] = time.perf_counter()
            self.calls += 1

    def call_ended(self, **_: Any) -> None:
        with self.lock:
            self.open_calls.pop(threading.get_ident(), None)
            if not self.open_calls and self.busy_since is not None:
                self.current["dynamodb"] += time.perf_counter() - self.busy_since
                self.busy_since = None


def _setup(env: Any) -> str:
    from embrec.aws.artifacts import ArtifactStore
    from embrec.aws.clients import clients
    from embrec_tools.datasets import load_movielens, to_jsonl

    settings = env.settings
    aws = clients(settings)
    with tempfile.TemporaryDirectory() as scratch:
        ArtifactStore(aws.s3, settings.bucket, Path(scratch)).publish_encoder(cached_encoder_dir("int8"))
    dataset = load_movielens(ROOT / "data" / "ml-latest-small")
    rows = dataset.catalog_rows[: int(os.environ.get("BENCH_CATALOG_ROWS", "0")) or None]
    aws.s3.put_object(Bucket=settings.bucket, Key="catalog/incoming/movielens.jsonl", Body=to_jsonl(rows))
    started = time.perf_counter()
    if not env.wait_for_ingest(timeout=1800):
        raise TimeoutError("ingest did not finish")
    rebuilt = env.trigger_rebuild()
    print(f"demo catalog: {len(rows):,} items ingested and rebuilt in "
          f"{time.perf_counter() - started:.0f} s ({rebuilt['status']}, {rebuilt['items']:,} items)")
    ids = [str(row["item_id"]) for row in rows]
    rng = np.random.default_rng(7)
    now = time.time()
    events = [
        {"event_id": f"h-{n}", "user_id": "bench-50", "item_id": ids[int(i)],
         "type": ("view", "click", "like")[n % 3], "timestamp": now - 3600 + 60 * n}
        for n, i in enumerate(rng.choice(len(ids), HISTORY_EVENTS, replace=False))
    ]
    response = requests.post(f"{env.api_url}/events", json={"events": events}, timeout=120)
    assert response.status_code == 202 and response.json()["accepted"] == HISTORY_EVENTS, response.text
    return "bench-50"


def main() -> None:
    print(machine_line())
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from embrec.app import service
    from embrec.app.runtime import get_runtime
    from embrec.domain import ranking
    from embrec_tools.local import LocalEnvironment

    repeats = int(os.environ.get("BENCH_REQUESTS", "300"))
    with LocalEnvironment(ROOT, aws_endpoint=None, schedule=False) as env:
        user = _setup(env)
        session = requests.Session()
        session.trust_env = False
        url = f"{env.api_url}/users/{user}/recommendations"
        for _ in range(20):  # warm: index loaded, experiments read, connections open
            assert session.get(url, params={"k": 10}, timeout=60).status_code == 200

        split = _Split()
        client = get_runtime().aws.dynamodb
        client.meta.events.register("before-send.dynamodb", split.call_started)
        client.meta.events.register("after-call.dynamodb", split.call_ended)
        client.meta.events.register("after-call-error.dynamodb", split.call_ended)
        recommend = ranking.recommend

        def timed_recommend(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return recommend(*args, **kwargs)
            finally:
                split.current["ranking"] += time.perf_counter() - t0

        function = env.function("RecommendFunction")
        invoke = function.invoke

        def timed_invoke(event: Any, request_id: str | None = None) -> Any:
            t0 = time.perf_counter()
            try:
                return invoke(event, request_id)
            finally:
                split.current["function"] += time.perf_counter() - t0

        service.ranking.recommend = timed_recommend  # type: ignore[assignment]
        function.invoke = timed_invoke  # type: ignore[method-assign]
        samples: dict[str, list[float]] = defaultdict(list)
        try:
            for _ in range(repeats):
                split.current.clear()
                t0 = time.perf_counter()
                response = session.get(url, params={"k": 10}, timeout=60)
                total = time.perf_counter() - t0
                assert response.status_code == 200 and response.json()["strategy"] == "personalized"
                samples["http"].append(total)
                for name in ("function", "dynamodb", "ranking"):
                    samples[name].append(split.current[name])
                samples["api emulator"].append(total - split.current["function"])
        finally:
            service.ranking.recommend = recommend  # type: ignore[assignment]
            function.invoke = invoke  # type: ignore[method-assign]
    calls = split.calls / repeats
    print(f"GET /users/{{id}}/recommendations?k=10, {HISTORY_EVENTS}-event user, demo catalog, "
          f"{repeats} requests over local HTTP ({calls:.1f} DynamoDB calls a request):")
    for name in ("http", "api emulator", "function", "dynamodb", "ranking"):
        p50, p99 = percentiles_ms(samples[name])
        print(f"  {name:<13} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
    print("  goal: http p50 <= 25 ms")


if __name__ == "__main__":
    main()
