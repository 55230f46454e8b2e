"""The one exception tree of embrec.

Every error the package raises on purpose is an ``EmbrecError``. The HTTP status of each is declared here,
once, and the API layer maps ``error.status`` without ever looking at message text::

    EmbrecError                      500  something we did not expect (generic body, no internals)
    ├── InvalidInputError            400  a request or row field is wrong: carries ``field`` and ``reason``
    │   ├── UnprocessableError       422  well-formed but semantically invalid (e.g. min_price > max_price)
    │   └── PayloadTooLargeError     413  body or batch over its limit
    ├── AuthenticationError          401  no or bad credentials
    ├── ForbiddenError               403  credentials valid, but not for this user
    ├── NotFoundError                404  unknown item, user or route
    │   └── ResourceMissingError     500  one of embrec's own stored resources (an S3 key, a table) is absent:
    │                                     the deployment's state, not the request's, so clients get a generic
    │                                     500 and the resource is named only in the log
    │       └── EncoderMissingError       no encoder published yet (encoder/current.json absent)
    ├── ConflictError                409  lost a conditional write (e.g. the index pointer swap)
    ├── ConfigurationError           500  the deployment's settings are wrong: raised when a function starts,
    │                                     logged with the variable's name; clients see only a generic 500
    ├── ArtifactError                500  a published artifact cannot be used
    │   ├── IntegrityError                sha256 or size does not match the manifest
    │   └── CompatibilityError            dim / encoder id / library mismatch between artifacts
    └── ServiceUnavailableError      503  a dependency failed after retries; the client may retry safely
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "AuthenticationError",
    "CompatibilityError",
    "ConfigurationError",
    "ConflictError",
    "EmbrecError",
    "EncoderMissingError",
    "ForbiddenError",
    "IntegrityError",
    "InvalidInputError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ResourceMissingError",
    "ServiceUnavailableError",
    "UnprocessableError",
]


class EmbrecError(Exception):
    """Base of every embrec error. ``status`` is the HTTP status the API answers with."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message}


class InvalidInputError(EmbrecError):
    """A field of a request or a catalog row is invalid."""

    status = 400
    code = "invalid_input"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def to_dict(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, "field": self.field, "reason": self.reason}


class UnprocessableError(InvalidInputError):
    status = 422
    code = "unprocessable"


class PayloadTooLargeError(InvalidInputError):
    status = 413
    code = "payload_too_large"


class AuthenticationError(EmbrecError):
    status = 401
    code = "unauthorized"


class ForbiddenError(EmbrecError):
    status = 403
    code = "forbidden"


class NotFoundError(EmbrecError):
    status = 404
    code = "not_found"


class ResourceMissingError(NotFoundError):
    """An S3 key or a table of the deployment does not exist. Callers that expect absence (no index published
    yet) catch :class:`NotFoundError`; one that reaches a client is our failure, so its message (which names
    the bucket and key) stays in the log."""

    status = 500
    code = "resource_missing"


class EncoderMissingError(ResourceMissingError):
    """No encoder has been published yet: a deployment (or a local stack) that is still starting."""


class ConflictError(EmbrecError):
    status = 409
    code = "conflict"


class ConfigurationError(EmbrecError):
    """An environment variable is missing or invalid: the deployment's fault, never the client's."""

    code = "configuration_error"

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


class ArtifactError(EmbrecError):
    code = "artifact_error"


class IntegrityError(ArtifactError):
    code = "artifact_integrity"


class CompatibilityError(ArtifactError):
    code = "artifact_incompatible"


class ServiceUnavailableError(EmbrecError):
    status = 503
    code = "service_unavailable"
