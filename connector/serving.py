"""Serving an ASGI app with uvicorn on a socket bound beforehand: the daemon's endpoints, the
sandbox, and the tests' fake back-offices.

`listen` binds the socket first, so the port is known (port 0: a free one) before uvicorn runs
and a busy port is an `OSError` the caller can name. `quiet_config` leaves the product's own
logging setup alone (warnings only, no access log, no lifespan). `ThreadServer` serves in a
daemon thread, for the sandbox and the fakes; the daemon awaits `SignalFreeServer.serve` on its
own event loop, since it drains on SIGTERM itself.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final, Self

import uvicorn

_START_TIMEOUT_S: Final = 10.0
_STOP_TIMEOUT_S: Final = 10.0


def listen(host: str, port: int, *, backlog: int = 128) -> socket.socket:
    """A TCP socket bound to `host:port` and listening; raises OSError (port busy...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for such
    # sockets, and without it every keep-alive response stalls ~40 ms (Nagle + delayed ACK),
    # since uvicorn writes headers and body separately.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def quiet_config(app: Any, *, graceful_shutdown_s: int = 2, **options: Any) -> uvicorn.Config:
    """uvicorn's config for `app`, leaving logging to the product; `options` go to uvicorn.

    `graceful_shutdown_s`: how long in-flight requests (a latency fault) get to finish when
    stopping.
    """
    settings: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "log_config": None,
        "lifespan": "off",
        "ws": "none",
        "timeout_graceful_shutdown": graceful_shutdown_s,
    }
    return uvicorn.Config(app, **{**settings, **options})


class SignalFreeServer(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon drains on SIGTERM itself (uvicorn's own
    handlers would re-raise the signal after shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ThreadServer:
    """An ASGI app on `host:port` in a daemon thread; a context manager, also `start()`/`stop()`.

    `start()` returns once uvicorn accepts connections. It can be started and stopped many times;
    a restart binds the port it had, so clients configured with its URL keep working.
    """

    def __init__(
        self,
        app: Any,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        graceful_shutdown_s: int = 2,
        **options: Any,
    ) -> None:
        self.app = app
        self.name = name
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._graceful_shutdown_s = graceful_shutdown_s
        self._options = options
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        """The bound port (known once started; kept across restarts)."""
        if self._port is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The server's root URL, e.g. `http://127.0.0.1:PORT`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Bind, serve in a daemon thread, and return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already running")
        sock = listen(self.host, self._port or self._requested_port)
        self._port = sock.getsockname()[1]
        config = quiet_config(
            self.app,
            host=self.host,
            port=self._port,
            graceful_shutdown_s=self._graceful_shutdown_s,
            **self._options,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"{self.name}-{self._port}",
            daemon=True,
        )
        self._socket, self._server, self._thread = sock, server, thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start on port {self._port}")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for its thread, and release the socket."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(_STOP_TIMEOUT_S)
            if thread.is_alive():
                # A handler stuck past the graceful timeout: stop waiting for connections.
                if server is not None:
                    server.force_exit = True
                thread.join(_STOP_TIMEOUT_S)
        if sock is not None:
            sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
