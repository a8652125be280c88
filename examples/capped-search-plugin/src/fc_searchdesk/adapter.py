"""The Searchdesk adapter: every open ticket, although Searchdesk's search answers at most 300.

Searchdesk lists tickets only through its search (`GET /api/v2/search/tickets`), which answers
30 results a page and at most 10 pages: a query matching more than 300 tickets cannot be paged
to its end (page 11 is refused). So the adapter searches creation-time windows, and
`adapters.partition.partitioned` splits in two every window whose `total` is over the cap,
until each is under it: the snapshot is complete however many tickets are open, or the listing
fails (a single second holding more than 300 tickets). Changes are searched the same way, by
update-time window, from Searchdesk's own clock (the `Date` header, read by `server_time`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

from pydantic import Field, SecretStr

from adapters.base import (
    AdapterConfigError,
    AdapterDataError,
    ChangeSet,
    Duration,
    InvalidRecord,
    Ticket,
)
from adapters.http import HttpOptions, PageNumber, make_client, paginate, send, server_time
from adapters.mapping import RecordMapper, TicketMapping
from adapters.partition import TimeWindow, partitioned

PAGE_SIZE: Final = 30
"""Searchdesk's fixed page size."""
MAX_PAGES: Final = 10
"""Searchdesk answers pages 1 to 10 of a search: 300 results at most."""
OPEN_STATUSES: Final = ("open", "pending")

MAPPING = TicketMapping(
    id="id",
    title="subject",
    url="join('', ['https://searchdesk.example/tickets/', to_string(id)])",
    updated_at="updated_at",
    is_open="status == 'open' || status == 'pending'",
    fields={"priority": "priority", "status": "status", "created_at": "created_at"},
)

# One paginator for every window: it raises ResultsCapped on a window's first page when the
# window's total is over 10 pages, and ends each window at its total.
PAGES: Final = PageNumber(
    size_param=None, size=PAGE_SIZE, max_pages=MAX_PAGES, total=lambda body: body["total"]
)


class SearchdeskOptions(HttpOptions):
    """Options of a `searchdesk` source."""

    base_url: str = Field(description="The Searchdesk root, e.g. https://acme.searchdesk.example")
    api_key: SecretStr = Field(description="An agent's API key (Profile > API key).")
    created_since: datetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC),
        description="No ticket was created before this time: where the searches start.",
    )
    overlap: Duration = Field(
        timedelta(minutes=2), description="How far each change poll reaches back before the last."
    )


class SearchdeskAdapter:
    """Searchdesk tickets whose status is open or pending."""

    name: ClassVar[str] = "searchdesk"
    Config: ClassVar[type[SearchdeskOptions]] = SearchdeskOptions

    def __init__(self, config: SearchdeskOptions, /) -> None:
        self.options = config
        self.policy = config.retry_policy()
        self.mapper = RecordMapper(MAPPING)
        self.client = make_client(
            config.base_url.rstrip("/") + "/api/v2/",
            auth=(config.api_key.get_secret_value(), "X"),
            timeout=config.timeout.total_seconds(),
        )

    async def _now(self) -> datetime:
        """Searchdesk's clock, from the `Date` of an authenticated call."""
        return server_time(await send(self.client, "GET", "agents/me", policy=self.policy))

    def _search(self, field: str, params: dict[str, Any]) -> Callable[[TimeWindow], Any]:
        """A search of one `field` (created or updated) window, for `partitioned`."""

        def search(window: TimeWindow) -> AsyncIterator[Any]:
            return paginate(
                self.client,
                "search/tickets",
                PAGES,
                records=lambda body: body["results"],
                params={
                    **params,
                    f"{field}_from": window.start.isoformat(),
                    f"{field}_before": window.end.isoformat(),
                },
                policy=self.policy,
                total=lambda body: body["total"],
            )

        return search

    def _window(self, start: datetime, now: datetime) -> TimeWindow:
        end = now + timedelta(seconds=1)  # the window excludes its end; include this second
        if start >= end:
            raise AdapterConfigError(f"created_since ({start.isoformat()}) is in the future")
        return TimeWindow(start, end)

    async def check(self) -> None:
        """The API key works (401 -> AdapterAuthError)."""
        await self._now()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Every open or pending ticket, creation-time window by window."""
        whole = self._window(self.options.created_since, await self._now())
        search = self._search("created", {"status": list(OPEN_STATUSES)})
        position = 0
        async for record in partitioned(search, whole):
            position += 1
            yield self.mapper.map(record, f"ticket {position}")

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Tickets of any status updated since the cursor (an ISO time of Searchdesk's clock)."""
        now = await self._now()
        if cursor is None:
            return ChangeSet(tickets=(), cursor=now.isoformat())
        try:
            since = datetime.fromisoformat(cursor) - self.options.overlap
        except ValueError:
            raise AdapterDataError(f"not a searchdesk cursor: {cursor[:40]!r}") from None
        found: dict[str, Ticket] = {}
        async for record in partitioned(self._search("updated", {}), self._window(since, now)):
            mapped = self.mapper.map(record, f"change of ticket {record.get('id')}")
            # An unreadable record is left out: the next full refresh reports it.
            if isinstance(mapped, Ticket):
                found[mapped.id] = mapped
        return ChangeSet(tickets=tuple(found.values()), cursor=now.isoformat())
