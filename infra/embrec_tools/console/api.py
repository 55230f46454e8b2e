"""The console's HTTP client of the embrec API: plain, SigV4-signed (``--aws``) or with a bearer token.

Every call answers an :class:`ApiAnswer` (status and JSON body, whatever the status) or raises
:class:`ApiUnreachable` when nothing answers at all, so each page can say which of the two happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.auth import AuthBase

from embrec.errors import ServiceUnavailableError
from embrec_tools.local.iam import EXECUTE_API

__all__ = ["ApiAnswer", "ApiClient", "ApiUnreachable", "BearerToken", "SigV4", "path_segment"]


class ApiUnreachable(ServiceUnavailableError):
    """Nothing answered at the API's address (refused, timed out, DNS)."""


@dataclass(frozen=True)
class ApiAnswer:
    """One API response: ``status`` and the JSON ``body`` (``{"message": text}`` when it was not JSON)."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def message(self) -> str:
        """The error message of a 4xx/5xx (with the field, for bad input)."""
        text = str(self.body.get("message", "")) or f"HTTP {self.status}"
        field = self.body.get("field")
        return f"{field}: {self.body.get('reason', text)}" if field else text


def path_segment(value: str) -> str:
    """``value`` quoted as one path segment (a ``/`` in an id must not make two)."""
    return quote(value, safe="")


class SigV4(AuthBase):
    """Signs each request with Signature Version 4 for ``execute-api`` (botocore's signer), as an
    IAM-authorised HTTP API requires. ``credentials``: botocore credentials (refreshable ones are frozen
    per request)."""

    def __init__(self, credentials: Any, region: str) -> None:
        self._credentials = credentials
        self.region = region

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = self._credentials
        if hasattr(credentials, "get_frozen_credentials"):
            credentials = credentials.get_frozen_credentials()
        body = request.body or b""
        signed = AWSRequest(
            method=str(request.method),
            url=str(request.url),  # the prepared URL: exactly what goes on the wire
            headers={k: v for k, v in request.headers.items() if k.lower() == "content-type"},
            data=body.encode("utf-8") if isinstance(body, str) else body,
        )
        SigV4Auth(credentials, EXECUTE_API, self.region).add_auth(signed)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in signed.headers:
                request.headers[name] = signed.headers[name]
        return request


class BearerToken(AuthBase):
    """``Authorization: Bearer <token>`` (the API's JWT mode)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


class ApiClient:
    """GET and POST against ``base_url`` (no trailing slash) with optional ``auth``; thread-safe."""

    def __init__(self, base_url: str, auth: AuthBase | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = auth
        self._timeout = timeout

    def _send(self, method: str, path: str, **kwargs: Any) -> ApiAnswer:
        # one session per call: requests.Session is not thread-safe and the console serves threads
        with requests.Session() as session:
            session.trust_env = False  # never route the API through a proxy from the environment
            try:
                response = session.request(
                    method, self.base_url + path, auth=self._auth, timeout=self._timeout, **kwargs
                )
            except requests.RequestException as error:
                raise ApiUnreachable(
                    f"the API at {self.base_url} does not answer ({type(error).__name__})"
                ) from None
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:300]}
        return ApiAnswer(response.status_code, body if isinstance(body, dict) else {"value": body})

    def get(self, path: str, params: Mapping[str, str] | None = None) -> ApiAnswer:
        return self._send("GET", path, params=dict(params or {}))

    def post(self, path: str, body: Mapping[str, Any]) -> ApiAnswer:
        return self._send("POST", path, json=dict(body))
