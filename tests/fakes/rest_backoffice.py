"""A fake JSON back-office for the `rest` adapter's tests, served over a real socket.

One server speaks every pagination style, each under its own prefix, so a test picks the style by
its path (`GET` or `POST`; for `POST` the JSON body's keys count as parameters too):

    /page/{kind}    ?page=N&per_page=K   {"data": [...], "page": N, "total": T}
    /offset/{kind}  ?offset=O&limit=K    {"items": [...], "total": T}
    /cursor/{kind}  ?cursor=C&limit=K    {"data": [...], "meta": {"next_cursor": C, "has_more": b}}
    /link/{kind}    ?page=N&per_page=K   [...] and a `Link` header: rel="next" (N+1), rel="last"
    /next/{kind}    ?page=N&per_page=K   {"results": [...], "next": "http://.../next/...?page=N+1"}
    /single/{kind}                       {"data": [...]} (everything in one answer)
    /me                                  who the credentials belong to
    POST /tickets/{id}/close             {"note": ...}: closes; 409 when closed already (write-back)
    POST /tickets/{id}/comments          {"body": ...}: 201

`kind` is `tickets` (the open ones, `open` or `pending`; `?status=all` for every one, by id) or
`changes` (tickets of any status updated at or after `updated_since`, given as ISO 8601, epoch
seconds or epoch milliseconds, or after a `sync_token`; ordered by update; object envelopes carry
the next `sync_token`). Pages hold at most `page_cap` records whatever is asked. Credentials are one
of `none`, `bearer`, `basic`, `api_key_header` (`X-Api-Key`) or `api_key_query` (`?api_key=`); a
wrong one gets 401. Built on `tests.fakes.FakeServer`, it implements the conformance kit's
`KitBackoffice`: a rate-limited answer is 429 with `Retry-After: 0.05`, a failing page is 500
(with the request's URL echoed in the error, as careless servers do), and the clock only moves when
told to. Every request is recorded in `requests`, with its parameters and JSON body.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes import FakeServer

AuthStyle = Literal["none", "bearer", "basic", "api_key_header", "api_key_query"]

TOKEN = "rest-bearer-token-5b2e91"
USERNAME = "agent@backoffice.example"
PASSWORD = "basic-password-77c1f0"
API_KEY = "rest-api-key-d40a3c"
OPEN_STATUSES = ("open", "pending")
STYLES = ("page", "offset", "cursor", "link", "next", "single")
KINDS = ("tickets", "changes")


@dataclass(frozen=True)
class Seen:
    """One request the fake answered, as the fake read it."""

    method: str
    path: str
    params: dict[str, str]
    body: Any
    headers: dict[str, str]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode(value: str, prefix: str) -> str:
    text = base64.urlsafe_b64decode(value.encode()).decode()
    if not text.startswith(prefix):
        raise ValueError(value)
    return text[len(prefix) :]


def _since(value: Any) -> datetime:
    """ISO 8601, epoch seconds or epoch milliseconds (a number past 1e11 is milliseconds)."""
    text = str(value)
    if text.isdigit():
        number = int(text)
        return datetime.fromtimestamp(number / 1000 if number > 10**11 else number, UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class RestBackoffice(FakeServer):
    """The fake's data and knobs; `start()` serves them."""

    def __init__(self, tickets: int = 120, *, auth: AuthStyle = "bearer", page_cap: int = 25):
        super().__init__()
        self.auth = auth
        self.page_cap = page_cap
        start = _stamp(self.clock.now)
        self.tickets: dict[int, dict[str, Any]] = {
            n: {
                "id": n,
                "subject": f"Invoice dispute #{n}",
                "status": "closed" if n % 7 == 0 else ("pending" if n % 5 == 0 else "open"),
                "priority": "high" if n % 3 == 0 else "normal",
                "amount": n * 10,
                "html_url": f"https://backoffice.example/tickets/{n}",
                "assignee": {"email": f"agent{n % 4}@backoffice.example"},
                "updated_at": start,
            }
            for n in range(1, tickets + 1)
        }
        self.requests: list[Seen] = []
        self.repeat_cursor = False  # a broken server that answers every cursor with the same one
        self.delay = 0.0  # seconds before each listing answer

    # --- the kit's controls -------------------------------------------------------------------

    def open_ids(self) -> set[str]:
        """Ids of the open (open or pending) tickets."""
        with self.lock:
            return {str(n) for n, t in self.tickets.items() if t["status"] in OPEN_STATUSES}

    def listing_requests(self) -> int:
        """Requests answered with a page on a `tickets` path."""
        with self.lock:
            return sum(1 for h in self.log if h.path.endswith("/tickets") and h.status == 200)

    def fail_page(self, page: int) -> None:
        """Answer 500 to every request for that page (1-based) of any listing."""
        with self.lock:
            self.failing_pages.add(page)

    def change(self, ticket_id: str) -> None:
        """Edit a ticket's subject now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["subject"] += " (edited)"
            ticket["updated_at"] = _stamp(self.clock.now)

    def close(self, ticket_id: str) -> None:
        """Close a ticket now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["status"] = "closed"
            ticket["updated_at"] = _stamp(self.clock.now)

    # --- what tests use -----------------------------------------------------------------------

    def credentials(self, *, wrong: bool = False) -> dict[str, Any]:
        """The `auth` options of the `rest` adapter for this fake (or wrong ones)."""
        bad = "-wrong" if wrong else ""
        if self.auth == "bearer":
            return {"type": "bearer", "token": TOKEN + bad}
        if self.auth == "basic":
            return {"type": "basic", "username": USERNAME, "password": PASSWORD + bad}
        if self.auth == "api_key_header":
            return {"type": "api_key", "key": API_KEY + bad, "name": "X-Api-Key"}
        if self.auth == "api_key_query":
            return {"type": "api_key", "key": API_KEY + bad, "name": "api_key", "in": "query"}
        return {"type": "none"}

    def seen(self, kind: str) -> list[Seen]:
        """The requests on a path ending with `/kind`."""
        with self.lock:
            return [r for r in self.requests if r.path.endswith("/" + kind)]

    # --- HTTP ---------------------------------------------------------------------------------

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if self.auth == "bearer":
            return header == f"Bearer {TOKEN}"
        if self.auth == "basic":
            expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
            return header == f"Basic {expected}"
        if self.auth == "api_key_header":
            return request.headers.get("x-api-key") == API_KEY
        if self.auth == "api_key_query":
            return request.query_params.get("api_key") == API_KEY
        return True

    async def _args(self, request: Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query_params)
        body: Any = None
        raw = await request.body()
        if raw:
            body = json.loads(raw)
            if isinstance(body, dict):
                args.update(body)
        seen = Seen(
            request.method,
            request.url.path,
            dict(request.query_params),
            body,
            {k: v for k, v in request.headers.items() if k in ("authorization", "x-api-key")},
        )
        with self.lock:
            self.requests.append(seen)
        return args

    def _refusal(self, request: Request) -> Response | None:
        if self.take_rate_limit():
            return JSONResponse({"error": "slow down"}, 429, headers={"Retry-After": "0.05"})
        if not self._authorised(request):
            return JSONResponse({"error": "invalid credentials"}, 401)
        return None

    async def me(self, request: Request) -> Response:
        await self._args(request)
        return self._refusal(request) or JSONResponse({"agent": USERNAME})

    def _items(self, kind: str, args: dict[str, Any]) -> list[dict[str, Any]] | Response:
        with self.lock:
            tickets = [dict(t) for _, t in sorted(self.tickets.items())]
        if kind == "tickets":
            if args.get("status") == "all":
                return tickets
            return [t for t in tickets if t["status"] in OPEN_STATUSES]
        try:
            if args.get("sync_token"):
                since = datetime.fromisoformat(_decode(str(args["sync_token"]), "t:"))
            elif args.get("updated_since") is not None:
                since = _since(args["updated_since"])
            else:
                return JSONResponse({"error": "updated_since or sync_token is required"}, 400)
        except ValueError:
            return JSONResponse({"error": "unreadable updated_since or sync_token"}, 400)
        changed = [t for t in tickets if _since(t["updated_at"]) >= since]
        return sorted(changed, key=lambda t: (t["updated_at"], t["id"]))

    def _link(self, request: Request, **params: Any) -> str:
        # The next-page URL repeats the request's query, less the credential (the client adds it).
        url = request.url.remove_query_params("api_key")
        return str(url.include_query_params(**params))

    async def listing(self, request: Request) -> Response:
        style = request.path_params["style"]
        kind = request.path_params["kind"]
        if style not in STYLES or kind not in KINDS:
            return JSONResponse({"error": "not found"}, 404)
        args = await self._args(request)
        refused = self._refusal(request)
        if refused is not None:
            return refused
        if self.delay:
            await asyncio.sleep(self.delay)
        items = self._items(kind, args)
        if isinstance(items, Response):
            return items
        total = len(items)
        extra: dict[str, Any] = {}
        if kind == "changes":
            extra["sync_token"] = _encode(f"t:{self.clock.now.isoformat()}")
        if style == "single":
            return JSONResponse({"data": items, **extra})
        try:
            if style == "offset":
                size = min(int(args.get("limit", self.page_cap)), self.page_cap)
                offset = int(args.get("offset", 0))
            elif style == "cursor":
                size = min(int(args.get("limit", self.page_cap)), self.page_cap)
                offset = int(_decode(args["cursor"], "o:")) if args.get("cursor") else 0
            else:
                size = min(int(args.get("per_page", self.page_cap)), self.page_cap)
                offset = (int(args.get("page", 1)) - 1) * size
        except ValueError:
            return JSONResponse({"error": "bad page parameters"}, 400)
        page = offset // size + 1
        with self.lock:
            failing = page in self.failing_pages
        if failing:
            return JSONResponse({"error": "internal error", "request": str(request.url)}, 500)
        chunk = items[offset : offset + size]
        more = offset + size < total
        if style == "page":
            return JSONResponse({"data": chunk, "page": page, "total": total, **extra})
        if style == "offset":
            return JSONResponse({"items": chunk, "total": total, **extra})
        if style == "cursor":
            following = _encode(f"o:{0 if self.repeat_cursor else offset + size}")
            meta = {"next_cursor": following if more else None, "has_more": more}
            return JSONResponse({"data": chunk, "meta": meta, **extra})
        if style == "link":
            links = []
            if more:
                links.append(f'<{self._link(request, page=page + 1)}>; rel="next"')
            last = max(1, -(-total // size))
            links.append(f'<{self._link(request, page=last)}>; rel="last"')
            return JSONResponse(chunk, headers={"Link": ", ".join(links)})
        following_url = self._link(request, page=page + 1) if more else None
        return JSONResponse({"results": chunk, "next": following_url, **extra})

    async def write(self, request: Request) -> Response:
        args = await self._args(request)
        refused = self._refusal(request)
        if refused is not None:
            return refused
        key = request.path_params["id"]
        if request.path_params["action"] not in ("close", "comments"):
            return JSONResponse({"error": "not found"}, 404)
        with self.lock:
            ticket = self.tickets.get(int(key)) if key.isdigit() else None
            if ticket is None or key in self.gone:
                return JSONResponse({"error": "no such ticket"}, 404)
            if self.reject_writes:
                return JSONResponse({"error": "invalid transition"}, 422)
            if request.path_params["action"] == "comments":
                ticket.setdefault("notes", []).append(args.get("body"))
                what, status = "comment", 201
            elif ticket["status"] == "closed":
                return JSONResponse({"error": "already closed"}, 409)
            else:
                ticket["status"] = "closed"
                ticket.setdefault("notes", []).append(args.get("note"))
                what, status = "close", 200
            ticket["updated_at"] = _stamp(self.clock.now)
            answer = dict(ticket)
        await self.record_write(key, what)
        return JSONResponse(answer, status)

    def routes(self) -> list[BaseRoute]:
        """`/me` and `/{style}/{kind}`."""
        methods = ["GET", "POST"]
        return [
            Route("/tickets/{id}/{action:str}", self.write, methods=["POST"]),
            Route("/me", self.me, methods=methods),
            Route("/{style:str}/{kind:str}", self.listing, methods=methods),
        ]
