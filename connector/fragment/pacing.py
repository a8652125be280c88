"""A token bucket that keeps the client under Fragment's request rate (60 per minute by default).

Every request, reads and retries included, takes one token; tokens refill continuously at
`rate_per_minute / 60` per second up to `burst`. Waiting here is cheaper than a 429, which
Fragment may count against the account.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from connector.clock import SYSTEM_CLOCK, Clock


class Pacer(Protocol):
    """What the client awaits before every request: this process's bucket, or the account's
    budget shared through the state database (`connector.budget`)."""

    async def acquire(self) -> None:
        """Wait until a request may be sent, then take its slot."""


class TokenBucket:
    """Async pacing: `await bucket.acquire()` before each request."""

    def __init__(
        self,
        rate_per_minute: float,
        *,
        burst: int = 5,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if rate_per_minute <= 0 or burst < 1:
            raise ValueError("rate_per_minute must be > 0 and burst >= 1")
        self._rate = rate_per_minute / 60.0
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        # Read at the first request: a bucket made before the event loop runs would otherwise
        # mix two clocks (the loop's and the process's) under a fast-forwarded test loop.
        self._updated: float | None = None
        self._lock = asyncio.Lock()
        self.waited = 0.0

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if self._updated is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    async def acquire(self) -> None:
        """Wait until a request may be sent, then take its token."""
        async with self._lock:
            self._refill()
            # Take the token now, in debt if need be, and sleep the debt off: one sleep, exactly
            # the time the refill needs (re-checking after it could spin on a rounding error,
            # 0.9999999999999998 tokens, with a fast-forwarded clock); the next refill
            # counts from here.
            self._tokens -= 1.0
            if self._tokens < 0:
                delay = -self._tokens / self._rate
                self.waited += delay
                await self._clock.sleep(delay)
