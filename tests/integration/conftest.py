"""Integration fixtures: an in-process moto AWS with embrec's bucket and tables, and clients bound to it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from moto import mock_aws

from embrec import aws
from embrec.config import Settings


def _create_resources_inline(settings: Settings, clients: aws.AwsClients) -> None:
    """Fallback while embrec.template is not there: the resources these tests touch, by hand."""
    clients.s3.create_bucket(Bucket=settings.bucket)
    tables = {
        settings.items_table: [("item_id", "HASH")],
        settings.interactions_table: [("user_id", "HASH"), ("sk", "RANGE")],
        settings.profiles_table: [("user_id", "HASH")],
        settings.idempotency_table: [("id", "HASH")],
    }
    for name, keys in tables.items():
        clients.dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": a, "KeyType": t} for a, t in keys],
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in keys],
            BillingMode="PAY_PER_REQUEST",
        )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return replace(Settings(), cache_dir=str(tmp_path / "cache"), region="us-east-1", aws_endpoint=None)


@pytest.fixture
def aws_clients(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[aws.AwsClients]:
    """Clients from :func:`embrec.aws.clients` inside ``mock_aws``, with the bucket and tables created."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", settings.region)
    with mock_aws():
        aws.clients.cache_clear()
        bundle = aws.clients(settings)
        _create_resources_inline(settings, bundle)
        yield bundle
        aws.clients.cache_clear()
