"""`embrec encoder publish` uploads a built encoder so ingest and the API can load it (the deploy step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embrec.aws.artifacts import ArtifactStore
from embrec.aws.clients import AwsClients
from embrec.config import Settings
from embrec_tools.cli import main


def test_encoder_publish_makes_the_built_encoder_current(
    encoder_dir: Path, aws_clients: AwsClients, settings: Settings, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a built encoder and an empty bucket; when it is published to "real AWS" (moto in-process)
    assert main(["encoder", "publish", "--dir", str(encoder_dir), "--aws"]) == 0
    # Then encoder/current.json names it, and a container can fetch and verify it
    expected = json.loads((encoder_dir / "encoder.json").read_text())["encoder_id"]
    store = ArtifactStore(aws_clients.s3, settings.bucket, tmp_path / "cache")
    assert store.current_encoder_id() == expected
    fetched = store.fetch_encoder()
    assert (fetched / "model.onnx").read_bytes() == (encoder_dir / "model.onnx").read_bytes()
    assert expected in capsys.readouterr().out
