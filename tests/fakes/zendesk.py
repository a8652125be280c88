"""A fake Zendesk Support account: the endpoints the `zendesk` adapter uses, as Zendesk answers.

    GET /api/v2/users/me[.json]                     the agent behind the credentials
    GET /api/v2/search/export[.json]                ?query=&filter[type]=&page[size]=&page[after]=
    GET /api/v2/incremental/tickets/cursor[.json]   ?start_time= | ?cursor=  [&per_page=]
    GET /api/v2/tickets/{id}[.json]                 {"ticket": {...}} (write-back's read)
    PUT /api/v2/tickets/{id}[.json]                 {"ticket": {"status": ..., "comment": {...}}}

Update Ticket (developer.zendesk.com, Tickets > Update Ticket): the body is `{"ticket": {...}}`,
a comment `{"body", "public"}` (false: an internal note) is added to the ticket's comments, the
answer is `{"ticket": {...}, "audit": {...}}`; an unknown id is 404 `{"error":
"RecordNotFound", "description": "Not found"}`; a closed ticket cannot be updated: 422
`RecordInvalid` "Status: closed prevents ticket update".

Follows developer.zendesk.com (Search > Export Search Results; Incremental Exports and "Using
the Incremental Export API"; Rate limits) and the recordings in
shared/fixtures/vendor-recordings/zendesk: the export's envelope (`results`, `facets`,
`meta.has_more/after_cursor/before_cursor`, `links.prev/next`, with `links.next` still set on
the last page), base64 cursors, `filter[type]` required and `page[size]` up to 1000; the
incremental export's envelope (`after_url`, `after_cursor`, `before_*`, `end_of_stream` true
with `after_cursor` still set), ordered by `generated_timestamp`, every status including
`deleted`, changes of the last minute held back and a `start_time` less than a minute old
refused (`recent_window`), no cursor when an export from `start_time` finds nothing; API-token
Basic auth (`{email}/token:{token}`) with 401 `{"error": "Couldn't authenticate you"}`, and
`users/me` answering the anonymous user (id null) for a valid token sent with another email;
429 with `Retry-After` and a text/plain body, `ratelimit-*` / `x-rate-limit*` headers on every
answer; a 404 help-center page for an account that does not exist.

Not modelled: search index lag (minutes, for new and changed tickets), the export cursor's
expiry, links naming another host than the one called, sideloads (`include=`), system updates
that move `generated_timestamp` without `updated_at`, the per-minute budgets themselves (100/min
for the export, 10/min for the incremental export: only `rate_limit_next`), custom ticket
statuses, archived tickets, OAuth, and `/api/v2/search.json` (not used: capped at 1,000).
"""

from __future__ import annotations

import base64
import binascii
import operator
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes import FakeServer, decode_token, encode_token

EMAIL = "agent@acme.example"
TOKEN = "zd-token-5b1e9c2d7a"
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
OPEN_STATUSES = ("new", "open", "pending", "hold")
TEAM_FIELD = 360001  # a custom text field
AMOUNT_FIELD = 360002  # a custom numeric field
MAX_EXPORT_PAGE = 1000
MAX_INCREMENTAL_PAGE = 1000


class ZendeskFake(FakeServer):
    """A Zendesk account with `tickets` tickets of every status, and the kit's controls."""

    listing_paths = ("/api/v2/search/export.json", "/api/v2/search/export")

    def __init__(
        self,
        tickets: int = 120,
        *,
        email: str = EMAIL,
        token: str = TOKEN,
        recent_window: int = 60,
    ) -> None:
        super().__init__()
        self.email = email
        self.token = token
        self.recent_window = recent_window
        self.exists = True
        self.tickets: dict[int, dict[str, Any]] = {}
        for n in range(1, tickets + 1):
            self.add(self._record(n, STATUSES[n % len(STATUSES)]))

    # --- data --------------------------------------------------------------------------------

    def _record(self, n: int, status: str) -> dict[str, Any]:
        stamp = self.clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "url": f"https://acme.zendesk.com/api/v2/tickets/{n}.json",
            "id": n,
            "external_id": None,
            "via": {"channel": "web", "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": stamp,
            "updated_at": stamp,
            "generated_timestamp": self.clock.epoch,
            "type": "task" if n % 4 == 0 else "question",
            "subject": f"Card payment refused at checkout (#{n})",
            "raw_subject": f"Card payment refused at checkout (#{n})",
            "description": "The customer's card is refused at checkout.",
            "priority": ("low", "normal", "high", "urgent")[n % 4],
            "status": status,
            "recipient": None,
            "requester_id": 7000 + n,
            "submitter_id": 7000 + n,
            "assignee_id": None if n % 3 == 0 else 9000 + n % 5,
            "organization_id": 500,
            "group_id": 42,
            "collaborator_ids": [],
            "follower_ids": [],
            "email_cc_ids": [],
            "forum_topic_id": None,
            "problem_id": None,
            "has_incidents": False,
            "is_public": True,
            "due_at": "2026-03-20T17:00:00Z" if n % 4 == 0 else None,
            "tags": ["payments", f"tier_{n % 3}"],
            "custom_fields": [
                {"id": TEAM_FIELD, "value": "kyc" if n % 2 else None},
                {"id": AMOUNT_FIELD, "value": n * 10},
            ],
            "satisfaction_rating": None,
            "sharing_agreement_ids": [],
            "custom_status_id": 1000 + STATUSES.index(status),
            "followup_ids": [],
            "ticket_form_id": 77,
            "brand_id": 88,
            "allow_channelback": False,
            "allow_attachments": True,
            "from_messaging_channel": False,
        }

    def add(self, record: dict[str, Any]) -> None:
        """Store a ticket record as given."""
        with self.lock:
            self.tickets[record["id"]] = record

    def _touch(self, ticket: dict[str, Any]) -> None:
        ticket["updated_at"] = self.clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        ticket["generated_timestamp"] = self.clock.epoch

    def open_ids(self) -> set[str]:
        """Ids of the tickets whose status is below solved."""
        with self.lock:
            return {str(n) for n, t in self.tickets.items() if t["status"] in OPEN_STATUSES}

    def change(self, ticket_id: str) -> None:
        """Edit a ticket's subject now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["subject"] = ticket["raw_subject"] = ticket["subject"] + " (updated)"
            self._touch(ticket)

    def close(self, ticket_id: str) -> None:
        """Solve a ticket now."""
        self.set_status(ticket_id, "solved")

    def set_status(self, ticket_id: str, status: str) -> None:
        """Give a ticket a status now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["status"] = status
            self._touch(ticket)

    def delete(self, ticket_id: str) -> None:
        """Delete a ticket now: gone from search, `deleted` in the incremental export."""
        self.set_status(ticket_id, "deleted")

    # --- HTTP plumbing -------------------------------------------------------------------------

    def _headers(self, remaining: int = 699) -> dict[str, str]:
        reset = str(60 - self.clock.now.second)
        return {
            "date": self.clock.http_date(),
            "x-rate-limit": "700",
            "x-rate-limit-remaining": str(remaining),
            "ratelimit-limit": "700",
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": reset,
            "x-zendesk-api-version": "v2",
        }

    def _json(self, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status, headers=self._headers())

    def _credentials(self, request: Request) -> tuple[str, str] | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password

    def _refuse(self, request: Request, *, me: bool = False) -> Response | None:
        """The answer to give instead of the endpoint's, if any (no account, 429, 401)."""
        if not self.exists:
            page = "<html><head><title>Oops! This help center no longer exists</title></head>"
            return HTMLResponse(page, 404, headers={"date": self.clock.http_date()})
        if self.take_rate_limit():
            headers = {**self._headers(remaining=0), "retry-after": "1", "ratelimit-reset": "1"}
            return PlainTextResponse("Too Many Requests", 429, headers=headers)
        credentials = self._credentials(request)
        if credentials == (f"{self.email}/token", self.token):
            return None
        if me and (credentials is None or credentials[1] == self.token):
            return self._json({"user": _ANONYMOUS})
        unauthorized = {**self._headers(), "www-authenticate": 'Basic realm="Web Password"'}
        return JSONResponse({"error": "Couldn't authenticate you"}, 401, headers=unauthorized)

    def _error(self, status: int, title: str, message: str) -> JSONResponse:
        return self._json({"error": {"title": title, "message": message}}, status)

    # --- endpoints -------------------------------------------------------------------------------

    async def me(self, request: Request) -> Response:
        refused = self._refuse(request, me=True)
        if refused is not None:
            return refused
        return self._json(
            {
                "user": {
                    "id": 9001,
                    "url": f"{self.url}/api/v2/users/9001.json",
                    "name": "Kit Agent",
                    "email": self.email,
                    "role": "admin",
                    "active": True,
                    "time_zone": "Paris",
                }
            }
        )

    async def search_export(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        params = request.query_params
        kind = params.get("filter[type]")
        if kind is None:
            return self._error(
                400, "Invalid attribute", "filter[type] is required: ticket, user, organization"
            )
        try:
            size = int(params.get("page[size]", "100"))
        except ValueError:
            return self._error(400, "Invalid attribute", "page[size] must be an integer")
        if not 1 <= size <= MAX_EXPORT_PAGE:
            return self._error(
                400, "Invalid attribute", f"page[size] must be between 1 and {MAX_EXPORT_PAGE}"
            )
        after = params.get("page[after]")
        query, after_id, page = params.get("query", ""), 0, 1
        if after is not None:
            state = decode_token(after)
            if state is None:
                return self._error(400, "Invalid attribute", "page[after] is not a valid cursor")
            query, after_id, page = state["q"], state["after"], state["page"]
        if page in self.failing_pages:
            return self._json({"error": "ServiceUnavailable", "description": "Try again."}, 503)
        try:
            predicate = _search_predicate(query)
        except ValueError as exc:
            return self._error(400, "Invalid search", str(exc))
        with self.lock:
            matching = [
                dict(t, result_type=kind)
                for n, t in sorted(self.tickets.items())
                if kind == "ticket" and t["status"] != "deleted" and predicate(t) and n > after_id
            ]
        chunk = matching[:size]
        last_id = chunk[-1]["id"] if chunk else after_id
        next_cursor = encode_token({"q": query, "after": last_id, "page": page + 1})
        before_cursor = encode_token({"q": query, "before": chunk[0]["id"] if chunk else 0})

        def link(cursor_param: str, cursor: str) -> str:
            target = {"filter[type]": kind, cursor_param: cursor, "page[size]": size}
            return f"{self.url}/api/v2/search/export.json?{urlencode(target)}"

        return self._json(
            {
                "results": chunk,
                "facets": None,
                "meta": {
                    "has_more": len(matching) > size,
                    "after_cursor": next_cursor,
                    "before_cursor": None if page == 1 else before_cursor,
                },
                # As recorded: `next` stays a URL on the last page.
                "links": {
                    "prev": None if page == 1 else link("page[before]", before_cursor),
                    "next": link("page[after]", next_cursor),
                },
            }
        )

    async def incremental(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        params = request.query_params
        try:
            size = min(int(params.get("per_page", "1000")), MAX_INCREMENTAL_PAGE)
        except ValueError:
            return self._error(400, "Invalid attribute", "per_page must be an integer")
        horizon = self.clock.epoch - self.recent_window
        cursor = params.get("cursor")
        if cursor is not None:
            position = _incremental_position(cursor)
            if position is None:
                return self._json({"error": "InvalidCursor", "description": "Bad cursor"}, 400)
        elif "start_time" in params:
            try:
                start = int(params["start_time"])
            except ValueError:
                return self._json({"error": "InvalidValue", "description": "start_time"}, 400)
            if start > horizon:
                description = "start_time must be at least one minute in the past"
                return self._json({"error": "InvalidValue", "description": description}, 422)
            position = (start, -1)
        else:
            description = "start_time or cursor is required"
            return self._json({"error": "InvalidValue", "description": description}, 400)
        exclude_deleted = params.get("exclude_deleted") == "true"
        with self.lock:
            # Strictly after the cursor's (timestamp, id); from a start_time, inclusive.
            eligible = sorted(
                (
                    dict(t)
                    for t in self.tickets.values()
                    if (t["generated_timestamp"], t["id"]) > position
                    and t["generated_timestamp"] <= horizon
                    and not (exclude_deleted and t["status"] == "deleted")
                ),
                key=lambda t: (t["generated_timestamp"], t["id"]),
            )
        chunk = eligible[:size]
        if chunk:
            after: str | None = _incremental_cursor(chunk[-1])
        else:
            # From a start_time, an empty export gives no cursor at all.
            after = cursor
        after_url = None
        if after is not None:
            after_url = f"{self.url}/api/v2/incremental/tickets/cursor.json?" + urlencode(
                {"cursor": after}
            )
        return self._json(
            {
                "tickets": chunk,
                "after_url": after_url,
                "after_cursor": after,
                "before_url": None,
                "before_cursor": None,
                "end_of_stream": len(eligible) <= size,
            }
        )

    def _not_found(self) -> JSONResponse:
        return self._json({"error": "RecordNotFound", "description": "Not found"}, 404)

    def _invalid(self, field: str, description: str) -> JSONResponse:
        details = {field: [{"description": description, "error": "InvalidValue"}]}
        body = {"error": "RecordInvalid", "description": "Record validation errors"}
        return self._json({**body, "details": details}, 422)

    async def ticket(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        key = request.path_params["id"].removesuffix(".json")
        with self.lock:
            record = self.tickets.get(int(key)) if key.isdigit() else None
            if record is None or record["status"] == "deleted" or key in self.gone:
                return self._not_found()
            if request.method == "GET":
                return self._json({"ticket": dict(record)})
        try:
            change = (await request.json())["ticket"]
            assert isinstance(change, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._json({"error": "Invalid JSON", "description": "ticket required"}, 400)
        with self.lock:
            if record["status"] == "closed":
                return self._invalid("status", "Status: closed prevents ticket update")
            status = change.get("status")
            if self.reject_writes or (status is not None and status not in STATUSES):
                return self._invalid("status", f"Status: {status} is not valid")
            comment = change.get("comment")
            if status is not None:
                record["status"] = status
            if isinstance(comment, dict):
                record.setdefault("comments", []).append(
                    {"body": comment.get("body"), "public": comment.get("public", True)}
                )
            self._touch(record)
            answer = {"ticket": dict(record), "audit": {"ticket_id": record["id"], "events": []}}
        if status is not None:
            await self.record_write(key, f"status:{status}")
        if isinstance(comment, dict):
            await self.record_write(key, "comment")
        return self._json(answer)

    def routes(self) -> list[BaseRoute]:
        """The account's API."""
        return [
            Route("/api/v2/tickets/{id}", self.ticket, methods=["GET", "PUT"]),
            Route("/api/v2/users/me.json", self.me),
            Route("/api/v2/users/me", self.me),
            Route("/api/v2/search/export.json", self.search_export),
            Route("/api/v2/search/export", self.search_export),
            Route("/api/v2/incremental/tickets/cursor.json", self.incremental),
            Route("/api/v2/incremental/tickets/cursor", self.incremental),
        ]


_ANONYMOUS = {
    "id": None,
    "url": None,
    "name": "Anonymous user",
    "email": "invalid@example.com",
    "role": "end-user",
    "active": True,
}


def _incremental_cursor(ticket: dict[str, Any]) -> str:
    # Zendesk's own shape: base64 of "<generated_timestamp>.0||<id>|".
    raw = f"{ticket['generated_timestamp']}.0||{ticket['id']}|"
    return base64.b64encode(raw.encode()).decode()


def _incremental_position(cursor: str) -> tuple[int, int] | None:
    try:
        stamp, _, rest = base64.b64decode(cursor, validate=True).decode().partition("||")
        return int(float(stamp)), int(rest.rstrip("|"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


_COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    ":": operator.eq,
}


def _search_predicate(query: str) -> Callable[[dict[str, Any]], bool]:
    """A filter for the few search terms the fake understands (ValueError for others)."""
    rank = {s: i for i, s in enumerate(STATUSES)}
    tests: list[tuple[Callable[[int, int], bool], int]] = []
    for term in query.split():
        if term == "type:ticket":
            continue
        symbol = next((s for s in _COMPARISONS if s in term), None)
        name, _, value = term.partition(symbol or " ")
        if symbol is None or name != "status" or value not in rank:
            raise ValueError(f"the fake does not understand the search term {term!r}")
        tests.append((_COMPARISONS[symbol], rank[value]))
    return lambda t: t["status"] in rank and all(c(rank[t["status"]], b) for c, b in tests)
