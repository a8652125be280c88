"""The hubspot adapter against a fake HubSpot account over real sockets, and in a real cycle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from adapters.base import (
    AdapterAuthError,
    AdapterConfigError,
    ChangeSet,
    InvalidRecord,
    Ticket,
)
from adapters.hubspot import HubSpotAdapter
from adapters.testing import AdapterConformance
from connector.models import CycleKind
from tests.conftest import Workspace
from tests.conftest import source_cycle as cycle
from tests.fakes.hubspot import ESCALATIONS, PORTAL_ID, TOKEN, HubSpotFake, ticket_id

SEARCH = "/crm/v3/objects/tickets/search"
PIPELINES = "/crm/v3/pipelines/tickets"


def options_for(fake: HubSpotFake, **extra: Any) -> dict[str, Any]:
    """Options pointing at `fake`: small pages, no pacing, short retries (tests stay fast)."""
    return {
        "base_url": fake.url,
        "token": TOKEN,
        "page_size": 20,
        "search_requests_per_second": 1000,
        "retry": {"attempts": 2, "deadline": 5},
        **extra,
    }


def make(fake: HubSpotFake, **extra: Any) -> HubSpotAdapter:
    """An adapter for `fake`."""
    return HubSpotAdapter(HubSpotAdapter.Config.model_validate(options_for(fake, **extra)))


@pytest.fixture
def fake() -> Iterator[HubSpotFake]:
    """A fake account of 130 tickets last changed an hour ago."""
    with HubSpotFake() as server:
        server.advance(3600)
        yield server


@pytest.fixture
async def adapter(fake: HubSpotFake) -> AsyncIterator[HubSpotAdapter]:
    """An adapter for `fake`."""
    instance = make(fake)
    yield instance
    await instance.aclose()


async def listing(adapter: HubSpotAdapter) -> list[Ticket]:
    """The snapshot's tickets; fails on an invalid record."""
    items = [item async for item in adapter.list_open()]
    assert not [i for i in items if isinstance(i, InvalidRecord)]
    return [i for i in items if isinstance(i, Ticket)]


def by_id(changes: ChangeSet) -> dict[str, Ticket]:
    """The tickets of a change set by id."""
    return {t.id: t for t in changes.tickets}


class TestHubSpotConformance(AdapterConformance):
    """The conformance kit, over an account of tickets in two pipelines."""

    adapter_class = HubSpotAdapter

    @pytest.fixture
    def backoffice(self) -> Iterator[HubSpotFake]:
        with HubSpotFake() as server:
            yield server

    @pytest.fixture
    def options(self, backoffice: HubSpotFake) -> dict[str, Any]:
        return options_for(backoffice)

    @pytest.fixture
    def bad_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {**options, "token": "pat-na1-not-the-right-token"}


async def test_listing_pages_by_id_past_the_search_cap() -> None:
    """With a cap of 30 results per search, 95 open tickets are listed whole, by key."""
    with HubSpotFake(cap=30) as fake:
        adapter = make(fake)
        try:
            tickets = await listing(adapter)
        finally:
            await adapter.aclose()
        assert {t.id for t in tickets} == fake.open_ids()
        assert len(tickets) == 95
        # Ids cross from 5 to 6 digits: the order and the bound are numeric, not textual.
        ids = [int(t.id) for t in tickets]
        assert ids == sorted(ids) and ids[0] < 100_000 < ids[-1]
        hits = fake.hits(SEARCH)
        assert [h.status for h in hits] == [200] * 5  # 95 at 20 a page
        bodies = fake.search_bodies
        assert all("after" not in b for b in bodies)
        bounds = [f for f in bodies[1]["filterGroups"][0]["filters"] if f["operator"] == "GT"]
        assert bounds == [
            {"propertyName": "hs_object_id", "operator": "GT", "value": tickets[19].id}
        ]


def test_the_fake_refuses_offsets_past_its_cap() -> None:
    """Paging search by `after` past the cap is a 400, as HubSpot answers past 10,000."""
    with HubSpotFake(cap=30) as fake:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx.post(
            f"{fake.url}{SEARCH}", json={"limit": 20, "after": "20"}, headers=headers
        )
        assert answer.status_code == 200 and "paging" in answer.json()
        assert answer.json()["paging"]["next"]["after"] == "40"
        refused = httpx.post(
            f"{fake.url}{SEARCH}", json={"limit": 20, "after": "40"}, headers=headers
        )
        assert refused.status_code == 400
        too_big = httpx.post(f"{fake.url}{SEARCH}", json={"limit": 201}, headers=headers)
        assert too_big.status_code == 400


async def test_tickets_carry_links_labels_and_properties(fake: HubSpotFake) -> None:
    """A ticket links to the account's UI, names its stage, and carries mapped properties."""
    adapter = make(fake, properties={"team": "support_team", "nope": "no_such_property"})
    try:
        tickets = {t.id: t for t in await listing(adapter)}
    finally:
        await adapter.aclose()
    first = tickets[str(ticket_id(1))]
    assert first.url == f"https://app.hubspot.com/contacts/{PORTAL_ID}/ticket/{ticket_id(1)}"
    assert first.title == "Refund not received for order #1"
    assert first.fields["stage"] == "Waiting on contact"
    assert first.fields["pipeline"] == "Support Pipeline"
    assert first.fields["stage_id"] == "2"
    assert first.fields["team"] == "kyc"
    assert first.fields["nope"] is None
    assert first.fields["owner_id"] == "51001"
    assert first.updated_at == fake.tickets[ticket_id(1)]["hs_lastmodifieddate"]
    # Ticket 34 has no subject (n % 17 == 0): its title falls back to its id.
    assert tickets[str(ticket_id(34))].title == f"HubSpot ticket #{ticket_id(34)}"


async def test_links_need_the_account_id(fake: HubSpotFake) -> None:
    """Without access to the account details tickets have no link; `portal_id` gives one."""
    fake.account_details = False
    unlinked = make(fake)
    linked = make(fake, portal_id=1234, ui_domain="app-eu1.hubspot.com")
    try:
        await unlinked.check()
        assert all(t.url is None for t in await listing(unlinked))
        urls = {t.url for t in await listing(linked)}
    finally:
        await unlinked.aclose()
        await linked.aclose()
    assert f"https://app-eu1.hubspot.com/contacts/1234/ticket/{ticket_id(1)}" in urls


async def test_pipelines_limit_the_listing_and_an_unknown_one_fails_check(
    fake: HubSpotFake,
) -> None:
    """`pipelines` narrows the listing to their open stages; an unknown id is a config error."""
    adapter = make(fake, pipelines=[ESCALATIONS])
    try:
        tickets = await listing(adapter)
    finally:
        await adapter.aclose()
    assert tickets and {t.fields["pipeline"] for t in tickets} == {"Escalations"}
    assert len(tickets) == 17
    wrong = make(fake, pipelines=["999"])
    try:
        with pytest.raises(
            AdapterConfigError, match=r"unknown ticket pipeline.*'999'.*Escalations"
        ):
            await wrong.check()
    finally:
        await wrong.aclose()


async def test_changes_resume_from_the_stored_cursor(fake: HubSpotFake) -> None:
    """A poll sees an edit and a move to a closed stage; a new adapter resumes from its cursor."""
    first = make(fake)
    start = await first.changes_since(None)
    assert start.tickets == ()
    assert start.cursor == str(fake.clock.epoch * 1000)
    fake.advance(300)
    edited, closed = str(ticket_id(1)), str(ticket_id(2))
    fake.change(edited)
    fake.close(closed)
    fake.advance(120)
    polled = await first.changes_since(start.cursor)
    await first.aclose()
    assert set(by_id(polled)) == {edited, closed}
    assert by_id(polled)[edited].is_open is True
    assert by_id(polled)[edited].title.endswith("(updated)")
    assert by_id(polled)[closed].is_open is False
    assert by_id(polled)[closed].fields["stage"] == "Closed"
    since = fake.search_bodies[-1]["filterGroups"][0]["filters"][0]
    # From the previous poll's clock, less the 1-minute overlap, in epoch ms.
    assert since == {
        "propertyName": "hs_lastmodifieddate",
        "operator": "GTE",
        "value": str(int(start.cursor) - 60_000),
    }

    fake.advance(3600)
    later = str(ticket_id(4))
    fake.change(later)
    fake.advance(120)
    resumed = make(fake)
    try:
        after = await resumed.changes_since(polled.cursor)
        fake.advance(120)
        again = await resumed.changes_since(after.cursor)
    finally:
        await resumed.aclose()
    assert set(by_id(after)) == {later}
    # The cursor moved to the poll's clock: the next poll reaches back only the overlap.
    assert again.tickets == ()


async def test_polls_follow_only_the_configured_pipelines(fake: HubSpotFake) -> None:
    """With `pipelines`, a poll does not report tickets of other pipelines."""
    adapter = make(fake, pipelines=[ESCALATIONS])
    try:
        start = await adapter.changes_since(None)
        fake.advance(60)
        fake.change(str(ticket_id(1)))  # Support Pipeline
        fake.change(str(ticket_id(5)))  # Escalations
        changes = await adapter.changes_since(start.cursor)
    finally:
        await adapter.aclose()
    assert set(by_id(changes)) == {str(ticket_id(5))}


async def test_bad_token_fails_check_with_a_clear_message(fake: HubSpotFake) -> None:
    """A wrong token makes check() raise AdapterAuthError saying HubSpot refused it."""
    adapter = make(fake, token="pat-na1-wrong-0000")
    try:
        with pytest.raises(
            AdapterAuthError, match=r"HubSpot refused the token.*401.*private app access token"
        ):
            await adapter.check()
    finally:
        await adapter.aclose()


async def test_a_token_without_the_tickets_scope_fails_check(fake: HubSpotFake) -> None:
    """A token lacking the `tickets` scope gets HubSpot's 403 MISSING_SCOPES, named."""
    fake.scopes = set()
    adapter = make(fake)
    try:
        with pytest.raises(AdapterAuthError, match=r"403.*required scopes.*`tickets` scope"):
            await adapter.check()
    finally:
        await adapter.aclose()


async def test_429_is_retried_after_the_rolling_window(fake: HubSpotFake) -> None:
    """A TEN_SECONDLY_ROLLING 429 with none remaining waits out its interval, then succeeds."""
    fake.interval_ms = 1500
    adapter = make(fake)
    fake.rate_limit_next(1)
    began = time.monotonic()
    try:
        tickets = await listing(adapter)
    finally:
        await adapter.aclose()
    assert time.monotonic() - began >= 1.5
    assert {t.id for t in tickets} == fake.open_ids()
    assert [h.status for h in fake.hits(PIPELINES)] == [429, 200]


async def test_search_is_paced_under_its_own_limit() -> None:
    """Past 2 searches a second HubSpot answers SECONDLY 429s: waited out, or avoided by pacing."""
    with HubSpotFake(tickets=60, search_per_second=2) as fake:
        unpaced = make(fake)
        try:
            assert {t.id for t in await listing(unpaced)} == fake.open_ids()
        finally:
            await unpaced.aclose()
        assert [h.status for h in fake.hits(SEARCH)] == [200, 200, 429, 200]
    with HubSpotFake(tickets=60, search_per_second=2) as fake:
        paced = make(fake, search_requests_per_second=1.5)
        try:
            assert {t.id for t in await listing(paced)} == fake.open_ids()
        finally:
            await paced.aclose()
        assert [h.status for h in fake.hits(SEARCH)] == [200, 200, 200]


async def test_cycles_keep_fragment_equal_to_the_open_tickets(
    workspace: Workspace, fake: HubSpotFake
) -> None:
    """A cycle creates a task per open ticket; a poll closes a moved one, a refresh a deleted."""
    options = options_for(fake)
    workspace.write_config(sources=[{"name": "support", "adapter": "hubspot", "options": options}])
    adapter = HubSpotAdapter(HubSpotAdapter.Config.model_validate(options))
    edited, closed, deleted = str(ticket_id(1)), str(ticket_id(2)), str(ticket_id(4))
    try:
        report = await cycle(workspace, adapter)
        assert report.ok and report.plan is not None
        assert len(report.plan.actions) == len(fake.open_ids()) == 95
        await cycle(workspace, adapter, CycleKind.INCREMENTAL)
        fake.advance(300)
        fake.change(edited)
        fake.close(closed)
        fake.archive(deleted)
        report = await cycle(workspace, adapter, CycleKind.INCREMENTAL)
        assert report.ok, report.error
        tasks = {t["fields"]["fc_ticket_id"]: t for t in workspace.tasks().values()}
        assert tasks[edited]["fields"]["title"].endswith("(updated)")
        assert tasks[closed]["status"] == "DONE"
        # Search never shows a deleted ticket: polls cannot see it go, the full refresh does.
        assert tasks[deleted]["status"] != "DONE"
        report = await cycle(workspace, adapter)
        assert report.ok, report.error
    finally:
        await adapter.aclose()
    tasks = {t["fields"]["fc_ticket_id"]: t for t in workspace.tasks().values()}
    assert tasks[deleted]["status"] == "DONE"
    assert tasks[edited]["fields"]["url"].endswith(f"/contacts/{PORTAL_ID}/ticket/{edited}")
    assert {i for i, t in tasks.items() if t["status"] != "DONE"} == fake.open_ids()
