"""Past the search's cap: complete thanks to partitioning, or failing, never short."""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import AdapterDataError, Ticket
from fc_searchdesk import SearchdeskAdapter, SearchdeskOptions
from fc_searchdesk.fake import API_KEY, PAGE_SIZE, SearchdeskBackoffice


async def open_ids(fake: SearchdeskBackoffice) -> list[str]:
    adapter = SearchdeskAdapter(SearchdeskOptions(base_url=fake.url, api_key=API_KEY))
    try:
        return [t.id async for t in adapter.list_open() if isinstance(t, Ticket)]
    finally:
        await adapter.aclose()


def test_a_snapshot_holds_every_open_ticket_past_the_cap() -> None:
    """1,500 tickets (1,328 open, over 4 times the cap): every one, once, in few searches."""
    with SearchdeskBackoffice(tickets=1500) as fake:
        expected = fake.open_ids()
        assert len(expected) > 4 * 300
        ids = asyncio.run(open_ids(fake))
        assert len(ids) == len(set(ids)) == len(expected)
        assert set(ids) == expected
        # Every open ticket needs at least ceil(n / 30) pages; the splits add a few probes.
        pages = -(-len(expected) // PAGE_SIZE)
        assert pages <= fake.searches <= pages + 60, fake.searches


def test_a_burst_over_the_cap_in_one_second_fails_the_listing() -> None:
    """More tickets created in one second than a search answers: no split helps, so it fails."""
    # A bulk import: 450 tickets (398 open) created in the same second.
    with SearchdeskBackoffice(tickets=500, burst=450) as fake:
        with pytest.raises(AdapterDataError, match="cannot be split further") as caught:
            asyncio.run(open_ids(fake))
        assert "created [2025-06-01T00:00:00+00:00, 2025-06-01T00:00:01+00:00)" in str(caught.value)


def test_a_cap_the_adapter_does_not_know_fails_the_listing() -> None:
    """A vendor that caps lower than the adapter expects: the short page is caught, not taken."""
    with SearchdeskBackoffice(tickets=200) as fake:
        fake.cap_results(20)
        with pytest.raises(AdapterDataError, match="the listing would be short"):
            asyncio.run(open_ids(fake))
