"""The local stand-in for API Gateway's JWT authorizer: HS256 tokens signed with a local key.

In AWS the HttpApi's JWT authorizer validates tokens from an OIDC issuer (Cognito...). Locally, with
``EMBREC_AUTH=jwt``, :class:`LocalJwt` plays both the issuer (:meth:`LocalJwt.issue`, for tests and
demos) and the authorizer (:meth:`LocalJwt.authorize`): it checks the signature, ``alg``, issuer, audience
and expiry, and returns the ``requestContext.authorizer`` block API Gateway would pass to the function.
Standard library only (HMAC-SHA256); the key is random per process unless a key file is given.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from embrec.errors import AuthenticationError

__all__ = ["LOCAL_AUDIENCE", "LOCAL_ISSUER", "LocalJwt"]

LOCAL_ISSUER = "https://embrec_tools.local"
LOCAL_AUDIENCE = "embrec-local"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LocalJwt:
    """Issue and validate HS256 JWTs with one secret key (>= 32 bytes)."""

    def __init__(
        self, key: bytes | None = None, *, issuer: str = LOCAL_ISSUER, audience: str = LOCAL_AUDIENCE
    ) -> None:
        self._key = key or secrets.token_bytes(32)
        if len(self._key) < 32:
            raise ValueError("the signing key must be at least 32 bytes")
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def from_file(cls, path: Path) -> LocalJwt:
        """The key in ``path`` (created with mode 0600 on first use), so other processes can mint tokens."""
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
        return cls(path.read_bytes())

    def _sign(self, signing_input: bytes) -> str:
        return _b64(hmac.new(self._key, signing_input, hashlib.sha256).digest())

    def issue(
        self,
        subject: str,
        scopes: Sequence[str] = (),
        *,
        ttl_seconds: float = 3600.0,
        now: float | None = None,
    ) -> str:
        """A signed token for ``subject`` with a space-separated ``scope`` claim."""
        now = time.time() if now is None else now
        header = {"alg": "HS256", "typ": "JWT"}
        claims: dict[str, Any] = {
            "sub": subject,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(now),
            "exp": int(now + ttl_seconds),
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        return f"{signing_input}.{self._sign(signing_input.encode('ascii'))}"

    def verify(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """The claims of a valid token, else :class:`AuthenticationError` (not saying which check failed)."""
        try:
            header_b64, claims_b64, signature = token.split(".")
            header = json.loads(_unb64(header_b64))
            claims = json.loads(_unb64(claims_b64))
        except (ValueError, UnicodeDecodeError):
            raise AuthenticationError("Unauthorized") from None
        expected = self._sign(f"{header_b64}.{claims_b64}".encode("ascii"))
        if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
            raise AuthenticationError("Unauthorized")
        if not hmac.compare_digest(expected, signature):
            raise AuthenticationError("Unauthorized")
        now = time.time() if now is None else now
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        exp = claims.get("exp")
        if (
            claims.get("iss") != self.issuer
            or self.audience not in audiences
            or not isinstance(exp, int | float)
            or exp <= now
            or not claims.get("sub")
        ):
            raise AuthenticationError("Unauthorized")
        return claims

    def authorize(self, headers: Mapping[str, str], *, now: float | None = None) -> dict[str, Any]:
        """The ``requestContext.authorizer`` block for a request's (lower-cased) headers.

        Like API Gateway: the ``Authorization`` header holds the token, with or without ``Bearer ``; claims
        are passed as strings, ``scopes`` from the ``scope`` claim.
        """
        raw = headers.get("authorization", "")
        token = raw[7:].strip() if raw[:7].lower() == "bearer " else raw.strip()
        if not token:
            raise AuthenticationError("Unauthorized")
        claims = self.verify(token, now=now)
        scope = claims.get("scope", "")
        scopes = scope.split() if isinstance(scope, str) else []
        as_strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in claims.items()}
        return {"jwt": {"claims": as_strings, "scopes": scopes or None}}
