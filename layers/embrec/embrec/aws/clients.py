"""The one place that builds boto3 clients and translates AWS failures into embrec errors.

``clients(settings)`` returns a small frozen bundle (S3, DynamoDB, SQS) built once per settings object and
shared by every adapter of the container; adapters take the client they need by injection, so tests hand them
moto-backed clients. Nothing here does I/O at import time: boto3 itself is imported lazily.

Failure translation (used by :mod:`embrec.aws.store` and :mod:`embrec.aws.artifacts`, nowhere else)::

    throttling, 5xx, timeouts, connection errors (after botocore's retries)  -> ServiceUnavailableError
    ConditionalCheckFailed, PreconditionFailed (412), ConditionalRequestConflict (409), a transaction
    cancelled by a failed condition                                          -> ConflictError
    NoSuchKey, NoSuchBucket, ResourceNotFoundException, 404                  -> ResourceMissingError
    (a NotFoundError, so absence is still caught as one, but a 500 with a generic body if it reaches a client)
    anything else (AccessDenied, validation errors: a bug or a misconfiguration) -> EmbrecError (500)
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embrec.config import Settings
from embrec.errors import ConflictError, EmbrecError, ResourceMissingError, ServiceUnavailableError

if TYPE_CHECKING:
    from botocore.config import Config

__all__ = [
    "MAX_ATTEMPTS",
    "AwsClients",
    "aws_errors",
    "botocore_config",
    "buffered",
    "cancellation_codes",
    "clients",
    "error_code",
    "is_transaction_conflict",
    "translate_error",
]

# Standard retry mode: exponential backoff with jitter on throttling, 5xx and transient connection errors.
# 5 attempts ride out a typical S3 503 "SlowDown" burst or a DynamoDB throttle at cold start, while the
# worst case (~2 s of backoff + timeouts) stays well inside an API Gateway 29 s budget.
MAX_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 2.0  # a Lambda in-region connection takes milliseconds; fail fast and retry
READ_TIMEOUT_S = 15.0  # per socket read, not per object: large index files stream in many reads
LOCAL_READ_TIMEOUT_S = 300.0
STREAM_BUFFER_BYTES = 1 << 20  # read size under a streamed S3 body: one socket read per MiB, not per line
MAX_POOL_CONNECTIONS = 32  # parallel scan segments and concurrent S3 part downloads share one client

_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionInProgressException",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalServerError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_CONFLICT_CODES = frozenset(
    {"ConditionalCheckFailedException", "PreconditionFailed", "ConditionalRequestConflict", "412"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "ResourceNotFoundException", "NotFound", "404"})


@dataclass(frozen=True)
class AwsClients:
    """The boto3 clients of one container (typed ``Any``: the stubs are a dev-only dependency)."""

    s3: Any
    dynamodb: Any
    sqs: Any


def botocore_config(settings: Settings) -> Config:
    """Retries, timeouts and pool size suited to Lambda; path-style S3 addressing for a local endpoint."""
    from botocore.config import Config

    return Config(
        region_name=settings.region,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_S,
        # A local emulator (moto) is slow, not down: a DynamoDB transaction copies every table there, and a
        # timed-out call retried while the first still runs corrupts its state. Wait for it instead.
        read_timeout=LOCAL_READ_TIMEOUT_S if settings.aws_endpoint else READ_TIMEOUT_S,
        max_pool_connections=MAX_POOL_CONNECTIONS,
        s3={"addressing_style": "path"} if settings.aws_endpoint else {},
    )


@functools.cache
def clients(settings: Settings) -> AwsClients:
    """Build (once per settings) the S3, DynamoDB and SQS clients; ``clients.cache_clear()`` resets it.

    With ``settings.aws_endpoint`` set (moto server, LocalStack) every client talks to that endpoint, and
    placeholder credentials are used when none are configured, since a local stack does not check them.
    """
    import boto3

    session = boto3.session.Session(region_name=settings.region)
    kwargs: dict[str, Any] = {"config": botocore_config(settings)}
    if settings.aws_endpoint:
        kwargs["endpoint_url"] = settings.aws_endpoint
        if session.get_credentials() is None:
            kwargs["aws_access_key_id"] = "local"
            kwargs["aws_secret_access_key"] = "local"
    return AwsClients(
        s3=session.client("s3", **kwargs),
        dynamodb=session.client("dynamodb", **kwargs),
        sqs=session.client("sqs", **kwargs),
    )


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` ("" for anything else)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _http_status(error: BaseException) -> int:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def translate_error(error: Exception, resource: str) -> EmbrecError:
    """Map a botocore failure on ``resource`` (a table or an s3 key, for the message) to an embrec error."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, EmbrecError):
        return error
    if isinstance(error, ClientError):
        code, status = error_code(error), _http_status(error)
        if code == "TransactionCanceledException":
            return _translate_cancelled_transaction(error, resource)
        if code in _CONFLICT_CODES or status in (409, 412):
            return ConflictError(f"{resource}: conditional write lost ({code or status})")
        if code in _NOT_FOUND_CODES or status == 404:
            return ResourceMissingError(f"{resource}: not found")
        if code in _THROTTLING_CODES or status >= 500 or status == 429:
            return ServiceUnavailableError(f"{resource}: AWS unavailable after retries ({code or status})")
        return EmbrecError(f"{resource}: AWS request failed ({code or status})")
    if isinstance(error, BotoCoreError):
        # Connection refused/reset, timeouts, incomplete reads: transient by nature.
        return ServiceUnavailableError(f"{resource}: AWS unreachable after retries ({type(error).__name__})")
    return EmbrecError(f"{resource}: unexpected failure ({type(error).__name__})")


def _translate_cancelled_transaction(error: Exception, resource: str) -> EmbrecError:
    # A cancelled TransactWriteItems names a reason per action: a failed condition is a conflict the caller
    # expects; a concurrent transaction on the same item or throttling is transient.
    reasons = {
        str(r.get("Code", "None")) for r in getattr(error, "response", {}).get("CancellationReasons", [])
    }
    if "ConditionalCheckFailed" in reasons:
        return ConflictError(f"{resource}: transaction condition failed")
    if reasons & {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }:
        return ServiceUnavailableError(f"{resource}: transaction cancelled ({', '.join(sorted(reasons))})")
    return EmbrecError(f"{resource}: transaction cancelled ({', '.join(sorted(reasons))})")


def cancellation_codes(error: BaseException) -> list[str]:
    """Per-action reason codes of a cancelled TransactWriteItems (``"None"`` for actions that were fine).

    Accepts the translated embrec error (its ``__cause__``) or the ClientError; ``[]`` for anything else.
    """
    cause = error.__cause__ if isinstance(error, EmbrecError) else error
    if cause is None or error_code(cause) != "TransactionCanceledException":
        return []
    return [str(r.get("Code", "None")) for r in getattr(cause, "response", {}).get("CancellationReasons", [])]


def is_transaction_conflict(error: BaseException) -> bool:
    """True when ``error`` (translated or not) is a transaction cancelled by a concurrent one on its item.

    botocore does not retry those; a caller whose transaction is idempotent may back off and try again.
    """
    cause = error.__cause__ if isinstance(error, EmbrecError) else error
    if cause is None or error_code(cause) != "TransactionCanceledException":
        return False
    reasons = getattr(cause, "response", {}).get("CancellationReasons", [])
    return any(r.get("Code") == "TransactionConflict" for r in reasons)


@contextmanager
def aws_errors(resource: str) -> Iterator[None]:
    """Run a block of AWS calls; re-raise botocore failures as embrec errors (see the module table)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise translate_error(error, resource) from error


class _RawBody(io.RawIOBase):
    """A botocore ``StreamingBody`` as a raw stream, so :class:`io.BufferedReader` can sit on it: its
    ``readline`` then scans a 1 MiB buffer instead of calling the body once per byte."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with aws_errors("s3 object body"):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def buffered(body: Any, size: int = STREAM_BUFFER_BYTES) -> io.BufferedReader:
    """A read-only buffered stream over an S3 object's body (reads of ``size`` bytes underneath)."""
    return io.BufferedReader(_RawBody(body), buffer_size=size)
