"""The local stand-in for API Gateway's IAM authorization: a real SigV4 signature check.

In AWS the HttpApi (``AuthMode=AWS_IAM``, the default) refuses every request on a protected route whose
Signature Version 4 does not verify against the caller's secret key. Locally, with ``EMBREC_AUTH=iam``,
:class:`LocalIam` does the same with the local credentials: it rebuilds the canonical request from what
arrived (method, path, query, the headers the client signed, the body bytes), signs it again with botocore's
own ``SigV4Auth`` for service ``execute-api`` at the client's ``X-Amz-Date``, and compares signatures in
constant time. It refuses (``ForbiddenError``, 403 as API Gateway does) a missing or malformed
``Authorization``, an unknown access key, another region or service, a date more than five minutes off,
``host`` or ``x-amz-date`` left unsigned, and any change to what was signed. It returns the
``requestContext.authorizer`` block API Gateway passes on (``{"iam": {...}}``).
"""

from __future__ import annotations

import base64
import hmac
import re
import time
from calendar import timegm
from collections.abc import Mapping
from typing import Any

from embrec.errors import ForbiddenError
from embrec_tools.local.lambdas import DEFAULT_ACCOUNT_ID

__all__ = ["EXECUTE_API", "MAX_CLOCK_SKEW_SECONDS", "LocalIam", "request_body"]

#: The SigV4 service name of API Gateway's invoke endpoint.
EXECUTE_API = "execute-api"
#: A signature dated further than this from the server's clock is refused (AWS: 5 minutes).
MAX_CLOCK_SKEW_SECONDS = 300

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9;_.-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def request_body(event: Mapping[str, Any]) -> bytes:
    """The request body bytes of a payload v2.0 event (base64-decoded, or the UTF-8 text as received)."""
    body = event.get("body")
    if not body:
        return b""
    if event.get("isBase64Encoded"):
        return base64.b64decode(str(body))
    return str(body).encode("utf-8")


class LocalIam:
    """Verify SigV4-signed requests against ``credentials`` (access key id -> secret access key)."""

    def __init__(
        self, credentials: Mapping[str, str], region: str, *, account_id: str = DEFAULT_ACCOUNT_ID
    ) -> None:
        self._secrets = dict(credentials)
        self.region = region
        self.account_id = account_id

    def authorize(self, event: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
        """The ``requestContext.authorizer`` of a correctly signed v2.0 ``event``, else ForbiddenError."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        parsed = _AUTHORIZATION.match(headers.get("authorization", "").strip())
        if parsed is None:
            raise ForbiddenError("Missing Authentication Token")
        secret = self._secrets.get(parsed["key"])
        if secret is None:
            raise ForbiddenError("The security token included in the request is invalid")
        if parsed["region"] != self.region or parsed["service"] != EXECUTE_API:
            raise ForbiddenError("Credential should be scoped to a valid region and to execute-api")
        signed = parsed["headers"].split(";")
        stamp = headers.get("x-amz-date", "")
        if "host" not in signed or "x-amz-date" not in signed or any(h not in headers for h in signed):
            raise ForbiddenError("host and x-amz-date must be signed, and every signed header present")
        try:
            dated = timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise ForbiddenError("X-Amz-Date is not a SigV4 timestamp") from None
        clock = time.time() if now is None else now
        if abs(clock - dated) > MAX_CLOCK_SKEW_SECONDS or not stamp.startswith(parsed["date"]):
            raise ForbiddenError("Signature expired or not yet valid")
        http = event.get("requestContext", {}).get("http", {})
        query = event.get("rawQueryString") or ""
        url = f"http://{headers['host']}{event.get('rawPath', '/')}" + (f"?{query}" if query else "")
        request = AWSRequest(
            method=str(http.get("method", "GET")),
            url=url,
            headers={name: headers[name] for name in signed},
            data=request_body(event),
        )
        request.context["timestamp"] = stamp
        signer = SigV4Auth(Credentials(parsed["key"], secret), EXECUTE_API, self.region)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        if not hmac.compare_digest(expected, parsed["signature"]):
            raise ForbiddenError(
                "The request signature we calculated does not match the signature you provided"
            )
        return {
            "iam": {
                "accessKey": parsed["key"],
                "accountId": self.account_id,
                "callerId": parsed["key"],
                "principalOrgId": None,
                "userArn": f"arn:aws:iam::{self.account_id}:user/local",
                "userId": parsed["key"],
                "cognitoIdentity": None,
            }
        }
