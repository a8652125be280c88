"""The zendesk adapter against a fake Zendesk account over real sockets, and in a real cycle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from adapters.base import (
    AdapterAuthError,
    AdapterConfigError,
    ChangeSet,
    InvalidRecord,
    Ticket,
)
from adapters.testing import AdapterConformance
from adapters.zendesk import ZendeskAdapter
from connector.models import CycleKind
from tests.conftest import Workspace
from tests.conftest import source_cycle as cycle
from tests.fakes.zendesk import AMOUNT_FIELD, EMAIL, TEAM_FIELD, TOKEN, ZendeskFake

EXPORT = "/api/v2/search/export.json"
FEED = "/api/v2/incremental/tickets/cursor.json"


def options_for(fake: ZendeskFake, **extra: Any) -> dict[str, Any]:
    """Options pointing at `fake`, small pages, and short retries (a test must stay fast)."""
    return {
        "base_url": fake.url,
        "email": EMAIL,
        "api_token": TOKEN,
        "page_size": 25,
        "retry": {"attempts": 2, "deadline": 5},
        **extra,
    }


@pytest.fixture
def fake() -> Iterator[ZendeskFake]:
    """A fake account of 120 tickets last changed an hour ago; it holds back the last minute."""
    with ZendeskFake() as server:
        server.advance(3600)
        yield server


@pytest.fixture
async def adapter(fake: ZendeskFake) -> AsyncIterator[ZendeskAdapter]:
    """An adapter for `fake`."""
    instance = ZendeskAdapter(ZendeskAdapter.Config.model_validate(options_for(fake)))
    yield instance
    await instance.aclose()


async def listing(adapter: ZendeskAdapter) -> list[Ticket]:
    """The snapshot's tickets; fails on an invalid record."""
    items = [item async for item in adapter.list_open()]
    assert not [i for i in items if isinstance(i, InvalidRecord)]
    return [i for i in items if isinstance(i, Ticket)]


def by_id(changes: ChangeSet) -> dict[str, Ticket]:
    """The tickets of a change set by id."""
    return {t.id: t for t in changes.tickets}


class TestZendeskConformance(AdapterConformance):
    """The conformance kit, over an account of tickets in every status."""

    adapter_class = ZendeskAdapter

    @pytest.fixture
    def backoffice(self) -> Iterator[ZendeskFake]:
        # The kit polls 1 s after a change: Zendesk's one-minute hold-back would hide it.
        with ZendeskFake(recent_window=0) as server:
            yield server

    @pytest.fixture
    def options(self, backoffice: ZendeskFake) -> dict[str, Any]:
        return options_for(backoffice)

    @pytest.fixture
    def bad_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {**options, "api_token": "not-the-zendesk-token"}


async def test_listing_pages_through_the_export_until_has_more_is_false(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    """Open tickets come from the search export, page by page, ending on has_more false."""
    tickets = await listing(adapter)
    assert {t.id for t in tickets} == fake.open_ids()
    assert all(t.is_open for t in tickets)
    pages = fake.hits(EXPORT)
    # 80 open tickets at 25 a page: 4 pages, though `links.next` is set on the last one too.
    assert len(pages) == 4
    assert "filter%5Btype%5D=ticket" in pages[0].query
    assert "page%5Bafter%5D" in pages[1].query


async def test_a_backlog_past_the_search_cap_is_listed_whole() -> None:
    """More than 1,000 open tickets (the cap of /api/v2/search) are all listed."""
    with ZendeskFake(tickets=1800) as fake:
        options = options_for(fake, page_size=1000)
        adapter = ZendeskAdapter(ZendeskAdapter.Config.model_validate(options))
        try:
            tickets = await listing(adapter)
        finally:
            await adapter.aclose()
        assert len(tickets) == len(fake.open_ids()) == 1200
        assert len(fake.hits(EXPORT)) == 2


async def test_tickets_carry_agent_urls_and_typed_fields(fake: ZendeskFake) -> None:
    """A ticket has the agent URL, its status, tags and custom fields with their JSON types."""
    record = fake.tickets[4]
    record.update(subject="", raw_subject="", status="open")
    options = options_for(fake, custom_fields={"team": TEAM_FIELD, "amount": AMOUNT_FIELD})
    adapter = ZendeskAdapter(ZendeskAdapter.Config.model_validate(options))
    try:
        tickets = {t.id: t for t in await listing(adapter)}
    finally:
        await adapter.aclose()
    ticket = tickets["4"]
    assert ticket.title == "Zendesk ticket #4"  # an empty subject still makes a title
    assert ticket.url == f"{fake.url}/agent/tickets/4"
    assert ticket.due_at is not None and ticket.updated_at is not None
    assert ticket.fields["status"] == "open"
    assert ticket.fields["tags"] == ["payments", "tier_1"]
    assert ticket.fields["requester_id"] == 7004
    assert ticket.fields["amount"] == 40
    assert ticket.fields["team"] is None
    assert tickets["1"].fields["team"] == "kyc"


async def test_changes_resume_from_the_stored_cursor(fake: ZendeskFake) -> None:
    """Incremental polls walk the export's pages and a new adapter resumes from the cursor."""
    options = ZendeskAdapter.Config.model_validate(options_for(fake))
    first = ZendeskAdapter(options)
    start = await first.changes_since(None)
    assert start.cursor is not None and start.cursor.startswith("start:")
    assert start.tickets == ()
    fake.advance(120)
    for n in range(1, 61):
        fake.change(str(n))
    fake.advance(61)
    polled = await first.changes_since(start.cursor)
    await first.aclose()
    assert set(by_id(polled)) == {str(n) for n in range(1, 61)}
    assert len(fake.hits(FEED)) == 3  # 60 changes at 25 a page
    assert polled.cursor is not None and polled.cursor.startswith("cursor:")

    fake.change("100")
    fake.advance(61)
    resumed = ZendeskAdapter(options)
    try:
        later = await resumed.changes_since(polled.cursor)
    finally:
        await resumed.aclose()
    assert set(by_id(later)) == {"100"}


async def test_solved_and_deleted_tickets_come_back_closed(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    """A solve and a delete are reported as closed tickets by the next poll."""
    start = await adapter.changes_since(None)
    fake.close("1")
    fake.delete("2")
    fake.change("3")
    fake.advance(61)
    changes = by_id(await adapter.changes_since(start.cursor))
    assert changes["1"].is_open is False
    assert changes["2"].is_open is False
    assert changes["2"].fields["status"] == "deleted"
    assert changes["3"].is_open is True
    assert "2" not in {t.id for t in await listing(adapter)}


async def test_the_last_minute_is_picked_up_by_the_next_poll(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    """A change younger than a minute is held back by Zendesk and returned once it is older."""
    start = await adapter.changes_since(None)
    fake.advance(30)
    fake.change("1")
    fake.advance(10)
    early = await adapter.changes_since(start.cursor)
    assert early.tickets == ()
    assert early.cursor == start.cursor  # an empty export gives no cursor: start_time is kept
    fake.advance(60)
    late = await adapter.changes_since(early.cursor)
    assert set(by_id(late)) == {"1"}


async def test_bad_token_fails_check_with_the_vendor_message(fake: ZendeskFake) -> None:
    """A wrong token makes check() raise AdapterAuthError quoting Zendesk, without the token."""
    options = options_for(fake, api_token="wrong-token-0000")
    adapter = ZendeskAdapter(ZendeskAdapter.Config.model_validate(options))
    try:
        with pytest.raises(AdapterAuthError, match="Couldn't authenticate you") as caught:
            await adapter.check()
    finally:
        await adapter.aclose()
    assert "401" in str(caught.value)
    assert "wrong-token-0000" not in str(caught.value)


async def test_anonymous_answer_fails_check(fake: ZendeskFake) -> None:
    """The token with another agent's email gets the anonymous user: check() raises auth."""
    options = options_for(fake, email="someone.else@acme.example")
    adapter = ZendeskAdapter(ZendeskAdapter.Config.model_validate(options))
    try:
        with pytest.raises(AdapterAuthError, match="anonymous"):
            await adapter.check()
    finally:
        await adapter.aclose()


async def test_unknown_account_is_a_config_error(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    """An account that does not exist (404 page) makes check() raise AdapterConfigError."""
    fake.exists = False
    with pytest.raises(AdapterConfigError, match=r"no longer exists.*subdomain"):
        await adapter.check()


async def test_429_is_retried_after_retry_after(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    """A 429 on the change feed is waited out for its Retry-After, then the poll completes."""
    start = await adapter.changes_since(None)
    fake.change("5")
    fake.advance(61)
    fake.rate_limit_next(1)
    began = time.monotonic()
    changes = await adapter.changes_since(start.cursor)
    assert time.monotonic() - began >= 1.0
    assert "5" in by_id(changes)
    assert [h.status for h in fake.hits(FEED)] == [429, 200]


def test_options_need_exactly_one_site() -> None:
    """Options name the account by subdomain or base_url, not both and not neither."""
    base = {"email": EMAIL, "api_token": TOKEN}
    ZendeskAdapter.Config.model_validate({**base, "subdomain": "acme"})
    for wrong in ({}, {"subdomain": "acme", "base_url": "https://x.example"}):
        with pytest.raises(ValueError, match="exactly one"):
            ZendeskAdapter.Config.model_validate({**base, **wrong})


async def test_cycles_keep_fragment_equal_to_the_open_tickets(
    workspace: Workspace, fake: ZendeskFake
) -> None:
    """A full cycle creates a task per open ticket; a poll applies an edit, a solve, a delete."""
    options = options_for(fake)
    workspace.write_config(sources=[{"name": "support", "adapter": "zendesk", "options": options}])
    adapter = ZendeskAdapter(ZendeskAdapter.Config.model_validate(options))
    try:
        report = await cycle(workspace, adapter)
        assert report.ok and report.plan is not None
        assert len(report.plan.actions) == len(fake.open_ids()) == 80
        await cycle(workspace, adapter, CycleKind.INCREMENTAL)  # takes the feed's starting cursor
        fake.advance(5)
        fake.change("1")
        fake.close("2")
        fake.delete("3")
        fake.advance(61)
        report = await cycle(workspace, adapter, CycleKind.INCREMENTAL)
        assert report.ok, report.error
    finally:
        await adapter.aclose()
    tasks = {t["fields"]["fc_ticket_id"]: t for t in workspace.tasks().values()}
    assert tasks["1"]["fields"]["title"].endswith("(updated)")
    assert tasks["1"]["fields"]["url"] == f"{fake.url}/agent/tickets/1"
    assert tasks["2"]["status"] == tasks["3"]["status"] == "DONE"
    open_tasks = {i for i, t in tasks.items() if t["status"] != "DONE"}
    assert open_tasks == fake.open_ids()
