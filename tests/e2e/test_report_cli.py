"""``embrec report`` on a local stack: a moto server with template.yaml's resources, over HTTP.

Given impressions and attributed events in the local tables and the experiment in config/experiments.json,
the CLI (finding the stack through EMBREC_AWS_ENDPOINT like every other command) prints the per-variant
table, the JSON report and EMF lines, and fails with one clear line for an unknown experiment.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest
import requests

from embrec.aws import clients as aws
from embrec.aws.store import ImpressionStore, InteractionStore
from embrec.config import Settings
from embrec.domain.model import Impression, Interaction
from embrec_tools.cli import main
from embrec_tools.local.aws_endpoint import AwsEndpoint
from embrec_tools.template import create_local_resources, load_template, local_names

NOW = 1_790_000_000.0


def _reset_moto(url: str) -> None:
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        server = AwsEndpoint(port=0)
        url = server.start()
        _reset_moto(url)  # moto's state is process-wide: start from empty, leave it empty
        try:
            yield url
        finally:
            _reset_moto(url)
            server.stop()


def test_report_command_on_the_local_stack(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("EMBREC_AWS_ENDPOINT", endpoint)
    # the CLI quiets Powertools through the environment (setdefault): keep that inside this test
    for name in ("POWERTOOLS_LOG_LEVEL", "LOG_LEVEL"):
        monkeypatch.setenv(name, "WARNING")
    for name in ("POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_TRACE_DISABLED"):
        monkeypatch.setenv(name, "true")
    settings = Settings.from_env()
    clients = aws.clients(settings)
    create_local_resources(load_template(), clients, local_names(settings), region=settings.region)
    clients.s3.put_object(
        Bucket=settings.bucket,
        Key="config/experiments.json",
        Body=json.dumps(
            {
                "experiments": [
                    {
                        "name": "ab",
                        "enabled": True,
                        "control": "control",
                        "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}],
                    }
                ]
            }
        ).encode(),
    )
    # Given 200 lists per variant, clicked 20% (control) and 40% (treatment) of the time
    impressions = ImpressionStore(clients.dynamodb, settings.impressions_table)
    events = InteractionStore(clients.dynamodb, settings.interactions_table, settings.idempotency_table)
    rng = random.Random(5)
    batch = []
    for variant, rate in (("control", 0.2), ("treatment", 0.4)):
        for n in range(200):
            rid, user = f"{variant}-{n}", f"{variant}-user-{n % 50}"
            impressions.put(Impression(rid, user, "ab", variant, NOW + n, 10))
            if rng.random() < rate:
                batch.append((user, Interaction("i1", "click", NOW + n + 1, 2.0, f"e-{rid}", rid)))
    events.put_events(batch, now=NOW + 1000)

    # When the report runs through the CLI
    assert main(["report", "--experiment", "ab", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    control, treatment = report["variants"]
    assert (control["variant"], control["impressions"], control["users"]) == ("control", 200, 50)
    assert treatment["impressions"] == 200 and treatment["clicks"] > control["clicks"]
    assert treatment["ctr_test"]["z"] > 0 and treatment["ctr_test"]["p_value"] < 0.05

    assert main(["report", "--experiment", "ab", "--since", "2026-09-21T13:00:00Z", "--emf"]) == 0
    out = capsys.readouterr().out
    emf = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [d["variant"] for d in emf] == ["control", "treatment"]
    assert "treatment" in out and "CTR 95% CI" in out

    # An unknown experiment: one error line, exit 2
    assert main(["report", "--experiment", "nope"]) == 2
    assert "no experiment named 'nope'" in capsys.readouterr().err
