"""The ``embrec`` CLI without a stack: argument parsing, settings, tables, progress, the demo's helpers."""

from __future__ import annotations

import io
import re

import pytest

from embrec.config import RESOURCE_VARIABLES
from embrec.domain.model import Interaction
from embrec.errors import ConfigurationError
from embrec_tools.cli import api_base_url, build_parser, main, recommend_params, results_table
from embrec_tools.demo import (
    Progress,
    event_payload,
    format_table,
    pick_showcase_users,
    rebase_timestamps,
    select_replay,
)
from embrec_tools.settings import cli_settings


def _ev(item: str, ts: float, kind: str = "like", value: float | None = 4.0) -> Interaction:
    return Interaction(item_id=item, type=kind, timestamp=ts, value=value, event_id=f"e-{item}-{ts}")


# ---------------------------------------------------------------------------------------------- parsing


def test_every_command_parses_with_its_defaults() -> None:
    parser = build_parser()
    demo = parser.parse_args(["demo"])
    assert demo.no_serve is False and demo.events == 2_000
    assert parser.parse_args(["demo", "--no-serve", "--events", "500"]).events == 500
    assert parser.parse_args(["local", "up"]).no_serve is False
    assert parser.parse_args(["encoder", "build", "--out", "x"]).quantize == "none"
    ingest = parser.parse_args(["ingest", "catalog.jsonl"])
    assert ingest.file == "catalog.jsonl" and ingest.key is None and ingest.aws is False
    assert parser.parse_args(["rebuild", "--aws"]).aws is True
    similar = parser.parse_args(["similar", "ml-1", "--k", "3"])
    assert similar.item_id == "ml-1" and similar.k == 3
    search = parser.parse_args(["search", "space robots"])
    assert search.text == "space robots" and search.k == 10


def test_recommend_options_become_query_parameters() -> None:
    args = build_parser().parse_args([
        "recommend", "42", "--k", "5", "--explain", "--category", "Comedy,Drama", "--exclude-category",
        "Horror", "--tags", "pixar", "--min-price", "1", "--max-price", "9.5", "--diversity", "0.3",
    ])
    assert args.user_id == "42"
    assert recommend_params(args) == {
        "k": "5", "explain": "true", "category": "Comedy,Drama", "exclude_category": "Horror",
        "tags": "pixar", "min_price": "1.0", "max_price": "9.5", "diversity": "0.3",
    }
    plain = build_parser().parse_args(["recommend", "42"])
    assert recommend_params(plain) == {"k": "10"}


@pytest.mark.parametrize("argv", [["recommend", "u", "--k", "0"], ["demo", "--events", "x"], ["local"], []])
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "usage: embrec" in capsys.readouterr().err


def test_settings_point_at_the_local_stack_unless_told_otherwise() -> None:
    assert cli_settings(env={}).aws_endpoint == "http://127.0.0.1:4566"
    assert cli_settings(env={"EMBREC_AWS_PORT": "4999"}).aws_endpoint == "http://127.0.0.1:4999"
    assert cli_settings(env={"EMBREC_AWS_ENDPOINT": "http://ls:4566"}).aws_endpoint == "http://ls:4566"
    # real AWS: no endpoint, and the stack's resource names must be exported (no silent local default)
    names = {variable: "from-the-stack" for variable in RESOURCE_VARIABLES}
    env = {"EMBREC_AWS_ENDPOINT": "http://ls:4566", **names}
    assert cli_settings(real_aws=True, env=env).aws_endpoint is None
    with pytest.raises(ConfigurationError):
        cli_settings(real_aws=True, env={"EMBREC_AWS_ENDPOINT": "http://ls:4566"})
    args = build_parser().parse_args(["search", "x"])
    assert api_base_url(args, env={"EMBREC_PORT": "3100"}) == "http://127.0.0.1:3100"
    args = build_parser().parse_args(["search", "x", "--api-url", "http://h:1/"])
    assert api_base_url(args) == "http://h:1"


def test_errors_are_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    # Given no API on this port, when a query command runs, then one clear line and a non-zero exit
    code = main(["search", "toy story", "--api-url", "http://127.0.0.1:9", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("embrec: error: cannot reach the API at http://127.0.0.1:9")
    assert "Traceback" not in err and err.count("\n") == 1
    code = main(["ingest", "/no/such/file.jsonl"])
    err = capsys.readouterr().err
    assert code != 0 and err == "embrec: error: no such file: /no/such/file.jsonl\n"
    # a bad setting is reported with its variable's name
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBREC_PORT", "zero")
        code = main(["similar", "ml-1"])
    err = capsys.readouterr().err
    assert code != 0 and "EMBREC_PORT" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- tables


def test_table_aligns_columns_formats_values_and_cuts_long_cells() -> None:
    text = format_table(
        ("#", "title", "score", "reasons"),
        [(1, "Toy Story", 0.98765, ["because you liked A", "trending"]), (2, "A" * 30, None, ())],
        {1: 12},
    )
    lines = text.splitlines()
    assert lines[0].split() == ["#", "title", "score", "reasons"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split("  ")[0] == "1"
    assert "0.988" in lines[2] and "because you liked A; trending" in lines[2]
    assert "A" * 11 + "…" in lines[3] and "A" * 12 not in lines[3]
    # every column starts at the same offset on every line
    start = lines[0].index("score")
    assert lines[2][start:].startswith("0.988")
    assert all(line == line.rstrip() for line in lines)


def test_table_collapses_whitespace_and_handles_no_rows() -> None:
    assert format_table(("a", "b"), [("x\ny", "z\tw")]).splitlines()[2] == "x y  z w"
    assert format_table(("only",), []).splitlines() == ["only", "----"]


def test_results_table_cuts_titles_and_reasons() -> None:
    text = results_table(("#", "title", "reasons"), [(1, "T" * 100, ["r" * 200])])
    row = text.splitlines()[2]
    assert "T" * 47 + "…" in row and "r" * 79 + "…" in row


# ---------------------------------------------------------------------------------------------- progress


def test_progress_prints_greppable_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = Progress("events", 1000, stream, tty=False)
    for done in range(0, 1001, 50):
        bar.update(done)
    bar.close("accepted 1000")
    lines = stream.getvalue().splitlines()
    assert all(re.fullmatch(r"progress events \d+/1000 \(\d+%\).*", line) for line in lines)
    assert len(lines) == 11  # one per 10% step below 100%, then the final line
    assert lines[-1].startswith("progress events 1000/1000 (100%) accepted 1000 in ")
    assert "\r" not in stream.getvalue()


def test_progress_draws_a_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    bar = Progress("ingest", 10, stream, tty=True, width=10)
    bar.update(5)
    bar.update(10)  # drawn at most every 0.1 s; close() always draws the final state
    bar.close()
    output = stream.getvalue()
    assert output.startswith("\r") and output.endswith("\n")
    assert "[██████████] 10/10" in output and "[█████·····] 5/10" in output


# ---------------------------------------------------------------------------------------------- demo helpers


def test_showcase_users_are_the_most_on_theme_distinct_users() -> None:
    tags = {"a1": ["Animation"], "a2": ["Children"], "h1": ["Horror"], "d1": ["Drama"]}
    history = {
        "kid": [_ev("a1", 1), _ev("a2", 2), _ev("d1", 3)],
        "fan": [_ev("h1", 1), _ev("h1", 2), _ev("a1", 3)],
        "few": [_ev("a1", 1)],
        "hater": [_ev("a1", 1, "dislike"), _ev("a2", 2, "dislike"), _ev("d1", 3), _ev("d1", 4)],
    }
    themes = (("animation", frozenset({"Animation", "Children"})), ("horror", frozenset({"Horror"})))
    picked = pick_showcase_users(history, tags, themes, min_events=2, max_events=10)
    assert [(label, user) for label, user, _ in picked] == [("animation", "kid"), ("horror", "fan")]
    assert picked[0][2] == pytest.approx(2 / 3)


def test_replay_keeps_required_users_whole_and_fits_the_budget() -> None:
    interactions = [(u, _ev(f"i{n}", float(n))) for u in ("a", "b", "c", "d") for n in range(5)]
    interactions += [("big", _ev(f"i{n}", float(n))) for n in range(50)]
    chosen = select_replay(interactions, ["big"], budget=60, seed=1)
    users = [u for u, _ in chosen]
    assert users.count("big") == 50 and len(chosen) <= 60 and len(chosen) == 60
    assert [e.timestamp for _, e in chosen] == sorted(e.timestamp for _, e in chosen)
    assert select_replay(interactions, ["big"], budget=60, seed=1) == chosen  # seeded
    assert len(select_replay(interactions, ["big"], budget=1)) == 50  # required users are always complete


def test_rebase_keeps_order_and_lands_inside_the_window() -> None:
    events = [("u", _ev("a", 1_000.0)), ("u", _ev("b", 5_000.0)), ("v", _ev("c", 3_000.0))]
    now = 2_000_000_000.0
    rebased = rebase_timestamps(events, now, span_days=10, margin_s=60)
    stamps = [e.timestamp for _, e in rebased]
    assert stamps[0] == pytest.approx(now - 60 - 10 * 86400) and stamps[1] == pytest.approx(now - 60)
    assert stamps[0] < stamps[2] < stamps[1]
    assert [(u, e.item_id, e.event_id, e.value) for u, e in rebased] == [
        (u, e.item_id, e.event_id, e.value) for u, e in events
    ]
    assert rebase_timestamps([], now) == []


def test_event_payload_is_what_post_events_takes() -> None:
    assert event_payload("7", _ev("ml-1", 12.5)) == {
        "event_id": "e-ml-1-12.5", "user_id": "7", "item_id": "ml-1", "type": "like", "timestamp": 12.5,
        "value": 4.0,
    }
    assert "value" not in event_payload("7", _ev("ml-1", 1.0, value=None))
