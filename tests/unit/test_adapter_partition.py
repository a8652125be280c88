"""adapters.partition: windows split in two until each is under a search's cap, or the listing
fails; never a short one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.base import AdapterDataError
from adapters.partition import IdRange, ResultsCapped, TimeWindow, partitioned

CAP = 10


async def collect(records: AsyncIterator[Any], into: list[Any]) -> list[Any]:
    """Append every record to `into` (to see, after an error, what was yielded)."""
    async for record in records:
        into.append(record)
    return into


def id_search(ids: list[int], seen: list[IdRange]) -> Any:
    """A search over `ids` answering at most CAP results a query (ResultsCapped past it)."""

    async def search(window: IdRange) -> AsyncIterator[int]:
        seen.append(window)
        matches = [i for i in ids if window.low <= i < window.high]
        for i in matches[:CAP]:
            yield i  # a capped search may hand out records before it says it is capped
        if len(matches) > CAP:
            raise ResultsCapped(f"{len(matches)} results", total=len(matches), cap=CAP)

    return search


async def test_windows_over_the_cap_are_split_until_complete() -> None:
    """95 ids over a cap of 10: every id once, in order, from windows each under the cap."""
    ids = sorted({(n * 37) % 1000 for n in range(95)})
    seen: list[IdRange] = []
    listed: list[IdRange] = []
    got = [
        i
        async for i in partitioned(id_search(ids, seen), IdRange(0, 1000), on_window=listed.append)
    ]
    assert got == ids
    assert all(len([i for i in ids if w.low <= i < w.high]) <= CAP for w in listed)
    assert len(seen) > len(listed) > 95 // CAP  # the capped windows were asked, then split


async def test_a_window_that_cannot_be_split_fails_the_listing() -> None:
    """More results than the cap in one second: AdapterDataError, and nothing yielded."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)

    async def search(window: TimeWindow) -> AsyncIterator[datetime]:
        if window.start <= moment < window.end:
            raise ResultsCapped("40 results", total=40, cap=CAP)
        return
        yield

    whole = TimeWindow(moment - timedelta(days=1), moment + timedelta(days=1))
    got: list[Any] = []
    with pytest.raises(AdapterDataError, match="cannot be split further") as caught:
        await collect(partitioned(search, whole), got)
    assert "created [2026-01-01T00:00:00+00:00, 2026-01-01T00:00:01+00:00)" in str(caught.value)
    assert got == []


async def test_max_windows_bounds_the_queries() -> None:
    """A search that is always capped cannot make partitioning run forever."""
    queries = 0

    async def search(window: IdRange) -> AsyncIterator[int]:
        nonlocal queries
        queries += 1
        raise ResultsCapped("always")
        yield

    with pytest.raises(AdapterDataError, match="max_windows=20"):
        await collect(partitioned(search, IdRange(0, 2**40), max_windows=20), [])
    assert queries == 20


def test_windows_split_without_overlap_on_their_resolution() -> None:
    """Halves cover the window exactly; a time window splits on whole resolution steps."""
    assert IdRange(0, 10).split() == (IdRange(0, 5), IdRange(5, 10))
    assert IdRange(7, 8).split() is None
    start = datetime(2026, 1, 1, tzinfo=UTC)
    window = TimeWindow(start, start + timedelta(days=3), timedelta(days=1))
    assert window.split() == (
        TimeWindow(start, start + timedelta(days=1), timedelta(days=1)),
        TimeWindow(start + timedelta(days=1), start + timedelta(days=3), timedelta(days=1)),
    )
    assert TimeWindow(start, start + timedelta(seconds=1)).split() is None
    with pytest.raises(ValueError, match="empty"):
        IdRange(5, 5)
    with pytest.raises(ValueError, match="empty"):
        TimeWindow(start, start)
