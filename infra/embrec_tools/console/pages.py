"""The console's HTML: pure functions from data to markup (no I/O), one per page, and their parts.

Every value from the API, the tables or the user is escaped here (``html.escape``); the page carries no
script and loads nothing from elsewhere (styles inline, charts inline SVG), so it works offline under a
``default-src 'none'`` Content-Security-Policy. Problems (API down, no index yet, unknown id, bad input,
bucket unreachable) render as a labelled notice, never a blank area: readable without colour.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlencode

from embrec.domain.model import Interaction
from embrec.domain.reporting import Report, ZTest
from embrec_tools.console.api import path_segment
from embrec_tools.console.charts import Interval, grouped_bars, interval_chart
from embrec_tools.report import variant_cells

__all__ = [
    "NAV",
    "Problem",
    "layout",
    "notice",
    "table",
]

#: The navigation bar: (path, label). Every page is reachable from it.
NAV: tuple[tuple[str, str], ...] = (
    ("/", "Overview"),
    ("/search", "Search"),
    ("/users", "Users"),
    ("/onboarding", "Onboarding"),
    ("/experiments", "Experiments"),
    ("/evaluation", "Evaluation"),
)

#: Recommendation filters of ``GET /users/{id}/recommendations`` the user page offers: (name, label, hint).
FILTERS: tuple[tuple[str, str, str], ...] = (
    ("k", "how many", "1-100"),
    ("category", "category", "e.g. Comedy"),
    ("exclude_category", "exclude category", ""),
    ("tags", "any of tags", "comma-separated"),
    ("min_price", "min price", ""),
    ("max_price", "max price", ""),
    ("available", "available only", "true / false"),
    ("diversity", "diversity", "0-1 (MMR)"),
)
EVENT_TYPES = ("view", "click", "add_to_cart", "like", "purchase", "dislike")

_LABELS = {
    "api-down": "API unreachable",
    "no-index": "Index not built yet",
    "not-found": "Not found",
    "bad-input": "Bad input",
    "aws": "Bucket or tables unreachable",
    "none": "Nothing here yet",
    "error": "Error",
}

_CSS = """
:root{color-scheme:light;--fg:#111;--muted:#555;--line:#bbb;--bg:#fff;--soft:#f3f3f3}
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
  background:var(--bg)}
header{border-bottom:2px solid var(--fg);padding:.5rem 1rem;display:flex;flex-wrap:wrap;
  gap:.4rem 1.2rem;align-items:baseline}
header .brand{font-weight:700;font-size:1.1rem;text-decoration:none;color:var(--fg)}
nav{display:flex;flex-wrap:wrap;gap:.2rem .9rem}
nav a{color:var(--fg);text-decoration:none;padding:.15rem 0;border-bottom:2px solid transparent}
nav a[aria-current=page]{border-bottom-color:var(--fg);font-weight:700}
header .api{margin-left:auto;color:var(--muted);font-size:.85rem}
main{padding:1rem;max-width:72rem;margin:0 auto}
h1{font-size:1.5rem;margin:.2rem 0 1rem}
h2{font-size:1.15rem;margin:1.6rem 0 .5rem;border-bottom:1px solid var(--line);padding-bottom:.2rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.6rem}
.card{border:1px solid var(--line);padding:.6rem .8rem;border-radius:4px}
.card .k{color:var(--muted);font-size:.85rem}.card .v{font-size:1.15rem;font-weight:600;
  overflow-wrap:anywhere}
.card .v.id{font:500 .85rem/1.3 ui-monospace,monospace}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.95rem}
th,td{border-bottom:1px solid var(--line);padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:var(--soft)}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.notice{border:2px solid var(--fg);border-left-width:8px;padding:.6rem .8rem;margin:.8rem 0;
  background:var(--soft)}
.notice strong{display:block}
.ok{border-style:solid;border-left-width:8px;border-color:var(--muted)}
.write{border:2px dashed var(--fg);padding:.8rem;margin:1rem 0}
.write .tag{font-weight:700;letter-spacing:.05em}
form.inline{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}
label{display:flex;flex-direction:column;font-size:.85rem;color:var(--muted)}
input,select,textarea,button{font:inherit;padding:.35rem .45rem;border:1px solid var(--fg);
  border-radius:3px;background:var(--bg);color:var(--fg)}
button{background:var(--fg);color:var(--bg);cursor:pointer}
textarea{width:100%;min-height:3rem}
.muted{color:var(--muted)}.small{font-size:.85rem}
.badge{display:inline-block;border:1px solid var(--fg);border-radius:3px;padding:0 .3rem;
  font-size:.8rem;font-weight:700}
ol.timeline{list-style:none;padding:0;border-left:3px solid var(--line);margin-left:.4rem}
ol.timeline li{position:relative;padding:.15rem 0 .35rem 1rem}
ol.timeline li::before{content:"";position:absolute;left:-.45rem;top:.6rem;width:.6rem;height:.6rem;
  background:var(--fg);border-radius:50%}
svg.chart{width:100%;height:auto;max-width:52rem;color:var(--fg);font-size:13px}
svg .axis{stroke:var(--fg)}svg .grid{stroke:var(--line);stroke-dasharray:2 3}
svg .errorbar{stroke:var(--fg);stroke-width:2}svg .marker{fill:var(--fg)}
svg .bar{stroke:var(--fg)}svg .hatch-bg{fill:var(--bg)}svg .chart-title{font-weight:700;font-size:14px}
svg text{fill:var(--fg)}svg .tick{fill:var(--muted);font-size:11px}
ul.reasons{margin:0;padding-left:1.1rem;font-size:.9rem}
@media (max-width:40rem){main{padding:.6rem}th,td{padding:.3rem}header .api{margin-left:0}}
"""


@dataclass(frozen=True)
class Problem:
    """Why a section has no data: ``kind`` (a key of the notice labels) and a sentence for the operator."""

    kind: str
    message: str


def notice(problem: Problem) -> str:
    """A labelled notice box (role alert); the label says the kind in words, not by colour."""
    label = _LABELS.get(problem.kind, _LABELS["error"])
    return (
        f'<div class="notice" role="alert" data-problem="{escape(problem.kind)}">'
        f"<strong>⚠ {escape(label)}</strong>{escape(problem.message)}</div>"
    )


def layout(title: str, body: str, *, active: str, api_url: str) -> str:
    """The whole page: head (inline CSS), the navigation bar with ``active`` marked, ``body``."""
    links = "".join(
        f'<a href="{path}"{" aria-current=page" if path == active else ""}>{label}</a>' for path, label in NAV
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · embrec console</title><style>{_CSS}</style></head><body>"
        f'<header><a class=brand href="/">embrec console</a><nav aria-label="pages">{links}</nav>'
        f"<span class=api>API {escape(api_url)}</span></header>"
        f"<main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def _cell(value: Any) -> str:
    if value is None:
        return '<span class="muted">&ndash;</span>'
    if isinstance(value, float):
        return f"{value:.4f}"
    return escape(str(value))


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Iterable[int] = (),
    raw: Iterable[int] = (),
    table_id: str = "",
) -> str:
    """A table in a horizontally scrolling wrapper; cells escaped except the columns in ``raw`` (markup
    made here); ``numeric`` columns right-aligned."""
    numeric, raw = set(numeric), set(raw)
    head = "".join(
        f"<th{' class=num' if i in numeric else ''} scope=col>{escape(h)}</th>" for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f"<td{' class=num' if i in numeric else ''}>{v if i in raw else _cell(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class=muted>none</td></tr>')
    ident = f' id="{escape(table_id)}"' if table_id else ""
    rows_html = "".join(body)
    return (
        f"<div class=table-wrap><table{ident}><thead><tr>{head}</tr></thead>"
        f"<tbody>{rows_html}</tbody></table></div>"
    )


def _value_class(value: Any) -> str:
    # long identifiers (versions, recommendation ids) in a smaller monospace face: they are read, not scanned
    return '"v id"' if isinstance(value, str) and len(value) > 20 and " " not in value else "v"


def cards(pairs: Iterable[tuple[str, Any]]) -> str:
    """Key figures as a responsive grid of small cards."""
    return (
        "<div class=grid>"
        + "".join(
            f"<div class=card><div class=k>{escape(k)}</div>"
            f"<div class={_value_class(v)}>{_cell(v)}</div></div>"
            for k, v in pairs
        )
        + "</div>"
    )


def when(epoch_s: float | None) -> str | None:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS UTC`` (None stays None)."""
    if epoch_s is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_s))


def ago(epoch_s: float, now: float) -> str:
    """How long ago, coarse: ``42 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    delta = max(0.0, now - epoch_s)
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if delta < limit:
            return f"{delta / size:.0f} {unit} ago"
    return f"{delta / 86400:.0f} d ago"


def item_link(item_id: str, text: str | None = None) -> str:
    return f'<a href="/items/{escape(path_segment(item_id))}">{escape(text or item_id)}</a>'


def user_link(user_id: str) -> str:
    return f'<a href="/users/{escape(path_segment(user_id))}">{escape(user_id)}</a>'


def _hidden(name: str, value: str) -> str:
    return f'<input type=hidden name="{escape(name)}" value="{escape(value)}">'


# ------------------------------------------------------------------------------------------------ lists


def items_table(items: Sequence[Mapping[str, Any]], *, before: Sequence[str] = (), table_id: str = "") -> str:
    """A recommendation, similar-item or search list: rank, title (linked), category, score, reasons; with
    ``before`` (the previous list's ids) each row says ``new`` or how far it moved."""
    earlier = {item_id: i for i, item_id in enumerate(before)}
    rows = []
    for rank, item in enumerate(items):
        item_id = str(item.get("item_id", ""))
        reasons = item.get("reasons") or []
        cells: list[Any] = [
            rank + 1,
            item_link(item_id, str(item.get("title") or item_id))
            + f' <span class="muted small">{escape(item_id)}</span>',
            item.get("category") or None,
            float(item.get("score", 0.0)),
            "<ul class=reasons>" + "".join(f"<li>{escape(str(r))}</li>" for r in reasons) + "</ul>"
            if reasons
            else '<span class="muted">&ndash;</span>',
        ]
        if before:
            if item_id not in earlier:
                change = "<span class=badge>NEW</span>"
            else:
                moved = earlier[item_id] - rank
                change = (
                    "same place" if moved == 0 else (f"▲ up {moved}" if moved > 0 else f"▼ down {-moved}")
                )
            cells.append(change)
        rows.append(cells)
    headers = ["#", "item", "category", "score", "reasons"] + (["vs. before"] if before else [])
    raw = {1, 4, 5}
    return table(headers, rows, numeric={0, 3}, raw=raw, table_id=table_id)


# ------------------------------------------------------------------------------------------------ overview


@dataclass(frozen=True)
class Overview:
    """What the overview shows; a section that could not be read is a :class:`Problem`."""

    health: Mapping[str, Any] | Problem
    index: Mapping[str, Any] | Problem  # pointer document + "deltas_since", "next_rebuild", "schedule"
    reports: tuple[Sequence[Any], bool] | Problem  # (CatalogReport list, listing truncated)
    counts: Any  # EventCounts | Problem
    now: float


def overview_page(view: Overview) -> str:
    parts = ["<h2>Serving now (GET /health)</h2>"]
    if isinstance(view.health, Problem):
        parts.append(notice(view.health))
    else:
        h = view.health
        if h.get("index_version") is None:
            parts.append(
                notice(
                    Problem(
                        "no-index",
                        "The API is up but serves no index yet: upload a catalog "
                        "(embrec ingest FILE) and run embrec rebuild.",
                    )
                )
            )
        parts.append(
            cards(
                [
                    ("index version", h.get("index_version")),
                    ("items", h.get("items")),
                    ("loaded at", h.get("loaded_at")),
                    ("encoder", h.get("encoder_id")),
                    ("deltas applied by the serving container", h.get("deltas_applied")),
                    ("status", h.get("status")),
                ]
            )
        )
    parts.append("<h2>Index in the bucket</h2>")
    if isinstance(view.index, Problem):
        parts.append(notice(view.index))
    else:
        i = view.index
        published = i.get("published_at")
        next_at = i.get("next_rebuild")
        parts.append(
            cards(
                [
                    ("live version (index/current.json)", i.get("version")),
                    ("published", when(published / 1000) if published else None),
                    ("catalog deltas since that rebuild", i.get("deltas_since")),
                    ("rebuild schedule", i.get("schedule")),
                    (
                        "next scheduled rebuild",
                        f"{when(next_at)} (≈, last rebuild + period)"
                        if next_at
                        else "not known (" + str(i.get("next_note")) + ")",
                    ),
                ]
            )
        )
    parts.append("<h2>Last catalog uploads (catalog/reports/)</h2>")
    if isinstance(view.reports, Problem):
        parts.append(notice(view.reports))
    else:
        reports, truncated = view.reports
        rows = []
        for r in reports:
            d = r.document
            rejected = d.get("rejected", 0)
            link = (
                (
                    f'<a href="/catalog/rejected?name={escape(path_segment(r.rejected_name))}">'
                    f"{escape(str(rejected))} rejected rows</a>"
                )
                if r.rejected_name
                else escape(str(rejected))
            )
            rows.append(
                [
                    r.source,
                    when(r.modified),
                    d.get("total"),
                    d.get("accepted"),
                    d.get("unchanged"),
                    link,
                    d.get("deleted"),
                ]
            )
        parts.append(
            table(
                ["file", "finished", "total", "accepted", "unchanged", "rejected", "deleted"],
                rows,
                numeric={2, 3, 4, 5, 6},
                raw={5},
                table_id="reports",
            )
        )
        if truncated:
            parts.append(
                "<p class='muted small'>Picked from the first 1,000 report keys (one listing page).</p>"
            )
    parts.append("<h2>Events stored (interactions table)</h2>")
    if isinstance(view.counts, Problem):
        parts.append(notice(view.counts))
    else:
        c = view.counts
        parts.append(cards([("last hour", c.last_hour), ("last 24 hours", c.last_day)]))
        parts.append(f"<p class='muted small'>{escape(c.note)}.</p>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ search


def search_form(query: str) -> str:
    return (
        '<form class=inline action="/search" method=get role=search>'
        f'<label>describe what you look for<input name=q size=40 value="{escape(query)}" '
        'placeholder="heist movie with a twist" autofocus></label><button type=submit>Search</button></form>'
    )


def search_page(query: str, result: Mapping[str, Any] | Problem | None) -> str:
    parts = [search_form(query)]
    if isinstance(result, Problem):
        parts.append(notice(result))
    elif result is not None:
        parts.append(
            "<p class=muted>Semantic search over the catalog "
            f"(index {escape(str(result.get('index_version')))})"
            "; each title opens its item page.</p>"
        )
        parts.append(items_table(result.get("items", []), table_id="results"))
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ item


def item_page(
    item_id: str, fields: Mapping[str, Any] | Problem | None, similar: Mapping[str, Any] | Problem
) -> str:
    parts = ["<h2>Fields (items table)</h2>"]
    if isinstance(fields, Problem):
        parts.append(notice(fields))
    elif fields is None:
        parts.append(notice(Problem("not-found", f"No item {item_id!r} in the catalog (items table).")))
    else:
        rows = [
            (
                k,
                ", ".join(map(str, v))
                if isinstance(v, list)
                else json.dumps(v)
                if isinstance(v, dict | bool)
                else v,
            )
            for k, v in fields.items()
            if k != "image_embedding"
        ]
        parts.append(table(["field", "value"], rows, table_id="fields"))
    parts.append("<h2>Similar items (GET /items/{id}/similar)</h2>")
    if isinstance(similar, Problem):
        parts.append(notice(similar))
    else:
        parts.append(items_table(similar.get("items", []), table_id="similar"))
    parts.append(
        "<h2>Recommended, clicked, bought</h2><p class=muted>Not available per item: the impressions "
        "table records each served list's size, not its items, and events are keyed by user, so a count "
        "per item would need a full table scan. The experiments page has the counts per variant.</p>"
    )
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ user


def user_picker() -> str:
    return (
        '<form class=inline action="/users" method=get><label>user id<input name=user_id required '
        'placeholder="e.g. 1"></label><button type=submit>Open</button></form>'
    )


@dataclass(frozen=True)
class UserView:
    user_id: str
    events: Sequence[Interaction] | Problem
    titles: Mapping[str, str]  # item id -> title, for the events
    recommendations: Mapping[str, Any] | Problem
    filters: Mapping[str, str]
    before: Sequence[str]
    posted: str | None
    csrf: str
    now: float


def _timeline(events: Sequence[Interaction], titles: Mapping[str, str], now: float) -> str:
    if not events:
        return (
            "<p class=muted>No events stored for this user (a new user gets the onboarding profile "
            "or trending).</p>"
        )
    items = []
    for e in events:
        extra = f" · list {escape(e.recommendation_id[:8])}…" if e.recommendation_id else ""
        items.append(
            f"<li><strong>{escape(e.type)}</strong> {item_link(e.item_id, titles.get(e.item_id))} "
            f"<span class='muted small'>{escape(e.item_id)}</span> "
            f"<span class='muted small'>{escape(when(e.timestamp) or '')} ({ago(e.timestamp, now)}){extra}"
            "</span></li>"
        )
    return f"<ol class=timeline id=timeline>{''.join(items)}</ol>"


def user_page(view: UserView) -> str:
    uid = path_segment(view.user_id)
    parts = [user_picker()]
    if view.posted:
        parts.append(
            f'<div class="notice ok" role=status><strong>Event written</strong>{escape(view.posted)} — '
            "the list below is the next request's answer; the last column compares it with the list "
            "before the event.</div>"
        )
    parts.append("<h2>Recommendations now</h2>")
    fields = "".join(
        f'<label>{escape(label)}<input name="{name}" value="{escape(view.filters.get(name, ""))}" '
        f'placeholder="{escape(hint)}" size=10></label>'
        for name, label, hint in FILTERS
    )
    parts.append(
        f'<form class=inline method=get action="/users/{escape(uid)}" id=filters>{fields}'
        "<button type=submit>Apply</button></form>"
    )
    ids: list[str] = []
    if isinstance(view.recommendations, Problem):
        parts.append(notice(view.recommendations))
    else:
        r = view.recommendations
        ids = [str(i.get("item_id")) for i in r.get("items", [])]
        parts.append(
            cards(
                [
                    ("strategy", r.get("strategy")),
                    ("experiment", r.get("experiment")),
                    ("variant", r.get("variant")),
                    ("index", r.get("index_version")),
                    ("recommendation_id", r.get("recommendation_id")),
                ]
            )
        )
        parts.append(items_table(r.get("items", []), before=view.before, table_id="recommendations"))
    query = urlencode({k: v for k, v in view.filters.items() if v})
    parts.append(
        f'<form class=write method=post action="/users/{escape(uid)}/events" id=whatif>'
        "<div><span class=tag>⚠ REAL WRITE</span> — “what if”: this posts a real event to POST /events for "
        f"user {escape(view.user_id)}; it stays in their history (DELETE /users/{{id}} erases it).</div>"
        f"{_hidden('csrf', view.csrf)}{_hidden('filters', query)}{_hidden('before', ','.join(ids))}"
        '<div class=inline style="display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin-top:.5rem">'
        "<label>item id<input name=item_id required></label><label>event type<select name=type>"
        + "".join(f"<option{' selected' if t == 'like' else ''}>{t}</option>" for t in EVENT_TYPES)
        + "</select></label><button type=submit>Post event</button></div></form>"
    )
    parts.append("<h2>Recent events (newest first)</h2>")
    parts.append(
        notice(view.events)
        if isinstance(view.events, Problem)
        else _timeline(view.events, view.titles, view.now)
    )
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ onboarding


def onboarding_page(form: Mapping[str, str], csrf: str, result: Mapping[str, Any] | Problem | None) -> str:
    def field(name: str, label: str, hint: str) -> str:
        return (
            f'<label>{escape(label)}<input name="{name}" value="{escape(form.get(name, ""))}" '
            f'placeholder="{escape(hint)}" size=40></label>'
        )

    parts = [
        '<form class=write method=post action="/onboarding" id=onboarding>'
        "<div><span class=tag>⚠ REAL WRITE</span> — POST /users/{id}/onboarding stores this user's "
        "cold-start "
        "profile.</div>",
        _hidden("csrf", csrf),
        '<div style="display:grid;gap:.5rem;margin-top:.5rem">',
        field("user_id", "user id", "e.g. newcomer-1"),
        field("interests", "interests (comma-separated)", "space opera, robots"),
        field("goals", "goals (comma-separated)", "something for the weekend"),
        field("experience", "experience", "casual"),
        "<div><button type=submit>Onboard and recommend</button></div></div></form>",
    ]
    if isinstance(result, Problem):
        parts.append(notice(result))
    elif result is not None:
        user = str(result.get("user_id", form.get("user_id", "")))
        parts.append(f"<h2>First list for {user_link(user)}</h2>")
        parts.append(
            cards(
                [
                    ("strategy", result.get("strategy")),
                    ("variant", result.get("variant")),
                    ("index", result.get("index_version")),
                ]
            )
        )
        parts.append(items_table(result.get("items", []), table_id="onboarding-list"))
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ experiments


def _test(test: ZTest | None) -> str | None:
    if test is None:
        return None
    verdict = "significant at 5%" if test.p_value < 0.05 else "not significant"
    return f"{100 * test.difference:+.2f} pp, z={test.z:+.2f}, p={test.p_value:.4f} ({verdict})"


def experiments_page(
    names: Sequence[tuple[str, bool]], chosen: str | None, report: Report | Problem | None
) -> str:
    parts = []
    if not names:
        parts.append(
            notice(
                Problem(
                    "none", "No experiment is defined in config/experiments.json (README, A/B experiments)."
                )
            )
        )
    else:
        links = " · ".join(
            (
                f"<strong>{escape(n)}</strong>"
                if n == chosen
                else f'<a href="/experiments?name={escape(path_segment(n))}">{escape(n)}</a>'
            )
            + (" <span class=badge>LIVE</span>" if live else "")
            for n, live in names
        )
        parts.append(f"<p>Experiments: {links}</p>")
    if isinstance(report, Problem):
        parts.append(notice(report))
    elif report is not None:
        variants = sorted(report.variants, key=lambda v: not v.is_control)
        parts.append(
            f"<p class=muted>Control: {escape(report.control)}. Same code as <code>embrec report "
            f"--experiment {escape(report.experiment)}</code>; 95% Wilson intervals; two-proportion "
            f"z-test against the control. Events with an unknown or foreign recommendation_id: "
            f"{report.unattributed_events}.</p>"
        )
        rows = [variant_cells(v, _test) for v in variants]
        parts.append(
            table(
                [
                    "variant",
                    "users",
                    "impressions",
                    "clicks",
                    "CTR",
                    "CTR 95% CI",
                    "CTR vs control",
                    "conversions",
                    "conversion",
                    "conv. 95% CI",
                    "conversion vs control",
                ],
                rows,
                numeric={1, 2, 3, 4, 7, 8},
                table_id="report",
            )
        )
        label = [v.variant + (" (control)" if v.is_control else "") for v in variants]
        parts.append(
            interval_chart(
                "CTR per variant, 95% interval",
                [Interval(n, v.ctr, *v.ctr_ci) for n, v in zip(label, variants, strict=True)],
                chart_id="ctr-chart",
            )
        )
        parts.append(
            interval_chart(
                "Conversion per variant, 95% interval",
                [
                    Interval(n, v.conversion_rate, *v.conversion_ci)
                    for n, v in zip(label, variants, strict=True)
                ],
                chart_id="conversion-chart",
            )
        )
        parts.append(
            "<p class='muted small'>Marker: the rate (square = control); bar with end caps: its 95% "
            "interval.</p>"
        )
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ evaluation

#: The metrics the evaluation chart draws (embrec eval's plot draws the same).
EVAL_CHART_METRICS = ("HR@10", "NDCG@10", "Recall@20", "MRR", "coverage@10")


def evaluation_page(path: str, document: Mapping[str, Any] | Problem) -> str:
    if isinstance(document, Problem):
        return notice(document) + (
            "<p>Run for example <code>embrec eval --dataset movielens --path data/ml-latest-small "
            "--users 200</code>:"
            f" it saves its results to <code>{escape(path)}</code> (<code>--out</code> to choose), "
            "where this "
            "page reads them.</p>"
        )
    metrics: Mapping[str, Mapping[str, float]] = document.get("metrics", {})
    info = document.get("info", {})
    parts = [
        f"<p class=muted>From <code>{escape(path)}</code>, "
        f"saved {escape(str(document.get('finished_at', '?')))}.</p>",
        cards(
            [
                ("dataset", document.get("dataset")),
                ("protocol", document.get("protocol")),
                ("users evaluated", document.get("users")),
                ("items", info.get("items")),
                ("list length", info.get("k")),
                ("seed", info.get("seed")),
            ]
        ),
    ]
    names = list(metrics)
    columns = list(next(iter(metrics.values()), {}).keys())
    parts.append("<h2>Metrics per strategy</h2>")
    parts.append(
        table(
            ["strategy", *columns],
            [[n, *(metrics[n].get(c) for c in columns)] for n in names],
            numeric=set(range(1, len(columns) + 1)),
            table_id="metrics",
        )
    )
    shown = [m for m in EVAL_CHART_METRICS if m in columns]
    if shown and names:
        parts.append(
            grouped_bars(
                f"{document.get('dataset')} — {document.get('protocol')}",
                shown,
                [(n, [float(metrics[n][m]) for m in shown]) for n in names],
                chart_id="eval-chart",
            )
        )
    paired: Mapping[str, Mapping[str, Sequence[float]]] = document.get("hybrid_minus", {})
    if paired:
        parts.append("<h2>Hybrid minus each strategy (same users; mean, 95% bootstrap interval)</h2>")
        parts.append(
            table(
                ["hybrid minus strategy", *next(iter(paired.values())).keys()],
                [
                    [n, *(f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]" for m, lo, hi in v.values())]
                    for n, v in paired.items()
                ],
                table_id="paired",
            )
        )
    tuned = document.get("tuned")
    if isinstance(tuned, Mapping):
        chosen = {k: v for k, v in tuned.items() if k not in ("trials", "validation")}
        parts.append(
            "<h2>Tuned (--tune)</h2>"
            + table(["parameter", "value"], sorted((k, str(v)) for k, v in chosen.items()))
        )
    return "".join(parts)


def rejected_page(name: str, rows: Sequence[Mapping[str, Any]] | Problem, more: bool) -> str:
    """Rejected catalog rows (``{line, errors: [{field, reason, ...}], raw}``): line, item id, reasons."""
    if isinstance(rows, Problem):
        return notice(rows)
    table_rows = []
    for r in rows:
        raw = r.get("raw")
        reasons = "; ".join(
            f"{e.get('field') or '?'}: {e.get('reason') or e.get('message')}"
            for e in r.get("errors", [])
            if isinstance(e, Mapping)
        )
        item_id = raw.get("item_id") if isinstance(raw, Mapping) else None
        table_rows.append([r.get("line"), item_id, reasons, str(raw)[:300]])
    tail = "<p class=muted>First 200 rows shown; more follow in the file.</p>" if more else ""
    return (
        f"<p class=muted>catalog/rejected/{escape(name)}</p>"
        + table(["line", "item_id", "reasons", "row"], table_rows, numeric={0}, table_id="rejected")
        + tail
    )
