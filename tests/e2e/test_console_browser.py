"""``embrec console`` in a real headless Chromium, against the local stack, used as a person would.

Given the real stack (template.yaml, real handlers) with the MovieLens slice ingested and rebuilt, an A/B
experiment with served lists and attributed clicks, and ``embrec eval`` results saved where the console
looks: open every page from the navigation bar, search and follow a result to its item, open a user, post a
"what if" event and see the next list change, onboard a new user, see the experiment's chart with its error
bars, and see the clear messages for an unknown item and an API that is down. Each page is saved as a
screenshot (tests/e2e/browser.py says where).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import screenshot
from live_stack import Stack

from embrec.app.runtime import Runtime
from embrec_tools.console import Console, ConsoleConfig, ConsoleServer
from embrec_tools.console.api import ApiClient
from embrec_tools.console.reads import StackReads
from embrec_tools.evaluation import RESULTS_FILE, EvalResult, save_results

EXPERIMENT = {
    "experiments": [
        {
            "name": "blend-test",
            "enabled": True,
            "control": "control",
            "variants": [
                {"name": "control", "weight": 50},
                {"name": "cf-heavy", "weight": 50, "overrides": {"weights": {"embedding": 0.3, "cf": 1.5}}},
            ],
        }
    ]
}


def _by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _wait_for(driver: Any, selector: str) -> Any:
    """The first element matching ``selector`` once the page that has it has loaded (after a click)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    located = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector))
    return WebDriverWait(driver, 60).until(located)


def _until(driver: Any, check: Any) -> Any:
    """Wait (60 s at most) until ``check(driver)`` holds, e.g. the page a click leads to has loaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 60).until(check)


def _column(driver: Any, table: str, column: int) -> list[str]:
    """The text of one column (1-based) of a table's body rows."""
    rows = _by_css(driver, f"{table} tbody tr")
    return [r.find_element("css selector", f"td:nth-child({column})").text for r in rows]


def _serve(console: Console) -> ConsoleServer:
    server = ConsoleServer(console, port=0)
    server.start()
    return server


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> dict[str, Any]:
    """The experiment defined, 16 users with two likes each served a list, clicks attributed to some."""
    config = json.dumps(EXPERIMENT).encode()
    stack.s3.put_object(Bucket=stack.bucket, Key="config/experiments.json", Body=config)
    items = [str(r["item_id"]) for r in stack.rows]
    users = [f"ab-{n}" for n in range(16)]
    likes = [
        {"event_id": f"like-{u}-{j}", "user_id": u, "item_id": items[(3 * n + j) % len(items)],
         "type": "like"}
        for n, u in enumerate(users)
        for j in range(2)
    ]
    assert stack.http.post(stack.url("/events"), json={"events": likes}, timeout=60).status_code == 202

    def served(user: str) -> dict[str, Any]:
        return dict(stack.get(f"/users/{user}/recommendations", k=5).json())

    # warm containers re-read config/experiments.json every second
    assert Stack.eventually(lambda: served(users[0]).get("experiment") == "blend-test", timeout=30)
    lists = {u: served(u) for u in users}
    clicks = [
        {"event_id": f"click-{u}", "user_id": u, "item_id": body["items"][0]["item_id"],
         "type": "click", "recommendation_id": body["recommendation_id"]}
        for n, (u, body) in enumerate(lists.items())
        if body["items"] and (n % 2 == 0 or body["variant"] == "cf-heavy")
    ]
    assert stack.http.post(stack.url("/events"), json={"events": clicks}, timeout=60).status_code == 202
    return {"users": users, "variants": {b["variant"] for b in lists.values()}}


@pytest.fixture(scope="module")
def eval_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results in the shape ``embrec eval`` saves (its own EvalResult and save_results), four strategies."""
    names = ("popularity", "embedding", "cf", "hybrid")
    metrics = {
        name: {"HR@10": 0.1 * i, "NDCG@10": 0.05 * i, "Recall@20": 0.15 * i, "MRR": 0.04 * i,
               "coverage@10": 0.2 + 0.1 * i, "diversity@10": 0.5, "novelty@10": 9.0}
        for i, name in enumerate(names, 1)
    }
    per_case = {n: {"HR@10": [float(i % 2), 1.0], "NDCG@10": [0.5, 0.1 * i]} for i, n in enumerate(names)}
    info = {"items": 115, "k": 10, "seed": 0}
    result = EvalResult("movielens", "leave-last-out", 2, metrics, info, per_case)
    path = tmp_path_factory.mktemp("eval") / RESULTS_FILE
    save_results(result.to_dict(), path)
    return path


@pytest.fixture(scope="module")
def console(stack: Stack, traffic: dict[str, Any], eval_results: Path) -> Iterator[str]:
    """The console over the stack, on a free port; its base URL."""
    built = Console(
        ApiClient(stack.env.api_url),
        StackReads(Runtime(stack.env.settings)),
        ConsoleConfig(rebuild_rate="rate(1 hour)", eval_results=eval_results),
    )
    server = _serve(built)
    try:
        yield server.url
    finally:
        server.stop()


def test_every_page_opens_from_the_navigation_bar(browser: Any, console: str, stack: Stack) -> None:
    # Given the overview
    browser.get(console + "/")
    assert browser.find_element("css selector", "h1").text == "Overview"
    body = browser.find_element("css selector", "main").text
    assert stack.rebuilt["version"] in body  # the live version, from the API and from index/current.json
    assert "slice.jsonl" in body and "not known" not in body  # last catalog upload; the next rebuild's time
    assert "last hour" in body and not _by_css(browser, ".notice")
    screenshot(browser, "overview")
    # When each link of the navigation bar is followed, its page opens without an error notice
    labels = [a.text for a in _by_css(browser, "nav a")]
    assert labels == ["Overview", "Search", "Users", "Onboarding", "Experiments", "Evaluation"]
    for label in labels[1:]:
        next(a for a in _by_css(browser, "nav a") if a.text == label).click()
        _until(browser, lambda d, label=label: d.title.startswith(label))
        assert browser.find_element("css selector", "nav a[aria-current=page]").text == label
        assert not _by_css(browser, ".notice[data-problem=error]"), label
        screenshot(browser, f"nav-{label.lower()}")


def test_search_then_follow_a_result_to_its_item(browser: Any, console: str) -> None:
    browser.get(console + "/search")
    box = browser.find_element("css selector", "input[name=q]")
    box.send_keys("animated toys come to life")
    box.submit()
    _wait_for(browser, "#results")
    assert "/search?q=animated" in browser.current_url  # a permalink
    results = _by_css(browser, "#results tbody tr")
    assert len(results) >= 5
    screenshot(browser, "search")
    link = results[0].find_element("css selector", "a")
    title = link.text
    link.click()
    _wait_for(browser, "#similar")
    assert "/items/" in browser.current_url and browser.find_element("css selector", "h1").text == title
    assert _by_css(browser, "#fields tbody tr") and len(_by_css(browser, "#similar tbody tr")) >= 5
    assert _by_css(browser, "#similar ul.reasons li")  # reasons are shown
    screenshot(browser, "item")


def test_a_what_if_event_changes_the_next_list(browser: Any, console: str, stack: Stack) -> None:
    # Given a user opened from the user picker, with no events yet
    browser.get(console + "/users")
    field = browser.find_element("css selector", "input[name=user_id]")
    field.send_keys("whatif-1")
    field.submit()
    _wait_for(browser, "#recommendations")
    assert browser.current_url.endswith("/users/whatif-1")
    before = _column(browser, "#recommendations", 2)
    assert "No events stored" in browser.find_element("css selector", "main").text
    screenshot(browser, "user-before")
    # When a real "like" of a horror movie is posted through the what-if box
    horror = next(str(r["item_id"]) for r in stack.rows if "Horror" in r["tags"])
    form = browser.find_element("css selector", "#whatif")
    assert "REAL WRITE" in form.text
    form.find_element("css selector", "input[name=item_id]").send_keys(horror)
    form.find_element("css selector", "button").click()
    # Then the page shows the next request's list, compared with the one before, and the event on top
    assert "Event written" in _wait_for(browser, "[role=status]").text
    after = _column(browser, "#recommendations", 2)
    assert after and after != before
    assert "personalized" in browser.find_element("css selector", "main .grid").text
    changes = _column(browser, "#recommendations", 6)
    assert any(c == "NEW" or c.startswith(("▲", "▼")) for c in changes)
    assert horror in browser.find_element("css selector", "#timeline li").text
    screenshot(browser, "user-after-what-if")
    # And the filter controls go to the API: a category filter keeps only that category
    browser.get(console + "/users/whatif-1?category=Comedy&diversity=0.5")
    assert set(_column(browser, "#recommendations", 3)) == {"Comedy"}
    screenshot(browser, "user-phone", width=390)


def test_onboarding_yields_a_first_list(browser: Any, console: str) -> None:
    browser.get(console + "/onboarding")
    form = browser.find_element("css selector", "#onboarding")
    answers = {"user_id": "newcomer-1", "interests": "space, robots", "goals": "weekend", "experience": "new"}
    for name, value in answers.items():
        form.find_element("css selector", f"input[name={name}]").send_keys(value)
    form.find_element("css selector", "button").click()
    _wait_for(browser, "#onboarding-list")
    screenshot(browser, "onboarding")
    assert len(_by_css(browser, "#onboarding-list tbody tr")) >= 5
    assert "onboarding" in browser.find_element("css selector", "main .grid").text


def test_the_experiment_table_and_chart_with_error_bars(
    browser: Any, console: str, traffic: dict[str, Any]
) -> None:
    browser.get(console + "/experiments")
    assert "LIVE" in browser.find_element("css selector", "main p").text
    variants = _column(browser, "#report", 1)
    assert variants[0] == "control (control)" and len(variants) == len(traffic["variants"]) == 2
    chart = browser.find_element("css selector", "svg#ctr-chart")
    assert chart.size["width"] > 300  # rendered, not just present
    for row in _by_css(browser, "svg#ctr-chart g.row"):
        assert len(row.find_elements("css selector", "line.errorbar")) == 3  # whisker and two caps
    assert len(_by_css(browser, "svg#conversion-chart g.row")) == 2
    screenshot(browser, "experiments")


def test_the_evaluation_page_shows_the_latest_eval(browser: Any, console: str) -> None:
    browser.get(console + "/evaluation")
    assert _column(browser, "#metrics", 1) == ["popularity", "embedding", "cf", "hybrid"]
    assert len(_by_css(browser, "svg#eval-chart rect.bar")) == 4 * 5  # strategies x metrics
    screenshot(browser, "evaluation")


def test_clear_messages_for_an_unknown_item_and_an_api_that_is_down(
    browser: Any, console: str, stack: Stack
) -> None:
    browser.get(console + "/items/no-such-item")
    kinds = {n.get_attribute("data-problem") for n in _by_css(browser, ".notice")}
    assert kinds == {"not-found"}
    screenshot(browser, "item-unknown")
    # Given a console whose API does not answer (nothing listens on the port of a stopped server)
    gone = _serve(Console(ApiClient(stack.env.api_url), StackReads(Runtime(stack.env.settings)),
                          ConsoleConfig("rate(1 hour)", Path("/nonexistent"))))
    closed = gone.url
    gone.stop()
    down = _serve(Console(ApiClient(closed), StackReads(Runtime(stack.env.settings)),
                          ConsoleConfig("rate(1 hour)", Path("/nonexistent"))))
    try:
        for page in ("/", "/users/1", "/search?q=x", "/items/ml-1"):
            browser.get(down.url + page)
            notices = _by_css(browser, ".notice[data-problem=api-down]")
            assert notices and "does not answer" in notices[0].text, page
        screenshot(browser, "api-down")
    finally:
        down.stop()
