"""The A/B report: Wilson intervals and the z-test on hand-computed cases, attribution rules, and a
simulated A/B (and A/A) run through the pure report function."""

from __future__ import annotations

import json
import math
import random

import pytest

from embrec.app.service import emit_report_metrics
from embrec.domain.experiments import parse_experiments
from embrec.domain.model import Impression, Interaction
from embrec.domain.reporting import (
    Report,
    experiment_report,
    two_proportion_z_test,
    wilson_interval,
)
from embrec.errors import InvalidInputError
from embrec_tools.report import format_report, parse_since

T0 = 1_750_000_000.0


# ------------------------------------------------------------------------------------------- statistics
def test_wilson_interval_hand_computed() -> None:
    # p = 0.1, n = 100, z = 1.96: centre (0.1 + 3.8415/200) / 1.038415 = 0.11480,
    # half 1.96 * sqrt(0.0009 + 3.8415/40000) / 1.038415 = 0.05957
    low, high = wilson_interval(10, 100)
    assert low == pytest.approx(0.05523, abs=5e-5) and high == pytest.approx(0.17437, abs=5e-5)
    # no successes: the lower bound is 0, the upper z^2/n / (1 + z^2/n) = 0.38415 / 1.38415
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.27753, abs=5e-5))
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(1 - 0.27753, abs=5e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(InvalidInputError):
        wilson_interval(11, 10)


def test_two_proportion_z_test_hand_computed() -> None:
    # 60/100 vs 40/100: pooled 0.5, se sqrt(0.25 * 0.02) = 0.070711, z = 0.2 / 0.070711 = 2.828427,
    # p = erfc(2.828427 / sqrt 2) = erfc(2) = 0.0046777
    test = two_proportion_z_test(60, 100, 40, 100)
    assert test is not None
    assert test.difference == pytest.approx(0.2)
    assert test.z == pytest.approx(2.828427, abs=1e-6)
    assert test.p_value == pytest.approx(math.erfc(2.0)) and test.p_value == pytest.approx(
        0.0046777, abs=1e-7
    )
    reverse = two_proportion_z_test(40, 100, 60, 100)
    assert reverse is not None and reverse.z == pytest.approx(-test.z) and reverse.p_value == test.p_value
    # 1.96 standard errors away is p = 0.05
    same = two_proportion_z_test(30, 60, 30, 60)
    assert same is not None and same.z == 0.0 and same.p_value == 1.0
    assert two_proportion_z_test(0, 10, 0, 10) == two_proportion_z_test(10, 10, 10, 10)  # no variance: p = 1
    assert two_proportion_z_test(1, 0, 1, 10) is None


# ------------------------------------------------------------------------------------------- attribution
def _impression(
    rid: str, user: str, variant: str, ts: float = T0, items: int = 10, exp: str = "e"
) -> Impression:
    return Impression(rid, user, exp, variant, ts, items)


def _event(rid: str | None, kind: str, value: float | None = None, eid: str = "") -> Interaction:
    return Interaction(
        item_id="i1", type=kind, timestamp=T0 + 5, value=value, event_id=eid, recommendation_id=rid
    )


def test_attribution_rules() -> None:
    impressions = [
        _impression("r1", "u1", "control"),
        _impression("r2", "u2", "control"),
        _impression("r3", "u3", "treatment"),
        _impression("r4", "u3", "treatment"),
        _impression("r5", "u4", "treatment", items=0),  # an empty list is no impression
        _impression("r6", "u5", "treatment", exp="other"),  # another experiment
        _impression("r7", "u6", "control", ts=T0 - 100),  # before --since
    ]
    events = [
        ("u1", _event("r1", "click")),
        ("u1", _event("r1", "click")),  # a second click on the same list: one clicked impression
        ("u1", _event("r1", "purchase", 12.5)),
        ("u1", _event("r1", "view")),  # not a positive event
        ("u1", _event("r1", "dislike")),
        ("u3", _event("r3", "add_to_cart", 2.0)),
        ("u3", _event("r4", "like")),
        ("u9", _event("r2", "click")),  # someone else's list: not credited
        ("u2", _event("unknown", "click")),
        ("u4", _event("r5", "click")),
        ("u6", _event("r7", "purchase")),
        ("u2", _event(None, "click")),
    ]
    report = experiment_report(impressions, events, "e", since=T0 - 10, control="control")
    control, treatment = report.variants
    assert control.variant == "control" and control.is_control and control.ctr_test is None
    assert (control.users, control.impressions, control.clicks, control.positive_events) == (2, 2, 1, 3)
    assert (control.conversions, control.engagement_value) == (1, 12.5)
    assert control.ctr == 0.5 and control.conversion_rate == 0.5
    assert (treatment.users, treatment.impressions, treatment.clicks, treatment.conversions) == (1, 2, 2, 0)
    assert treatment.engagement_value == 2.0 and treatment.ctr == 1.0
    assert treatment.ctr_test is not None and treatment.ctr_test.difference == 0.5
    assert report.unattributed_events == 4  # u9 on r2, unknown id, the empty list's, the one before since
    # JSON-ready, and the text table names every variant
    document = json.loads(json.dumps(report.to_dict()))
    assert document["variants"][1]["ctr_test"]["difference"] == 0.5
    assert "control (control)" in format_report(report) and "treatment" in format_report(report)


def test_configured_variants_without_traffic_are_listed() -> None:
    report = experiment_report([], [], "e", variants=["control", "new"])
    assert [v.variant for v in report.variants] == ["control", "new"]
    assert report.control == "control" and report.variants[1].ctr_test is None


# ------------------------------------------------------------------------------------------- simulated A/B
def _simulate(click_rates: dict[str, float], users: int, lists_per_user: int, seed: int) -> Report:
    """Users assigned by the real assignment; each served list is clicked with its variant's probability."""
    variants = list(click_rates)
    config = parse_experiments(
        {
            "experiments": [
                {
                    "name": "sim",
                    "enabled": True,
                    "control": variants[0],
                    "variants": [{"name": v, "weight": 1} for v in variants],
                }
            ]
        }
    )
    experiment = config.get("sim")
    rng = random.Random(seed)
    impressions, events = [], []
    for u in range(users):
        user = f"user-{u}"
        variant = experiment.assign(user).name
        for n in range(lists_per_user):
            rid = f"{user}-{n}"
            impressions.append(_impression(rid, user, variant, exp="sim"))
            if rng.random() < click_rates[variant]:
                events.append((user, _event(rid, "click")))
                if rng.random() < 0.3:
                    events.append((user, _event(rid, "purchase", 10.0)))
    return experiment_report(impressions, events, "sim", control=experiment.control, variants=variants)


def test_simulated_ab_detects_the_better_variant() -> None:
    report = _simulate({"control": 0.10, "treatment": 0.14}, users=2000, lists_per_user=3, seed=7)
    control, treatment = report.variants
    assert 0.45 < control.users / 2000 < 0.55  # the 50/50 split held
    assert treatment.ctr > control.ctr
    assert treatment.ctr_test is not None
    assert (
        treatment.ctr_test.difference > 0 and treatment.ctr_test.z > 0 and treatment.ctr_test.p_value < 0.05
    )
    # the true rates sit inside the 95% intervals
    assert control.ctr_ci[0] < 0.10 < control.ctr_ci[1] and treatment.ctr_ci[0] < 0.14 < treatment.ctr_ci[1]
    # a worse treatment is detected with the other sign
    worse = _simulate({"control": 0.14, "treatment": 0.10}, users=2000, lists_per_user=3, seed=8)
    test = worse.variants[1].ctr_test
    assert test is not None and test.z < 0 and test.p_value < 0.05


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulated_aa_shows_no_difference(seed: int) -> None:
    report = _simulate({"a": 0.12, "a-prime": 0.12}, users=2000, lists_per_user=3, seed=seed)
    test = report.variants[1].ctr_test
    assert test is not None and test.p_value > 0.05


# ------------------------------------------------------------------------------------------- output
def test_parse_since() -> None:
    assert parse_since("2025-06-15") == pytest.approx(1_749_945_600.0)
    assert parse_since("2025-06-15T00:00:00Z") == parse_since("2025-06-15T02:00:00+02:00")
    assert parse_since(None) is None
    with pytest.raises(InvalidInputError) as raised:
        parse_since("last tuesday")
    assert raised.value.field == "since"


def test_emf_metrics_per_variant(capsys: pytest.CaptureFixture[str]) -> None:
    report = _simulate({"control": 0.1, "treatment": 0.2}, users=200, lists_per_user=1, seed=3)
    emit_report_metrics(report)
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [d["variant"] for d in documents] == ["control", "treatment"]
    for document, row in zip(documents, report.variants, strict=True):
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert any({"experiment", "variant"} <= set(dims) for dims in directive["Dimensions"])
        assert document["experiment"] == "sim"
        assert document["ExperimentImpressions"] in (row.impressions, [row.impressions])
        assert document["ExperimentClicks"] in (row.clicks, [row.clicks])
