"""Running the sandbox: `SandboxServer` in a background thread for tests, `serve` for the CLI.

Both serve `create_app` with uvicorn on a real socket, quietly (`connector.serving`: uvicorn's
logging config left alone, so that the product's own logging setup is not replaced).
`SandboxServer` binds its socket itself, so the port is known before the server thread starts,
and returns from `start()` only once uvicorn accepts connections; it can be started and stopped
many times in one process.
"""

from __future__ import annotations

import uvicorn

from connector.sandbox.app import ADMIN_PREFIX, API_PREFIX, create_app
from connector.sandbox.config import SandboxConfig
from connector.sandbox.store import SandboxStore
from connector.serving import ThreadServer, quiet_config


class SandboxServer(ThreadServer):
    """The sandbox on 127.0.0.1 in a daemon thread; a context manager, also `start()`/`stop()`."""

    def __init__(
        self, config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SandboxConfig()
        self.store = SandboxStore(self.config)
        super().__init__(
            create_app(self.store),
            name="fragment-sandbox",
            host=host,
            port=port,
            date_header=False,
        )

    @property
    def base_url(self) -> str:
        """The Fragment API base URL to configure a client with: `http://127.0.0.1:PORT/api/v1`."""
        return self.url + API_PREFIX

    @property
    def admin_url(self) -> str:
        """The admin API's URL (test mode only): `http://127.0.0.1:PORT/_sandbox`."""
        return self.url + ADMIN_PREFIX


def serve(config: SandboxConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the sandbox in the foreground until interrupted (for `fragment-connector sandbox`)."""
    app = create_app(SandboxStore(config))
    uvicorn.Server(quiet_config(app, host=host, port=port, date_header=False)).run()
