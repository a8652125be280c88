"""HubSpot's search pacing, on an injected clock: the waits it asks for, none waited for real."""

from __future__ import annotations

import httpx
import pytest

from adapters.hubspot import PacedTransport
from tests.clock import FakeClock

SEARCH = "/crm/v3/objects/tickets/search"
PIPELINES = "/crm/v3/pipelines/tickets"


async def test_searches_are_spaced_by_the_interval_and_other_requests_are_not() -> None:
    """Requests to a `/search` path go `interval` apart, waiting only what is left of it; any
    other request goes at once."""
    clock = FakeClock()
    sent: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, clock.monotonic()))
        return httpx.Response(200, json={})

    transport = PacedTransport(httpx.MockTransport(handler), interval=0.5, clock=clock)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        await client.post(SEARCH)
        await client.get(PIPELINES)
        await client.post(SEARCH)
        clock.advance(0.2)
        await client.get(PIPELINES)
        await client.post(SEARCH)
    assert clock.slept == pytest.approx([0.5, 0.3])
    assert [path for path, _ in sent] == [SEARCH, PIPELINES, SEARCH, PIPELINES, SEARCH]
    assert [at for _, at in sent] == pytest.approx([100.0, 100.0, 100.5, 100.7, 101.0])
