"""The local stack's resources, created in moto from template.yaml itself (no second copy of the schemas)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from moto import mock_aws

from embrec.config import Settings
from embrec_tools.template import (
    LocalResources,
    create_local_resources,
    load_template,
    local_names,
    settings_env,
)

REGION = "us-east-1"


@pytest.fixture
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield {name: boto3.client(name, region_name=REGION) for name in ("s3", "sqs", "dynamodb")}


@pytest.fixture
def created(template: dict[str, Any], aws: dict[str, Any]) -> LocalResources:
    return create_local_resources(template, aws, region=REGION)


def _key_schema(table: dict[str, Any]) -> dict[str, str]:
    return {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]}


def test_tables_have_the_contract_keys_and_ttl(created: LocalResources, aws: dict[str, Any]) -> None:
    ddb = aws["dynamodb"]
    settings = Settings()
    # Then: names are the Settings defaults and keys are the module contract's
    expected = {
        settings.items_table: ({"item_id": "HASH"}, None),
        settings.interactions_table: ({"user_id": "HASH", "sk": "RANGE"}, "expires_at"),
        settings.profiles_table: ({"user_id": "HASH"}, None),
        settings.idempotency_table: ({"id": "HASH"}, "expiration"),
        settings.impressions_table: ({"recommendation_id": "HASH"}, "expires_at"),
    }
    assert sorted(created.tables.values()) == sorted(expected)
    for name, (keys, ttl_attribute) in expected.items():
        table = ddb.describe_table(TableName=name)["Table"]
        assert _key_schema(table) == keys
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl_attribute is None:
            assert ttl["TimeToLiveStatus"] == "DISABLED"
        else:
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            assert ttl["AttributeName"] == ttl_attribute


def test_ingest_queue_redrives_to_its_dlq(created: LocalResources, aws: dict[str, Any]) -> None:
    sqs = aws["sqs"]
    attrs = sqs.get_queue_attributes(QueueUrl=created.queue_urls["IngestQueue"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == created.queue_arns["IngestDeadLetterQueue"]
    assert int(redrive["maxReceiveCount"]) == 5
    assert int(attrs["VisibilityTimeout"]) == 1800


def test_bucket_is_versioned_encrypted_and_private(created: LocalResources, aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    assert created.bucket == Settings().bucket
    assert s3.get_bucket_versioning(Bucket=created.bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=created.bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=created.bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages", []
    )
    return [json.loads(m["Body"]) for m in messages]


def test_only_catalog_incoming_triggers_ingestion(created: LocalResources, aws: dict[str, Any]) -> None:
    s3, sqs = aws["s3"], aws["sqs"]
    url = created.queue_urls["IngestQueue"]
    # Given: writes to every prefix a function produces
    for key in (
        "catalog/reports/a.jsonl.json",
        "catalog/rejected/a.jsonl.jsonl",
        "deltas/1-x/manifest.json",
        "index/current.json",
    ):
        s3.put_object(Bucket=created.bucket, Key=key, Body=b"{}")
    # Then: none of them lands in the ingest queue
    assert [r for body in _drain(sqs, url) for r in body.get("Records", [])] == []
    # When: a catalog file is dropped under catalog/incoming/
    s3.put_object(Bucket=created.bucket, Key="catalog/incoming/books.jsonl", Body=b'{"item_id":"1"}\n')
    # Then: exactly one S3 event for that key is queued
    records = [r for body in _drain(sqs, url) for r in body.get("Records", [])]
    # (event keys are URL-encoded, as in AWS: consumers must unquote_plus them)
    assert [unquote_plus(r["s3"]["object"]["key"]) for r in records] == ["catalog/incoming/books.jsonl"]
    assert records[0]["s3"]["bucket"]["name"] == created.bucket


def test_creation_is_idempotent(
    template: dict[str, Any], aws: dict[str, Any], created: LocalResources
) -> None:
    again = create_local_resources(template, aws, region=REGION)
    assert again == created


def test_settings_env_points_settings_at_the_created_resources(
    template: dict[str, Any], created: LocalResources
) -> None:
    env = settings_env(template, created)
    settings = Settings.from_env(env)
    names = local_names()
    assert settings.bucket == names["ArtifactBucket"]
    assert settings.items_table == names["ItemsTable"]
    assert settings.interactions_table == names["InteractionsTable"]
    assert settings.profiles_table == names["ProfilesTable"]
    assert settings.idempotency_table == names["IdempotencyTable"]
    assert settings.ingest_queue_url == created.queue_urls["IngestQueue"]
    assert settings.event_ttl_days == 365
    assert settings.region == REGION
