"""The `zendesk` adapter: open Zendesk Support tickets, and what changed since a cursor.

A snapshot is the Export Search Results endpoint (`/api/v2/search/export`, query
`status<solved`, cursor pages), which has no 1,000-result cap unlike `/api/v2/search`; the page
signal is `meta.has_more` (Zendesk leaves `links.next` set on the last page) and the cursor is
sent back to our own host as `page[after]`, never by following a link to another host.
Incremental polls walk the cursor-based Incremental Ticket Export
(`/api/v2/incremental/tickets/cursor`) to `end_of_stream` and keep Zendesk's own `after_cursor`;
it reports every status, deleted tickets included (`status: deleted`), so solves and deletes
close tasks at once. Auth is an API token (`{email}/token` and the token, HTTP Basic), and
429s are waited out as `Retry-After` says.

Write-back (an operator's DONE in Fragment): `GET /api/v2/tickets/{id}.json` first (a solved or
closed ticket is left alone: closing twice changes nothing and adds no second note), then
`PUT /api/v2/tickets/{id}.json` with `{"ticket": {"status": "solved", "comment": {"body": ...,
"public": false}}}`: the note is an internal one. The token's agent needs to be allowed to solve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, ClassVar, Final

import httpx
from pydantic import Field, SecretStr, model_validator

from adapters.base import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterDataError,
    ChangeSet,
    InvalidRecord,
    Ticket,
    TicketGone,
    WriteBackAction,
    WriteBackOutcome,
    WriteBackRejected,
    WriteBackRequest,
)
from adapters.http import (
    CursorField,
    HttpOptions,
    first_of,
    make_client,
    paginate,
    ratelimit_reset_header,
    retry_after_header,
    send,
    server_time,
)
from adapters.mapping import RecordMapper, TicketMapping
from adapters.writes import json_object, write_request

OPEN_STATUSES: Final = ("new", "open", "pending", "hold")
# The export's own minimum: a start_time less than a minute old is refused, and changes of the
# last minute are held back until they are a minute old.
EXPORT_DELAY: Final = timedelta(minutes=1)
MAX_EXPORT_PAGES: Final = 10_000

ME: Final = "api/v2/users/me.json"
SEARCH_EXPORT: Final = "api/v2/search/export.json"
INCREMENTAL: Final = "api/v2/incremental/tickets/cursor.json"
TICKET: Final = "api/v2/tickets/{id}.json"
DONE_STATUSES: Final = ("solved", "closed")


class ZendeskOptions(HttpOptions):
    """Options of a `zendesk` source."""

    subdomain: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="The account's subdomain: `acme` for https://acme.zendesk.com.",
    )
    base_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="The account's root URL, instead of `subdomain` (a host-mapped or proxied "
        "account, a test server).",
    )
    email: str = Field(min_length=3, description="The agent the API token belongs to.")
    api_token: SecretStr = Field(description="An API token (Admin Center > Apps > Zendesk API).")
    custom_fields: dict[str, int] = Field(
        default_factory=dict,
        description="Task field name -> Zendesk ticket field id, e.g. {team: 360001234}; the "
        "value keeps its JSON type.",
    )
    page_size: int = Field(
        100, ge=1, le=1000, description="Tickets per page of the export and of the change feed."
    )

    @model_validator(mode="after")
    def _one_site(self) -> ZendeskOptions:
        if (self.subdomain is None) == (self.base_url is None):
            raise ValueError("set exactly one of `subdomain` and `base_url`")
        return self

    @property
    def site(self) -> str:
        """The account's root URL, without a trailing slash."""
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        return f"https://{self.subdomain}.zendesk.com"


def ticket_mapping(site: str, custom_fields: dict[str, int]) -> TicketMapping:
    """How a Zendesk ticket record becomes a ticket."""
    fields = {
        "status": "status",
        "priority": "priority",
        "type": "type",
        "tags": "tags",
        "requester_id": "requester_id",
        "assignee_id": "assignee_id",
        "group_id": "group_id",
        "organization_id": "organization_id",
    }
    for name, field_id in custom_fields.items():
        fields[name] = f"custom_fields[?id == `{field_id}`].value | [0]"
    statuses = ", ".join(f"'{s}'" for s in OPEN_STATUSES)
    return TicketMapping(
        id="id",
        # A ticket created by some channels has an empty subject; the title must not be empty.
        title="subject || raw_subject || join('', ['Zendesk ticket #', to_string(id)])",
        # A record's own `url` is the API's; people need the agent interface.
        url=site + "/agent/tickets/{id}",
        updated_at="updated_at",
        due_at="due_at",
        # `deleted` (change feed only), `solved` and `closed` are not open.
        is_open=f"contains([{statuses}], status)",
        fields=fields,
    )


def _export_cursor(body: Any) -> str | None:
    # Zendesk keeps `links.next` on the last page: `has_more` is the only end signal.
    meta = body["meta"]
    return str(meta["after_cursor"]) if meta.get("has_more") else None


def _parse_cursor(cursor: str) -> tuple[str, str]:
    kind, _, value = cursor.partition(":")
    if kind not in ("start", "cursor") or not value:
        raise AdapterDataError(f"not a zendesk adapter cursor: {cursor[:40]!r}")
    return kind, value


class ZendeskAdapter:
    """Open Zendesk Support tickets (status below solved)."""

    name: ClassVar[str] = "zendesk"
    Config: ClassVar[type[ZendeskOptions]] = ZendeskOptions

    def __init__(self, config: ZendeskOptions, /) -> None:
        self.options = config
        self.mapper = RecordMapper(ticket_mapping(config.site, config.custom_fields))
        self.policy = config.retry_policy(
            first_of(
                retry_after_header, ratelimit_reset_header("ratelimit-reset", "ratelimit-remaining")
            )
        )
        self.client = make_client(
            config.site + "/",
            auth=(f"{config.email}/token", config.api_token.get_secret_value()),
            timeout=config.timeout.total_seconds(),
        )

    async def check(self) -> None:
        """The token is accepted for this account (AdapterAuthError, AdapterConfigError)."""
        await self._me()

    async def _me(self) -> httpx.Response:
        """GET users/me, refusing the anonymous user; the response (its Date is Zendesk's)."""
        try:
            response = await send(self.client, "GET", ME, policy=self.policy)
        except AdapterConfigError as exc:
            raise AdapterConfigError(f"{exc} (is the subdomain or base_url right?)") from None
        try:
            user = response.json()["user"]
        except (ValueError, KeyError, TypeError):
            raise AdapterDataError(f"GET {ME} did not answer a user object") from None
        # Credentials Zendesk cannot match to an agent may get the anonymous user, not a 401.
        if not isinstance(user, dict) or user.get("id") is None:
            raise AdapterAuthError(
                f"Zendesk answered GET {ME} as the anonymous user: check `email` and `api_token`"
            )
        return response

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Every ticket whose status is below solved, from the search export."""
        records = paginate(
            self.client,
            SEARCH_EXPORT,
            # The cursor goes back to our own host with the query: links name other hosts at times.
            CursorField(_export_cursor, param="page[after]"),
            records=lambda body: body["results"],
            params={
                "query": "type:ticket status<solved",
                "filter[type]": "ticket",
                "page[size]": self.options.page_size,
            },
            policy=self.policy,
        )
        position = 0
        async for record in records:
            position += 1
            yield self.mapper.map(record, f"result {position}")

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Tickets changed since the cursor, deleted ones as closed; None starts from now.

        The cursor is `cursor:<Zendesk's after_cursor>`, or `start:<unix time>` until the export
        has returned a first ticket (Zendesk gives no cursor for an empty answer).
        """
        if cursor is None:
            now = server_time(await self._me())
            start = int((now - EXPORT_DELAY).timestamp())
            return ChangeSet(tickets=(), cursor=f"start:{start}")
        kind, value = _parse_cursor(cursor)
        params: dict[str, Any] = {"per_page": self.options.page_size}
        params["cursor" if kind == "cursor" else "start_time"] = value
        tickets: list[Ticket] = []
        seen: set[str] = set()
        last = cursor
        for _ in range(MAX_EXPORT_PAGES):
            response = await send(
                self.client, "GET", INCREMENTAL, policy=self.policy, params=params
            )
            try:
                body = response.json()
                records = body["tickets"]
            except (ValueError, KeyError, TypeError):
                records = None
            if not isinstance(records, list):
                raise AdapterDataError(f"GET {INCREMENTAL} did not answer a ticket list")
            for record in records:
                mapped = self.mapper.map(record, "changed ticket")
                # An unreadable record is reported by the next full refresh.
                if isinstance(mapped, Ticket):
                    tickets.append(mapped)
            after = body.get("after_cursor")
            if after:
                last = f"cursor:{after}"
            if body.get("end_of_stream"):
                return ChangeSet(tickets=tuple(tickets), cursor=last)
            if not after or after in seen:
                raise AdapterDataError(
                    f"GET {INCREMENTAL} gave no new after_cursor before end_of_stream"
                )
            seen.add(after)
            params = {"cursor": after, "per_page": self.options.page_size}
        raise AdapterDataError(f"GET {INCREMENTAL} did not end within {MAX_EXPORT_PAGES} pages")

    async def write_back(self, request: WriteBackRequest) -> WriteBackOutcome:
        """Solve the ticket with an internal note, or only add the note."""
        if not request.ticket_id.isdigit():
            raise WriteBackRejected(f"not a Zendesk ticket id: {request.ticket_id[:40]!r}")
        path = TICKET.format(id=request.ticket_id)
        response = await write_request(self.client, "GET", path, policy=self.policy)
        status = str(json_object(response, "ticket").get("status", "")).lower()
        if status == "deleted":
            raise TicketGone(f"Zendesk ticket {request.ticket_id} is deleted")
        if status in DONE_STATUSES:
            return WriteBackOutcome.ALREADY_CLOSED
        ticket: dict[str, Any] = {}
        if request.action is WriteBackAction.CLOSE:
            ticket["status"] = "solved"
        if request.note:
            ticket["comment"] = {"body": request.note, "public": False}
        if ticket:
            await write_request(
                self.client, "PUT", path, policy=self.policy, json={"ticket": ticket}
            )
        if request.action is WriteBackAction.CLOSE:
            return WriteBackOutcome.CLOSED
        return WriteBackOutcome.COMMENTED
