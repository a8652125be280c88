"""Fake back-offices for the adapters' tests: each vendor's wire format over a real socket.

Each fake (`zendesk`, `jira`, `github`, `hubspot`) is a Starlette app that uvicorn serves on
127.0.0.1 in a daemon thread, with a clock of its own: only `advance` moves it, and every
timestamp, `Date` header and rate-limit reset it writes comes from it, so incremental tests are
exact. Each also implements the conformance kit's `KitBackoffice` controls. This module holds
what they share: the thread server (`connector.serving`'s, as the sandbox's), the clock, the log
of the requests answered, and opaque cursor tokens.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector.serving import ThreadServer

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Clock:
    """A UTC clock that moves only when told to, in whole seconds."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        """Move forward."""
        self.now += timedelta(seconds=round(seconds))

    @property
    def epoch(self) -> int:
        """Now as Unix seconds."""
        return int(self.now.timestamp())

    def http_date(self) -> str:
        """Now as an HTTP `Date` header value."""
        return email.utils.format_datetime(self.now, usegmt=True)


@dataclass(frozen=True, slots=True)
class Hit:
    """One request a fake answered."""

    method: str
    path: str
    query: str
    status: int
    headers: dict[str, str]


def encode_token(data: dict[str, Any]) -> str:
    """An opaque, URL-unfriendly token (base64 with padding, like the vendors' own)."""
    return base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any] | None:
    """The data of a token made by `encode_token`, or None when it is not one."""
    try:
        data = json.loads(base64.b64decode(token, validate=True))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class _Recorder:
    """ASGI middleware that logs each request with the status it was answered."""

    def __init__(self, app: ASGIApp, fake: FakeServer) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def sending(message: Message) -> None:
            # Logged before the answer leaves: a client never sees an answer not yet logged.
            if message["type"] == "http.response.start":
                hit = Hit(
                    scope["method"],
                    scope["path"],
                    scope["query_string"].decode(),
                    message["status"],
                    headers,
                )
                with self.fake.lock:
                    self.fake.log.append(hit)
            await send(message)

        await self.app(scope, receive, sending)


class FakeServer:
    """A fake back-office on 127.0.0.1:<free port>; subclasses provide `routes()`."""

    #: Paths whose answers are the listing that `listing_requests()` counts.
    listing_paths: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.clock = Clock()
        self.lock = threading.RLock()
        self.log: list[Hit] = []
        self.rate_limited = 0
        self.failing_pages: set[int] = set()
        self.url = ""
        self._served: ThreadServer | None = None
        # Write-backs: each write the fake applied, as (ticket id, what), logged before the
        # answer is delayed by `write_delay` (a client killed meanwhile never sees the answer).
        self.applied: list[tuple[str, str]] = []
        self.write_delay = 0.0
        self.gone: set[str] = set()  # ticket ids whose reads and writes answer 404
        self.reject_writes = False  # answer writes with the vendor's 409/422

    def routes(self) -> list[BaseRoute]:
        """The vendor's endpoints."""
        raise NotImplementedError

    # --- the kit's controls shared by every fake -----------------------------------------------

    def listing_requests(self) -> int:
        """Listing requests answered with a page."""
        with self.lock:
            return sum(1 for h in self.log if h.path in self.listing_paths and h.status == 200)

    def rate_limit_next(self, count: int) -> None:
        """Answer the next `count` requests with the vendor's rate-limit response."""
        with self.lock:
            self.rate_limited = count

    def fail_page(self, page: int) -> None:
        """Answer every request for that page of a listing with a 503."""
        with self.lock:
            self.failing_pages.add(page)

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward."""
        with self.lock:
            self.clock.advance(seconds)

    def take_rate_limit(self) -> bool:
        """Whether this request is one of those to rate-limit (and count it)."""
        with self.lock:
            if self.rate_limited > 0:
                self.rate_limited -= 1
                return True
            return False

    async def record_write(self, ticket_id: str, what: str) -> None:
        """Log a write the fake applied, then wait `write_delay` before answering it."""
        with self.lock:
            self.applied.append((ticket_id, what))
            delay = self.write_delay
        if delay:
            await asyncio.sleep(delay)

    def writes_to(self, ticket_id: str, what: str | None = None) -> list[str]:
        """What was applied to a ticket (optionally only writes of that kind)."""
        with self.lock:
            return [w for t, w in self.applied if t == ticket_id and what in (None, w)]

    def hits(self, path: str | None = None) -> list[Hit]:
        """The requests answered so far, optionally only those to `path`."""
        with self.lock:
            return [h for h in self.log if path is None or h.path == path]

    # --- serving ---------------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve in a daemon thread; returns once connections are accepted and `url` is set."""
        app = _Recorder(Starlette(routes=self.routes()), self)
        # The fake writes its own Date, from its own clock.
        self._served = serve_in_thread(
            app, name=type(self).__name__, date_header=False, server_header=False
        )
        self.url = self._served.url
        return self

    def stop(self) -> None:
        """Stop serving and release the socket."""
        served, self._served = self._served, None
        if served is not None:
            served.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_in_thread(app: ASGIApp, *, name: str, **options: Any) -> ThreadServer:
    """Serve `app` on a free port of 127.0.0.1; returns once it accepts connections.

    `options` go to `uvicorn.Config` (e.g. `date_header=False` for a fake with its own clock).
    """
    return ThreadServer(app, name=name, graceful_shutdown_s=1, **options).start()
