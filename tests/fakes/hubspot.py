"""A fake HubSpot account: the endpoints the `hubspot` adapter uses, as HubSpot answers them.

    GET  /crm/v3/pipelines/tickets          ticket pipelines; stages carry metadata.ticketState
    POST /crm/v3/objects/tickets/search     filterGroups, sorts, properties, limit, after
    GET  /account-info/v3/details           portalId, uiDomain...
    GET|PATCH /crm/v3/objects/tickets/{id}  one ticket; `{"properties": {"hs_pipeline_stage"}}`
    POST /crm/v3/objects/notes              a note, associated with a ticket (type 228)

Write-back, after the tickets and notes API references: GET answers `{"id", "properties", ...}`
with the `properties` asked; an unknown or archived ticket is 404 `OBJECT_NOT_FOUND`; PATCH
answers 200 with the ticket, a stage not of the ticket's pipeline 400 `VALIDATION_ERROR` (also
for every write while `reject_writes`); a note needs `hs_timestamp` and an association `{"to":
{"id"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 228}]}`, 201.

Follows developers.hubspot.com (CRM search guide and its limits, the tickets and pipelines API
references, "Retrieve account details", API usage guidelines and error responses) and the notes
in shared/notes/source-apis.md (no HubSpot recording exists in shared/fixtures): string ids and
string property values (`null` when unset), datetimes as ISO text with milliseconds; a search
answers `total`, `results` and `paging.next.after` (an offset, as text), with no `paging` on the
last page; `limit` above 200 is a 400, an `after` at or past the 10,000-result cap (`cap` here,
so tests can reach it) is a 400, and so are an unknown operator or property, more than one sort,
more than 5 filter groups, 10 filters in a group or 25 in all; filter groups are OR'ed and their
filters AND'ed; `hs_object_id` compares as a number, datetimes as epoch ms (or ISO) and anything
else as text; archived tickets never match. Results carry the asked properties plus
`createdate`, `hs_lastmodifieddate` and `hs_object_id`. Bearer auth: 401
`INVALID_AUTHENTICATION`, 403 `MISSING_SCOPES` for a token without the `tickets` scope (and
for account details, when `account_details` is false). Rate limits: 429 `RATE_LIMIT` with
`policyName: SECONDLY` and no header on search (also for real, when `search_per_second` is
set and exceeded within a sliding wall-clock second), and `TEN_SECONDLY_ROLLING` elsewhere, with
`X-HubSpot-RateLimit-Remaining: 0` and `-Interval-Milliseconds` (`interval_ms`, 1,000 here
rather than HubSpot's 10,000 to keep tests fast); other answers carry the `X-HubSpot-RateLimit-*`
headers, search answers none.

Not modelled: search index lag (seconds), the daily quota, OAuth tokens and their expiry,
associations, ticket merges, `query` (full-text search), the `archived=true` listing of the basic
objects API, date-versioned paths (`/crm/objects/2026-03/...`), and case rules of IN on strings.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes import FakeServer

TOKEN = "pat-na1-5c7e2b1d-0a9f-4e3c-8d21-6f4b7a9e0c13"
PORTAL_ID = 24681357
SUPPORT = "0"
ESCALATIONS = "812723471"
# pipeline id -> (label, [(stage id, label, ticketState)])
PIPELINES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    SUPPORT: (
        "Support Pipeline",
        [
            ("1", "New", "OPEN"),
            ("2", "Waiting on contact", "OPEN"),
            ("3", "Waiting on us", "OPEN"),
            ("4", "Closed", "CLOSED"),
        ],
    ),
    ESCALATIONS: (
        "Escalations",
        [
            ("1234912", "In Progress", "OPEN"),
            ("1234913", "Waiting on engineering", "OPEN"),
            ("1234914", "Done", "CLOSED"),
        ],
    ),
}
STAGES = {s: (p, state) for p, (_, stages) in PIPELINES.items() for s, _, state in stages}
CLOSED_STAGE = {
    p: next(s for s, _, st in stages if st == "CLOSED") for p, (_, stages) in PIPELINES.items()
}
DATETIMES = ("createdate", "hs_lastmodifieddate", "closed_date")
KNOWN = (
    "subject",
    "content",
    "hs_pipeline",
    "hs_pipeline_stage",
    "hs_ticket_priority",
    "hs_ticket_category",
    "hubspot_owner_id",
    "support_team",
    "hs_object_id",
    *DATETIMES,
)
DEFAULT_PROPERTIES = (
    "content",
    "hs_pipeline",
    "hs_pipeline_stage",
    "hs_ticket_category",
    "hs_ticket_priority",
    "subject",
)
ALWAYS = ("createdate", "hs_lastmodifieddate", "hs_object_id")
OPERATORS = (
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
)
MAX_LIMIT = 200


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def ticket_id(n: int) -> int:
    """The id of the n-th seeded ticket: ids cross from 5 to 6 digits (text order is wrong)."""
    return 95_000 + n * 50


class SearchError(ValueError):
    """A search HubSpot refuses with a 400."""


class HubSpotFake(FakeServer):
    """A HubSpot account with `tickets` tickets in two pipelines, and the kit's controls."""

    listing_paths = ("/crm/v3/objects/tickets/search",)

    def __init__(
        self,
        tickets: int = 130,
        *,
        token: str = TOKEN,
        cap: int = 10_000,
        interval_ms: int = 1000,
        search_per_second: int | None = None,
    ) -> None:
        super().__init__()
        self.token = token
        self.scopes = {"tickets"}
        self.account_details = True
        self.cap = cap
        self.interval_ms = interval_ms
        self.search_per_second = search_per_second
        self._searches: deque[float] = deque()  # when the searches of the last second came
        self.search_bodies: list[dict[str, Any]] = []
        self.tickets: dict[int, dict[str, Any]] = {}
        cycle = {p: [s for s, _, _ in stages] for p, (_, stages) in PIPELINES.items()}
        for n in range(1, tickets + 1):
            pipeline = ESCALATIONS if n % 5 == 0 else SUPPORT
            stage = cycle[pipeline][n % len(cycle[pipeline])]
            self.tickets[ticket_id(n)] = {
                # Some channels create tickets without a subject.
                "subject": None if n % 17 == 0 else f"Refund not received for order #{n}",
                "content": "The customer has not received the refund.",
                "hs_pipeline": pipeline,
                "hs_pipeline_stage": stage,
                "hs_ticket_priority": ("LOW", "MEDIUM", "HIGH")[n % 3],
                "hs_ticket_category": "BILLING_ISSUE" if n % 2 else None,
                "hubspot_owner_id": None if n % 3 == 0 else str(51_000 + n % 4),
                "support_team": "kyc" if n % 2 else None,
                "createdate": self.clock.now,
                "hs_lastmodifieddate": self.clock.now,
                "archived": False,
            }

    # --- the kit's controls and the tests' ------------------------------------------------------

    def open_ids(self) -> set[str]:
        """Ids of the unarchived tickets in an OPEN stage."""
        with self.lock:
            return {
                str(i)
                for i, t in self.tickets.items()
                if not t["archived"] and STAGES[t["hs_pipeline_stage"]][1] == "OPEN"
            }

    def cap_results(self, count: int) -> None:
        """Refuse to page a search past its first `count` results (HubSpot: 10,000)."""
        self.cap = count

    def change(self, ticket_id: str) -> None:
        """Edit a ticket's subject now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["subject"] = (ticket["subject"] or "Untitled") + " (updated)"
            ticket["hs_lastmodifieddate"] = self.clock.now

    def close(self, ticket_id: str) -> None:
        """Move a ticket to the CLOSED stage of its pipeline now."""
        with self.lock:
            pipeline = self.tickets[int(ticket_id)]["hs_pipeline"]
        self.move(ticket_id, CLOSED_STAGE[pipeline])

    def move(self, ticket_id: str, stage: str) -> None:
        """Put a ticket in a stage (of any pipeline) now."""
        with self.lock:
            ticket = self.tickets[int(ticket_id)]
            ticket["hs_pipeline"], state = STAGES[stage]
            ticket["hs_pipeline_stage"] = stage
            ticket["closed_date"] = self.clock.now if state == "CLOSED" else None
            ticket["hs_lastmodifieddate"] = self.clock.now

    def archive(self, ticket_id: str) -> None:
        """Delete a ticket (HubSpot archives it): it leaves search at once."""
        with self.lock:
            self.tickets[int(ticket_id)]["archived"] = True

    # --- HTTP plumbing ----------------------------------------------------------------------------

    def _headers(self, *, search: bool = False) -> dict[str, str]:
        headers = {"date": self.clock.http_date(), "x-hubspot-correlation-id": str(uuid.uuid4())}
        if not search:
            headers.update(
                {
                    "x-hubspot-ratelimit-daily": "500000",
                    "x-hubspot-ratelimit-daily-remaining": "499321",
                    "x-hubspot-ratelimit-interval-milliseconds": str(self.interval_ms),
                    "x-hubspot-ratelimit-max": "190",
                    "x-hubspot-ratelimit-remaining": "189",
                    "x-hubspot-ratelimit-secondly": "19",
                    "x-hubspot-ratelimit-secondly-remaining": "18",
                }
            )
        return headers

    def _error(
        self, status: int, category: str, message: str, *, search: bool = False, **extra: Any
    ) -> JSONResponse:
        body = {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
            **extra,
        }
        return JSONResponse(body, status, headers=self._headers(search=search))

    def _over_search_limit(self) -> bool:
        """Whether this search is one too many in the last second (a sliding wall-clock window)."""
        if self.search_per_second is None:
            return False
        with self.lock:
            now = time.monotonic()
            while self._searches and self._searches[0] <= now - 1:
                self._searches.popleft()
            if len(self._searches) >= self.search_per_second:
                return True
            self._searches.append(now)
            return False

    def _refuse(self, request: Request, *, scope: str | None = "tickets") -> Response | None:
        """The answer to give instead of the endpoint's, if any (429, 401, 403)."""
        search = request.url.path.endswith("/search")
        if self.take_rate_limit() or (search and self._over_search_limit()):
            if search:
                return self._secondly()
            headers = {
                **self._headers(),
                "x-hubspot-ratelimit-remaining": "0",
                "x-hubspot-ratelimit-secondly-remaining": "0",
            }
            body = {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": "TEN_SECONDLY_ROLLING",
                "groupName": f"publicapi:private-app-api-calls-ten-secondly:{PORTAL_ID}",
            }
            return JSONResponse(body, 429, headers=headers)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token != self.token:
            return self._error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 "
                "authentication and you can find more details at "
                "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                search=search,
            )
        if scope is not None and scope not in self.scopes:
            return self._missing_scopes(scope)
        return None

    def _secondly(self) -> JSONResponse:
        body = {
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": "SECONDLY",
        }
        return JSONResponse(body, 429, headers={"date": self.clock.http_date()})

    def _missing_scopes(self, scope: str) -> JSONResponse:
        return self._error(
            403,
            "MISSING_SCOPES",
            "This app hasn't been granted all required scopes to make this call. Read more "
            "about required scopes here: https://developers.hubspot.com/scopes.",
            errors=[
                {
                    "message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": [scope]},
                }
            ],
        )

    # --- endpoints --------------------------------------------------------------------------------

    async def pipelines(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        stamp = "2024-05-13T08:21:44.102Z"
        results = [
            {
                "id": pipeline_id,
                "label": label,
                "displayOrder": order,
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": False,
                "stages": [
                    {
                        "id": stage_id,
                        "label": stage_label,
                        "displayOrder": position,
                        "metadata": {"ticketState": state},
                        "createdAt": stamp,
                        "updatedAt": stamp,
                        "archived": False,
                        "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
                    }
                    for position, (stage_id, stage_label, state) in enumerate(stages)
                ],
            }
            for order, (pipeline_id, (label, stages)) in enumerate(PIPELINES.items())
        ]
        return JSONResponse({"results": results}, headers=self._headers())

    async def account(self, request: Request) -> Response:
        refused = self._refuse(request, scope=None)
        if refused is not None:
            return refused
        if not self.account_details:
            return self._missing_scopes("account-info.details.read")
        details = {
            "portalId": PORTAL_ID,
            "accountType": "STANDARD",
            "timeZone": "US/Eastern",
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": "-05:00",
            "utcOffsetMilliseconds": -18_000_000,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1",
        }
        return JSONResponse(details, headers=self._headers())

    async def search(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise SearchError("Invalid input JSON: expected an object")
            with self.lock:
                self.search_bodies.append(body)
            query = _Search(body, self.cap)
        except ValueError as exc:
            return self._error(400, "VALIDATION_ERROR", str(exc), search=True)
        with self.lock:
            found = sorted(
                (
                    i
                    for i, t in self.tickets.items()
                    if not t["archived"] and query.matches(i, t, keys=False)
                ),
                key=lambda i: query.sort_key(i, self.tickets[i]),
                reverse=not query.sort[1],
            )
            matched = [i for i in found if query.matches(i, self.tickets[i])]
            # Which page of a listing this is: the tickets before it, by offset or by key.
            before = query.after + len(found) - len(matched)
            if before // query.limit + 1 in self.failing_pages:
                return self._error(503, "SERVICE_UNAVAILABLE", "Service Unavailable", search=True)
            chunk = matched[query.after : query.after + query.limit]
            results = [self._render(i, query.properties) for i in chunk]
        answer: dict[str, Any] = {"total": len(matched), "results": results}
        following = query.after + len(chunk)
        if following < len(matched):
            answer["paging"] = {"next": {"after": str(following), "link": f"?after={following}"}}
        return JSONResponse(answer, headers=self._headers(search=True))

    def _render(self, ident: int, wanted: list[str] | None) -> dict[str, Any]:
        ticket = self.tickets[ident]
        names = [*(wanted if wanted is not None else DEFAULT_PROPERTIES), *ALWAYS]
        properties: dict[str, Any] = {}
        for name in dict.fromkeys(names):
            if name not in KNOWN:
                continue  # HubSpot leaves out properties that do not exist
            value = str(ident) if name == "hs_object_id" else ticket.get(name)
            properties[name] = _iso(value) if isinstance(value, datetime) else value
        return {
            "id": str(ident),
            "properties": properties,
            "createdAt": _iso(ticket["createdate"]),
            "updatedAt": _iso(ticket["hs_lastmodifieddate"]),
            "archived": False,
        }

    def _ticket(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            ticket = self.tickets.get(int(key)) if key.isdigit() else None
        if ticket is None or ticket["archived"] or key in self.gone:
            return None
        return ticket

    def _not_found(self, key: str) -> JSONResponse:
        return self._error(
            404,
            "OBJECT_NOT_FOUND",
            "Object not found.  objectId are usually numeric.",
            context={"id": [key]},
        )

    async def ticket(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        key = request.path_params["id"]
        ticket = self._ticket(key)
        if ticket is None:
            return self._not_found(key)
        if request.method == "GET":
            wanted = request.query_params.get("properties")
            with self.lock:
                body = self._render(int(key), wanted.split(",") if wanted else None)
            return JSONResponse(body, headers=self._headers())
        try:
            stage = (await request.json())["properties"]["hs_pipeline_stage"]
        except (ValueError, KeyError, TypeError):
            return self._error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")
        with self.lock:
            valid = stage in STAGES and STAGES[stage][0] == ticket["hs_pipeline"]
        if self.reject_writes or not valid:
            return self._error(
                400,
                "VALIDATION_ERROR",
                f"Property values were not valid: hs_pipeline_stage {stage!r} is not a stage "
                "of the ticket's pipeline",
            )
        self.move(key, stage)
        await self.record_write(key, f"stage:{stage}")
        with self.lock:
            body = self._render(int(key), None)
        return JSONResponse(body, headers=self._headers())

    async def note(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
            text = body["properties"]["hs_note_body"]
            assert body["properties"]["hs_timestamp"]
            [association] = body["associations"]
            [kind] = association["types"]
            assert kind == {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 228}
            key = str(association["to"]["id"])
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._error(400, "VALIDATION_ERROR", "Invalid note or association")
        ticket = self._ticket(key)
        if ticket is None:
            return self._not_found(key)
        with self.lock:
            ticket.setdefault("notes", []).append(text)
            ident = 70_000 + len(self.applied)
        await self.record_write(key, "note")
        return JSONResponse(
            {"id": str(ident), "properties": {"hs_note_body": text}}, 201, headers=self._headers()
        )

    def routes(self) -> list[BaseRoute]:
        """The account's API."""
        return [
            Route("/crm/v3/objects/tickets/{id:str}", self.ticket, methods=["GET", "PATCH"]),
            Route("/crm/v3/objects/notes", self.note, methods=["POST"]),
            Route("/crm/v3/pipelines/tickets", self.pipelines),
            Route("/crm/v3/objects/tickets/search", self.search, methods=["POST"]),
            Route("/account-info/v3/details", self.account),
        ]


# --- search semantics -----------------------------------------------------------------------------


class _Search:
    """A validated search body: matching, order, page and properties."""

    def __init__(self, body: dict[str, Any], cap: int) -> None:
        self.limit = int(body.get("limit") or 10)
        if not 1 <= self.limit <= MAX_LIMIT:
            raise SearchError(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}")
        after = body.get("after")
        self.after = int(after) if after not in (None, "") else 0
        if self.after >= cap:
            raise SearchError(
                f"Paging past the first {cap} results of a search is not supported: "
                f"after={self.after}"
            )
        groups = body.get("filterGroups") or []
        if len(groups) > 5:
            raise SearchError("Too many filter groups: at most 5 are allowed")
        if any(len(g.get("filters") or []) > 10 for g in groups):
            raise SearchError("Too many filters in a group: at most 10 are allowed")
        if sum(len(g.get("filters") or []) for g in groups) > 25:
            raise SearchError("Too many filters: at most 25 are allowed in all")
        self.groups = [[_check_filter(f) for f in g.get("filters") or []] for g in groups]
        sorts = body.get("sorts") or []
        if len(sorts) > 1:
            raise SearchError("Only one sort is allowed per search")
        self.sort: tuple[str, bool] = ("hs_object_id", True)
        if sorts:
            sort = sorts[0]
            # Either {"propertyName": ..., "direction": ...} or "name" / "-name".
            if isinstance(sort, dict):
                name, ascending = sort.get("propertyName"), sort.get("direction") != "DESCENDING"
            else:
                name, ascending = str(sort).lstrip("-"), not str(sort).startswith("-")
            if name not in KNOWN:
                raise SearchError(f"Property {name!r} does not exist")
            self.sort = (name, ascending)
        self.properties: list[str] | None = body.get("properties")

    def matches(self, ident: int, ticket: dict[str, Any], *, keys: bool = True) -> bool:
        """Whether any group matches; with `keys=False`, its `hs_object_id` bounds aside."""
        if not self.groups:
            return True
        return any(
            all(_test(f, ident, ticket) for f in g if keys or not _is_key(f)) for g in self.groups
        )

    def sort_key(self, ident: int, ticket: dict[str, Any]) -> tuple[Any, ...]:
        """The order of results: the sort property (nulls last when ascending), then the id."""
        name = self.sort[0]
        value = _comparable(name, ident if name == "hs_object_id" else ticket.get(name))
        return (value is None, value if value is not None else 0, ident)


def _check_filter(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or "propertyName" not in item:
        raise SearchError("A filter needs a propertyName")
    if item["propertyName"] not in KNOWN:
        raise SearchError(f"Property {item['propertyName']!r} does not exist")
    if item.get("operator", "EQ") not in OPERATORS:
        raise SearchError(f"Unknown operator {item.get('operator')!r}")
    try:
        for value in [item.get("value"), *(item.get("values") or [])]:
            _comparable(item["propertyName"], value)
    except (ValueError, TypeError):
        raise SearchError(f"Invalid value for property {item['propertyName']!r}") from None
    return item


def _is_key(item: dict[str, Any]) -> bool:
    return bool(item["propertyName"] == "hs_object_id")


def _comparable(name: str, value: Any) -> Any:
    """A value as HubSpot compares it: ids as numbers, datetimes as epoch ms, else text."""
    if value is None or value == "":
        return None
    if name == "hs_object_id":
        return int(value)
    if name in DATETIMES:
        if isinstance(value, datetime):
            return int(value.timestamp() * 1000)
        text = str(value)
        if text.isdigit():
            return int(text)
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    return str(value).lower()


def _test(item: dict[str, Any], ident: int, ticket: dict[str, Any]) -> bool:
    name, operator = item["propertyName"], item.get("operator", "EQ")
    have = _comparable(name, ident if name == "hs_object_id" else ticket.get(name))
    if operator == "HAS_PROPERTY":
        return have is not None
    if operator == "NOT_HAS_PROPERTY":
        return have is None
    if operator in ("IN", "NOT_IN"):
        values = {_comparable(name, v) for v in item.get("values") or []}
        inside = have in values
        return inside if operator == "IN" else not inside
    want = _comparable(name, item.get("value"))
    if operator == "EQ":
        return bool(have == want)
    if operator == "NEQ":
        return bool(have != want)
    if have is None or want is None:
        return False
    return bool(
        {"LT": have < want, "LTE": have <= want, "GT": have > want, "GTE": have >= want}[operator]
    )
