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

:func:`experiment_report` is pure (numpy-free, stdlib only); ``embrec.app.service.emit_report_metrics``
writes its CloudWatch EMF documents and ``embrec report`` (the tooling package) prints it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from embrec.errors import InvalidInputError

if TYPE_CHECKING:
    from embrec.domain.model import Impression, Interaction

__all__ = [
    "CONVERSION_TYPES",
    "POSITIVE_TYPES",
    "Report",
    "VariantReport",
    "ZTest",
    "experiment_report",
    "iso_utc",
    "two_proportion_z_test",
    "wilson_interval",
]

POSITIVE_TYPES = frozenset({"click", "add_to_cart", "like", "purchase"})
CONVERSION_TYPES = frozenset({"purchase"})
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def iso_utc(epoch_s: float) -> str:
    """Epoch seconds as ISO 8601 UTC to the second, ``...Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
        body["since"] = None if self.since is None else iso_utc(self.since)
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
