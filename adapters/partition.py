"""Listing everything from a search that answers at most N results: split it into windows.

Many back-office search APIs cap what one query can reach (Freshdesk: 10 pages of 30, so 300
results; Zendesk: 1,000; HubSpot: 10,000). A listing that pages through such a search until the
pages stop is silently short past the cap, and a short snapshot closes the tasks of the tickets
it missed. The cure is to ask several narrower queries, each under the cap: by id range or by
creation-time window (creation times and ids never change, so a ticket is in exactly one
window), splitting in two any window that is still over the cap::

    def search(window: TimeWindow) -> AsyncIterator[Any]:
        return paginate(client, "search/tickets", PageNumber(size=30, max_pages=10,
                        total=lambda body: body["total"]), records=lambda body: body["results"],
                        params={"query": f"status:open AND {window.start}..{window.end}"})

    async for record in partitioned(search, TimeWindow(since, now)):
        ...

`search(window)` lists one window and raises `ResultsCapped` when the window holds more than the
search answers: the bounded paginators of `adapters.http` (`PageNumber(max_pages=...)`,
`Offset(max_results=...)`, with `total=` when the answer gives a count) do that for you, on the
first page when they can read a total. `partitioned` then splits the window and lists the
halves; a window that cannot be split further (one id, one `resolution` of time) and is still
over the cap raises `AdapterDataError`: the listing fails rather than being short.

Each window's records are held until the window is complete (at most the cap of records), so
nothing from a window that turns out to be over the cap is ever yielded twice.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, Self, TypeVar

from adapters.base import AdapterDataError

__all__ = ["IdRange", "ResultsCapped", "TimeWindow", "Window", "partitioned"]


class ResultsCapped(AdapterDataError):
    """A query holds more results than the search answers: narrow it, or the listing is short.

    An AdapterDataError, so an adapter that does not partition fails its listing (never short).
    """

    def __init__(self, message: str, *, total: int | None = None, cap: int | None = None) -> None:
        super().__init__(message)
        self.total = total
        self.cap = cap


class Window(Protocol):
    """A part of a search's key space that can be split in two."""

    @property
    def label(self) -> str:
        """How to name the window in messages."""
        ...

    def split(self) -> tuple[Self, Self] | None:
        """Two windows that cover this one without overlap; None when it cannot be split."""
        ...


@dataclass(frozen=True, slots=True)
class IdRange:
    """Ids from `low` (included) to `high` (excluded): `id >= low AND id < high`."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if self.high <= self.low:
            raise ValueError(f"an empty id range: [{self.low}, {self.high})")

    @property
    def label(self) -> str:
        """e.g. "ids [1, 500)"."""
        return f"ids [{self.low}, {self.high})"

    def split(self) -> tuple[IdRange, IdRange] | None:
        """The lower and the upper half; None for a single id."""
        if self.high - self.low <= 1:
            return None
        middle = (self.low + self.high) // 2
        return IdRange(self.low, middle), IdRange(middle, self.high)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Creation times from `start` (included) to `end` (excluded), split on `resolution` steps.

    `resolution` is the finest the vendor's filter can tell apart (one second for most, one day
    for a search that filters by date): a window one step wide is not split further.
    """

    start: datetime
    end: datetime
    resolution: timedelta = field(default=timedelta(seconds=1))

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"an empty time window: [{self.start}, {self.end})")
        if self.resolution <= timedelta(0):
            raise ValueError("a time window's resolution must be positive")

    @property
    def label(self) -> str:
        """e.g. "created [2026-01-01T00:00:00+00:00, 2026-02-01T00:00:00+00:00)"."""
        return f"created [{self.start.isoformat()}, {self.end.isoformat()})"

    def split(self) -> tuple[TimeWindow, TimeWindow] | None:
        """Two halves meeting on a `resolution` step; None for a window one step wide."""
        steps = (self.end - self.start) // self.resolution
        if steps <= 1:
            return None
        middle = self.start + (steps // 2) * self.resolution
        return (
            TimeWindow(self.start, middle, self.resolution),
            TimeWindow(middle, self.end, self.resolution),
        )


W = TypeVar("W", bound=Window)


async def partitioned(
    search: Callable[[W], AsyncIterator[Any]],
    whole: W,
    *,
    max_windows: int = 10_000,
    on_window: Callable[[W], None] | None = None,
) -> AsyncGenerator[Any, None]:
    """Every record of `whole`, listed window by window in order, splitting capped windows.

    `search(window)` must raise `ResultsCapped` for a window over the search's cap. More than
    `max_windows` queries raise AdapterDataError (a vendor whose count never drops, or data far
    denser than the cap). `on_window` is told of every window that was listed completely.
    """
    pending: list[W] = [whole]
    queries = 0
    while pending:
        window = pending.pop()
        queries += 1
        if queries > max_windows:
            raise AdapterDataError(
                f"partitioning the search took more than max_windows={max_windows} queries"
            )
        try:
            # Held until the window is complete: a window found over the cap yields nothing.
            records = [record async for record in search(window)]
        except ResultsCapped as capped:
            halves = window.split()
            if halves is None:
                raise AdapterDataError(
                    f"{window.label} cannot be split further and is still over the search's "
                    f"cap ({capped}): the listing cannot be complete"
                ) from None
            pending.extend(reversed(halves))
            continue
        if on_window is not None:
            on_window(window)
        for record in records:
            yield record
