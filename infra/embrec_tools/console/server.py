"""The console's routes: each fetches what its page shows (API and bounded reads), then renders it.

:class:`Console` answers one request without a socket (``handle``), so it is testable directly;
:class:`ConsoleServer` puts it behind a ``ThreadingHTTPServer``. Forms that write (the "what if" event, the
onboarding) are POSTs carrying a per-process token (no other site can make a browser post them), answered
with a redirect to the page that shows the result (a reload never posts twice).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from embrec.errors import EmbrecError
from embrec_tools.console import pages
from embrec_tools.console.api import ApiAnswer, ApiClient, ApiUnreachable, path_segment
from embrec_tools.console.pages import Problem
from embrec_tools.console.reads import StackReads, rebuild_schedule
from embrec_tools.http_server import BackgroundHttpServer

__all__ = ["Console", "ConsoleConfig", "ConsoleServer", "Response"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Form bodies above this are refused (the forms hold a few short fields).
MAX_FORM_BYTES = 16 * 1024
_STATUS = {"api-down": 502, "no-index": 503, "not-found": 404, "bad-input": 400, "aws": 502, "error": 502}
_SECURITY_HEADERS = (
    # no script, nothing from elsewhere: the page works offline and cannot be made to load anything
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
)


@dataclass(frozen=True)
class ConsoleConfig:
    """``rebuild_rate``: the schedule expression the overview reads the next rebuild from;
    ``eval_results``: where ``embrec eval`` saved its latest results."""

    rebuild_rate: str
    eval_results: Path


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def _redirect(location: str) -> Response:
    return Response(303, b"", [("location", location)])


class Console:
    """The pages, over an :class:`ApiClient` and :class:`StackReads`."""

    def __init__(
        self,
        api: ApiClient,
        reads: StackReads,
        config: ConsoleConfig,
        *,
        clock: Callable[[], float] = time.time,
        csrf: str | None = None,
    ) -> None:
        self.api = api
        self.reads = reads
        self.config = config
        self.clock = clock
        self.csrf = csrf or secrets.token_urlsafe(24)

    # ---- problems
    def _api_problem(self, answer: ApiAnswer, what: str) -> Problem:
        if answer.status == 404:
            return Problem("not-found", f"{what}: {answer.message}")
        if answer.status in (400, 413, 422):
            return Problem("bad-input", f"{what}: {answer.message}")
        if answer.status in (401, 403):
            return Problem(
                "error",
                f"{what}: the API refused the console's credentials ({answer.status}: "
                f"{answer.message}); --aws signs requests with your AWS credentials, --token sends a "
                "bearer token",
            )
        if answer.status == 503 and self._index_missing():
            return Problem(
                "no-index",
                "No index has been published yet: upload a catalog (embrec ingest FILE) "
                "and run embrec rebuild; this page fills in once it is served.",
            )
        return Problem("error", f"{what}: the API answered {answer.status}: {answer.message}")

    def _index_missing(self) -> bool:
        try:
            health = self.api.get("/health")
        except ApiUnreachable:
            return False
        return health.ok and health.body.get("index_version") is None

    def _call(self, what: str, call: Callable[[], ApiAnswer]) -> dict[str, Any] | Problem:
        """An API call's body, or the problem that stands in for it."""
        try:
            answer = call()
        except ApiUnreachable as error:
            return Problem(
                "api-down",
                f"{error.message}: start the local stack (make demo, or embrec local "
                "up) or point the console at another API with --api URL.",
            )
        return answer.body if answer.ok else self._api_problem(answer, what)

    def _read(self, what: str, read: Callable[[], T]) -> T | Problem:
        """A bucket or table read, or the problem that stands in for it."""
        try:
            return read()
        except EmbrecError as error:
            message = error.message
        except (BotoCoreError, ClientError) as error:
            message = " ".join(str(error).split())
        return Problem(
            "aws",
            f"{what}: {message} (bucket {self.reads.bucket}; without --aws the console reads "
            "the local AWS endpoint, EMBREC_AWS_ENDPOINT or 127.0.0.1:EMBREC_AWS_PORT)",
        )

    # ---- rendering
    def _page(self, title: str, body: str, *, active: str, problem: Any = None) -> Response:
        status = (
            _STATUS.get(problem.kind, 502) if isinstance(problem, Problem) and problem.kind != "none" else 200
        )
        html = pages.layout(title, body, active=active, api_url=self.api.base_url)
        return Response(status, html.encode("utf-8"), [("content-type", "text/html; charset=utf-8")])

    # ---- routes
    def handle(self, method: str, target: str, form: Mapping[str, str] | None = None) -> Response:
        """One request: ``target`` is the path with its query; ``form`` the decoded POST fields."""
        split = urlsplit(target)
        path = split.path or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        if method == "POST":
            if not hmac.compare_digest(str((form or {}).get("csrf", "")), self.csrf):
                return self._page(
                    "Refused",
                    pages.notice(
                        Problem(
                            "bad-input",
                            "This form is stale or came from "
                            "another site: reload the page and send it again.",
                        )
                    ),
                    active="",
                    problem=Problem("bad-input", ""),
                )
            return self._post(path, dict(form or {}))
        if method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed", [("allow", "GET, POST")])
        user = re.fullmatch(r"/users/([^/]+)", path)
        item = re.fullmatch(r"/items/([^/]+)", path)
        if path == "/":
            return self.overview()
        if path == "/search":
            return self.search(query.get("q", "").strip())
        if item:
            return self.item(unquote(item[1]))
        if path == "/users":
            chosen = query.get("user_id", "").strip()
            if chosen:
                return _redirect(f"/users/{path_segment(chosen)}")
            return self._page("Users", pages.user_picker(), active="/users")
        if user:
            return self.user(unquote(user[1]), query)
        if path == "/onboarding":
            return self._page("Onboarding", pages.onboarding_page({}, self.csrf, None), active="/onboarding")
        if path == "/experiments":
            return self.experiments(query.get("name") or None)
        if path == "/evaluation":
            return self.evaluation()
        if path == "/catalog/rejected":
            return self.rejected(query.get("name", ""))
        missing = Problem("not-found", f"No console page at {path}: use the navigation bar.")
        return self._page("Not found", pages.notice(missing), active="", problem=missing)

    def _post(self, path: str, form: dict[str, str]) -> Response:
        events = re.fullmatch(r"/users/([^/]+)/events", path)
        if events:
            return self.what_if(unquote(events[1]), form)
        if path == "/onboarding":
            return self.onboard(form)
        missing = Problem("not-found", f"Nothing takes a POST at {path}.")
        return self._page("Not found", pages.notice(missing), active="", problem=missing)

    def overview(self) -> Response:
        now = self.clock()
        health = self._call("GET /health", lambda: self.api.get("/health"))

        def index() -> dict[str, Any] | Problem:
            pointer = self.reads.pointer()
            schedule = rebuild_schedule(self.config.rebuild_rate, None, now)
            if pointer is None:
                return Problem(
                    "no-index",
                    f"index/current.json does not exist yet in bucket {self.reads.bucket}: "
                    f"no rebuild has published an index (schedule {schedule.expression}).",
                )
            published = pointer.document.get("published_at")
            schedule = rebuild_schedule(
                self.config.rebuild_rate, published / 1000 if published else None, now
            )
            return {
                **pointer.document,
                "deltas_since": self.reads.deltas_since(pointer),
                "schedule": schedule.expression,
                "next_rebuild": schedule.next_at,
                "next_note": "a cron expression" if schedule.period_s is None else "no rebuild yet",
            }

        view = pages.Overview(
            health=health,
            index=self._read("index/current.json", index),
            reports=self._read("catalog/reports/", self.reads.catalog_reports),
            counts=self._read("event counts", lambda: self.reads.event_counts(now)),
            now=now,
        )
        return self._page("Overview", pages.overview_page(view), active="/", problem=health)

    def search(self, q: str) -> Response:
        result: dict[str, Any] | Problem | None = None
        if q:
            result = self._call("GET /search", lambda: self.api.get("/search", {"q": q, "k": "20"}))
        return self._page(
            f"Search: {q}" if q else "Search", pages.search_page(q, result), active="/search", problem=result
        )

    def item(self, item_id: str) -> Response:
        stored = self._read("items table", lambda: self.reads.item(item_id))
        fields = stored if isinstance(stored, Problem) or stored is None else dict(stored.fields)
        similar = self._call(
            f"similar items of {item_id!r}",
            lambda: self.api.get(f"/items/{path_segment(item_id)}/similar", {"k": "10", "explain": "true"}),
        )
        problem = Problem("not-found", "") if fields is None else similar
        title = str(fields.get("title") or item_id) if isinstance(fields, dict) else f"Item {item_id}"
        return self._page(title, pages.item_page(item_id, fields, similar), active="", problem=problem)

    def user(self, user_id: str, query: Mapping[str, str], problem: Problem | None = None) -> Response:
        filters = {name: query[name].strip() for name, _, _ in pages.FILTERS if query.get(name, "").strip()}
        params = {"k": "10", **filters, "explain": "true"}
        recommendations = self._call(
            f"recommendations of {user_id!r}",
            lambda: self.api.get(f"/users/{path_segment(user_id)}/recommendations", params),
        )
        events = self._read("interactions table", lambda: self.reads.user_events(user_id))
        titles = (
            {}
            if isinstance(events, Problem)
            else self._read("items table", lambda: self.reads.titles(e.item_id for e in events))
        )
        before = [i for i in query.get("before", "").split(",") if i] if query.get("posted") else []
        titles = (
            {}
            if isinstance(events, Problem)
            else self._read("items table", lambda: self.reads.titles(e.item_id for e in events))
        )
        view = pages.UserView(
            user_id,
            events,
            {} if isinstance(titles, Problem) else titles,
            recommendations,
            filters,
            before,
            query.get("posted"),
            self.csrf,
            self.clock(),
        )
        body = (pages.notice(problem) if problem else "") + pages.user_page(view)
        return self._page(f"User {user_id}", body, active="/users", problem=problem or recommendations)

    def what_if(self, user_id: str, form: Mapping[str, str]) -> Response:
        """Post one real event for the user, then show the user's page (the next request's list)."""
        item_id, kind = form.get("item_id", "").strip(), form.get("type", "").strip()
        filters = dict(parse_qsl(form.get("filters", "")))
        if not item_id:
            return self.user(user_id, filters, Problem("bad-input", "item id: required"))
        known = self._read("items table", lambda: self.reads.item(item_id))
        if known is None:
            return self.user(
                user_id,
                filters,
                Problem("bad-input", f"item id: no item {item_id!r} in the catalog, nothing was written"),
            )
        event = {
            "event_id": f"console-{uuid.uuid4().hex}",
            "user_id": user_id,
            "item_id": item_id,
            "type": kind,
        }
        answer = self._call("POST /events", lambda: self.api.post("/events", {"events": [event]}))
        if isinstance(answer, Problem):
            return self.user(user_id, filters, answer)
        result = (answer.get("results") or [{}])[0]
        if result.get("status") != "accepted":
            return self.user(
                user_id,
                filters,
                Problem(
                    "bad-input",
                    f"{result.get('field', 'event')}: {result.get('reason', result.get('status'))}",
                ),
            )
        posted = f"{kind} of item {item_id} at {pages.when(self.clock())} (event_id {event['event_id']})"
        query = urlencode({**filters, "before": form.get("before", ""), "posted": posted})
        return _redirect(f"/users/{path_segment(user_id)}?{query}")

    def onboard(self, form: Mapping[str, str]) -> Response:
        user_id = form.get("user_id", "").strip()

        def split(name: str) -> list[str]:
            return [part.strip() for part in form.get(name, "").split(",") if part.strip()]

        if not user_id:
            result: dict[str, Any] | Problem = Problem("bad-input", "user id: required")
        else:
            body = {
                "interests": split("interests"),
                "goals": split("goals"),
                "experience": form.get("experience", "").strip(),
            }
            result = self._call(
                "POST /users/{id}/onboarding",
                lambda: self.api.post(f"/users/{path_segment(user_id)}/onboarding", body),
            )
        return self._page(
            "Onboarding", pages.onboarding_page(form, self.csrf, result), active="/onboarding", problem=result
        )

    def experiments(self, name: str | None) -> Response:
        defined = self._read("config/experiments.json", self.reads.experiments)
        if isinstance(defined, Problem):
            return self._page("Experiments", pages.notice(defined), active="/experiments", problem=defined)
        names = [(e.name, e.enabled) for e in defined]
        live = next((n for n, enabled in names if enabled), names[0][0] if names else None)
        chosen = name or live
        report = (
            None
            if chosen is None
            else self._read(f"report of {chosen!r}", lambda: self.reads.experiment_report(chosen))
        )
        return self._page(
            "Experiments",
            pages.experiments_page(names, chosen, report),
            active="/experiments",
            problem=report,
        )

    def evaluation(self) -> Response:
        path = self.config.eval_results
        document: dict[str, Any] | Problem
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            document = Problem("none", f"No evaluation results at {path} yet.")
        except (OSError, ValueError) as error:
            document = Problem("error", f"{path} cannot be read: {error}")
        return self._page("Evaluation", pages.evaluation_page(str(path), document), active="/evaluation")

    def rejected(self, name: str) -> Response:
        found = self._read("catalog/rejected/", lambda: self.reads.rejected_rows(name)) if name else None
        if found is None:
            problem = Problem("not-found", f"No rejected rows named {name!r} in catalog/rejected/.")
            return self._page("Rejected rows", pages.notice(problem), active="/", problem=problem)
        if isinstance(found, Problem):
            return self._page("Rejected rows", pages.notice(found), active="/", problem=found)
        rows, more = found
        return self._page(f"Rejected rows: {name}", pages.rejected_page(name, rows, more), active="/")


class ConsoleServer(BackgroundHttpServer):
    """A ``ThreadingHTTPServer`` on ``host:port`` (0 = a free port) serving a :class:`Console`."""

    def __init__(self, console: Console, *, host: str = "127.0.0.1", port: int = 8300) -> None:
        self.console = console
        super().__init__(
            host, port, self._handler_class(), thread_name="embrec-console", busy_hint=": use --port"
        )

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C."""
        try:
            self._server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        console = self.console

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "embrec-console"

            def _answer(self, response: Response) -> None:
                self.send_response(response.status)
                for name, value in [*response.headers, *_SECURITY_HEADERS]:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(response.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)

            def _safely(self, run: Callable[[], Response]) -> None:
                try:
                    response = run()
                except Exception:
                    logger.exception("console page failed", extra={"path": self.path})
                    problem = Problem(
                        "error", "This page failed inside the console; the log has the details."
                    )
                    html = pages.layout(
                        "Error", pages.notice(problem), active="", api_url=console.api.base_url
                    )
                    response = Response(500, html.encode(), [("content-type", "text/html; charset=utf-8")])
                self._answer(response)

            def do_GET(self) -> None:
                self._safely(lambda: console.handle("GET", self.path))

            do_HEAD = do_GET

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("content-length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_FORM_BYTES:
                    self.close_connection = True
                    self._answer(Response(413, b"form too large", [("content-type", "text/plain")]))
                    return
                raw = self.rfile.read(length).decode("utf-8", "replace")
                form = dict(parse_qsl(raw, keep_blank_values=True))
                self._safely(lambda: console.handle("POST", self.path, form))

            def log_message(self, format: str, *args: Any) -> None:
                logger.info("%s %s", self.address_string(), format % args)

        return _Handler
