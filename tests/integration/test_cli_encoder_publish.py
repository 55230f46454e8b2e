"""`embrec encoder publish` uploads a built encoder so ingest and the API can load it (the deploy step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embrec import config
from embrec.aws.artifacts import ArtifactStore
from embrec.aws.clients import AwsClients
from embrec.config import Settings
from embrec_tools.cli import main


def test_encoder_publish_makes_the_built_encoder_current(
    encoder_dir: Path, aws_clients: AwsClients, settings: Settings, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a built encoder, an empty bucket and the stack's resource names exported, as an operator does
    # (outside the local stack no name has a default)
    for variable, name in (
        (config.ENV_BUCKET, settings.bucket),
        (config.ENV_ITEMS_TABLE, settings.items_table),
        (config.ENV_INTERACTIONS_TABLE, settings.interactions_table),
        (config.ENV_PROFILES_TABLE, settings.profiles_table),
        (config.ENV_IDEMPOTENCY_TABLE, settings.idempotency_table),
        (config.ENV_IMPRESSIONS_TABLE, settings.impressions_table),
    ):
        monkeypatch.setenv(variable, name)
    # when it is published to "real AWS" (moto in-process)
    assert main(["encoder", "publish", "--dir", str(encoder_dir), "--aws"]) == 0
    # Then encoder/current.json names it, and a container can fetch and verify it
    expected = json.loads((encoder_dir / "encoder.json").read_text())["encoder_id"]
    store = ArtifactStore(aws_clients.s3, settings.bucket, tmp_path / "cache")
    assert store.current_encoder_id() == expected
    fetched = store.fetch_encoder()
    assert (fetched / "model.onnx").read_bytes() == (encoder_dir / "model.onnx").read_bytes()
    assert expected in capsys.readouterr().out


def test_publish_to_aws_needs_the_stack_names(
    encoder_dir: Path, aws_clients: AwsClients, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no resource names exported: the bucket must not silently become the local stack's
    for variable in config.RESOURCE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv(config.ENV_AWS_ENDPOINT, raising=False)
    assert main(["encoder", "publish", "--dir", str(encoder_dir), "--aws"]) == 2
    assert config.ENV_BUCKET in capsys.readouterr().err
