"""Integration fixtures: in-process moto AWS with the bucket, queues and tables, and clients bound to it.

The resources come from template.yaml itself (:func:`embrec_tools.template.create_local_resources`), so these
tests cannot drift from the infrastructure: a key schema changed there changes here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from deployment import Deployment, World
from moto import mock_aws

from embrec.app.runtime import reset_runtime
from embrec.aws import clients as aws
from embrec.config import Settings
from embrec_tools.template import create_local_resources, load_template, local_names


@pytest.fixture(scope="session")
def cfn_template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep botocore's retries (and their count) but not their seconds of jittered backoff."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.001)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return replace(Settings(), cache_dir=str(tmp_path / "cache"), region="us-east-1", aws_endpoint=None)


@pytest.fixture
def aws_clients(
    settings: Settings, cfn_template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[aws.AwsClients]:
    """Clients from :func:`embrec.aws.clients.clients` inside ``mock_aws``, with the template's resources."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", settings.region)
    with mock_aws():
        aws.clients.cache_clear()
        bundle = aws.clients(settings)
        create_local_resources(cfn_template, bundle, local_names(settings), region=settings.region)
        yield bundle
        aws.clients.cache_clear()


# ------------------------------------------------------------------ the deployment the handler tests drive


@pytest.fixture(scope="module")
def world(encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Moto with the template's resources and the encoder published, once per test module."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.delenv("EMBREC_AWS_ENDPOINT", raising=False)
        with mock_aws():
            reset_runtime()
            aws.clients.cache_clear()
            yield World.create(encoder_dir, tmp_path_factory.mktemp("world"))
            reset_runtime()
            aws.clients.cache_clear()


@pytest.fixture
def deployment(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """A fresh, empty deployment (the encoder published) with a cold runtime, for one test."""
    world.wipe()
    cache = tmp_path / "cache"
    world.link_encoder(cache)
    env = dict(world.env)
    env.update(EMBREC_CACHE_DIR=str(cache), EMBREC_INDEX_REFRESH_SECONDS="0", EMBREC_SHARED_CACHE_SECONDS="0",
               EMBREC_ENCODER_THREADS="2")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    reset_runtime()
    aws.clients.cache_clear()
    yield Deployment(env, aws.clients(Settings()))
    reset_runtime()
    aws.clients.cache_clear()
