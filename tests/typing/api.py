"""The adapter API as a plug-in author writes it: type-checked by mypy in CI, never run.

If a change to `adapters.base` breaks this file, it breaks every third-party adapter too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from adapters.base import (
    API_VERSION,
    AdapterAuthError,
    AdapterConfig,
    ChangeSet,
    Duration,
    InvalidRecord,
    SourceAdapter,
    SupportsChanges,
    Ticket,
    ticket_id_from,
    ticket_problem,
    title_problem,
)
from adapters.http import PageNumber, PageRequest, Paginator, make_client, paginate, server_time
from adapters.partition import IdRange, TimeWindow, partitioned


class ExampleOptions(AdapterConfig):
    base_url: str
    token: SecretStr
    page_size: int = 100
    timeout: Duration = timedelta(seconds=30)


class ExampleAdapter:
    name: ClassVar[str] = "example"
    Config: ClassVar[type[ExampleOptions]] = ExampleOptions

    def __init__(self, config: ExampleOptions, /) -> None:
        self.config = config

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        yield Ticket(id="1", title="A ticket", url="https://example/1", fields={"n": 1})
        yield InvalidRecord(position="page 1, item 2", reason="no id")

    async def check(self) -> None:
        if not self.config.token.get_secret_value():
            raise AdapterAuthError("empty token")

    async def aclose(self) -> None:
        return None

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        return ChangeSet(tickets=(Ticket(id="1", title="A", is_open=False),), cursor="c2")


def accepts(adapter: SourceAdapter) -> None:
    """The core's view: any SourceAdapter."""


def polls(adapter: SupportsChanges) -> None:
    """The core's view of the optional capability."""


accepts(ExampleAdapter(ExampleOptions(base_url="https://example", token=SecretStr("t"))))
polls(ExampleAdapter(ExampleOptions(base_url="https://example", token=SecretStr("t"))))
assert API_VERSION == 1


def to_ticket(record: Mapping[str, Any], position: str) -> Ticket | InvalidRecord:
    """A plug-in reporting a bad record itself, with its own position, by the contract's rules."""
    ticket_id = ticket_id_from(record.get("id"))
    if ticket_id is None:
        return InvalidRecord(position, "no usable id")
    problem = title_problem(record.get("subject"), name="`subject`")
    if problem is not None:
        return InvalidRecord(position, problem, ticket_id)
    ticket = Ticket(id=ticket_id, title=str(record["subject"]))
    problem = ticket_problem(ticket)
    return ticket if problem is None else InvalidRecord(position, problem, ticket_id)


class Keyset:
    """A plug-in's own paginator: any class with `first` and `next` is a Paginator."""

    def first(self, url: str, params: Mapping[str, Any] | None, body: Any) -> PageRequest:
        return PageRequest(url, params, body, "the first page")

    def next(
        self, page: PageRequest, response: httpx.Response, body: Any, count: int
    ) -> PageRequest | None:
        return None


async def pages_closed_early() -> datetime:
    """`paginate` is an async generator: closing it early needs no `type: ignore`."""
    paginator: Paginator = Keyset()
    async with make_client("https://example") as client:
        pages = paginate(client, "tickets", paginator, records=lambda body: body["items"])
        await anext(pages)
        await pages.aclose()

        def search(window: IdRange) -> AsyncIterator[Any]:
            capped = PageNumber(size=30, max_pages=10, total=lambda body: body["total"])
            params = {"id_from": window.low, "id_before": window.high}
            return paginate(client, "search", capped, records=lambda b: b["r"], params=params)

        async for _ in partitioned(search, IdRange(1, 10_000)):
            pass
        window = TimeWindow(datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC))
        assert window.split() is not None
        return server_time(await client.get("me"))
