"""The `hubspot` adapter: open HubSpot tickets, and those changed since a cursor.

"Open" is not a ticket property in HubSpot: it is the `ticketState` (OPEN or CLOSED) of the
pipeline stage a ticket is in. So every snapshot and every poll first reads the ticket pipelines
(`GET /crm/v3/pipelines/tickets`, once), then searches tickets (`POST
/crm/v3/objects/tickets/search`) with `hs_pipeline_stage IN <open stages>`, optionally within
`pipelines`. Search answers at most 10,000 results per query (its `after` is an offset), and
offset paging over tickets that close meanwhile would skip open ones: the adapter pages by key
instead, sorted by `hs_object_id` with `hs_object_id GT <last id>` added for each next page, so
there is neither a cap nor a skip; HubSpot's own `paging.next` says whether more follow.
Polls ask `hs_lastmodifieddate GTE <epoch ms>` from HubSpot's clock (the `Date` of the pipelines
answer) at the previous poll minus `incremental_overlap`, and a ticket is reported closed when
its stage is a CLOSED one. Deleted (archived) and merged tickets vanish from search: the next full
refresh closes their tasks. Search is paced to `search_requests_per_second` (HubSpot limits it
per account, apart from the general limits); a 429 is waited out as `Retry-After` says, or for
the second a SECONDLY policy names, or for the rolling window of `X-HubSpot-RateLimit-*` when
none is left. Auth is a private app access token (`Authorization: Bearer`, scope `tickets`).

Write-back (an operator's DONE in Fragment): `GET /crm/v3/objects/tickets/{id}` for its pipeline
and stage (a ticket already in a CLOSED stage is left alone), the note as a note object associated
with the ticket (`POST /crm/v3/objects/notes`, association type 228, note to ticket), then
`PATCH /crm/v3/objects/tickets/{id}` into the pipeline's `closed_stages` entry, or else its first
stage whose ticketState is CLOSED. The token then needs `tickets` write (and notes: `crm.objects.
notes.write` or the legacy `tickets` scope covers both on older apps).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Final

import httpx
from pydantic import Field, SecretStr, field_validator

from adapters.base import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterDataError,
    ChangeSet,
    Duration,
    InvalidRecord,
    Ticket,
    WriteBackAction,
    WriteBackOutcome,
    WriteBackRejected,
    WriteBackRequest,
)
from adapters.http import (
    HttpOptions,
    PageRequest,
    first_of,
    get_json,
    make_client,
    paginate,
    retry_after_header,
    send,
    server_time,
)
from adapters.mapping import RecordMapper, TicketMapping
from adapters.writes import json_object, write_request
from connector.clock import SYSTEM_CLOCK, Clock

PIPELINES: Final = "crm/v3/pipelines/tickets"
SEARCH: Final = "crm/v3/objects/tickets/search"
TICKET: Final = "crm/v3/objects/tickets/{id}"
NOTES: Final = "crm/v3/objects/notes"
NOTE_TO_TICKET: Final = 228
"""HubSpot's association type id of a note to a ticket (HUBSPOT_DEFINED)."""
ACCOUNT: Final = "account-info/v3/details"
MAX_PAGE: Final = 200
"""HubSpot's largest search page; a larger `limit` is refused with a 400."""
PROPERTIES: Final = (
    "subject",
    "hs_pipeline",
    "hs_pipeline_stage",
    "hs_lastmodifieddate",
    "hs_ticket_priority",
    "hs_ticket_category",
    "hubspot_owner_id",
)
SECONDLY_WAIT: Final = 1.0
"""The window of HubSpot's per-second policies, which a 429 names without any header."""


class HubSpotOptions(HttpOptions):
    """Options of a `hubspot` source."""

    token: SecretStr = Field(
        description='A private app access token with the `tickets` scope, e.g. "${HUBSPOT_TOKEN}".'
    )
    base_url: str = Field(
        "https://api.hubapi.com",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="The API root.",
    )
    pipelines: list[str] = Field(
        default_factory=list,
        description="Ticket pipeline ids to follow (`0` is the default Support Pipeline); "
        "empty: every pipeline.",
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="Task field name -> ticket property internal name, e.g. "
        "{team: support_team}; HubSpot gives every value as text.",
    )
    portal_id: int | None = Field(
        None,
        ge=1,
        description="The account (Hub) id, for ticket links; unset: read from "
        "/account-info/v3/details, and tickets have no link if the token may not read it.",
    )
    ui_domain: str = Field(
        "app.hubspot.com",
        pattern=r"^[a-z0-9.-]+$",
        description="The host of ticket links with `portal_id` (EU accounts: "
        "app-eu1.hubspot.com); read from the account details otherwise.",
    )
    page_size: int = Field(
        100, ge=1, le=MAX_PAGE, description=f"Tickets per search page (at most {MAX_PAGE})."
    )
    search_requests_per_second: float = Field(
        4.0,
        gt=0,
        description="Pace of search requests (HubSpot limits search per account: 4-5 a second).",
    )
    incremental_overlap: Duration = Field(
        timedelta(minutes=1),
        description="How far each poll reaches back before the previous one (search lags "
        "edits by a few seconds).",
    )
    closed_stages: dict[str, str] = Field(
        default_factory=dict,
        description="Write-back: pipeline id -> the stage id a finished ticket moves to; "
        "default: the pipeline's first stage whose ticketState is CLOSED.",
    )

    @field_validator("pipelines")
    @classmethod
    def _valid_pipelines(cls, value: list[str]) -> list[str]:
        ids = [item.strip() for item in value]
        if any(not item for item in ids) or len(set(ids)) != len(ids):
            raise ValueError("pipeline ids are non-empty and listed once")
        return ids

    @field_validator("properties")
    @classmethod
    def _valid_properties(cls, value: dict[str, str]) -> dict[str, str]:
        for name, prop in value.items():
            if not prop or not all(c.isalnum() or c == "_" for c in prop):
                raise ValueError(f"{name}: {prop!r} is not a property internal name")
        return value


def ticket_mapping(ticket_url: str | None, properties: dict[str, str]) -> TicketMapping:
    """How a ticket of a search answer becomes a ticket (openness is set from its stage)."""
    fields = {
        "pipeline_id": "properties.hs_pipeline",
        "stage_id": "properties.hs_pipeline_stage",
        "priority": "properties.hs_ticket_priority",
        "category": "properties.hs_ticket_category",
        "owner_id": "properties.hubspot_owner_id",
    }
    fields.update({name: f'properties."{prop}"' for name, prop in properties.items()})
    return TicketMapping(
        id="id",
        # A ticket created from some channels has no subject; the title must not be empty.
        title="properties.subject || join('', ['HubSpot ticket #', id])",
        url=None if ticket_url is None else ticket_url + "{id}",
        updated_at="properties.hs_lastmodifieddate || updatedAt",
        fields=fields,
    )


@dataclass(frozen=True, slots=True)
class _Stage:
    pipeline: str
    pipeline_label: str
    label: str
    is_open: bool


@dataclass(frozen=True, slots=True)
class _Scope:
    """The stages of the followed pipelines, as read at the start of a cycle."""

    stages: dict[str, _Stage]
    now_ms: int
    """HubSpot's clock when they were read."""

    @property
    def open_stages(self) -> list[str]:
        """Ids of the stages whose ticketState is OPEN."""
        return sorted(stage_id for stage_id, stage in self.stages.items() if stage.is_open)


def _stages(body: Any, wanted: list[str]) -> dict[str, _Stage]:
    """Stage id -> stage of the `wanted` pipelines (every one when empty).

    AdapterConfigError when a wanted pipeline does not exist.
    """
    try:
        pipelines = {str(p["id"]): p for p in body["results"]}
        unknown = [p for p in wanted if p not in pipelines]
        if unknown:
            known = ", ".join(f"{i} ({p.get('label')})" for i, p in pipelines.items())
            raise AdapterConfigError(f"unknown ticket pipeline id(s) {unknown}; known: {known}")
        stages: dict[str, _Stage] = {}
        for pipeline_id in wanted or list(pipelines):
            pipeline = pipelines[pipeline_id]
            for stage in pipeline.get("stages") or ():
                state = (stage.get("metadata") or {}).get("ticketState")
                stages[str(stage["id"])] = _Stage(
                    pipeline=pipeline_id,
                    pipeline_label=str(pipeline.get("label") or pipeline_id),
                    label=str(stage.get("label") or stage["id"]),
                    is_open=str(state).upper() == "OPEN",
                )
    except (KeyError, TypeError, AttributeError):
        raise AdapterDataError(f"GET {PIPELINES} did not answer a list of pipelines") from None
    return stages


def _hubspot_wait(response: httpx.Response) -> float | None:
    """The wait a HubSpot 429 implies when it has no Retry-After."""
    headers = response.headers
    if headers.get("x-hubspot-ratelimit-remaining") == "0":
        try:
            return float(headers["x-hubspot-ratelimit-interval-milliseconds"]) / 1000
        except (KeyError, ValueError):
            pass
    try:
        policy = json.loads(response.content).get("policyName")
    except (ValueError, AttributeError):
        return None
    # Search's own limit answers SECONDLY with no header to read: its window is a second.
    return SECONDLY_WAIT if policy == "SECONDLY" else None


@dataclass(frozen=True, slots=True)
class _Keyset:
    """Pages of a search sorted by hs_object_id: each next page asks for ids above the last.

    Search's `after` is an offset capped at 10,000 results, and an offset skips a ticket
    whenever one before it leaves the result set while paging: keys do neither.
    """

    def first(self, url: str, params: Mapping[str, Any] | None, body: Any) -> PageRequest:
        """The search as given."""
        return PageRequest(url, params, body, "the first page")

    def next(
        self, page: PageRequest, response: httpx.Response, body: Any, count: int
    ) -> PageRequest | None:
        """The same search above the last id, when HubSpot says more results follow."""
        if not (body.get("paging") or {}).get("next"):
            return None
        if not count:
            raise AdapterDataError("a search page announces a next page but holds no results")
        try:
            last = int(body["results"][-1]["id"])
        except (KeyError, TypeError, ValueError):
            raise AdapterDataError("the last result of a search page has no numeric id") from None
        above = {"propertyName": "hs_object_id", "operator": "GT", "value": str(last)}
        groups = [
            {"filters": [*_without_key(group["filters"]), above]}
            for group in page.body["filterGroups"]
        ]
        return PageRequest(
            page.url, page.params, {**page.body, "filterGroups": groups}, f"> {last}"
        )


def _without_key(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in filters if f.get("propertyName") != "hs_object_id"]


class PacedTransport(httpx.AsyncBaseTransport):
    """Spaces the requests to paths ending in `/search` at least `interval` seconds apart.

    HubSpot limits search per account separately from other calls; pacing here (retries
    included) keeps a long listing from spending its attempts on 429s.
    """

    def __init__(
        self, inner: httpx.AsyncBaseTransport, *, interval: float, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.inner = inner
        self.interval = interval
        self.clock = clock
        self.lock = asyncio.Lock()
        self.last = -float("inf")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`, after waiting for its turn when it is a search."""
        if request.url.path.endswith("/search"):
            async with self.lock:
                wait = self.last + self.interval - self.clock.monotonic()
                if wait > 0:
                    await self.clock.sleep(wait)
                self.last = self.clock.monotonic()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


class HubSpotAdapter:
    """Open HubSpot tickets: those in a pipeline stage whose ticketState is OPEN."""

    name: ClassVar[str] = "hubspot"
    Config: ClassVar[type[HubSpotOptions]] = HubSpotOptions

    def __init__(self, config: HubSpotOptions, /) -> None:
        self.options = config
        self.policy = config.retry_policy(first_of(retry_after_header, _hubspot_wait))
        self.client = make_client(
            config.base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {config.token.get_secret_value()}"},
            timeout=config.timeout.total_seconds(),
            transport=PacedTransport(
                httpx.AsyncHTTPTransport(retries=0),
                interval=1 / config.search_requests_per_second,
            ),
        )
        self.properties = list(dict.fromkeys([*PROPERTIES, *config.properties.values()]))
        self._mapper: RecordMapper | None = None

    async def _scope(self) -> _Scope:
        """The followed pipelines' stages, and HubSpot's clock."""
        try:
            response = await send(self.client, "GET", PIPELINES, policy=self.policy)
        except AdapterAuthError as exc:
            raise AdapterAuthError(
                f"HubSpot refused the token: {exc} (is `token` a private app access token "
                "with the `tickets` scope?)"
            ) from None
        try:
            body = response.json()
        except ValueError:
            raise AdapterDataError(f"GET {PIPELINES} did not answer JSON") from None
        stages = _stages(body, self.options.pipelines)
        return _Scope(stages, int(server_time(response).timestamp() * 1000))

    async def _ticket_url(self) -> str | None:
        """The start of a ticket's link, up to its id; None when the account is unknown."""
        if self.options.portal_id is not None:
            return f"https://{self.options.ui_domain}/contacts/{self.options.portal_id}/ticket/"
        try:
            account = await get_json(self.client, ACCOUNT, policy=self.policy)
        except (AdapterAuthError, AdapterConfigError):
            # The token works (the pipelines were read) but may not read the account's
            # details: tickets go without links rather than not at all.
            return None
        portal = account.get("portalId") if isinstance(account, dict) else None
        if not isinstance(portal, int):
            return None
        domain = account.get("uiDomain") or self.options.ui_domain
        return f"https://{domain}/contacts/{portal}/ticket/"

    async def _ticket_mapper(self) -> RecordMapper:
        """The record mapper, built once the ticket links are known."""
        if self._mapper is None:
            url = await self._ticket_url()
            self._mapper = RecordMapper(ticket_mapping(url, self.options.properties))
        return self._mapper

    def _search(self, filters: list[dict[str, Any]]) -> AsyncIterator[Any]:
        body = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": self.properties,
            "limit": self.options.page_size,
        }
        return paginate(
            self.client,
            SEARCH,
            _Keyset(),
            records=lambda page: page["results"],
            method="POST",
            body=body,
            policy=self.policy,
        )

    async def check(self) -> None:
        """The token is accepted, may read tickets, and the configured pipelines exist."""
        await self._scope()
        await self._ticket_mapper()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Every ticket in an OPEN stage of the followed pipelines, by id."""
        scope = await self._scope()
        open_stages = scope.open_stages
        if not open_stages:
            return
        mapper = await self._ticket_mapper()
        filters = [{"propertyName": "hs_pipeline_stage", "operator": "IN", "values": open_stages}]
        position = 0
        async for record in self._search(filters):
            position += 1
            mapped = mapper.map(record, f"ticket {position}")
            if not isinstance(mapped, Ticket):
                yield mapped
                continue
            placed = _placed(mapped, scope)
            if placed is None:
                reason = f"stage {mapped.fields.get('stage_id')!r} is not an open stage searched"
                yield InvalidRecord(f"ticket {position}", reason, mapped.id)
            else:
                yield placed

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Tickets modified since the cursor (HubSpot's clock, epoch ms); None starts from now.

        A ticket is open when its stage is OPEN in a followed pipeline; a ticket whose stage is
        unknown (not in the followed pipelines) is left out: the full refresh decides on it.
        """
        scope = await self._scope()
        if cursor is None:
            return ChangeSet(tickets=(), cursor=str(scope.now_ms))
        try:
            previous = int(cursor)
        except ValueError:
            raise AdapterDataError(f"not a hubspot adapter cursor: {cursor[:40]!r}") from None
        since = previous - int(self.options.incremental_overlap.total_seconds() * 1000)
        filters: list[dict[str, Any]] = [
            {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(since)}
        ]
        if self.options.pipelines:
            filters.append(
                {"propertyName": "hs_pipeline", "operator": "IN", "values": self.options.pipelines}
            )
        mapper = await self._ticket_mapper()
        tickets: list[Ticket] = []
        async for record in self._search(filters):
            mapped = mapper.map(record, "changed ticket")
            # An unreadable record is reported by the next full refresh.
            if isinstance(mapped, Ticket):
                placed = _placed(mapped, scope)
                if placed is not None:
                    tickets.append(placed)
        return ChangeSet(tickets=tuple(tickets), cursor=str(scope.now_ms))

    async def write_back(self, request: WriteBackRequest) -> WriteBackOutcome:
        """Move the ticket to a CLOSED stage with an optional note, or only add the note."""
        if not request.ticket_id.isdigit():
            raise WriteBackRejected(f"not a HubSpot ticket id: {request.ticket_id[:40]!r}")
        path = TICKET.format(id=request.ticket_id)
        response = await write_request(
            self.client,
            "GET",
            path,
            policy=self.policy,
            params={"properties": "hs_pipeline,hs_pipeline_stage"},
        )
        properties = json_object(response, "properties")
        pipeline = str(properties.get("hs_pipeline") or "")
        stage = str(properties.get("hs_pipeline_stage") or "")
        listed = await write_request(self.client, "GET", PIPELINES, policy=self.policy)
        try:
            stages = _stages(listed.json(), [])
        except ValueError:
            raise AdapterDataError(f"GET {PIPELINES} did not answer JSON") from None
        if stage in stages and not stages[stage].is_open:
            return WriteBackOutcome.ALREADY_CLOSED
        target = None
        if request.action is WriteBackAction.CLOSE:
            target = self.options.closed_stages.get(pipeline) or next(
                (i for i, s in stages.items() if s.pipeline == pipeline and not s.is_open), None
            )
            if target is None:
                raise WriteBackRejected(
                    f"HubSpot pipeline {pipeline!r} has no CLOSED stage: set `closed_stages`"
                )
        if request.note:
            when = server_time(response).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            association = {
                "associationCategory": "HUBSPOT_DEFINED",
                "associationTypeId": NOTE_TO_TICKET,
            }
            await write_request(
                self.client,
                "POST",
                NOTES,
                policy=self.policy,
                json={
                    "properties": {"hs_timestamp": when, "hs_note_body": request.note},
                    "associations": [{"to": {"id": request.ticket_id}, "types": [association]}],
                },
            )
        if target is None:
            return WriteBackOutcome.COMMENTED
        try:
            await write_request(
                self.client,
                "PATCH",
                path,
                policy=self.policy,
                json={"properties": {"hs_pipeline_stage": target}},
            )
        except AdapterConfigError as exc:
            # HubSpot answers 400 VALIDATION_ERROR for a stage not of the ticket's pipeline.
            if exc.status == 400:
                raise WriteBackRejected(str(exc)) from None
            raise
        return WriteBackOutcome.CLOSED


def _placed(ticket: Ticket, scope: _Scope) -> Ticket | None:
    """The ticket with its openness and stage and pipeline labels; None for an unknown stage."""
    stage = scope.stages.get(str(ticket.fields.get("stage_id")))
    if stage is None:
        return None
    fields = {**ticket.fields, "stage": stage.label, "pipeline": stage.pipeline_label}
    return dataclasses.replace(ticket, is_open=stage.is_open, fields=fields)
