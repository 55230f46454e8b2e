"""The online A/B report (``embrec.domain.reporting``) as the text table ``embrec report`` prints."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from embrec.domain.reporting import Report, VariantReport, ZTest, iso_utc
from embrec.errors import InvalidInputError
from embrec_tools.demo import format_table

__all__ = ["format_report", "parse_since"]


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


def pct(value: float) -> str:
    """A rate as a percentage with two decimals."""
    return f"{100 * value:.2f}%"


def variant_cells(v: VariantReport, test: Callable[[ZTest | None], str | None]) -> list[Any]:
    """One variant's cells, as `embrec report` and the console both show them: variant, users, impressions,
    clicks, CTR, its interval, its test against the control, conversions, conversion rate, its interval, its
    test. ``test`` words the z-tests (the terminal and the HTML page say it differently)."""
    return [
        v.variant + (" (control)" if v.is_control else ""),
        v.users,
        v.impressions,
        v.clicks,
        pct(v.ctr),
        f"[{pct(v.ctr_ci[0])}, {pct(v.ctr_ci[1])}]",
        test(v.ctr_test),
        v.conversions,
        pct(v.conversion_rate),
        f"[{pct(v.conversion_ci[0])}, {pct(v.conversion_ci[1])}]",
        test(v.conversion_test),
    ]


def _test(test: ZTest | None) -> str:
    if test is None:
        return "-"
    return f"{100 * test.difference:+.2f}pp z={test.z:+.2f} p={test.p_value:.4f}"


def format_report(report: Report) -> str:
    """The report as a text table (one row per variant) with a header line."""
    since = "all time" if report.since is None else f"since {iso_utc(report.since)}"
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
    rows = [[*variant_cells(v, _test), f"{v.engagement_value:g}"] for v in report.variants]
    head = (
        f"experiment {report.experiment} ({since}); control {report.control}; "
        f"events with an unknown or foreign recommendation_id: {report.unattributed_events}"
    )
    return head + "\n" + format_table(headers, rows)
