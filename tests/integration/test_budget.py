"""The request budget shared through PostgreSQL: evenly spaced slots across processes."""

from __future__ import annotations

import asyncio
import time
import uuid

from connector.budget import SharedBudget, account_key, pacer_for
from connector.clock import SYSTEM_CLOCK, Clock
from connector.fragment import TokenBucket
from tests.clock import FakeClock
from tests.conftest import POSTGRES_STATE_URL, require_server


def budget(
    account: str, rpm: float, url: str = POSTGRES_STATE_URL, *, clock: Clock = SYSTEM_CLOCK
) -> SharedBudget:
    return SharedBudget(
        url,
        account=account,
        requests_per_minute=rpm,
        local=TokenBucket(rpm, burst=1, clock=clock),
        clock=clock,
    )


async def test_two_budgets_of_one_account_share_its_rate() -> None:
    """Two processes' worth of requests at once: together they keep one account's spacing."""
    require_server("postgres_state", POSTGRES_STATE_URL)
    account = f"test-{uuid.uuid4().hex}"
    first, second = budget(account, 1200), budget(account, 1200)  # a slot every ~50 ms
    sent: list[float] = []

    async def send(pacer: SharedBudget, count: int) -> None:
        for _ in range(count):
            await pacer.acquire()
            sent.append(time.monotonic())

    try:
        began = time.monotonic()
        await asyncio.gather(send(first, 20), send(second, 20))
        took = time.monotonic() - began
    finally:
        await first.aclose()
        await second.aclose()
    assert len(sent) == 40
    # 40 slots 50 ms apart: at least 39 spacings, whoever took them (late ones take another).
    assert took >= 39 * 60 / 1199.5 - 0.01
    clock = FakeClock()
    other = budget(f"test-{uuid.uuid4().hex}", 1200, clock=clock)
    try:
        await other.acquire()
        assert clock.slept == []  # another account waits for no one
    finally:
        await other.aclose()


async def test_an_unreachable_database_leaves_the_process_pacing_alone() -> None:
    """No database: the local bucket paces, and the request is not refused."""
    pacer = budget("x", 600, url="postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    try:
        await pacer.acquire()
        await pacer.acquire()
    finally:
        await pacer.aclose()


def test_the_account_key_hides_the_token_and_sqlite_paces_locally() -> None:
    key = account_key("https://api.example/api/v1", "secret-token")
    assert "secret" not in key and len(key) == 32
    assert key != account_key("https://api.example/api/v1", "other-token")
    assert key == account_key("https://api.example/api/v1/", "secret-token")
    pacer, shared = pacer_for(
        "sqlite:///x.db", base_url="b", token="t", requests_per_minute=60, burst=5
    )
    assert isinstance(pacer, TokenBucket) and shared is None
