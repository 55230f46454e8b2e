"""Inline SVG charts, made here (no library, no script): they print, scale to a phone and read without
colour, since every mark carries its label and value as text and series differ by shape and hatching.

:func:`interval_chart`: one row per variant, the rate as a marker and its 95% interval as a bar with end
caps (error bars). :func:`grouped_bars`: one group per metric, one labelled bar per series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Interval", "grouped_bars", "interval_chart", "nice_max"]

_WIDTH = 700
_LABEL_W = 150  # left column: the row's name
_RIGHT_W = 200  # right column: the value and its interval as text
_ROW_H = 34
_TOP = 34
_BOTTOM = 28
_MARKERS = ("square", "circle", "diamond", "triangle")
_HATCHES = (
    "",  # solid
    '<path d="M0,6 L6,0" stroke="currentColor" stroke-width="1.5"/>',
    '<path d="M0,3 H6" stroke="currentColor" stroke-width="1.5"/>',
    '<circle cx="3" cy="3" r="1.3" fill="currentColor"/>',
    '<path d="M3,0 V6" stroke="currentColor" stroke-width="1.5"/>',
    '<path d="M0,0 L6,6 M6,0 L0,6" stroke="currentColor" stroke-width="1"/>',
)


@dataclass(frozen=True)
class Interval:
    """One row of :func:`interval_chart`: a rate in [0, 1] with its interval."""

    label: str
    value: float
    low: float
    high: float


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^n at or above ``value`` (> 0): the axis end."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return float(step * power)
    return float(10 * power)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _marker(kind: str, x: float, y: float, size: float = 6.0) -> str:
    if kind == "square":
        return f'<rect x="{x - size:.1f}" y="{y - size:.1f}" width="{2 * size:.1f}" height="{2 * size:.1f}"/>'
    if kind == "diamond":
        return (
            f'<polygon points="{x:.1f},{y - size - 1:.1f} {x + size + 1:.1f},{y:.1f} '
            f'{x:.1f},{y + size + 1:.1f} {x - size - 1:.1f},{y:.1f}"/>'
        )
    if kind == "triangle":
        return (
            f'<polygon points="{x:.1f},{y - size - 1:.1f} {x + size + 1:.1f},{y + size:.1f} '
            f'{x - size - 1:.1f},{y + size:.1f}"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size:.1f}"/>'


def _axis(left: float, right: float, bottom: float, top: float, end: float, percent: bool) -> list[str]:
    parts = [f'<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>']
    for i in range(5):
        value = end * i / 4
        x = left + (right - left) * i / 4
        text = _pct(value) if percent else f"{value:.3g}"
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{text}</text>')
    return parts


def interval_chart(title: str, rows: Sequence[Interval], *, chart_id: str) -> str:
    """Rates with 95% intervals as error bars: a marker at the rate, whiskers with caps from low to high.

    The first row is drawn with a square (the control, by convention of the caller), the next with a
    circle, diamond, triangle; the rate and interval are written beside each row. Returns ``<svg>`` markup.
    """
    height = _TOP + _ROW_H * max(len(rows), 1) + _BOTTOM
    left, right = _LABEL_W, _WIDTH - _RIGHT_W
    end = nice_max(max([r.high for r in rows] + [r.value for r in rows] + [0.0]))
    scale = (right - left) / end
    bottom = height - _BOTTOM
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" role="img" viewBox="0 0 {_WIDTH} {height}" '
        f'aria-labelledby="{escape(chart_id)}-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<text class="chart-title" x="0" y="18">{escape(title)}</text>',
        *_axis(left, right, bottom, _TOP - 6, end, True),
    ]
    if not rows:
        parts.append(f'<text x="{left}" y="{_TOP + 20}">no data yet</text>')
    for i, row in enumerate(rows):
        y = _TOP + _ROW_H * i + _ROW_H / 2
        x_low, x_high = left + row.low * scale, left + row.high * scale
        x = left + row.value * scale
        parts.append(f'<g class="row" data-variant="{escape(row.label)}">')
        parts.append(
            f'<text class="label" x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(row.label)}</text>"
        )
        parts.append(f'<line class="errorbar" x1="{x_low:.1f}" y1="{y:.1f}" x2="{x_high:.1f}" y2="{y:.1f}"/>')
        for cap in (x_low, x_high):
            parts.append(
                f'<line class="errorbar cap" x1="{cap:.1f}" y1="{y - 7:.1f}" x2="{cap:.1f}" '
                f'y2="{y + 7:.1f}"/>'
            )
        parts.append(f'<g class="marker">{_marker(_MARKERS[i % len(_MARKERS)], x, y)}</g>')
        parts.append(
            f'<text class="value" x="{right + 10}" y="{y + 4:.1f}">{_pct(row.value)} '
            f"[{_pct(row.low)}, {_pct(row.high)}]</text>"
        )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def grouped_bars(
    title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *, chart_id: str
) -> str:
    """Horizontal bars: for each group (a metric) one bar per series (a strategy), each hatched by series
    and labelled with its name and value. ``series``: ``(name, values)`` with one value per group."""
    bar_h, gap = 16, 14
    group_h = bar_h * max(len(series), 1) + gap + 18
    height = _TOP + group_h * len(groups) + 8
    left, right = _LABEL_W, _WIDTH - 70
    patterns = []
    for i in range(len(series)):
        hatch = _HATCHES[i % len(_HATCHES)]
        if hatch:
            patterns.append(
                f'<pattern id="{escape(chart_id)}-p{i}" width="6" height="6" '
                f'patternUnits="userSpaceOnUse"><rect width="6" height="6" class="hatch-bg"/>'
                f"{hatch}</pattern>"
            )
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" role="img" viewBox="0 0 {_WIDTH} {height}" '
        f'aria-labelledby="{escape(chart_id)}-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f"<defs>{''.join(patterns)}</defs>",
        f'<text class="chart-title" x="0" y="18">{escape(title)}</text>',
    ]
    for g, group in enumerate(groups):
        top = _TOP + group_h * g
        end = nice_max(max([values[g] for _, values in series] + [0.0]))
        parts.append(f'<text class="group" x="0" y="{top + 12}">{escape(group)} (axis 0 to {end:.3g})</text>')
        for s, (name, values) in enumerate(series):
            y = top + 18 + s * bar_h
            width = max(0.0, values[g]) / end * (right - left)
            fill = f"url(#{escape(chart_id)}-p{s})" if _HATCHES[s % len(_HATCHES)] else "currentColor"
            parts.append(
                f'<text class="label" x="{left - 8}" y="{y + bar_h - 4}" text-anchor="end">'
                f"{escape(name)}</text>"
            )
            parts.append(
                f'<rect class="bar" x="{left}" y="{y + 1}" width="{width:.1f}" height="{bar_h - 3}" '
                f'fill="{fill}"/>'
            )
            parts.append(
                f'<text class="value" x="{left + width + 6:.1f}" y="{y + bar_h - 4}">{values[g]:.4f}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
