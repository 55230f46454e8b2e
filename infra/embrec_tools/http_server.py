"""A local HTTP server served from a background thread: the local API gateway's and the console's."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from embrec.errors import ServiceUnavailableError

__all__ = ["BackgroundHttpServer"]


class BackgroundHttpServer:
    """A ``ThreadingHTTPServer`` listening on ``host:port`` (0 = a free port) from construction on; ``start``
    serves it in a daemon thread, ``stop`` shuts it down, joins the thread and closes the socket.

    ``busy_hint`` ends the ServiceUnavailableError raised when the port cannot be bound (what to change).
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: type[BaseHTTPRequestHandler],
        *,
        thread_name: str,
        busy_hint: str,
    ) -> None:
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            reason = f"cannot listen on {host}:{port} ({exc.strerror}){busy_hint}"
            raise ServiceUnavailableError(reason) from exc
        self._server.daemon_threads = True
        self._thread_name = thread_name
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}"

    def start(self) -> None:
        """Serve in a background thread (returns at once; the socket is already listening)."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=self._thread_name,
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
