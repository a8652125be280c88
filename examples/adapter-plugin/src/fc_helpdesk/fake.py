"""A fake "Helpdesk" back-office for tests: its JSON API served over a real socket.

    GET /api/v2/me                                 the agent behind the token (401 otherwise)
    GET /api/v2/tickets?status=open&page=N&per_page=K
                                                   {"tickets": [...], "next_page": N+1 | null}
    GET /api/v2/changes?since=ISO&page=N           tickets of any status updated since `since`,
                                                   plus "server_time" (the API's clock)

Rate limiting answers 429 with `Retry-After: 1`. The fake's clock only moves when told to
(`advance`), so incremental tests are exact. It implements the conformance kit's
`KitBackoffice` controls (`rate_limit_next`, `fail_page`, `change`, `close`, `advance`).
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOKEN = "helpdesk-token-1234"  # noqa: S105 - the fake's own test token
OPEN_STATUSES = ("open", "pending")


class HelpdeskBackoffice:
    """The fake's data and knobs, and the server that serves them."""

    def __init__(self, tickets: int = 120, *, token: str = TOKEN) -> None:
        self.token = token
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        self.tickets: dict[int, dict[str, Any]] = {
            n: {
                "id": n,
                "subject": f"Printer on floor {n % 7} is jammed (#{n})",
                "status": "pending" if n % 5 == 0 else ("solved" if n % 11 == 0 else "open"),
                "priority": "urgent" if n % 9 == 0 else "normal",
                "requester": {"email": f"user{n}@example.com"},
                "html_url": f"https://helpdesk.example/tickets/{n}",
                "updated_at": self.now.isoformat(),
            }
            for n in range(1, tickets + 1)
        }
        self.lock = threading.Lock()
        self.listings = 0
        self.rate_limited = 0
        self.failing_pages: set[int] = set()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- the kit's controls -------------------------------------------------------------------

    def open_ids(self) -> set[str]:
        """Ids of the open (open or pending) tickets."""
        with self.lock:
            return {str(n) for n, t in self.tickets.items() if t["status"] in OPEN_STATUSES}

    def listing_requests(self) -> int:
        """Listing requests answered so far."""
        return self.listings

    def rate_limit_next(self, count: int) -> None:
        """Answer the next `count` API requests with 429."""
        self.rate_limited = count

    def fail_page(self, page: int) -> None:
        """Answer 503 to every request for that page of a listing."""
        self.failing_pages.add(page)

    def change(self, ticket_id: str) -> None:
        """Edit a ticket's subject now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["subject"] += " (updated)"
            ticket["updated_at"] = self.now.isoformat()

    def close(self, ticket_id: str) -> None:
        """Solve a ticket now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["status"] = "solved"
            ticket["updated_at"] = self.now.isoformat()

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward."""
        self.now += timedelta(seconds=seconds)

    # --- HTTP ------------------------------------------------------------------------------------

    def _refuse(self, request: Request) -> JSONResponse | None:
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return JSONResponse({"error": "rate limited"}, 429, headers={"Retry-After": "1"})
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"error": "invalid token"}, 401)
        return None

    def _page(self, request: Request, items: list[dict[str, Any]]) -> JSONResponse:
        page = int(request.query_params.get("page", "1"))
        per_page = min(int(request.query_params.get("per_page", "25")), 50)
        if page in self.failing_pages:
            return JSONResponse({"error": "backend unavailable"}, 503)
        chunk = items[(page - 1) * per_page : page * per_page]
        more = page * per_page < len(items)
        return JSONResponse(
            {
                "tickets": chunk,
                "next_page": page + 1 if more else None,
                "server_time": self.now.isoformat(),
            }
        )

    async def me(self, request: Request) -> JSONResponse:
        return self._refuse(request) or JSONResponse(
            {"agent": "kit", "role": "admin", "server_time": self.now.isoformat()}
        )

    async def list_tickets(self, request: Request) -> JSONResponse:
        refused = self._refuse(request)
        if refused:
            return refused
        self.listings += 1
        wanted = request.query_params.getlist("status") or list(OPEN_STATUSES)
        with self.lock:
            items = [dict(t) for n, t in sorted(self.tickets.items()) if t["status"] in wanted]
        return self._page(request, items)

    async def changes(self, request: Request) -> JSONResponse:
        refused = self._refuse(request)
        if refused:
            return refused
        since_text = request.query_params.get("since")
        if not since_text:
            return JSONResponse({"error": "since is required"}, 400)
        since = datetime.fromisoformat(since_text)
        with self.lock:
            items = [
                dict(t)
                for n, t in sorted(self.tickets.items())
                if datetime.fromisoformat(t["updated_at"]) >= since
            ]
        return self._page(request, items)

    def start(self) -> HelpdeskBackoffice:
        """Serve on 127.0.0.1 in a thread; `url` is then set."""
        app = Starlette(
            routes=[
                Route("/api/v2/me", self.me),
                Route("/api/v2/tickets", self.list_tickets),
                Route("/api/v2/changes", self.changes),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, log_config=None, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake helpdesk did not start")
            time.sleep(0.005)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> HelpdeskBackoffice:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
