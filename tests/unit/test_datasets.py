"""embrec_tools.datasets on small fixtures: a real MovieLens slice and a synthetic Amazon-2018-format file."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest

from embrec.domain.catalog import read_catalog, validate_row
from embrec.domain.model import Interaction
from embrec.errors import InvalidInputError
from embrec_tools.datasets import (
    Dataset,
    RatingThresholds,
    load_amazon2018,
    load_movielens,
    rating_to_type,
    split_movielens_title,
    to_jsonl,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MOVIELENS = FIXTURES / "movielens-slice"
AMAZON = FIXTURES / "amazon-synthetic"


@pytest.mark.parametrize(
    ("rating", "kind"),
    [(5.0, "like"), (4.0, "like"), (3.5, "view"), (3.0, "view"), (2.5, "view"), (2.0, "dislike"),
     (0.5, "dislike"), (1, "dislike")],
)
def test_rating_to_type(rating: float, kind: str) -> None:
    assert rating_to_type(rating) == kind


def test_rating_thresholds_configurable() -> None:
    assert rating_to_type(3.0, RatingThresholds(like_at=3.0, view_at=2.0)) == "like"


@pytest.mark.parametrize(
    ("raw", "title", "year"),
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("Matrix, The (1999)", "The Matrix", 1999),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)",
         "The City of Lost Children (Cité des enfants perdus, La)", 1995),
        ("From Dusk Till Dawn 2: Texas Blood Money (1999) ",
         "From Dusk Till Dawn 2: Texas Blood Money", 1999),
        ("Babylon 5", "Babylon 5", None),
        ("Fawlty Towers (1975-1979)", "Fawlty Towers", 1975),
        ("1900 (Novecento) (1976)", "1900 (Novecento)", 1976),
    ],
)
def test_split_movielens_title(raw: str, title: str, year: int | None) -> None:
    assert split_movielens_title(raw) == (title, year)


# --- MovieLens ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def movielens() -> Dataset:
    return load_movielens(MOVIELENS)


def test_movielens_counts(movielens: Dataset) -> None:
    # The slice: every rating of users 2, 3 and 5, the movies they rated plus five title edge cases.
    assert movielens.stats["movies_read"] == 115
    assert movielens.stats["catalog_rows"] == 115
    assert movielens.stats["catalog_rows_rejected"] == 0
    assert movielens.stats["ratings_read"] == 112
    assert movielens.stats["interactions"] == 112
    assert movielens.user_ids == ["2", "3", "5"]
    assert Counter(u for u, _ in movielens.interactions) == {"2": 29, "3": 39, "5": 44}


def test_movielens_catalog_rows(movielens: Dataset) -> None:
    rows = {r["item_id"]: r for r in movielens.catalog_rows}
    matrix = rows["ml-2571"]
    assert matrix["title"] == "The Matrix"
    assert matrix["category"] == "Action"
    assert matrix["tags"][:3] == ["Action", "Sci-Fi", "Thriller"]
    assert 3 < len(matrix["tags"]) <= 3 + 5  # genres, then at most 5 user tags
    assert matrix["extra"] == {"movie_id": 2571, "year": 1999, "imdb_id": "tt0133093", "tmdb_id": 603}
    no_genre = rows["ml-114335"]
    assert (no_genre["category"], no_genre["tags"]) == ("", [])
    assert "year" not in rows["ml-40697"]["extra"]
    assert "created_at" not in matrix and "description" not in matrix
    assert [r["item_id"] for r in movielens.catalog_rows] == sorted(rows)
    for row in movielens.catalog_rows:
        validate_row(row)


def test_movielens_user_tags_most_frequent_first(movielens: Dataset) -> None:
    step_brothers = next(r for r in movielens.catalog_rows if r["item_id"] == "ml-60756")
    assert step_brothers["tags"][0] == "Comedy"
    assert set(step_brothers["tags"][1:]) == {"funny", "Highly quotable", "will ferrell"}


def test_movielens_interactions(movielens: Dataset) -> None:
    by_key = {(u, e.item_id): e for u, e in movielens.interactions}
    # ratings.csv: 2,318,3.0,1445714835 and 2,131724,5.0,1445714851 and 3,31,0.5,1306463578
    assert by_key[("2", "ml-318")] == Interaction("ml-318", "view", 1445714835.0, 3.0, "ml:2:318")
    assert by_key[("2", "ml-131724")].type == "like"
    assert by_key[("3", "ml-31")] == Interaction("ml-31", "dislike", 1306463578.0, 0.5, "ml:3:31")
    keys = [(u, e.timestamp, e.item_id) for u, e in movielens.interactions]
    assert keys == sorted(keys)
    history = movielens.history()
    assert [e.timestamp for e in history["5"]] == sorted(e.timestamp for e in history["5"])
    item_ids = set(movielens.item_ids)
    assert all(e.item_id in item_ids for _, e in movielens.interactions)


def test_movielens_rows_survive_the_catalog_reader(movielens: Dataset) -> None:
    results = list(read_catalog(io.BytesIO(to_jsonl(movielens.catalog_rows)), "jsonl"))
    assert len(results) == 115 and all(r.ok for r in results)


def test_missing_files_raise(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        load_movielens(tmp_path)
    with pytest.raises(InvalidInputError):
        load_amazon2018(tmp_path / "r.csv", tmp_path / "m.json")


# --- Amazon 2018 (synthetic) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amazon() -> Dataset:
    return load_amazon2018(AMAZON / "ratings-synthetic.csv", AMAZON / "meta-synthetic.json")


def test_amazon_counts(amazon: Dataset) -> None:
    assert amazon.stats == {
        "ratings_read": 10,
        "ratings_invalid": 1,
        "duplicate_ratings_dropped": 2,
        "metadata_lines": 6,
        "metadata_invalid": 1,
        "metadata_duplicates": 1,
        "titles_from_fallback": 3,
        "items_rated": 5,
        "items_without_metadata": 1,
        "interactions_on_unknown_items": 1,
        "catalog_rows": 4,
        "catalog_rows_rejected": 0,
        "interactions": 6,
        "users": 3,
        "interactions_like": 4,
        "interactions_dislike": 2,
    }


def test_amazon_catalog_rows_clean_html_and_fallback_titles(amazon: Dataset) -> None:
    rows = {r["item_id"]: r for r in amazon.catalog_rows}
    music = rows["SYNTH00001"]
    assert music["title"] == "Example Press: Music"  # broken HTML title -> brand + deepest category
    assert music["category"] == "Arts, Music & Photography"  # &amp; unescaped, root level dropped
    assert music["tags"] == ["Music"]
    assert music["description"] == "A made-up music magazine.\nReviews & interviews."
    assert music["extra"] == {"brand": "Example Press", "format": "Print Magazine"}
    garden = rows["SYNTH00002"]
    assert (garden["title"], garden["price"], garden["extra"]["brand"]) == ("Garden Monthly", 12.99,
                                                                           "Leaf & Stem Media")
    assert rows["SYNTH00003"]["title"] == "Nobody Ltd"  # publisher from details
    assert "price" not in rows["SYNTH00003"]  # CSS junk in the price field is ignored
    assert rows["SYNTH00004"]["title"] == "SYNTH00004"  # nothing else to go on
    assert "SYNTH00099" not in rows  # rated, but no metadata
    for row in amazon.catalog_rows:
        validate_row(row)


def test_amazon_interactions_deduplicated_latest_wins(amazon: Dataset) -> None:
    by_key = {(u, e.item_id): e for u, e in amazon.interactions}
    assert by_key[("UA", "SYNTH00002")] == Interaction("SYNTH00002", "like", 1500259200.0, 4.0,
                                                       "amz:UA:SYNTH00002")
    assert by_key[("UB", "SYNTH00003")].value == 4.0  # the older 1.0 came later in the file, but is older
    assert by_key[("UB", "SYNTH00001")].type == "dislike"
    assert all(e.item_id != "SYNTH00099" for _, e in amazon.interactions)
    assert amazon.user_ids == ["UA", "UB", "UC"]


def test_to_jsonl_is_one_object_per_line(amazon: Dataset) -> None:
    lines = to_jsonl(amazon.catalog_rows).decode().splitlines()
    assert [json.loads(line)["item_id"] for line in lines] == [r["item_id"] for r in amazon.catalog_rows]
