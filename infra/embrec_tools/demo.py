"""The demo tour (``embrec demo``) and the empty local stack (``embrec local up``).

``run_demo``: local stack → encoder (cached under ``.cache/encoders``) published to S3 → MovieLens catalog
uploaded to ``catalog/incoming/`` (S3 → SQS → ingest handler) → rebuild → sample events replayed over HTTP
``POST /events`` → rebuild → tables of recommendations, a cold start, similar items and a search → serve.

Everything the tour prints goes to one stream; long steps draw a progress bar on a terminal and print
clean ``progress <step> <done>/<total>`` lines otherwise. The pure helpers (table formatting, user and
event selection, timestamp rebasing) are unit-tested in tests/unit/test_cli.py.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from embrec.config import Settings
from embrec.domain.model import Interaction
from embrec.errors import NotFoundError, ServiceUnavailableError

__all__ = [
    "EVENT_BATCH",
    "THEMES",
    "DemoOptions",
    "Progress",
    "event_payload",
    "format_table",
    "pick_showcase_users",
    "quiet_logs",
    "rebase_timestamps",
    "run_demo",
    "run_local_up",
    "select_replay",
]

#: Events per ``POST /events`` request (the API's maximum).
EVENT_BATCH = 100
#: Showcase themes: (label, tags any of which marks an item as on-theme).
THEMES: tuple[tuple[str, frozenset[str]], ...] = (
    ("animation & children", frozenset({"Animation", "Children"})),
    ("horror & thriller", frozenset({"Horror", "Thriller"})),
    ("sci-fi", frozenset({"Sci-Fi"})),
)
CATALOG_KEY = "catalog/incoming/movielens.jsonl"
#: ``embrec console``'s default port (embrec_tools.console.DEFAULT_PORT; not imported: the demo stays light).
CONSOLE_PORT = 8300
DEFAULT_DATASET = Path("data") / "ml-latest-small"

# Powertools reads these when embrec.observability is first imported (by the first handler): the tour stays
# readable with warnings only, no EMF metric lines on stdout and no X-Ray segments.
_QUIET_ENV = {
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


def quiet_logs() -> None:
    """Quiet the handlers' Powertools logs and metrics for an interactive run (keeps values already set)."""
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    # with metrics disabled, every handler's flush warns that it has nothing to publish
    warnings.filterwarnings("ignore", message="No application metrics to publish")


# ------------------------------------------------------------------------------------------- output helpers


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], max_widths: Mapping[int, int] | None = None
) -> str:
    """A plain-text table: a header, a rule, one line per row; columns padded, long cells cut with "…".

    Floats print with 3 decimals, None as "", sequences joined with "; ". ``max_widths``: column index ->
    maximum characters. Returns the lines joined with newlines (no trailing newline).
    """
    limits = dict(max_widths or {})

    def cell(value: Any, column: int) -> str:
        if value is None:
            text = ""
        elif isinstance(value, float):
            text = f"{value:.3f}"
        elif isinstance(value, list | tuple):
            text = "; ".join(str(v) for v in value)
        else:
            text = str(value)
        text = " ".join(text.split())
        limit = limits.get(column)
        if limit is not None and len(text) > limit:
            text = text[: max(0, limit - 1)] + "…"
        return text

    body = [[cell(v, i) for i, v in enumerate(row)] for row in rows]
    head = [str(h) for h in headers]
    widths = [len(h) for h in head]
    for row in body:
        for i, text in enumerate(row):
            if i < len(widths):
                widths[i] = max(widths[i], len(text))
            else:
                widths.append(len(text))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(head)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(t.ljust(widths[i]) for i, t in enumerate(row)).rstrip() for row in body)
    return "\n".join(lines)


class Progress:
    """A progress bar on a terminal; greppable ``progress <label> <done>/<total> (<pct>%)`` lines otherwise.

    Non-terminal output prints at most one line per 10% step (and the final one), so logs stay short.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        stream: IO[str] | None = None,
        *,
        tty: bool | None = None,
        width: int = 28,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self.done = 0
        self.started = time.monotonic()
        self._last_step = -1
        self._last_draw = 0.0

    def update(self, done: int, note: str = "") -> None:
        """Set the count done so far (monotonic callers; a smaller value is shown as is)."""
        self.done = done
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                self.stream.write("\r" + self._bar(note))
                self.stream.flush()
            return
        if not self.total:
            return
        step = min(10, done * 10 // self.total)
        if step > self._last_step and step < 10:
            self._last_step = step
            self._line(note)

    def close(self, note: str = "") -> None:
        """The final state, with the elapsed time."""
        elapsed = f"{time.monotonic() - self.started:.1f}s"
        note = f"{note} in {elapsed}".strip()
        if self.tty:
            self.stream.write("\r" + self._bar(note) + "\n")
            self.stream.flush()
        else:
            self._line(note)

    def _bar(self, note: str) -> str:
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = round(fraction * self.width)
            bar = "█" * filled + "·" * (self.width - filled)
            text = f"  {self.label:<18} [{bar}] {self.done}/{self.total}"
        else:
            text = f"  {self.label:<18} {self.done}"
        return f"{text} {note}".rstrip() + "\033[K"

    def _line(self, note: str) -> None:
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        pct = f" ({100 * self.done // self.total}%)" if self.total else ""
        self.stream.write(f"progress {self.label.replace(' ', '-')} {count}{pct} {note}".rstrip() + "\n")
        self.stream.flush()


# ------------------------------------------------------------------------------------------- encoder cache


# ------------------------------------------------------------------------------------------- sample events


def pick_showcase_users(
    history: Mapping[str, Sequence[Interaction]],
    item_tags: Mapping[str, Sequence[str]],
    themes: Sequence[tuple[str, frozenset[str]]] = THEMES,
    *,
    min_events: int = 20,
    max_events: int = 400,
) -> list[tuple[str, str, float]]:
    """One distinct user per theme: the highest share of liked/viewed items on-theme (ties: smaller id).

    Only users with ``min_events..max_events`` interactions count (a clear taste, a quick replay).
    Returns ``[(theme label, user_id, share 0..1)]``; a theme no user fits is left out.
    """
    picked: list[tuple[str, str, float]] = []
    used: set[str] = set()
    for label, tags in themes:
        best: tuple[float, str] | None = None
        for user in sorted(history):
            events = [e for e in history[user] if e.type != "dislike"]
            if user in used or not (min_events <= len(history[user]) <= max_events) or not events:
                continue
            share = sum(1 for e in events if tags & set(item_tags.get(e.item_id, ()))) / len(events)
            if best is None or share > best[0]:
                best = (share, user)
        if best is not None:
            used.add(best[1])
            picked.append((label, best[1], best[0]))
    return picked


def select_replay(
    interactions: Sequence[tuple[str, Interaction]],
    must_include: Iterable[str],
    budget: int,
    seed: int = 7,
) -> list[tuple[str, Interaction]]:
    """Whole user histories to replay: every ``must_include`` user, then seeded-random others within budget.

    Whole histories keep co-occurrence (CF) intact. ``budget`` caps the total events, except that the
    ``must_include`` users are always complete. Returned sorted by (timestamp, user_id, item_id).
    """
    by_user: dict[str, list[Interaction]] = {}
    for user, event in interactions:
        by_user.setdefault(user, []).append(event)
    chosen = [u for u in dict.fromkeys(must_include) if u in by_user]
    total = sum(len(by_user[u]) for u in chosen)
    others = sorted(set(by_user) - set(chosen))
    random.Random(seed).shuffle(others)
    for user in others:
        if total + len(by_user[user]) <= budget:
            chosen.append(user)
            total += len(by_user[user])
    selected = [(u, e) for u in chosen for e in by_user[u]]
    selected.sort(key=lambda pair: (pair[1].timestamp, pair[0], pair[1].item_id))
    return selected


def rebase_timestamps(
    events: Sequence[tuple[str, Interaction]], now: float, span_days: float = 180.0, margin_s: float = 60.0
) -> list[tuple[str, Interaction]]:
    """Map original timestamps (MovieLens: 1996-2018) linearly into ``[now - span_days, now - margin_s]``.

    Order is kept; events then sit inside the event TTL and recent enough for trending. Epoch seconds.
    """
    if not events:
        return []
    first = min(e.timestamp for _, e in events)
    last = max(e.timestamp for _, e in events)
    end = now - margin_s
    start = end - span_days * 86400.0
    scale = (end - start) / (last - first) if last > first else 0.0
    rebased = []
    for user, event in events:
        ts = end if scale == 0.0 else start + (event.timestamp - first) * scale
        moved = Interaction(event.item_id, event.type, round(ts, 3), event.value, event.event_id,
                            event.recommendation_id)
        rebased.append((user, moved))
    return rebased


def event_payload(user_id: str, event: Interaction) -> dict[str, Any]:
    """One ``POST /events`` entry."""
    payload: dict[str, Any] = {
        "event_id": event.event_id,
        "user_id": user_id,
        "item_id": event.item_id,
        "type": event.type,
        "timestamp": event.timestamp,
    }
    if event.value is not None:
        payload["value"] = event.value
    return payload


# ------------------------------------------------------------------------------------------- the tour


@dataclass
class DemoOptions:
    """What ``embrec demo`` / ``embrec local up`` were asked for."""

    project_root: Path | None = None
    dataset_dir: Path | None = None
    events: int = 2_000
    serve: bool = True
    api_port: int | None = None
    aws_port: int | None = None
    stream: IO[str] = field(default_factory=lambda: sys.stdout)


class _Tour:
    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.out = options.stream
        self.started = time.monotonic()
        self.http: Any = None
        self.api = ""
        self.encoder_id: str | None = None  # published while the stack starts

    def say(self, line: str = "") -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def step(self, text: str) -> None:
        self.say(f"==> [{time.monotonic() - self.started:6.1f}s] {text}")

    def get(self, url: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(url, params=params or None, timeout=60)
        return _json_or_raise(response)

    def post(self, url: str, body: Any) -> dict[str, Any]:
        response = self.http.post(url, json=body, timeout=120)
        return _json_or_raise(response)


def _json_or_raise(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text[:200]}
    if response.status_code >= 400:
        raise ServiceUnavailableError(
            f"{response.request.method} {response.url} -> {response.status_code}: {body.get('message', body)}"
        )
    return dict(body)


def _project_root(options: DemoOptions) -> Path:
    from embrec_tools.local import default_project_root

    return (options.project_root or default_project_root()).resolve()


def _prepare_encoder(tour: _Tour, root: Path) -> Path:
    from embrec_tools.encoder_build import SERVED_QUANTIZE, cached_build

    tour.step(f"encoder: all-MiniLM-L6-v2 -> ONNX, {SERVED_QUANTIZE} (cached under .cache/encoders)")
    directory, built = cached_build(
        root / ".cache" / "encoders",
        SERVED_QUANTIZE,
        on_build=lambda: tour.say("    building from the safetensors weights (first run only, ~1-2 min)..."),
    )
    tour.say(f"    {'built' if built else 'cached'}: {directory}")
    return directory


def _publish_encoder(tour: _Tour, settings: Settings, directory: Path) -> str:
    from embrec.aws.artifacts import ArtifactStore
    from embrec.aws.clients import clients

    with tempfile.TemporaryDirectory() as scratch:
        store = ArtifactStore(clients(settings).s3, settings.bucket, Path(scratch))
        encoder_id = store.publish_encoder(directory)
    tour.say(f"    published encoder {encoder_id} to s3://{settings.bucket}/encoder/")
    return encoder_id


def _start_env(tour: _Tour, root: Path, encoder_dir: Path) -> Any:
    from embrec_tools.local import LocalEnvironment

    tour.step("starting the local stack (AWS endpoint, resources from template.yaml, encoder, API emulator)")
    # The schedule starts once the tour is done: a timed rebuild in the middle of the replay would only
    # compete with it for the two cores (and for moto, which is not built for concurrent transactions).
    # The encoder is published before the API and the queue pollers start: a stack that answers /health
    # can take an upload at once.
    def publish(settings: Settings) -> None:
        tour.encoder_id = _publish_encoder(tour, settings, encoder_dir)

    env = LocalEnvironment(
        root,
        api_port=tour.options.api_port,
        aws_port=tour.options.aws_port,
        schedule=False,
        prepare=publish,
    )
    env.start()
    tour.say(f"    AWS endpoint {env.endpoint_url}   API {env.api_url}   bucket {env.settings.bucket}")
    return env


def _ingest_catalog(tour: _Tour, env: Any, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    from embrec.aws.clients import clients
    from embrec_tools.datasets import to_jsonl

    settings = env.settings
    aws = clients(settings)
    body = to_jsonl(rows)
    tour.step(f"uploading {len(rows)} catalog rows to s3://{settings.bucket}/{CATALOG_KEY} "
              "(S3 -> SQS -> ingest handler)")
    put = aws.s3.put_object(Bucket=settings.bucket, Key=CATALOG_KEY, Body=body)
    report = wait_for_report(aws, settings.bucket, CATALOG_KEY, str(put.get("ETag", "")),
                             Progress("ingest+encode", None, tour.out))
    tour.say(f"    report: accepted {report.get('accepted')}, unchanged {report.get('unchanged')}, "
             f"rejected {report.get('rejected')}")
    return report


def wait_for_report(
    aws: Any,
    bucket: str,
    key: str,
    etag: str,
    progress: Progress | None = None,
    *,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """Poll ``catalog/reports/<key without catalog/incoming/>.json`` until it reports this upload (ETag).

    While waiting, ``progress`` shows the seconds elapsed (the ingest function reports only when done; the
    Items table's size is no measure either: moto's DescribeTable races with concurrent writes).
    ServiceUnavailableError on timeout.
    """
    started = time.monotonic()
    name = key[len("catalog/incoming/"):] if key.startswith("catalog/incoming/") else key
    report_key = f"catalog/reports/{name}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            document = json.loads(aws.s3.get_object(Bucket=bucket, Key=report_key)["Body"].read())
        except Exception as error:
            if _error_code(error) not in ("NoSuchKey", "404"):
                raise
            document = None
        if document is not None and (not etag or document.get("etag", "").strip('"') == etag.strip('"')):
            if progress is not None:
                progress.update(int(document.get("total", 0)))
                progress.close("rows")
            return dict(document)
        if progress is not None:
            progress.update(int(time.monotonic() - started), "s")
        time.sleep(0.5)
    raise ServiceUnavailableError(f"no ingest report at s3://{bucket}/{report_key} after {timeout:.0f}s")


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _rebuild(tour: _Tour, env: Any, why: str) -> dict[str, Any]:
    tour.step(f"rebuild ({why}): scan items + interactions, build hnswlib index, CF, trending, publish")
    started = time.monotonic()
    result = dict(env.trigger_rebuild())
    tour.say(f"    {result.get('status')} {result.get('version')}: {result.get('items')} items, "
             f"{result.get('interactions')} interactions ({time.monotonic() - started:.1f}s)")
    return result


def _replay(tour: _Tour, events: Sequence[tuple[str, Interaction]]) -> tuple[int, int]:
    tour.step(f"replaying {len(events)} rating events through POST /events ({EVENT_BATCH} a request)")
    progress = Progress("events", len(events), tour.out)
    accepted = rejected = 0
    for start in range(0, len(events), EVENT_BATCH):
        batch = [event_payload(u, e) for u, e in events[start : start + EVENT_BATCH]]
        response = tour.http.post(f"{tour.api}/events", json={"events": batch}, timeout=120)
        if response.status_code != 202:
            raise ServiceUnavailableError(f"POST /events -> {response.status_code}: {response.text[:200]}")
        body = response.json()
        accepted += int(body["accepted"])
        rejected += int(body["rejected"])
        progress.update(start + len(batch))
    progress.close(f"accepted {accepted}, rejected {rejected}")
    return accepted, rejected


def _recommendation_table(items: Sequence[Mapping[str, Any]]) -> str:
    rows = [(i + 1, it.get("title"), it.get("category"), float(it.get("score", 0.0)), it.get("reasons", ()))
            for i, it in enumerate(items)]
    return format_table(("#", "title", "category", "score", "reasons"), rows, {1: 42, 4: 70})


def _indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


def _show_tour(tour: _Tour, showcase: Sequence[tuple[str, str, float]], dataset: Any,
               item_tags: Mapping[str, Sequence[str]]) -> None:
    titles = {str(r["item_id"]): str(r["title"]) for r in dataset.catalog_rows}
    history = dataset.history()
    for label, user, share in showcase:
        events = history.get(user, [])
        genres = Counter(t for e in events if e.type != "dislike" for t in item_tags.get(e.item_id, ())[:3])
        liked = [titles.get(e.item_id, e.item_id) for e in sorted(events, key=lambda e: -(e.value or 0))[:4]]
        body = tour.get(f"{tour.api}/users/{user}/recommendations", k=8, explain="true")
        tour.say()
        tour.say(f"Recommendations for user {user} ({label}: {share:.0%} of their history; "
                 f"{len(events)} events; strategy {body['strategy']})")
        tour.say(f"    top genres watched: {', '.join(g for g, _ in genres.most_common(5))}")
        tour.say(f"    rated highest: {'; '.join(liked)}")
        tour.say(_indent(_recommendation_table(body["items"])))

    answers = {"interests": ["animated films", "talking animals"], "goals": ["family movie night with kids"],
               "experience": "casual"}
    body = tour.post(f"{tour.api}/users/demo-newcomer/onboarding", answers)
    tour.say()
    tour.say(f"Cold start: POST /users/demo-newcomer/onboarding {json.dumps(answers)}")
    tour.say(f"    strategy {body['strategy']}; profile text: {body.get('profile', {}).get('text', '')!r}")
    tour.say(_indent(_recommendation_table(body["items"][:8])))

    toy_story = next((i for i, t in titles.items() if t == "Toy Story"), None)
    if toy_story is not None:
        body = tour.get(f"{tour.api}/items/{toy_story}/similar", k=8, explain="true")
        tour.say()
        tour.say(f"Similar to Toy Story ({toy_story}): GET /items/{toy_story}/similar")
        tour.say(_indent(_recommendation_table(body["items"])))

    query = "space adventure with robots"
    body = tour.get(f"{tour.api}/search", q=query, k=8)
    tour.say()
    tour.say(f"Search: GET /search?q={query.replace(' ', '+')}")
    rows = [(i + 1, it.get("title"), it.get("category"), float(it.get("score", 0.0)), it.get("item_id"))
            for i, it in enumerate(body["items"])]
    tour.say(_indent(format_table(("#", "title", "category", "score", "item_id"), rows, {1: 50})))


def _wait_healthy(tour: _Tour, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        response = tour.http.get(f"{tour.api}/health", timeout=30)
        if response.status_code == 200:
            return dict(response.json())
        last = f"{response.status_code} {response.text[:200]}"
        time.sleep(0.5)
    raise ServiceUnavailableError(f"GET /health did not answer 200 within {timeout:.0f}s: {last}")


def _print_ready(tour: _Tour, env: Any, health: Mapping[str, Any], *, sample: bool,
                 toy_story: str | None = None, encoder_id: str | None = None) -> None:
    api, endpoint, bucket = env.api_url, env.endpoint_url, env.settings.bucket
    tour.say()
    tour.say(f"ready in {time.monotonic() - tour.started:.1f}s: GET /health -> 200 "
             f"(index {health.get('index_version')}, {health.get('items')} items, "
             f"encoder {health.get('encoder_id') or encoder_id})")
    tour.say(f"  API            {api}")
    tour.say(f"  OpenAPI        {api}/openapi.json")
    tour.say(f"  AWS endpoint   {endpoint}   (bucket {bucket}; any access key works)")
    tour.say(f"  Console        http://127.0.0.1:{CONSOLE_PORT}   (start it in another terminal: "
             f"{_console_command(env)})")
    tour.say("Try:")
    item = toy_story or "<item_id>"
    examples = [
        f"curl -s {api}/health",
        f"curl -s '{api}/users/1/recommendations?k=5&explain=true'",
        f"curl -s '{api}/items/{item}/similar?k=5'",
        f"curl -s '{api}/search?q=heist+thriller&k=5'",
        f"curl -s -X POST {api}/events -H 'content-type: application/json' "
        f"-d '{{\"events\":[{{\"event_id\":\"e1\",\"user_id\":\"me\",\"item_id\":\"{item}\","
        "\"type\":\"like\"}]}'",
        f"curl -s -X POST {api}/users/me/onboarding -H 'content-type: application/json' "
        "-d '{\"interests\":[\"space opera\"],\"goals\":[\"weekend binge\"],\"experience\":\"fan\"}'",
        f"curl -s -X DELETE {api}/users/me",
        f"aws --endpoint-url {endpoint} s3 cp catalog.jsonl s3://{bucket}/catalog/incoming/",
    ]
    if not sample:
        examples = [examples[-1], examples[0], *examples[3:4]]
    for line in examples:
        tour.say(f"  {line}")


def _console_command(env: Any) -> str:
    """How to start ``embrec console`` against this stack (its ports, when they are not the defaults)."""
    api_port, aws_port = env.api_url.rsplit(":", 1)[1], env.endpoint_url.rsplit(":", 1)[1]
    default = (api_port, aws_port) == ("3000", "4566")
    ports = "" if default else f"EMBREC_PORT={api_port} EMBREC_AWS_PORT={aws_port} "
    return f"{ports}.venv/bin/embrec console"


def _serve(tour: _Tour, env: Any) -> None:
    env.start_schedules()
    env.serve_forever(
        lambda: tour.say(f"serving until Ctrl-C (scheduled rebuild every {env.rebuild_seconds:.0f}s)")
    )
    tour.say("stopped")


def _session() -> Any:
    import requests

    session = requests.Session()
    session.trust_env = False  # never send 127.0.0.1 through a proxy from the environment
    return session


def run_demo(options: DemoOptions) -> int:
    """``embrec demo``: the whole tour; serves until Ctrl-C unless ``options.serve`` is False. Exit code."""
    quiet_logs()
    from embrec_tools.datasets import load_movielens

    tour = _Tour(options)
    root = _project_root(options)
    dataset_dir = options.dataset_dir or root / DEFAULT_DATASET
    if not (dataset_dir / "movies.csv").is_file():
        raise NotFoundError(f"sample data not found: {dataset_dir}/movies.csv")
    tour.step(f"loading MovieLens from {dataset_dir}")
    dataset = load_movielens(dataset_dir)
    item_tags = {str(r["item_id"]): list(r.get("tags", ())) for r in dataset.catalog_rows}
    showcase = pick_showcase_users(dataset.history(), item_tags)
    replay = rebase_timestamps(
        select_replay(dataset.interactions, [user for _, user, _ in showcase], options.events), time.time()
    )
    tour.say(f"    {len(dataset.catalog_rows)} movies, {len(dataset.interactions)} ratings; "
             f"replaying {len(replay)} events of {len({u for u, _ in replay})} users "
             f"(showcase users {', '.join(u for _, u, _ in showcase)})")
    encoder_dir = _prepare_encoder(tour, root)
    env = _start_env(tour, root, encoder_dir)
    try:
        tour.api = env.api_url
        tour.http = _session()
        # Events first: they need no index, and the local DynamoDB (moto) copies every table on each
        # transaction, so writing them before the 9,742 items keeps the replay fast. One rebuild then
        # takes in the catalog and the events (CF and trending) together.
        _replay(tour, replay)
        _ingest_catalog(tour, env, dataset.catalog_rows)
        _rebuild(tour, env, "catalog and events")
        health = _wait_healthy(tour)
        _show_tour(tour, showcase, dataset, item_tags)
        toy_story = next((str(r["item_id"]) for r in dataset.catalog_rows if r["title"] == "Toy Story"), None)
        _print_ready(tour, env, health, sample=True, toy_story=toy_story)
        if options.serve:
            _serve(tour, env)
    finally:
        env.stop()
        if tour.http is not None:
            tour.http.close()
    return 0


def run_local_up(options: DemoOptions) -> int:
    """``embrec local up``: the stack with the encoder published, no data; serves until Ctrl-C."""
    quiet_logs()
    tour = _Tour(options)
    root = _project_root(options)
    encoder_dir = _prepare_encoder(tour, root)
    env = _start_env(tour, root, encoder_dir)
    try:
        tour.api = env.api_url
        tour.http = _session()
        health = _wait_healthy(tour)
        _print_ready(tour, env, health, sample=False, encoder_id=tour.encoder_id)
        tour.say("upload a catalog to catalog/incoming/ (the aws command above or `embrec ingest FILE`), "
                 "then `embrec rebuild`")
        if options.serve:
            _serve(tour, env)
    finally:
        env.stop()
        if tour.http is not None:
            tour.http.close()
    return 0

