"""The online A/B report: per variant users, impressions, clicks, CTR, conversions, value, with statistics.

Definitions (impression level; the unit a variant is served and measured on):

- **impression**: one served recommendation list (one ``recommendation_id``) of the experiment with at
  least one item, served at or after ``since``.
- **users**: distinct users among those impressions.
- **attributed event**: an interaction whose ``recommendation_id`` is one of those impressions *and* whose
  user is the impression's user (an id replayed by someone else is not credited).
- **click**: an impression with at least one attributed *positive* event (``click``, ``add_to_cart``,
  ``like`` or ``purchase``); ``CTR = clicks / impressions``. Counting impressions, not events, keeps CTR a
  proportion (0..1) that a binomial test applies to; ``positive_events`` counts the events themselves.
- **conversion**: an impression with at least one attributed ``purchase``; ``conversion rate =
  conversions / impressions``.
- **engagement value**: the sum of ``value`` over attributed positive events (missing value counts 0).

Statistics: 95% Wilson score intervals for CTR and conversion rate, and for each non-control variant a
two-sided pooled two-proportion z-test against the control (``p = erfc(|z| / sqrt 2)``). The test takes
impressions as independent trials; a user who sees many lists makes them correlated, so read small p-values
near 0.05 with care when users have many impressions each.

:func:`experiment_report` is pure; :func:`emit_metrics` writes one CloudWatch EMF document per variant
(dimensions ``experiment`` and ``variant``); :func:`add_cli` registers ``embrec report``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from embrec.errors import InvalidInputError

if TYPE_CHECKING:
    from embrec.experiments import Impression
    from embrec.profiles import Interaction

__all__ = [
    "CONVERSION_TYPES",
    "POSITIVE_TYPES",
    "Report",
    "VariantReport",
    "ZTest",
    "add_cli",
    "emit_metrics",
    "experiment_report",
    "format_report",
    "parse_since",
    "two_proportion_z_test",
    "wilson_interval",
]

POSITIVE_TYPES = frozenset({"click", "add_to_cart", "like", "purchase"})
CONVERSION_TYPES = frozenset({"purchase"})
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise InvalidInputError("successes", f"must be in 0..{trials}, got {successes}")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    # the bounds at 0 and n are exactly 0 and 1 (float rounding would leave 1e-16 away)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class ZTest:
    """Variant minus control: ``difference`` of proportions, pooled ``z`` and two-sided ``p_value``."""

    difference: float
    z: float
    p_value: float


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> ZTest | None:
    """Pooled two-proportion z-test of x1/n1 against x2/n2; None when either side has no trials.

    No variance at all (both 0% or both 100%) gives z = 0, p = 1.
    """
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return ZTest(p1 - p2, 0.0, 1.0)
    z = (p1 - p2) / se
    return ZTest(p1 - p2, z, math.erfc(abs(z) / math.sqrt(2)))


@dataclass(frozen=True)
class VariantReport:
    variant: str
    is_control: bool
    users: int
    impressions: int
    clicks: int
    positive_events: int
    ctr: float
    ctr_ci: tuple[float, float]
    conversions: int
    conversion_rate: float
    conversion_ci: tuple[float, float]
    engagement_value: float
    ctr_test: ZTest | None
    conversion_test: ZTest | None


@dataclass(frozen=True)
class Report:
    """``variants`` in the configured order (else control first, then by name)."""

    experiment: str
    control: str
    since: float | None
    variants: tuple[VariantReport, ...]
    unattributed_events: int

    def variant(self, name: str) -> VariantReport:
        return next(v for v in self.variants if v.variant == name)

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["since"] = None if self.since is None else _iso(self.since)
        return body


@dataclass
class _Tally:
    users: set[str]
    impressions: int = 0
    clicks: int = 0
    positive_events: int = 0
    conversions: int = 0
    value: float = 0.0


def experiment_report(
    impressions: Iterable[Impression],
    interactions: Iterable[tuple[str, Interaction]],
    experiment: str,
    since: float | None = None,
    *,
    control: str | None = None,
    variants: Sequence[str] = (),
) -> Report:
    """Aggregate one experiment's impressions and the ``(user_id, Interaction)`` events attributed to them.

    ``since`` (epoch s) keeps impressions served at or after it; events count through their impression.
    ``variants`` lists variants to show even with no traffic; ``control`` defaults to the first of
    ``variants``, else a variant named ``control``, else the first by name.
    """
    served: dict[str, tuple[str, str]] = {}  # recommendation_id -> (user_id, variant)
    tallies: dict[str, _Tally] = {name: _Tally(set()) for name in variants}
    for impression in impressions:
        if impression.experiment != experiment or impression.items <= 0:
            continue
        if since is not None and impression.ts < since:
            continue
        if impression.recommendation_id in served:
            continue
        served[impression.recommendation_id] = (impression.user_id, impression.variant)
        tally = tallies.setdefault(impression.variant, _Tally(set()))
        tally.impressions += 1
        tally.users.add(impression.user_id)

    clicked: set[str] = set()
    converted: set[str] = set()
    unattributed = 0
    for user_id, event in interactions:
        if event.recommendation_id is None or event.type not in POSITIVE_TYPES:
            continue
        owner = served.get(event.recommendation_id)
        if owner is None or owner[0] != user_id:
            unattributed += 1
            continue
        tally = tallies[owner[1]]
        tally.positive_events += 1
        tally.value += float(event.value or 0.0)
        if event.recommendation_id not in clicked:
            clicked.add(event.recommendation_id)
            tally.clicks += 1
        if event.type in CONVERSION_TYPES and event.recommendation_id not in converted:
            converted.add(event.recommendation_id)
            tally.conversions += 1

    names = list(variants) or sorted(tallies)
    names += sorted(set(tallies) - set(names))
    if control is None:
        control = variants[0] if variants else ("control" if "control" in tallies else (names or [""])[0])
    if control in names:
        names.remove(control)
        names.insert(0, control)
    base = tallies.get(control, _Tally(set()))
    rows = []
    for name in names:
        t = tallies[name]
        is_control = name == control
        rows.append(
            VariantReport(
                variant=name,
                is_control=is_control,
                users=len(t.users),
                impressions=t.impressions,
                clicks=t.clicks,
                positive_events=t.positive_events,
                ctr=t.clicks / t.impressions if t.impressions else 0.0,
                ctr_ci=wilson_interval(t.clicks, t.impressions),
                conversions=t.conversions,
                conversion_rate=t.conversions / t.impressions if t.impressions else 0.0,
                conversion_ci=wilson_interval(t.conversions, t.impressions),
                engagement_value=round(t.value, 6),
                ctr_test=None
                if is_control
                else two_proportion_z_test(t.clicks, t.impressions, base.clicks, base.impressions),
                conversion_test=None
                if is_control
                else two_proportion_z_test(t.conversions, t.impressions, base.conversions, base.impressions),
            )
        )
    return Report(experiment, control, since, tuple(rows), unattributed)


# ------------------------------------------------------------------------------------------- output


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_since(raw: str | None) -> float | None:
    """``--since``: an ISO 8601 date or date-time (UTC unless it names an offset) to epoch s."""
    if raw is None or raw == "":
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError("since", f"must be an ISO 8601 date or date-time, got {raw!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _test(test: ZTest | None) -> str:
    if test is None:
        return "-"
    return f"{100 * test.difference:+.2f}pp z={test.z:+.2f} p={test.p_value:.4f}"


def format_report(report: Report) -> str:
    """The report as a text table (one row per variant) with a header line."""
    from embrec.demo import format_table  # local: the table helper lives with the demo

    since = "all time" if report.since is None else f"since {_iso(report.since)}"
    headers = (
        "variant",
        "users",
        "impr",
        "clicks",
        "CTR",
        "CTR 95% CI",
        "vs control (CTR)",
        "conv",
        "conv rate",
        "conv 95% CI",
        "vs control (conv)",
        "value",
    )
    rows = [
        (
            v.variant + (" (control)" if v.is_control else ""),
            v.users,
            v.impressions,
            v.clicks,
            _pct(v.ctr),
            f"[{_pct(v.ctr_ci[0])}, {_pct(v.ctr_ci[1])}]",
            _test(v.ctr_test),
            v.conversions,
            _pct(v.conversion_rate),
            f"[{_pct(v.conversion_ci[0])}, {_pct(v.conversion_ci[1])}]",
            _test(v.conversion_test),
            f"{v.engagement_value:g}",
        )
        for v in report.variants
    ]
    head = (
        f"experiment {report.experiment} ({since}); control {report.control}; "
        f"events with an unknown or foreign recommendation_id: {report.unattributed_events}"
    )
    return head + "\n" + format_table(headers, rows)


def emit_metrics(report: Report, namespace: str | None = None) -> None:
    """One CloudWatch EMF document per variant (dimensions experiment, variant), printed to stdout.

    In Lambda, CloudWatch Logs turns each line into metrics ``ExperimentUsers``, ``ExperimentImpressions``,
    ``ExperimentClicks``, ``ExperimentConversions`` (Count), ``ExperimentCTR``,
    ``ExperimentConversionRate`` (Percent) and ``ExperimentEngagementValue``.
    """
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    from embrec.observability import NAMESPACE, SERVICE

    for v in report.variants:
        emf = EphemeralMetrics(namespace=namespace or NAMESPACE, service=SERVICE)
        emf.add_dimension(name="experiment", value=report.experiment)
        emf.add_dimension(name="variant", value=v.variant)
        emf.add_metric(name="ExperimentUsers", unit=MetricUnit.Count, value=v.users)
        emf.add_metric(name="ExperimentImpressions", unit=MetricUnit.Count, value=v.impressions)
        emf.add_metric(name="ExperimentClicks", unit=MetricUnit.Count, value=v.clicks)
        emf.add_metric(name="ExperimentConversions", unit=MetricUnit.Count, value=v.conversions)
        emf.add_metric(name="ExperimentCTR", unit=MetricUnit.Percent, value=100 * v.ctr)
        emf.add_metric(
            name="ExperimentConversionRate", unit=MetricUnit.Percent, value=100 * v.conversion_rate
        )
        emf.add_metric(name="ExperimentEngagementValue", unit=MetricUnit.NoUnit, value=v.engagement_value)
        # printed, not flushed: an explicit request (``--emf``, a scheduled report) outranks the
        # POWERTOOLS_METRICS_DISABLED an interactive run sets to quiet the handlers' own metrics
        print(json.dumps(emf.serialize_metric_set(), separators=(",", ":")), flush=True)


# ------------------------------------------------------------------------------------------- CLI


def _report_command(args: argparse.Namespace) -> int:
    from embrec.cli import cli_settings
    from embrec.demo import quiet_logs

    quiet_logs()
    from embrec import service
    from embrec.runtime import Runtime

    runtime = Runtime(cli_settings(args.aws))
    report = service.experiment_report(runtime, args.experiment, parse_since(args.since))
    if args.emf:
        emit_metrics(report)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``embrec report --experiment NAME [--since ISO] [--json] [--emf] [--aws]``."""
    report = subparsers.add_parser(
        "report", help="online A/B report of an experiment (CTR, conversion, tests)"
    )
    report.add_argument("--experiment", required=True, help="experiment name in config/experiments.json")
    report.add_argument("--since", default=None, help="only lists served at or after (ISO 8601, UTC default)")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument("--emf", action="store_true", help="also print CloudWatch EMF metrics per variant")
    report.add_argument(
        "--aws",
        action="store_true",
        help="real AWS (region, credentials from the environment), not the local stack",
    )
    report.set_defaults(handler=_report_command)
