"""Time as a dependency: the one clock and sleep that pacing, retries, the mirror, leases, the
budget, progress and the scheduler read, injected so that tests choose what time it is.

`Clock` has three faces: `now()` (wall time, UTC: watermarks, run history, due checks),
`monotonic()` (durations and deadlines) and `sleep()`. The default, `SYSTEM_CLOCK`, reads the
running event loop's own clock for `monotonic()`: asyncio's timers (`asyncio.sleep`,
`asyncio.timeout`, the sleeps inside stamina's retries) are scheduled on that clock, so a
deadline computed here and a timeout armed there always agree; in production it is
`time.monotonic()`, and under `looptime` (the tests' fast-forwarded loop time, as kopf does) every
wait is compacted and still measured exactly. Tests inject their own clock where the code under
test has no event loop to fake, or where wall time matters (`now()`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Final, Protocol


class Clock(Protocol):
    """Wall time, a monotonic reading and a sleep: everything the connector asks of time."""

    def now(self) -> datetime:
        """The wall time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (0 or less: let other tasks run)."""


class SystemClock:
    """The real clock: the machine's UTC time, and the event loop's clock and timers."""

    def now(self) -> datetime:
        """`datetime.now(UTC)`."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """The running event loop's time (what its timers use); `time.monotonic()` outside one."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep`."""
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK: Final[Clock] = SystemClock()
