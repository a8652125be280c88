"""A fake "Searchdesk" back-office for tests: a capped search API served over a real socket.

    GET /api/v2/agents/me             the agent behind the API key (401 otherwise)
    GET /api/v2/search/tickets?status=open&status=pending&created_from=ISO&created_before=ISO
                                      &page=N    (or updated_from / updated_before)
        {"total": <matches>, "results": [30 at most, by id]}

Like many vendors' searches, it answers 30 results a page and pages 1 to 10 only: page 11 is a
400, so no query reaches past its 300th result (`cap_results(n)` lowers that cap: the page
holding the n-th result ends there and the pages after it are refused). Authentication is HTTP
Basic with the API key as user name. Rate limiting answers 429 with `Retry-After: 1`. Every
answer's `Date` is the fake's clock, which moves only when told to (`advance`); uvicorn runs with
`date_header=False`, or it would send its own `Date` (the machine's clock) too.

Tickets are created 10 minutes apart, except a burst of `burst` tickets created in the same
second (a bulk import): a window over the cap that cannot be split.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

API_KEY = "searchdesk-key-8842"
PAGE_SIZE = 30
MAX_PAGES = 10
OPEN_STATUSES = ("open", "pending")
EPOCH = datetime(2025, 6, 1, tzinfo=UTC)


class SearchdeskBackoffice:
    """The fake's data and knobs (the conformance kit's controls), and its server."""

    def __init__(self, tickets: int = 700, *, burst: int = 40, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        # The clock starts a day after the last creation: no ticket is created in the future.
        self.now = EPOCH + timedelta(minutes=10 * tickets, days=1)
        self.tickets: dict[int, dict[str, Any]] = {}
        for n in range(1, tickets + 1):
            created = EPOCH + timedelta(minutes=10 * n) if n > burst else EPOCH
            self.tickets[n] = {
                "id": n,
                "subject": f"Order #{1000 + n} not delivered",
                "status": "pending" if n % 5 == 0 else ("resolved" if n % 7 == 0 else "open"),
                "priority": 3 if n % 9 == 0 else 1,
                "created_at": created.isoformat(),
                "updated_at": created.isoformat(),
            }
        self.lock = threading.Lock()
        self.cap = PAGE_SIZE * MAX_PAGES
        self.searches = 0
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
        """Search requests answered so far (every window's pages; `agents/me` is not counted)."""
        return self.searches

    def rate_limit_next(self, count: int) -> None:
        """Answer the next `count` requests with 429."""
        self.rate_limited = count

    def fail_page(self, page: int) -> None:
        """Answer 503 to every search request for that page, in any window."""
        self.failing_pages.add(page)

    def cap_results(self, count: int) -> None:
        """Answer at most `count` results per query (instead of 300)."""
        self.cap = count

    def change(self, ticket_id: str) -> None:
        """Edit a ticket's subject now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["subject"] += " (updated)"
            ticket["updated_at"] = self.now.isoformat()

    def close(self, ticket_id: str) -> None:
        """Resolve a ticket now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["status"] = "resolved"
            ticket["updated_at"] = self.now.isoformat()

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward."""
        self.now += timedelta(seconds=seconds)

    # --- HTTP ------------------------------------------------------------------------------------

    def _answer(self, body: Any, status: int = 200, **headers: str) -> JSONResponse:
        return JSONResponse(
            body, status, headers={"Date": format_datetime(self.now, usegmt=True), **headers}
        )

    def _refuse(self, request: Request) -> JSONResponse | None:
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return self._answer({"message": "rate limited"}, 429, **{"Retry-After": "1"})
        expected = base64.b64encode(f"{self.api_key}:X".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return self._answer({"message": "authentication failed"}, 401)
        return None

    async def me(self, request: Request) -> JSONResponse:
        return self._refuse(request) or self._answer({"id": 1, "name": "kit"})

    async def search(self, request: Request) -> JSONResponse:
        refused = self._refuse(request)
        if refused:
            return refused
        self.searches += 1
        query = request.query_params
        try:
            page = int(query.get("page", "1"))
            bounds = {
                f"{name}_{edge}": datetime.fromisoformat(query[f"{name}_{edge}"])
                for name in ("created", "updated")
                for edge in ("from", "before")
                if f"{name}_{edge}" in query
            }
        except ValueError as exc:
            return self._answer({"message": f"invalid query: {exc}"}, 400)
        if not 1 <= page <= MAX_PAGES:
            return self._answer({"message": f"page must be between 1 and {MAX_PAGES}"}, 400)
        if page in self.failing_pages:
            return self._answer({"message": "search backend unavailable"}, 503)
        statuses = query.getlist("status")
        with self.lock:
            matches = [
                dict(t)
                for _, t in sorted(self.tickets.items())
                if (not statuses or t["status"] in statuses) and _within(t, bounds)
            ]
        reachable = matches[: self.cap]
        start = (page - 1) * PAGE_SIZE
        if start >= len(reachable) and start < len(matches):
            return self._answer({"message": f"results past the {self.cap}th are not served"}, 400)
        return self._answer(
            {"total": len(matches), "results": reachable[start : start + PAGE_SIZE]}
        )

    def start(self) -> SearchdeskBackoffice:
        """Serve on 127.0.0.1 in a thread; `url` is then set."""
        app = Starlette(
            routes=[
                Route("/api/v2/agents/me", self.me),
                Route("/api/v2/search/tickets", self.search),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            log_config=None,
            lifespan="off",
            date_header=False,  # the fake's own clock is the Date
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake searchdesk did not start")
            time.sleep(0.005)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> SearchdeskBackoffice:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _within(ticket: dict[str, Any], bounds: dict[str, datetime]) -> bool:
    for name in ("created", "updated"):
        moment = datetime.fromisoformat(ticket[f"{name}_at"])
        low, high = bounds.get(f"{name}_from"), bounds.get(f"{name}_before")
        if (low is not None and moment < low) or (high is not None and moment >= high):
            return False
    return True
