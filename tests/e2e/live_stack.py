"""The real stack for end-to-end tests: template.yaml and the real handlers on free ports, index published.

:func:`start_stack` is what the ``stack`` fixture of ``conftest.py`` runs once per module: the local stack
(moto included) on free ports, the cached encoder published, the MovieLens slice uploaded through boto3 to
``catalog/incoming/`` (S3 -> SQS -> ingest handler, as in AWS), ingested and rebuilt, so every route has an
index to answer from (without one, recommendations answer 503 by design).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from embrec.aws.artifacts import ArtifactStore
from embrec_tools.datasets import load_movielens, to_jsonl
from embrec_tools.local import LocalEnvironment

ROOT = Path(__file__).resolve().parents[2]
SLICE = ROOT / "tests" / "fixtures" / "movielens-slice"


class Stack:
    """The running stack, its boto3 S3 client and an HTTP session."""

    def __init__(self, env: LocalEnvironment, http: requests.Session) -> None:
        self.env = env
        self.http = http
        self.bucket = env.settings.bucket
        self.s3 = boto3.client("s3", endpoint_url=env.endpoint_url, region_name=env.region,
                               aws_access_key_id="test", aws_secret_access_key="test")
        self.rows = load_movielens(SLICE).catalog_rows
        self.tags = {str(r["item_id"]): set(r["tags"]) for r in self.rows}
        self.rebuilt: dict[str, Any] = {}

    def url(self, path: str) -> str:
        return f"{self.env.api_url}{path}"

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.http.get(self.url(path), params=params or None, timeout=60)

    def report(self, name: str) -> dict[str, Any] | None:
        """The ingest report of ``catalog/incoming/<name>``, or None while there is none."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=f"catalog/reports/{name}.json")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return dict(json.loads(body))

    @staticmethod
    def eventually(check: Callable[[], bool], timeout: float = 60.0, every: float = 0.5) -> bool:
        """Poll ``check`` until it holds or ``timeout`` (s) passes; its last answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(every)
        return check()


@contextmanager
def start_stack(
    encoder_dir: Path, scratch: Path, settings: Mapping[str, str] | None = None
) -> Iterator[Stack]:
    """The running stack with the slice ingested and an index published; stopped (no threads left) on exit.

    ``settings``: ``EMBREC_*`` variables exported for this stack only (they win over the template's, as a
    user's exported settings do)."""
    patch = pytest.MonkeyPatch()
    for name, value in {
        "EMBREC_INDEX_REFRESH_SECONDS": "1",  # warm containers look for new deltas every second
        "EMBREC_SHARED_CACHE_SECONDS": "0",
        "EMBREC_ENCODER_THREADS": "2",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **(settings or {}),
    }.items():
        patch.setenv(name, value)
    patch.delenv("EMBREC_AWS_ENDPOINT", raising=False)
    env = LocalEnvironment(ROOT, api_port=0, aws_port=0, aws_endpoint=None, rebuild_seconds=3600)
    http = requests.Session()
    http.trust_env = False  # never route 127.0.0.1 through a proxy from the environment
    try:
        with env:
            stack = Stack(env, http)
            ArtifactStore(stack.s3, stack.bucket, scratch / "publish").publish_encoder(encoder_dir)
            # Given the slice uploaded through boto3 against the local endpoint, ingested via S3 -> SQS
            body = to_jsonl(stack.rows)
            stack.s3.put_object(Bucket=stack.bucket, Key="catalog/incoming/slice.jsonl", Body=body)
            assert stack.eventually(lambda: stack.report("slice.jsonl") is not None, timeout=90)
            assert env.wait_for_ingest(timeout=30)
            stack.rebuilt = dict(env.trigger_rebuild())
            yield stack
    finally:
        http.close()
        patch.undo()
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("embrec-")]
    assert not leftover, f"threads left running: {leftover}"
