"""A `connector.clock.Clock` for tests: time moves only when the code sleeps or the test says so.

It keeps every sleep asked for, so a test asserts the waits the code chose (a heartbeat's
interval, a bucket's pacing), never the time that passed. Code whose waits are asyncio's own
(stamina's retries, `asyncio.timeout`) is tested under `looptime` instead, which fast-forwards
the event loop's clock that `SYSTEM_CLOCK` reads.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

WALL = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeClock:
    """Starts at `wall` (and 100.0 on the monotonic clock); `sleep` and `advance` move both."""

    def __init__(self, wall: datetime = WALL) -> None:
        self.start = wall
        self.elapsed = 0.0
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return 100.0 + self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)  # a real sleep lets other tasks run: so does this one

    def advance(self, seconds: float) -> None:
        """Move time forward (never back)."""
        self.elapsed += max(0.0, seconds)
