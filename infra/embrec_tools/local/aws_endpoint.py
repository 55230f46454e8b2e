"""The local AWS endpoint: an in-process moto server, or an endpoint the user already runs (LocalStack).

moto is imported only when a server is started, so importing :mod:`embrec_tools.local` costs nothing
elsewhere.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from embrec.errors import ServiceUnavailableError

__all__ = ["LOCAL_CREDENTIALS", "AwsEndpoint", "patched_environ", "port_is_free", "wait_until_answers"]

logger = logging.getLogger(__name__)

#: Dummy credentials for local endpoints only. Real ones are masked so nothing local can reach a real account.
LOCAL_CREDENTIALS: Mapping[str, str | None] = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_SESSION_TOKEN": None,
    "AWS_SECURITY_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_DEFAULT_PROFILE": None,
}


@contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables, restoring the previous values on exit."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def wait_until_answers(url: str, timeout: float = 15.0) -> None:
    """Block until something answers HTTP at ``url`` (any status); ServiceUnavailableError on timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered, even if with an error status
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise ServiceUnavailableError(f"AWS endpoint {url} did not answer within {timeout:.0f}s ({last})")


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) != 0


class AwsEndpoint:
    """Where the local AWS lives. ``external`` set: use it as is. Otherwise start moto on ``host:port``.

    ``port=0`` picks a free port (tests). ``url`` is valid after :meth:`start`.
    """

    def __init__(
        self, *, external: str | None = None, host: str = "127.0.0.1", port: int = 4566, timeout: float = 15.0
    ) -> None:
        self.external = external.rstrip("/") if external else None
        self.host = host
        self.port = port
        self.timeout = timeout
        self._server: Any = None
        self.url = self.external or ""

    @property
    def is_embedded(self) -> bool:
        """True when this process runs the moto server itself."""
        return self.external is None

    def start(self) -> str:
        """Start moto (unless external) and wait until the endpoint answers; returns its URL."""
        if self.external is not None:
            if urlsplit(self.external).scheme not in ("http", "https"):
                raise ServiceUnavailableError(f"AWS endpoint {self.external!r} is not an http(s) URL")
            wait_until_answers(self.external, self.timeout)
            return self.external
        if self.port and not port_is_free(self.host, self.port):
            raise ServiceUnavailableError(
                f"port {self.port} on {self.host} is in use; stop what runs there, set EMBREC_AWS_PORT "
                "to another port, or point EMBREC_AWS_ENDPOINT at it if it is an AWS endpoint"
            )
        from moto.server import ThreadedMotoServer

        from embrec_tools.local.emulator_fixes import install

        install()  # moto's transactions copy whole tables per action: see emulator_fixes
        # werkzeug logs every request moto serves at INFO: keep the console for our own logs
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.port = port
        self.url = f"http://{host}:{port}"
        try:
            wait_until_answers(f"{self.url}/moto-api/", self.timeout)
        except ServiceUnavailableError:
            self.stop()
            raise
        logger.info("moto server started", extra={"endpoint": self.url})
        return self.url

    def stop(self) -> None:
        """Stop the embedded server (its state is lost); no-op for an external endpoint."""
        server, self._server = self._server, None
        if server is not None:
            # moto's backends are process-wide, not per server: without a reset the next embedded server in
            # this process would start with this one's buckets, queues and tables.
            try:
                urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"),
                                       timeout=self.timeout).close()
            except OSError:
                logger.warning("moto state not reset", extra={"endpoint": self.url})
            server.stop()
            logger.info("moto server stopped", extra={"endpoint": self.url})
