"""Loaders for public recommendation datasets, read from the files exactly as their publishers ship them.

Each loader returns a :class:`Dataset`: catalog rows in the catalog schema (``embrec.domain.catalog``; every
row has passed ``validate_row``) and ``(user_id, Interaction)`` pairs (``embrec.domain.model.Interaction``),
ready for ``signals.compute_signals``, the evaluation and the demo (which uploads
``to_jsonl(dataset.catalog_rows)``).

Ratings become interaction types with :func:`rating_to_type` (same thresholds for both datasets)::

    rating >= 4.0          -> "like"     (MovieLens 4.0-5.0, Amazon 4-5)
    2.5 <= rating < 4.0    -> "view"     (watched / bought, lukewarm: MovieLens 2.5-3.5, Amazon 3)
    rating < 2.5           -> "dislike"  (MovieLens 0.5-2.0, Amazon 1-2)

``Interaction.value`` keeps the original rating and ``timestamp`` the original epoch seconds.

- MovieLens (``ml-latest-small``: movies.csv, ratings.csv, tags.csv, optional links.csv; CRLF CSV with
  header): item_id ``"ml-<movieId>"``; user_id ``"<userId>"``; title without the trailing "(year)" and with
  a trailing English article moved to the front ("Matrix, The" -> "The Matrix"); category = first genre;
  tags = genres then the most frequent user tags; extra = movie_id, year, imdb_id/tmdb_id (from links.csv).
  No description and no created_at (MovieLens has neither).
- Amazon Review Data 2018 (any category; built for Magazine Subscriptions): ratings CSV without header
  (``item,user,rating,timestamp``) and the ``meta_<Category>.json[.gz]`` JSON Lines. item_id = ASIN,
  user_id = reviewer id. A repeated (item, user) keeps the latest rating. ``title`` is an HTML fragment for
  most items, so a broken title falls back to "<brand>: <deepest category>"; description, category path
  and brand are unescaped (HTML entities) and stripped of tags; category = the first level under the root,
  tags = the deeper levels. Items without metadata are left out of the catalog and their ratings dropped;
  both are counted in ``stats``.
"""

from __future__ import annotations

import csv
import gzip
import html
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from embrec.domain.catalog import MAX_DESCRIPTION_CHARS, MAX_TAG_CHARS, MAX_TAGS, RowError, validate_row
from embrec.domain.model import Interaction
from embrec.errors import InvalidInputError

__all__ = [
    "Dataset",
    "RatingThresholds",
    "load_amazon2018",
    "load_movielens",
    "rating_to_type",
    "split_movielens_title",
    "to_jsonl",
]


@dataclass(frozen=True)
class RatingThresholds:
    """Rating -> interaction type cut-offs (see the module docstring)."""

    like_at: float = 4.0
    view_at: float = 2.5


DEFAULT_THRESHOLDS = RatingThresholds()


def rating_to_type(rating: float, thresholds: RatingThresholds = DEFAULT_THRESHOLDS) -> str:
    """"like" | "view" | "dislike" for a star rating."""
    if rating >= thresholds.like_at:
        return "like"
    if rating >= thresholds.view_at:
        return "view"
    return "dislike"


@dataclass
class Dataset:
    """A loaded dataset.

    ``catalog_rows``: catalog-schema dicts (valid for ``embrec.domain.catalog.validate_row``), sorted by
    item_id.
    ``interactions``: ``(user_id, Interaction)`` sorted by (user_id, timestamp, item_id); only on catalog
    items.
    ``stats``: counts of what was read, kept, dropped (names in the loader docstrings).
    """

    name: str
    catalog_rows: list[dict[str, Any]]
    interactions: list[tuple[str, Interaction]]
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def item_ids(self) -> list[str]:
        return [str(row["item_id"]) for row in self.catalog_rows]

    @property
    def user_ids(self) -> list[str]:
        return sorted({user for user, _ in self.interactions})

    def history(self) -> dict[str, list[Interaction]]:
        """Interactions grouped by user, each list oldest first."""
        grouped: dict[str, list[Interaction]] = defaultdict(list)
        for user, event in self.interactions:
            grouped[user].append(event)
        return dict(grouped)


def to_jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """Catalog rows as JSON Lines bytes (UTF-8, one object per line), e.g. to upload to catalog/incoming/."""
    return b"".join(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n" for row in rows)


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise InvalidInputError("path", f"dataset file not found: {path}")
    return path


def _finish(
    name: str,
    rows: list[dict[str, Any]],
    events: list[tuple[str, Interaction]],
    stats: dict[str, int],
) -> Dataset:
    """Validate rows, drop events on rejected/unknown items, sort, count."""
    accepted: list[dict[str, Any]] = []
    for row in rows:
        try:
            validate_row(row)
        except RowError:
            stats["catalog_rows_rejected"] = stats.get("catalog_rows_rejected", 0) + 1
            continue
        accepted.append(row)
    accepted.sort(key=lambda r: str(r["item_id"]))
    known = {str(row["item_id"]) for row in accepted}
    kept = [(user, ev) for user, ev in events if ev.item_id in known]
    dropped = len(events) - len(kept)
    stats["interactions_on_unknown_items"] = stats.get("interactions_on_unknown_items", 0) + dropped
    kept.sort(key=lambda pair: (pair[0], pair[1].timestamp, pair[1].item_id))
    stats["catalog_rows"] = len(accepted)
    stats.setdefault("catalog_rows_rejected", 0)
    stats["interactions"] = len(kept)
    stats["users"] = len({user for user, _ in kept})
    for kind, count in sorted(Counter(ev.type for _, ev in kept).items()):
        stats[f"interactions_{kind}"] = count
    return Dataset(name=name, catalog_rows=accepted, interactions=kept, stats=stats)


def _clean_tag(tag: str) -> str:
    return " ".join(tag.split())[:MAX_TAG_CHARS].strip()


def _add_tags(tags: list[str], new: Iterable[str], limit: int = MAX_TAGS) -> None:
    seen = {t.casefold() for t in tags}
    for tag in new:
        clean = _clean_tag(tag)
        if clean and clean.casefold() not in seen and len(tags) < limit:
            seen.add(clean.casefold())
            tags.append(clean)


# ---------------------------------------------------------------------------------------------------------
# MovieLens

_YEAR = re.compile(r"\s*\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$")
_ARTICLE = re.compile(r"^(?P<name>.+?), (?P<article>The|A|An)(?P<rest> \(.*\))?$")
NO_GENRES = "(no genres listed)"


def split_movielens_title(raw: str) -> tuple[str, int | None]:
    """("Matrix, The (1999)") -> ("The Matrix", 1999); titles without a year keep year None."""
    title = raw.strip()
    year: int | None = None
    match = _YEAR.search(title)
    if match is not None and match.start() > 0:
        year = int(match.group(1))
        title = title[: match.start()].strip()
    article = _ARTICLE.match(title)
    if article is not None:
        title = f"{article['article']} {article['name']}{article['rest'] or ''}"
    return title, year


def load_movielens(
    directory: Path,
    *,
    user_tags: int = 5,
    thresholds: RatingThresholds = DEFAULT_THRESHOLDS,
) -> Dataset:
    """Load GroupLens ``ml-latest-small`` (or any ml-latest layout) from ``directory``.

    ``user_tags``: how many of a movie's most frequent user tags (case-insensitive, ties alphabetical) join
    its genres as tags. Stats: movies_read, ratings_read, tags_read, catalog_rows, catalog_rows_rejected,
    interactions, interactions_<type>, interactions_on_unknown_items, users.
    """
    movies_path = _require(directory / "movies.csv")
    ratings_path = _require(directory / "ratings.csv")
    tags_path = directory / "tags.csv"
    links_path = directory / "links.csv"
    stats: dict[str, int] = {}

    tag_counts: dict[str, Counter[str]] = defaultdict(Counter)
    spelling: dict[tuple[str, str], str] = {}
    stats["tags_read"] = 0
    if tags_path.is_file():
        with _open_text(tags_path) as fh:
            for rec in csv.DictReader(fh):
                tag = _clean_tag(rec["tag"])
                if not tag:
                    continue
                stats["tags_read"] += 1
                key = tag.casefold()
                tag_counts[rec["movieId"]][key] += 1
                spelling.setdefault((rec["movieId"], key), tag)

    links: dict[str, dict[str, str]] = {}
    if links_path.is_file():
        with _open_text(links_path) as fh:
            for rec in csv.DictReader(fh):
                links[rec["movieId"]] = rec

    rows: list[dict[str, Any]] = []
    with _open_text(movies_path) as fh:
        for rec in csv.DictReader(fh):
            movie_id = rec["movieId"].strip()
            title, year = split_movielens_title(rec["title"])
            genres = [g for g in rec["genres"].split("|") if g and g != NO_GENRES]
            tags: list[str] = []
            _add_tags(tags, genres)
            frequent = sorted(tag_counts.get(movie_id, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))
            _add_tags(tags, [spelling[(movie_id, key)] for key, _ in frequent[:user_tags]])
            extra: dict[str, Any] = {"movie_id": int(movie_id)}
            if year is not None:
                extra["year"] = year
            link = links.get(movie_id)
            if link is not None:
                if link.get("imdbId"):
                    extra["imdb_id"] = f"tt{link['imdbId']}"
                if link.get("tmdbId"):
                    extra["tmdb_id"] = int(link["tmdbId"])
            rows.append({
                "item_id": f"ml-{movie_id}",
                "title": title or rec["title"].strip(),
                "category": genres[0] if genres else "",
                "tags": tags,
                "extra": extra,
            })
    stats["movies_read"] = len(rows)

    events: list[tuple[str, Interaction]] = []
    with _open_text(ratings_path) as fh:
        for rec in csv.DictReader(fh):
            rating = float(rec["rating"])
            user, movie = rec["userId"].strip(), rec["movieId"].strip()
            events.append((user, Interaction(
                item_id=f"ml-{movie}",
                type=rating_to_type(rating, thresholds),
                timestamp=float(rec["timestamp"]),
                value=rating,
                event_id=f"ml:{user}:{movie}",
            )))
    stats["ratings_read"] = len(events)
    return _finish("movielens", rows, events, stats)


# ---------------------------------------------------------------------------------------------------------
# Amazon Review Data 2018

_HTML_TAG = re.compile(r"<[^>]*>")
_PRICE = re.compile(r"^\$?\s*(\d{1,7}(?:\.\d{1,2})?)$")
AMAZON_ROOTS = frozenset({"Magazine Subscriptions"})


def _clean_html(text: str) -> str:
    """Unescape HTML entities and drop tags: "Arts &amp; <i>Music</i>" -> "Arts & Music"."""
    text = _HTML_TAG.sub(" ", text.replace("<br", "\n<br"))
    text = html.unescape(text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def _usable_title(raw: Any) -> str:
    if not isinstance(raw, str) or "<" in raw or "class=" in raw:
        return ""
    return " ".join(html.unescape(raw).split())


def _amazon_row(meta: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Catalog row from one metadata record; the bool says whether the title came from a fallback."""
    asin = str(meta["asin"]).strip()
    path = [_clean_html(c) for c in meta.get("category") or [] if isinstance(c, str)]
    path = [c for c in path if c]
    if path and path[0] in AMAZON_ROOTS:
        path = path[1:]
    details = meta.get("details") if isinstance(meta.get("details"), Mapping) else {}
    assert isinstance(details, Mapping)
    brand = _clean_html(str(meta.get("brand") or details.get("Publisher:") or ""))
    parts = meta.get("description") or []
    if isinstance(parts, str):
        parts = [parts]
    description = "\n\n".join(p for p in (_clean_html(x) for x in parts if isinstance(x, str)) if p)
    title = _usable_title(meta.get("title"))
    fallback = not title
    if fallback:
        leaf = path[-1] if path else ""
        title = f"{brand}: {leaf}" if brand and leaf and leaf != brand else (brand or leaf or asin)
    tags: list[str] = []
    _add_tags(tags, path[1:])
    row: dict[str, Any] = {
        "item_id": asin,
        "title": title[:500],
        "description": description[:MAX_DESCRIPTION_CHARS],
        "category": path[0][:200] if path else "",
        "tags": tags,
    }
    price = _PRICE.match(str(meta.get("price") or "").strip())
    if price is not None:
        row["price"] = float(price.group(1))
    extra: dict[str, Any] = {}
    if brand:
        extra["brand"] = brand[:200]
    fmt = details.get("Format:")
    if isinstance(fmt, str) and fmt.strip():
        extra["format"] = fmt.strip()[:100]
    if extra:
        row["extra"] = extra
    return row, fallback


def _read_amazon_meta(path: Path, stats: dict[str, int]) -> Iterator[dict[str, Any]]:
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            stats["metadata_lines"] += 1
            try:
                meta = json.loads(line)
            except ValueError:
                stats["metadata_invalid"] += 1
                continue
            if not isinstance(meta, dict) or not str(meta.get("asin") or "").strip():
                stats["metadata_invalid"] += 1
                continue
            yield meta


def load_amazon2018(
    ratings_path: Path,
    meta_path: Path,
    *,
    thresholds: RatingThresholds = DEFAULT_THRESHOLDS,
    name: str = "amazon2018",
) -> Dataset:
    """Load one category of Amazon Review Data (2018): the ratings-only CSV and its metadata JSON Lines.

    Stats: ratings_read, ratings_invalid, duplicate_ratings_dropped, metadata_lines, metadata_invalid,
    metadata_duplicates, titles_from_fallback, items_rated, items_without_metadata,
    interactions_on_unknown_items (ratings on items without metadata, dropped), catalog_rows,
    catalog_rows_rejected, interactions, interactions_<type>, users.
    """
    _require(ratings_path)
    _require(meta_path)
    stats: dict[str, int] = {
        "ratings_read": 0, "ratings_invalid": 0, "metadata_lines": 0, "metadata_invalid": 0,
        "metadata_duplicates": 0, "titles_from_fallback": 0,
    }
    latest: dict[tuple[str, str], tuple[float, float]] = {}
    with _open_text(ratings_path) as fh:
        for rec in csv.reader(fh):
            if not rec or all(not cell.strip() for cell in rec):
                continue
            stats["ratings_read"] += 1
            try:
                item, user, rating, ts = rec[0].strip(), rec[1].strip(), float(rec[2]), float(rec[3])
            except (IndexError, ValueError):
                stats["ratings_invalid"] += 1
                continue
            if not item or not user:
                stats["ratings_invalid"] += 1
                continue
            previous = latest.get((item, user))
            if previous is None or ts >= previous[0]:  # ties: the later line wins
                latest[(item, user)] = (ts, rating)
    stats["duplicate_ratings_dropped"] = stats["ratings_read"] - stats["ratings_invalid"] - len(latest)

    rows: dict[str, dict[str, Any]] = {}
    for meta in _read_amazon_meta(meta_path, stats):
        asin = str(meta["asin"]).strip()
        if asin in rows:
            stats["metadata_duplicates"] += 1
            continue
        row, fallback = _amazon_row(meta)
        stats["titles_from_fallback"] += int(fallback)
        rows[asin] = row

    rated = {item for item, _ in latest}
    stats["items_rated"] = len(rated)
    stats["items_without_metadata"] = len(rated - rows.keys())
    events = [
        (user, Interaction(item_id=item, type=rating_to_type(rating, thresholds), timestamp=ts, value=rating,
                           event_id=f"amz:{user}:{item}"))
        for (item, user), (ts, rating) in latest.items()
    ]
    return _finish(name, list(rows.values()), events, stats)
