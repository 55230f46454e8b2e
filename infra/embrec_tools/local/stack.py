"""``LocalEnvironment``: the whole serverless stack on a laptop, in one process.

Start order: AWS endpoint (moto server, or ``EMBREC_AWS_ENDPOINT``) → resources from template.yaml → the
settings env for the handlers (the template's ``Globals`` environment, every ``EMBREC_*`` variable the user
exported winning over it; in ``os.environ``, before any handler is imported) → SQS event source mappings
→ API Gateway emulator → schedules. :meth:`LocalEnvironment.stop` undoes it in reverse and restores the
environment; it is idempotent and runs on Ctrl-C (``serve_forever``) and at the end of a ``with`` block.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embrec.config import (
    ENV_AWS_DEFAULT_REGION,
    ENV_AWS_ENDPOINT,
    ENV_AWS_REGION,
    ENV_PREFIX,
    Settings,
    get_settings,
)
from embrec.errors import NotFoundError, ServiceUnavailableError
from embrec_tools.local.api_gateway import ApiGatewayServer, RouteTable
from embrec_tools.local.aws_endpoint import LOCAL_CREDENTIALS, AwsEndpoint, patched_environ
from embrec_tools.local.dispatch import QueuePoller, Scheduler
from embrec_tools.local.iam import LocalIam
from embrec_tools.local.jwt import LocalJwt
from embrec_tools.local.lambdas import FunctionSpec, LambdaFunction, function_specs

if TYPE_CHECKING:
    from embrec_tools.template import LocalResources

__all__ = ["LocalEnvironment", "Provisioner", "default_project_root", "exported_settings"]

logger = logging.getLogger(__name__)

#: ``(template, clients, region) -> LocalResources``: creates the template's resources on the endpoint
#: of ``clients`` (``s3``, ``sqs``, ``dynamodb``); default
#: :func:`embrec_tools.template.create_local_resources`.
Provisioner = Callable[[Mapping[str, Any], Any, str], "LocalResources"]


def default_project_root() -> Path:
    """The directory holding template.yaml: the current directory or one of its parents, else the repo."""
    for candidate in (Path.cwd(), *Path.cwd().parents):
        if (candidate / "template.yaml").is_file():
            return candidate
    return Path(__file__).resolve().parents[3]


def _provisioner_for(settings: Settings) -> Provisioner:
    """Create the template's resources under the names ``settings`` give (the user's, when exported)."""

    def provision(template: Mapping[str, Any], clients: Any, region: str) -> LocalResources:
        from embrec_tools.template import create_local_resources, local_names

        return create_local_resources(template, clients, local_names(settings), region=region)

    return provision


def exported_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``EMBREC_*`` variables the user exported: they win over the template's defaults locally."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if name.startswith(ENV_PREFIX)}


#: Under ``Settings.cache_dir``: the local JWT signing key (EMBREC_AUTH=jwt).
LOCAL_JWT_KEY_FILE = "local-jwt.key"


@dataclass(frozen=True)
class _Ports:
    api: int
    aws: int


class LocalEnvironment:
    """The local stack: ``with LocalEnvironment() as env: ...`` or ``env.start()`` / ``env.stop()``.

    Parameters default to the settings (``EMBREC_PORT`` 3000, ``EMBREC_AWS_PORT`` 4566,
    ``EMBREC_AWS_ENDPOINT``, ``EMBREC_REBUILD_SECONDS`` 300); pass ``api_port=0`` / ``aws_port=0`` for free
    ports (tests). ``serve_api``, ``dispatch`` and ``schedule`` switch the API, the SQS pollers and the timer
    off (``trigger_rebuild`` still works). ``provision`` replaces how the template's resources are created
    (default: :func:`embrec_tools.template.create_local_resources`, named after the settings: a user who
    exported ``EMBREC_ITEMS_TABLE`` gets that table). ``prepare(settings)`` runs once the resources exist
    and before the SQS pollers and the API start: what must be in place before the stack answers
    ``/health`` or takes an upload (``embrec local up`` publishes the encoder there).
    """

    def __init__(
        self,
        project_root: Path | None = None,
        *,
        template: Path | None = None,
        settings: Settings | None = None,
        host: str = "127.0.0.1",
        api_port: int | None = None,
        aws_port: int | None = None,
        aws_endpoint: str | None = None,
        rebuild_seconds: float | None = None,
        serve_api: bool = True,
        dispatch: bool = True,
        schedule: bool = True,
        provision: Provisioner | None = None,
        poll_wait_seconds: int = 1,
        jwt: LocalJwt | None = None,
        prepare: Callable[[Settings], None] | None = None,
    ) -> None:
        self._exported = exported_settings()
        settings = settings or Settings.from_env(local=True)
        # EMBREC_AUTH=jwt (or an explicit ``jwt``): the API checks bearer tokens like API Gateway's JWT
        # authorizer; the key file lets another process mint tokens (``LocalJwt.from_file(...).issue(sub)``).
        if jwt is None and settings.auth == "jwt":
            jwt = LocalJwt.from_file(Path(settings.cache_dir) / LOCAL_JWT_KEY_FILE)
        self.jwt = jwt
        # EMBREC_AUTH=iam: the API checks SigV4 signatures made with the local credentials, as API Gateway's
        # IAM authorization does with the caller's (embrec_tools.local.iam).
        access, secret = LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"], LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        local_key = {str(access): str(secret)}
        self.iam = LocalIam(local_key, settings.region) if settings.auth == "iam" else None
        self.root = (project_root or default_project_root()).resolve()
        self.template_path = (template or self.root / "template.yaml").resolve()
        self.host = host
        self.region = settings.region
        self._ports = _Ports(
            settings.port if api_port is None else api_port,
            settings.aws_port if aws_port is None else aws_port,
        )
        self._external = aws_endpoint or settings.aws_endpoint
        self.rebuild_seconds = float(settings.rebuild_seconds if rebuild_seconds is None else rebuild_seconds)
        self._serve_api, self._dispatch, self._schedule = serve_api, dispatch, schedule
        self._provision = provision or _provisioner_for(settings)
        self._poll_wait = poll_wait_seconds
        self._prepare = prepare
        self._lock = threading.Lock()
        self._exit = ExitStack()
        self._state = "stopped"
        self.endpoint: AwsEndpoint | None = None
        self.api: ApiGatewayServer | None = None
        self.functions: dict[str, LambdaFunction] = {}
        self.pollers: list[QueuePoller] = []
        self.schedulers: list[Scheduler] = []
        self.resource_env: dict[str, str] = {}
        self.resources: LocalResources | None = None

    # ---- state
    @property
    def ready(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._state == "ready"

    @property
    def endpoint_url(self) -> str:
        """The AWS endpoint URL (``http://127.0.0.1:4566`` by default)."""
        self._require_ready()
        assert self.endpoint is not None
        return self.endpoint.url

    @property
    def api_url(self) -> str:
        """The HTTP API base URL (``http://127.0.0.1:3000`` by default); NotFoundError if the API is off."""
        self._require_ready()
        if self.api is None:
            raise NotFoundError("the local API is not served (serve_api=False)")
        return self.api.url

    @property
    def settings(self) -> Settings:
        """The settings the handlers see (resources, endpoint, region)."""
        self._require_ready()
        return Settings.from_env(local=True)

    def _require_ready(self) -> None:
        if not self.ready:
            raise ServiceUnavailableError(f"local environment is {self._state}, not ready")

    # ---- lifecycle
    def __enter__(self) -> LocalEnvironment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalEnvironment:
        """Bring everything up; on any failure, tear down what started and re-raise. Returns ``self``."""
        with self._lock:
            if self._state != "stopped":
                raise ServiceUnavailableError(f"local environment is already {self._state}")
            self._state = "starting"
            try:
                self._start()
            except BaseException:
                self._exit.close()
                self._reset()
                raise
            self._state = "ready"
        logger.info(
            "local environment ready",
            extra={
                "api": self.api.url if self.api else None,
                "endpoint": self.endpoint.url if self.endpoint else None,
            },
        )
        return self

    def _start(self) -> None:
        from embrec.aws.clients import clients
        from embrec_tools.template import load_template, resolve_conditions, settings_env

        if not self.template_path.is_file():
            raise NotFoundError(f"template {self.template_path} does not exist")
        template = resolve_conditions(load_template(self.template_path))
        specs = function_specs(template, self.template_path.parent)

        # Credentials and region first: moto and every client read them.
        region_env = {ENV_AWS_REGION: self.region, ENV_AWS_DEFAULT_REGION: self.region}
        self._exit.enter_context(patched_environ({**LOCAL_CREDENTIALS, **region_env}))
        endpoint = AwsEndpoint(external=self._external, host=self.host, port=self._ports.aws)
        endpoint.start()
        self.endpoint = endpoint
        self._exit.callback(endpoint.stop)
        if endpoint.is_embedded:
            _reset_moto(endpoint.url)  # moto's state is process-wide: a new stack starts empty

        local = dataclasses.replace(Settings(), aws_endpoint=endpoint.url, region=self.region)
        self.resources = self._provision(template, clients(local), self.region)
        # What the user exported wins over the template's defaults (issue 14): the function environment in
        # AWS comes from the template, but locally the documented way to change a setting is to export it.
        env = {
            **settings_env(template, self.resources),
            **self._exported,
            ENV_AWS_ENDPOINT: endpoint.url,
            **region_env,
        }
        self.resource_env = env
        # The handlers' settings: set before any handler module is imported, cleared caches on both sides.
        self._exit.callback(_clear_caches)
        self._exit.enter_context(patched_environ(env))
        _clear_caches()
        settings = Settings.from_env(local=True)
        if self._prepare is not None:
            self._prepare(settings)

        self.functions = {name: LambdaFunction(spec, self.region) for name, spec in specs.items()}
        if self._dispatch:
            self._start_pollers(specs, settings)
        if self._serve_api:
            routes = RouteTable.from_functions(self.functions.values())
            authorizer = self._authorizer()
            api = ApiGatewayServer(
                routes, self.function, host=self.host, port=self._ports.api, authorizer=authorizer
            )
            self.api = api
            self._exit.callback(api.stop)
            api.start()
        for fn in self.functions.values():
            for trigger in fn.spec.schedules:
                scheduler = Scheduler(fn, trigger, self.rebuild_seconds, region=self.region)
                self.schedulers.append(scheduler)
                if self._schedule:
                    self._exit.callback(scheduler.stop)
                    scheduler.start()

    def _authorizer(self) -> Callable[[Mapping[str, Any]], dict[str, Any]] | None:
        """The API's authorizer: the local JWT check (bearer token), the SigV4 check, or none."""
        if self.jwt is not None:
            jwt = self.jwt
            return lambda event: jwt.authorize(event["headers"])
        return None if self.iam is None else self.iam.authorize

    def _start_pollers(self, specs: Mapping[str, FunctionSpec], settings: Settings) -> None:
        from embrec.aws.clients import clients

        assert self.resources is not None
        sqs = clients(settings).sqs
        for spec in specs.values():
            for trigger in spec.queues:
                url = self.resources.queue_urls.get(trigger.queue)
                if url is None:
                    raise NotFoundError(f"{spec.logical_id}: queue {trigger.queue} was not created locally")
                poller = QueuePoller(
                    sqs,
                    url,
                    self.functions[spec.logical_id],
                    batch_size=trigger.batch_size,
                    report_failures=trigger.report_batch_item_failures,
                    region=self.region,
                    wait_seconds=self._poll_wait,
                )
                self.pollers.append(poller)
                self._exit.callback(poller.stop)
                poller.start()

    def stop(self) -> None:
        """Stop schedules, API, pollers, endpoint (reverse order); restore the environment. Idempotent."""
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopping"
            try:
                self._exit.close()
            finally:
                self._reset()
        logger.info("local environment stopped")

    def _reset(self) -> None:
        self._exit = ExitStack()
        self.endpoint, self.api = None, None
        self.pollers, self.schedulers = [], []
        self.resources = None
        self._state = "stopped"

    def serve_forever(self, on_serving: Callable[[], None] | None = None) -> None:
        """Block until Ctrl-C or SIGTERM, then stop cleanly (start first if needed). ``on_serving`` is called
        once the stop handling is in place: from then on a Ctrl-C or SIGTERM stops the stack cleanly (one
        that arrives before it interrupts the caller instead)."""
        if not self.ready:
            self.start()
        done = threading.Event()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            # SIGINT too, not only KeyboardInterrupt: a process started with SIGINT ignored (a background job,
            # a parent that ignores it) inherits that, and Python then never raises KeyboardInterrupt.
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, lambda *_: done.set())
        try:
            if on_serving is not None:
                on_serving()
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            for stopped_by, handler in previous.items():
                signal.signal(stopped_by, handler)
            self.stop()

    # ---- operations
    def function(self, name: str) -> LambdaFunction:
        """The function with this logical id (NotFoundError if the template has none)."""
        try:
            return self.functions[name]
        except KeyError:
            raise NotFoundError(f"no function {name!r} in {self.template_path.name}") from None

    def invoke(self, name: str, event: Any) -> Any:
        """Invoke a function directly (like ``sam local invoke``); returns what the handler returned."""
        self._require_ready()
        return self.function(name).invoke(event)

    def start_schedules(self) -> None:
        """Start the scheduled functions' timers now (for an environment started with ``schedule=False``)."""
        self._require_ready()
        for scheduler in self.schedulers:
            if not scheduler.running:
                self._exit.callback(scheduler.stop)
                scheduler.start()

    def trigger_rebuild(self) -> Any:
        """Run the scheduled function (the rebuild) now, synchronously, with a scheduled event; its result.

        Runs are serialised with the timer's runs (one container per function).
        """
        self._require_ready()
        if not self.schedulers:
            raise NotFoundError(f"no scheduled function in {self.template_path.name}")
        return self.schedulers[0].trigger()

    def wait_for_ingest(self, timeout: float = 60.0) -> bool:
        """Wait until every SQS-triggered queue is empty (nothing visible or in flight) and its poller idle.

        True when drained; False on timeout (e.g. a failed record waits for its visibility timeout).
        """
        self._require_ready()
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            if all(_drained(p) for p in self.pollers):
                quiet += 1
                if quiet >= 2:  # two looks in a row: an S3 notification may be on its way to the queue
                    return True
            else:
                quiet = 0
            time.sleep(0.2)
        return False


def _drained(poller: QueuePoller) -> bool:
    if poller.busy:
        return False
    attrs = poller._sqs.get_queue_attributes(
        QueueUrl=poller.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]) == 0
        and int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0
    )


def _clear_caches() -> None:
    """Forget settings, clients and (if loaded) the handlers' runtime: they point at the old endpoint."""
    from embrec.aws.clients import clients

    get_settings.cache_clear()
    clients.cache_clear()
    # only if a handler loaded it; never import it for nothing
    runtime = sys.modules.get("embrec.app.runtime")
    reset = getattr(runtime, "reset_runtime", None)
    if callable(reset):
        reset()


def _reset_moto(url: str) -> None:
    import urllib.request

    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
