"""A tiny Lambda runtime: function specs read from template.yaml, handler loading, context objects.

The local stack runs every function of the template in this one process. Each handler module is imported once,
from the file its ``CodeUri`` + ``Handler`` name, under a module name of its own (so four ``app.py`` files do
not collide), and then kept, like a warm Lambda container. Invocations of one function are serialised (one
container per function); different functions run concurrently, as they would in AWS.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from embrec.errors import InvalidInputError, NotFoundError

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "FunctionSpec",
    "HttpRoute",
    "LambdaContext",
    "LambdaFunction",
    "QueueTrigger",
    "ScheduleTrigger",
    "function_specs",
    "rate_seconds",
]

logger = logging.getLogger(__name__)

#: The account id moto uses by default; also what the local events and ARNs carry.
DEFAULT_ACCOUNT_ID = "123456789012"

_HandlerFn = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class HttpRoute:
    """One ``HttpApi`` event: ``method`` upper-case or ``ANY``; ``path`` like ``/items/{item_id}``."""

    method: str
    path: str
    public: bool = False  # ``Auth: {Authorizer: NONE}``: no authorizer even when the API has one

    @property
    def route_key(self) -> str:
        """The API Gateway route key, e.g. ``"GET /items/{item_id}/similar"``."""
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class QueueTrigger:
    """One ``SQS`` event of a function (an event source mapping)."""

    queue: str  # logical id of the AWS::SQS::Queue resource
    batch_size: int = 10
    report_batch_item_failures: bool = False


@dataclass(frozen=True)
class ScheduleTrigger:
    """One ``Schedule``/``ScheduleV2`` event of a function."""

    name: str
    expression: str = ""
    input: str | None = None  # the target's constant Input (JSON text), when the template sets one
    scheduler: bool = True  # EventBridge Scheduler (ScheduleV2) rather than an EventBridge rule


@dataclass(frozen=True)
class FunctionSpec:
    """What the local runtime needs to know about one ``AWS::Serverless::Function``."""

    logical_id: str
    code_dir: Path
    handler: str  # "module.attribute", e.g. "app.handler"
    memory_mb: int = 128
    timeout_s: float = 3.0
    http_routes: tuple[HttpRoute, ...] = ()
    queues: tuple[QueueTrigger, ...] = ()
    schedules: tuple[ScheduleTrigger, ...] = ()

    @property
    def module_file(self) -> Path:
        module = self.handler.rsplit(".", 1)[0]
        return self.code_dir / (module.replace(".", "/") + ".py")

    @property
    def attribute(self) -> str:
        return self.handler.rsplit(".", 1)[1]


def _ref_name(value: Any) -> str:
    """The logical id behind ``!Ref X``, ``!GetAtt X.Arn`` (YAML tag or JSON form) or a plain string."""
    if isinstance(value, str):
        return value.split(".", 1)[0]
    if isinstance(value, Mapping):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            att = value["Fn::GetAtt"]
            return str(att[0]) if isinstance(att, list | tuple) else str(att).split(".", 1)[0]
    raise InvalidInputError("Queue", f"cannot resolve a queue reference from {value!r}")


def _scalar(value: Any, default: Any) -> Any:
    # Intrinsics (e.g. !If, !Ref to a parameter) cannot be evaluated here: fall back to the default.
    return default if value is None or isinstance(value, Mapping | list) else value


def function_specs(template: Mapping[str, Any], root: Path) -> dict[str, FunctionSpec]:
    """Every serverless function of a parsed SAM template, by logical id.

    ``template`` is the parsed document (CloudFormation tags in their JSON form: ``{"Ref": ...}``,
    ``{"Fn::GetAtt": [...]}``); ``root`` is the directory ``CodeUri`` paths are relative to.
    ``Globals.Function`` supplies defaults for Handler, MemorySize, Timeout and CodeUri, as SAM does.
    """
    globals_fn = (template.get("Globals") or {}).get("Function") or {}
    specs: dict[str, FunctionSpec] = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if not isinstance(resource, Mapping) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**globals_fn, **(resource.get("Properties") or {})}
        code_uri = props.get("CodeUri")
        handler = props.get("Handler")
        if not isinstance(code_uri, str) or not isinstance(handler, str) or "." not in handler:
            logger.warning(
                "local runtime skips function without a local CodeUri/Handler", extra={"function": logical_id}
            )
            continue
        routes: list[HttpRoute] = []
        queues: list[QueueTrigger] = []
        schedules: list[ScheduleTrigger] = []
        for event_name, event in (props.get("Events") or {}).items():
            kind = event.get("Type")
            ev = event.get("Properties") or {}
            if kind == "HttpApi":
                method = str(ev.get("Method", "ANY")).upper()
                routes.append(
                    HttpRoute(
                        "ANY" if method in ("*", "X-AMAZON-APIGATEWAY-ANY-METHOD") else method,
                        str(ev.get("Path", "$default")),
                        public=str((ev.get("Auth") or {}).get("Authorizer", "")).upper() == "NONE",
                    )
                )
            elif kind == "SQS":
                queues.append(
                    QueueTrigger(
                        queue=_ref_name(ev.get("Queue")),
                        batch_size=int(_scalar(ev.get("BatchSize"), 10)),
                        report_batch_item_failures="ReportBatchItemFailures"
                        in (ev.get("FunctionResponseTypes") or ()),
                    )
                )
            elif kind in ("Schedule", "ScheduleV2"):
                expression = ev.get("ScheduleExpression" if kind == "ScheduleV2" else "Schedule")
                raw_input = ev.get("Input")
                schedules.append(
                    ScheduleTrigger(
                        name=str(_scalar(ev.get("Name"), event_name)),
                        expression=str(_scalar(expression, "")),
                        input=raw_input if isinstance(raw_input, str) else None,
                        scheduler=kind == "ScheduleV2",
                    )
                )
        specs[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_dir=(root / code_uri).resolve(),
            handler=handler,
            memory_mb=int(_scalar(props.get("MemorySize"), 128)),
            timeout_s=float(_scalar(props.get("Timeout"), 3)),
            http_routes=tuple(routes),
            queues=tuple(queues),
            schedules=tuple(schedules),
        )
    return specs


_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")


def rate_seconds(expression: str) -> int | None:
    """Seconds between runs of a ``rate(...)`` expression; None for cron/at expressions."""
    match = _RATE.match(expression.strip())
    if not match:
        return None
    unit = match.group(2).rstrip("s")
    return int(match.group(1)) * {"minute": 60, "hour": 3600, "day": 86400}[unit]


class LambdaContext:
    """The attributes and method of the Lambda context object that handlers and Powertools use."""

    def __init__(
        self,
        spec: FunctionSpec,
        region: str,
        account_id: str = DEFAULT_ACCOUNT_ID,
        request_id: str | None = None,
    ) -> None:
        self.function_name = spec.logical_id
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{spec.logical_id}"
        self.memory_limit_in_mb = spec.memory_mb
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.logical_id}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + spec.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's configured timeout (never negative)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# Modules are loaded once per process and shared by every LambdaFunction of the same file (warm container).
_MODULES: dict[Path, ModuleType] = {}
_MODULES_LOCK = threading.Lock()


def _load_module(path: Path, name_hint: str) -> ModuleType:
    with _MODULES_LOCK:
        module = _MODULES.get(path)
        if module is not None:
            return module
        if not path.is_file():
            raise NotFoundError(f"handler module {path} does not exist")
        digest = uuid.uuid5(uuid.NAMESPACE_URL, str(path)).hex[:8]
        name = f"_embrec_local_{re.sub(r'[^0-9A-Za-z_]', '_', name_hint)}_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise NotFoundError(f"cannot load handler module {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # Lambda puts the function's code directory on sys.path, so a handler may import its siblings.
        code_dir = str(path.parent)
        added = code_dir not in sys.path
        if added:
            sys.path.insert(0, code_dir)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        finally:
            if added:
                sys.path.remove(code_dir)
        _MODULES[path] = module
        return module


@dataclass
class LambdaFunction:
    """One function of the template, invocable in-process; its handler is imported on first use."""

    spec: FunctionSpec
    region: str = "us-east-1"
    account_id: str = DEFAULT_ACCOUNT_ID
    _handler: _HandlerFn | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.logical_id

    def handler(self) -> _HandlerFn:
        """The handler callable (imports the module the first time, like a cold start)."""
        if self._handler is None:
            module = _load_module(self.spec.module_file, self.spec.logical_id)
            fn = getattr(module, self.spec.attribute, None)
            if not callable(fn):
                raise NotFoundError(f"{self.spec.module_file} has no callable {self.spec.attribute!r}")
            self._handler = fn
        return self._handler

    def invoke(self, event: Any, request_id: str | None = None) -> Any:
        """Run the handler on ``event`` with a fresh context; exceptions propagate to the caller."""
        with self._lock:
            handler = self.handler()
            context = LambdaContext(self.spec, self.region, self.account_id, request_id)
            started = time.perf_counter()
            try:
                return handler(event, context)
            finally:
                logger.debug(
                    "invoked",
                    extra={
                        "function": self.name,
                        "request_id": context.aws_request_id,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
