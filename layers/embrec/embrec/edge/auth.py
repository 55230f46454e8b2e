"""Object-level authorisation (OWASP API1): a JWT caller reads and writes only its own user.

API Gateway's JWT authorizer has already checked the token's signature, issuer, audience and expiry when the
request reaches Lambda; it passes the claims and scopes in ``requestContext.authorizer.jwt``. What it cannot
check is *which* user a route touches, so this module does: the ``sub`` claim must equal the ``{user_id}`` of
the route (and every event's ``user_id`` in ``POST /events``) unless the token carries :data:`ADMIN_SCOPE`.
The subject is a user id like any other: it follows the one id rule (:mod:`embrec.domain.model`), which
takes subjects such as ``auth0|123`` as they are; a non-admin token whose subject breaks the rule names no
user embrec can hold and is refused with that reason.

Under ``AuthMode=AWS_IAM`` (server-to-server, SigV4) and locally without auth there are no JWT claims: the
caller is the trusted backend, and :func:`caller_from_event` returns None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from embrec.domain.model import ID_RULE, is_valid_id
from embrec.errors import AuthenticationError, ForbiddenError

__all__ = ["ADMIN_SCOPE", "Caller", "caller_from_event", "require_user", "require_users"]

#: A token with this scope may act on any user (support tools, the backend acting for users).
ADMIN_SCOPE = "embrec/admin"


@dataclass(frozen=True)
class Caller:
    """The authenticated end user behind a JWT: its ``sub`` claim and its scopes."""

    subject: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def _scopes(jwt: Mapping[str, Any], claims: Mapping[str, Any]) -> frozenset[str]:
    raw = jwt.get("scopes")
    if isinstance(raw, list):
        return frozenset(str(s) for s in raw)
    # API Gateway fills ``scopes`` only for routes with authorization scopes; the claim is the source.
    claim = claims.get("scope", claims.get("scp", ""))
    if isinstance(claim, list):
        return frozenset(str(s) for s in claim)
    return frozenset(str(claim).split())


def caller_from_event(event: Mapping[str, Any]) -> Caller | None:
    """The JWT caller of an HTTP API (payload v2) event, or None when the request carries no JWT context.

    Raises :class:`AuthenticationError` for a JWT context without a ``sub`` claim (a token that names no user
    must not pass as the trusted backend).
    """
    context = event.get("requestContext") or {}
    authorizer = context.get("authorizer") or {}
    jwt = authorizer.get("jwt") if isinstance(authorizer, Mapping) else None
    if not isinstance(jwt, Mapping):
        return None
    claims = jwt.get("claims") or {}
    subject = claims.get("sub") if isinstance(claims, Mapping) else None
    if not isinstance(subject, str) or not subject:
        raise AuthenticationError("the token carries no subject")
    return Caller(subject, _scopes(jwt, claims))


def require_user(caller: Caller | None, user_id: str) -> None:
    """Raise :class:`ForbiddenError` unless ``caller`` may act on ``user_id``."""
    if caller is None or caller.admin or caller.subject == user_id:
        return
    if not is_valid_id(caller.subject):
        raise ForbiddenError(f"this token's subject is not a valid user id: a user id {ID_RULE}")
    raise ForbiddenError("this token may only access its own user")


def require_users(caller: Caller | None, user_ids: Iterable[str]) -> None:
    """:func:`require_user` for every user id (a batch is refused whole: nothing is written)."""
    for user_id in user_ids:
        require_user(caller, user_id)
