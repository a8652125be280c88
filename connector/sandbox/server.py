"""Running the sandbox: `SandboxServer` in a background thread for tests, `serve` for the CLI.

Both serve `create_app` with uvicorn on a real socket, quietly (warnings only, no access log, no
lifespan, and uvicorn's logging config left alone so that the product's own logging setup is not
replaced). `SandboxServer` binds its socket itself, so the port is known before the server thread
starts, and returns from `start()` only once uvicorn accepts connections; it can be started and
stopped many times in one process.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Final, Self

import uvicorn

from connector.sandbox.app import ADMIN_PREFIX, API_PREFIX, create_app
from connector.sandbox.store import SandboxConfig, SandboxStore

_START_TIMEOUT_S: Final = 10.0
_STOP_TIMEOUT_S: Final = 10.0


def _uvicorn_config(app: Any, *, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,
        lifespan="off",
        ws="none",
        # In-flight requests (a latency fault) get this long to finish when stopping.
        timeout_graceful_shutdown=2,
    )


class SandboxServer:
    """The sandbox on 127.0.0.1 in a daemon thread; a context manager, also `start()`/`stop()`."""

    def __init__(
        self, config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SandboxConfig()
        self.store = SandboxStore(self.config)
        self.app = create_app(self.store)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        """The bound port (known once started; kept across restarts)."""
        if self._port is None:
            raise RuntimeError("the sandbox server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The server's root URL, e.g. `http://127.0.0.1:PORT`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The Fragment API base URL to configure a client with: `http://127.0.0.1:PORT/api/v1`."""
        return self.url + API_PREFIX

    @property
    def admin_url(self) -> str:
        """The admin API's URL (test mode only): `http://127.0.0.1:PORT/_sandbox`."""
        return self.url + ADMIN_PREFIX

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Bind, serve in a daemon thread, and return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the sandbox server is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
        # such sockets, and without it every keep-alive response stalls ~40 ms (Nagle + delayed
        # ACK), since uvicorn writes headers and body separately.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # A restart reuses the port it had, so clients configured with base_url keep working.
            sock.bind((self.host, self._port or self._requested_port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        server = uvicorn.Server(_uvicorn_config(self.app, host=self.host, port=self._port))
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"fragment-sandbox-{self._port}",
            daemon=True,
        )
        self._socket, self._server, self._thread = sock, server, thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sandbox server did not start on port {self._port}")
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


def serve(config: SandboxConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the sandbox in the foreground until interrupted (for `fragment-connector sandbox`)."""
    app = create_app(SandboxStore(config))
    uvicorn.Server(_uvicorn_config(app, host=host, port=port)).run()
