"""The Helpdesk adapter: open tickets from Helpdesk's JSON API, and what changed since a cursor.

Written the way docs/adapters.md of fragment-connector teaches: options as a pydantic model,
requests through `adapters.http` (retries, rate limits, errors, pagination with loop detection)
and records turned into tickets by `adapters.mapping`, so this file holds only what is specific
to Helpdesk: its paths, its page signal, its statuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from adapters.base import AdapterConfig, ChangeSet, Duration, InvalidRecord, Ticket
from adapters.http import CursorField, get_json, make_client, paginate
from adapters.mapping import RecordMapper, TicketMapping

OPEN_STATUSES = ("open", "pending")

# Helpdesk's ticket record -> a Fragment task (JMESPath specs; see adapters/mapping.py).
MAPPING = TicketMapping(
    id="id",
    title="subject",
    url="html_url",
    updated_at="updated_at",
    assignee_email=None,
    is_open="status == 'open' || status == 'pending'",
    fields={"priority": "priority", "status": "status", "requester": "requester.email"},
)


class HelpdeskOptions(AdapterConfig):
    """Options of a `helpdesk` source."""

    base_url: str = Field(description="The Helpdesk API root, e.g. https://acme.helpdesk.example")
    token: SecretStr = Field(description="An API token (Settings > API in Helpdesk).")
    per_page: int = Field(50, ge=1, le=50, description="Tickets per page (Helpdesk allows 50).")
    overlap: Duration = Field(
        timedelta(minutes=2), description="How far each change poll reaches back before the last."
    )


class HelpdeskAdapter:
    """Helpdesk tickets whose status is open or pending."""

    name: ClassVar[str] = "helpdesk"
    Config: ClassVar[type[HelpdeskOptions]] = HelpdeskOptions

    def __init__(self, config: HelpdeskOptions, /) -> None:
        self.options = config
        self.mapper = RecordMapper(MAPPING)
        self.client = make_client(
            config.base_url.rstrip("/") + "/api/v2/",
            headers={"Authorization": f"Bearer {config.token.get_secret_value()}"},
        )

    async def check(self) -> None:
        """The token works (401 -> AdapterAuthError)."""
        await get_json(self.client, "me")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    def _pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[Any]:
        return paginate(
            self.client,
            path,
            CursorField(lambda body: body.get("next_page"), param="page"),
            records=lambda body: body["tickets"],
            params={"per_page": self.options.per_page, **params},
        )

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Every open or pending ticket."""
        position = 0
        async for record in self._pages("tickets", {"status": list(OPEN_STATUSES)}):
            position += 1
            yield self.mapper.map(record, f"ticket {position}")

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Tickets of any status updated since the cursor (an ISO time of Helpdesk's clock)."""
        server_time: str | None = None
        if cursor is None:
            # Start from Helpdesk's own clock: the full refresh has covered the past.
            me = await get_json(self.client, "me")
            return ChangeSet(tickets=(), cursor=me["server_time"])
        since = datetime.fromisoformat(cursor) - self.options.overlap
        tickets: list[Ticket] = []
        async for record in self._pages("changes", {"since": since.isoformat()}):
            mapped = self.mapper.map(record, f"change of ticket {record.get('id')}")
            if isinstance(mapped, Ticket):
                tickets.append(mapped)
            if server_time is None or record["updated_at"] > server_time:
                server_time = record["updated_at"]
        return ChangeSet(tickets=tuple(tickets), cursor=server_time or cursor)
