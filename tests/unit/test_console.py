"""The console's pure parts: SVG error bars, escaping, the rebuild schedule, the form token, eval results."""

from __future__ import annotations

import json
import re
from pathlib import Path

from embrec.app.runtime import Runtime
from embrec.config import Settings
from embrec_tools.console import Console, ConsoleConfig
from embrec_tools.console.api import ApiClient
from embrec_tools.console.charts import Interval, interval_chart, nice_max
from embrec_tools.console.pages import items_table
from embrec_tools.console.reads import StackReads, rebuild_schedule
from embrec_tools.evaluation import save_results


def test_error_bars_span_the_interval_with_caps_and_label_it_in_text() -> None:
    svg = interval_chart(
        "CTR", [Interval("control", 0.2, 0.1, 0.3), Interval("b<x>", 0.4, 0.3, 0.5)], chart_id="c"
    )
    rows = re.findall(r'<g class="row".*?</g></g>|<g class="row".*?</text></g>', svg)
    assert len(rows) == 2 and "b&lt;x&gt;" in svg and "<x>" not in svg
    # axis 0..0.5 over 350 px starting at x=150: the whisker runs from 0.1 to 0.3 -> x 220 to 360
    whisker = re.search(r'class="errorbar" x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)"', rows[0])
    assert whisker is not None and (float(whisker[1]), float(whisker[2])) == (220.0, 360.0)
    assert rows[0].count("errorbar cap") == 2 and "<rect" in rows[0]  # square marker: the control
    assert "20.0% [10.0%, 30.0%]" in rows[0]
    assert [nice_max(v) for v in (0.3, 0.5, 0.51, 7.0, 0.0)] == [0.5, 0.5, 1.0, 10.0, 1.0]


def test_titles_and_reasons_from_the_catalog_are_escaped() -> None:
    html = items_table(
        [
            {
                "item_id": "x/1",
                "title": "<script>alert(1)</script>",
                "score": 0.5,
                "reasons": ["<b>because</b>"],
            }
        ]
    )
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;because" in html
    assert 'href="/items/x%2F1"' in html  # an id with a slash stays one path segment


def test_the_next_rebuild_of_a_rate_rolls_past_now_and_a_cron_is_not_guessed() -> None:
    assert rebuild_schedule("rate(5 minutes)", 1_000.0, 1_100.0).next_at == 1_300.0
    assert rebuild_schedule("rate(5 minutes)", 1_000.0, 2_000.0).next_at == 2_200.0
    assert rebuild_schedule("rate(1 hour)", None, 5.0).next_at is None
    assert rebuild_schedule("cron(0 * * * ? *)", 1_000.0, 1_100.0).period_s is None


def test_a_post_without_the_form_token_writes_nothing() -> None:
    # an API that would fail loudly if called: nothing listens on port 9
    console = Console(
        ApiClient("http://127.0.0.1:9"),
        StackReads(Runtime(Settings())),
        ConsoleConfig("rate(1 hour)", Path("/nonexistent")),
        csrf="secret",
    )
    refused = console.handle("POST", "/users/u1/events", {"item_id": "ml-1", "type": "like", "csrf": "guess"})
    assert refused.status == 400 and b"stale or came from another site" in refused.body
    assert b"does not answer" not in refused.body  # the API was never called


def test_eval_results_are_saved_whole_with_the_time(tmp_path: Path) -> None:
    path = tmp_path / "eval" / "latest.json"
    save_results({"dataset": "movielens", "metrics": {}}, path)
    saved = json.loads(path.read_text())
    assert saved["dataset"] == "movielens" and re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", saved["finished_at"]
    )
    assert [p.name for p in path.parent.iterdir()] == ["latest.json"]  # no temp file left behind
