"""A simulated A/B test end to end, through the real handlers under in-process moto.

Given the template's tables and bucket, the encoder published, a small catalog ingested (S3 -> SQS -> ingest
handler) and an index rebuilt, when ``config/experiments.json`` is uploaded, simulated users ask the
recommend handler for lists and click them (through the events handler, with the list's
``recommendation_id``) with a probability that depends on the variant they were served, then the report
computed from the impressions and interactions tables sees the better variant with the right sign and
p < 0.05; and after an A/A experiment replaces it (picked up by the warm container), no difference.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from deployment import Deployment
from moto import mock_aws

from embrec.app import service
from embrec.app.runtime import Runtime, get_runtime
from embrec.aws import clients as aws
from embrec.config import Settings
from embrec.domain import learned_blend
from embrec.domain.learned_blend import LearnedBlend

CATEGORIES = ("jazz", "hiking", "cooking", "chess")


def _put(stack: Deployment, key: str, body: bytes) -> None:
    stack.clients.s3.put_object(Bucket=stack.env["EMBREC_BUCKET"], Key=key, Body=body)


def _catalog() -> bytes:
    rows = [
        {
            "item_id": f"{category}-{n}",
            "title": f"{category} item number {n}",
            "category": category,
            "tags": [category],
            "price": 5.0 + n,
        }
        for category in CATEGORIES
        for n in range(8)
    ]
    return "\n".join(json.dumps(row) for row in rows).encode()


def _experiment(name: str, variants: list[tuple[str, dict[str, Any]]]) -> bytes:
    document = {
        "experiments": [
            {
                "name": name,
                "enabled": True,
                "control": variants[0][0],
                "variants": [{"name": v, "weight": 1, "overrides": o} for v, o in variants],
            }
        ]
    }
    return json.dumps(document).encode()


def _run(
    stack: Deployment, experiment: str, click_rates: dict[str, float], users: int, lists: int, seed: int
) -> dict[str, int]:
    """Each user fetches ``lists`` lists; each list is clicked with its variant's rate. Lists per variant."""
    rng = random.Random(seed)
    served: dict[str, int] = {}
    events: list[dict[str, Any]] = []
    for u in range(users):
        user = f"{experiment}-user-{u}"
        for n in range(lists):
            status, body = stack.http("GET", f"/users/{user}/recommendations", {"k": 5})[:2]
            assert status == 200, body
            assert body["experiment"] == experiment and body["variant"] in click_rates
            assert body["recommendation_id"] and body["items"]
            served[body["variant"]] = served.get(body["variant"], 0) + 1
            if rng.random() < click_rates[body["variant"]]:
                item = body["items"][0]["item_id"]
                events.append(
                    {
                        "event_id": f"{user}-{n}-c",
                        "user_id": user,
                        "item_id": item,
                        "type": "click",
                        "recommendation_id": body["recommendation_id"],
                    }
                )
                if rng.random() < 0.5:
                    events.append(
                        {
                            "event_id": f"{user}-{n}-p",
                            "user_id": user,
                            "item_id": item,
                            "type": "purchase",
                            "value": 9.5,
                            "recommendation_id": body["recommendation_id"],
                        }
                    )
    for start in range(0, len(events), 50):
        status, body = stack.http(
            "POST", "/events", body={"events": events[start : start + 50]}, function="events"
        )[:2]
        assert status == 202 and body["rejected"] == 0, body
    return served


def test_simulated_ab_then_aa_through_the_handlers(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = deployment
    # Given an index over a small catalog
    _put(stack, "catalog/incoming/catalog.jsonl", _catalog())
    stack.drain_ingest_queue()
    assert stack.rebuild()["status"] == "published"
    # and no experiment: the default variant, an impression recorded all the same
    status, body = stack.http("GET", "/users/nobody/recommendations")[:2]
    assert status == 200 and body["variant"] == "default" and body["experiment"] is None

    # When an A/B experiment is live and users click the treatment's lists far more often
    _put(
        stack,
        "config/experiments.json",
        _experiment(
            "ab",
            [("control", {}), ("treatment", {"weights": {"embedding": 1.0, "cf": 0.0}, "diversity": 0.5})],
        ),
    )
    served = _run(stack, "ab", {"control": 0.2, "treatment": 0.7}, users=30, lists=3, seed=11)
    assert set(served) == {"control", "treatment"}

    # Then the report (the service function the CLI calls) sees it, with the right sign
    report = service.experiment_report(get_runtime(), "ab")
    control, treatment = report.variants
    assert (control.variant, treatment.variant) == ("control", "treatment") and control.is_control
    assert control.impressions == served["control"] and treatment.impressions == served["treatment"]
    assert control.users + treatment.users == 30
    assert treatment.ctr > control.ctr
    assert treatment.ctr_test is not None and treatment.ctr_test.z > 0 and treatment.ctr_test.p_value < 0.05
    assert treatment.conversions > 0 and treatment.engagement_value == pytest.approx(
        9.5 * treatment.conversions
    )

    # And the scheduled rebuild writes the live experiment's EMF metrics, one document per variant
    capsys.readouterr()
    rebuilt = stack.rebuild()
    assert rebuilt["experiment_report"] == "ab"
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ExperimentCTR"' in line]
    assert {(d["experiment"], d["variant"]) for d in emf} == {("ab", "control"), ("ab", "treatment")}
    by_variant = {d["variant"]: d for d in emf}
    assert by_variant["treatment"]["ExperimentImpressions"] in (served["treatment"], [served["treatment"]])

    # When an A/A experiment replaces it (the warm container re-reads the document)
    _put(stack, "config/experiments.json", _experiment("aa", [("a", {}), ("a2", {})]))
    served = _run(stack, "aa", {"a": 0.4, "a2": 0.4}, users=30, lists=3, seed=12)
    assert set(served) == {"a", "a2"}
    # Then no difference, and the A/B's numbers are untouched
    aa = service.experiment_report(get_runtime(), "aa")
    test = aa.variants[1].ctr_test
    assert test is not None and test.p_value > 0.05
    assert service.experiment_report(get_runtime(), "ab").variants == report.variants

    # And erasing a user takes their served lists with their events: they leave the report
    assert stack.http("DELETE", "/users/ab-user-0", function="events")[0] == 202
    stack.drain_erasure_queue()
    assert stack.http("GET", "/users/ab-user-0/erasure", function="events")[1]["impressions_deleted"] == 3
    after = service.experiment_report(get_runtime(), "ab")
    assert sum(v.users for v in after.variants) == 29
    assert sum(v.impressions for v in after.variants) == sum(v.impressions for v in report.variants) - 3

    # When the document holds only deployment defaults (here: serve trending), for a user with a history
    event = {"event_id": "d-1", "user_id": "defaults-user", "item_id": "jazz-1", "type": "like"}
    assert stack.http("POST", "/events", body={"events": [event]}, function="events")[0] == 202
    assert stack.http("GET", "/users/defaults-user/recommendations")[1]["strategy"] == "personalized"
    _put(stack, "config/experiments.json", json.dumps({"defaults": {"strategy": "trending"}}).encode())
    # Then every request is served with them, outside any experiment
    status, body = stack.http("GET", "/users/defaults-user/recommendations")[:2]
    assert status == 200 and body["strategy"] == "trending"
    assert body["experiment"] is None and body["variant"] == "default"


def test_a_bad_experiments_document_keeps_the_last_good_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        # A bucket of its own: moto's state is process-wide, and this module's deployment has its own.
        settings = Settings(bucket="embrec-experiments-doc", cache_dir=str(tmp_path), index_refresh_seconds=0)
        clients = aws.clients(settings)
        clients.s3.create_bucket(Bucket=settings.bucket)
        runtime = Runtime(settings, aws=clients)
        # Given no document: no experiment
        assert runtime.experiments().active is None
        # When a valid one is uploaded, then a broken one
        clients.s3.put_object(
            Bucket=settings.bucket,
            Key="config/experiments.json",
            Body=_experiment("ab", [("a", {}), ("b", {})]),
        )
        active = runtime.experiments().active
        assert active is not None and active.name == "ab"
        broken = json.dumps(
            {"experiments": [{"name": "ab", "enabled": True, "variants": [{"name": "a", "weight": -1}]}]}
        )
        clients.s3.put_object(Bucket=settings.bucket, Key="config/experiments.json", Body=broken.encode())
        # Then the broken one is refused and the last good one keeps serving
        active = runtime.experiments().active
        assert active is not None and [v.name for v in active.variants] == ["a", "b"]
        # And a fixed upload is picked up
        clients.s3.put_object(
            Bucket=settings.bucket, Key="config/experiments.json", Body=_experiment("cd", [("c", {})])
        )
        active = runtime.experiments().active
        assert active is not None and active.name == "cd"
        aws.clients.cache_clear()


def test_a_variant_switches_the_learned_blend_on_and_off_through_the_handlers(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = deployment
    # Given a catalog and enough users walking it (each user's next item follows the last) for the rebuild to
    # train a learned blend on their newest events
    _put(stack, "catalog/incoming/catalog.jsonl", _catalog())
    stack.drain_ingest_queue()
    items = [f"{category}-{n}" for category in CATEGORIES for n in range(8)]
    rng = random.Random(5)
    now = time.time()
    events = []
    for u in range(learned_blend.MIN_LISTS + 20):
        start = rng.randrange(len(items) - 4)
        events += [
            {"event_id": f"walk-{u}-{k}", "user_id": f"walker-{u}", "item_id": items[start + k],
             "type": "view", "timestamp": now - 3600 * (4 - k)}
            for k in range(4)
        ]
    for start in range(0, len(events), 50):
        status, body = stack.http(
            "POST", "/events", body={"events": events[start : start + 50]}, function="events"
        )[:2]
        assert status == 202 and body["rejected"] == 0, body
    # (no experiment uses it yet: the rebuild does not spend the time to train it)
    assert stack.rebuild()["learned_blend"] is False
    # When an experiment switches it on for one variant and off for the other, and the index is rebuilt
    _put(
        stack,
        "config/experiments.json",
        _experiment("learned", [("blend", {"learned_blend": False}), ("learned", {"learned_blend": True})]),
    )
    rebuilt = stack.rebuild()
    assert rebuilt["status"] == "published" and rebuilt["learned_blend"] is True
    scored: list[int] = []
    score = LearnedBlend.score
    monkeypatch.setattr(LearnedBlend, "score", lambda self, *a: scored.append(1) or score(self, *a))
    used: dict[str, set[bool]] = {}
    for u in range(40):
        before = len(scored)
        status, body = stack.http("GET", f"/users/walker-{u}/recommendations", {"k": 5})[:2]
        assert status == 200 and body["strategy"] == "personalized", body
        used.setdefault(body["variant"], set()).add(len(scored) > before)
    # Then the learned blend ranks exactly the lists of the variant that switched it on
    assert used == {"blend": {False}, "learned": {True}}
