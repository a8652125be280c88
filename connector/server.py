"""The daemon's HTTP endpoint: `/healthz`, `/readyz`, `/metrics` and the status page.

`/readyz` also shows the cycles running on this replica (`running`: phase, done/total, rate and
ETA by source), so a first import that takes minutes is visibly at work while still unready.

The status page (`GET /`) and its JSON (`GET /api/status`) sit under `server.base_path` for an
ingress; they are read-only and built from the state store (`connector.status`), rendered by
`connector.statuspage`.

A small Starlette app served by uvicorn on the daemon's own event loop (`connector.serving`).
It only reads the daemon's state through the `Probe` protocol, so it can be tested without a
scheduler. Every answer passes the one redactor. Signals are left to the daemon.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from connector.errors import ConfigError
from connector.models import JSONValue
from connector.redaction import REDACTOR
from connector.serving import SignalFreeServer, listen, quiet_config
from connector.statuspage import PAGE_HEADERS, render_page

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Probe(Protocol):
    """What the endpoints need to know about the daemon."""

    def alive(self) -> tuple[bool, str]:
        """Whether the process and its scheduler work, and a word on why not."""
        ...

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether every source is served, with a reason per source that is not."""
        ...

    def holdings(self) -> dict[str, str]:
        """Each source: `held` by this replica or `standby` (another replica works it)."""
        ...

    def progress(self) -> dict[str, dict[str, JSONValue]]:
        """The running cycles' figures by source (`ProgressSnapshot.to_json()`)."""
        ...

    def metrics(self) -> bytes:
        """The Prometheus exposition."""
        ...

    def status(self) -> dict[str, JSONValue]:
        """The status document (`connector.status.status_document`); reads the state store."""
        ...


def create_app(probe: Probe, *, base_path: str = "") -> Starlette:
    """The ASGI app of the endpoints (the page and its JSON under `base_path`)."""

    async def healthz(request: Request) -> Response:
        ok, reason = probe.alive()
        body = {"status": "ok" if ok else "down", "reason": reason}
        return JSONResponse(REDACTOR.mask(body, by_key=False), 200 if ok else 503)

    async def readyz(request: Request) -> Response:
        ready, reasons = probe.readiness()
        body = {
            "status": "ready" if ready else "unready",
            "reasons": reasons,
            "sources": probe.holdings(),
            "running": probe.progress(),
        }
        return JSONResponse(REDACTOR.mask(body, by_key=False), 200 if ready else 503)

    async def metrics(request: Request) -> Response:
        text = REDACTOR.scrub(probe.metrics().decode("utf-8", "replace"))
        return Response(text, media_type=PROMETHEUS_CONTENT_TYPE)

    async def page(request: Request) -> Response:
        # The store is read with blocking SQLAlchemy calls: off the loop that runs the cycles.
        document = await run_in_threadpool(probe.status)
        html = render_page(document, kind=request.query_params.get("kind"))
        return HTMLResponse(html, headers=PAGE_HEADERS)

    async def api_status(request: Request) -> Response:
        document = await run_in_threadpool(probe.status)
        return JSONResponse(document, headers={"Cache-Control": "no-store"})

    async def to_page(request: Request) -> Response:
        return RedirectResponse(f"{base_path}/", status_code=308)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route(f"{base_path}/", page, methods=["GET"]),
        Route(f"{base_path}/api/status", api_status, methods=["GET"]),
    ]
    if base_path:
        routes.append(Route(base_path, to_page, methods=["GET"]))
    return Starlette(routes=routes)


class HttpServer:
    """The endpoints on `host:port` (port 0 picks a free one, see `.port`)."""

    def __init__(self, probe: Probe, *, host: str, port: int, base_path: str = "") -> None:
        try:
            self._socket = listen(host, port, backlog=64)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}): set another port with "
                "server.port (FRAGMENT_CONNECTOR__SERVER__PORT) or another address with "
                "server.host"
            ) from None
        self.port: int = self._socket.getsockname()[1]
        self._server = SignalFreeServer(quiet_config(create_app(probe, base_path=base_path)))

    async def serve(self) -> None:
        """Serve until `stop()`."""
        await self._server.serve(sockets=[self._socket])

    def stop(self) -> None:
        """Ask the server to finish its requests and return from `serve()`."""
        self._server.should_exit = True

    @property
    def started(self) -> bool:
        """Whether it accepts connections."""
        started: Any = self._server.started
        return bool(started)
