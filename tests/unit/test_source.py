"""Reading a source (connector/source.py): the rules, the uids, and one translation of crashes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from adapters.base import ChangeSet, InvalidRecord, SourceError, Ticket
from connector.identity import instance_namespace, task_uid
from connector.source import read_changes, read_snapshot

NS = instance_namespace("test")


class Listing:
    """An adapter in memory: `items`, then `error` (if any), from both entry points."""

    name: ClassVar[str] = "listing"
    Config: ClassVar[type[Any]] = dict

    def __init__(self, items: list[object], error: Exception | None = None) -> None:
        self.items = items
        self.error = error

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        for item in self.items:
            yield item  # hostile on purpose: not always a Ticket
        if self.error is not None:
            raise self.error

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        if self.error is not None:
            raise self.error
        return ChangeSet(tickets=tuple(self.items), cursor="next")

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


TOO_LONG = "the title has 1001 characters; Fragment takes at most 1000"
BAD = [
    Ticket(id="T-long", title="x" * 1001),
    Ticket(id="T-\x07", title="a bell in the id"),
    Ticket(id="T-nul", title="a NUL \x00 in the title"),
    "not a ticket",
]


async def test_a_snapshot_holds_each_valid_ticket_once_with_its_uid() -> None:
    """Valid tickets are kept with their task's uid; invalid ones are reported with the
    contract's reason and their id when it is text; the snapshot stays complete."""
    good = [Ticket(id="T-1", title="one"), Ticket(id="T-2", title="two", is_open=False)]
    snapshot = await read_snapshot("bo", Listing([*good, *BAD[:3]]), NS)
    assert snapshot.tickets == good
    assert snapshot.uids == {t.id: task_uid(NS, "bo", t.id) for t in good}
    assert [(r.position, r.ticket_id, r.reason) for r in snapshot.invalid] == [
        ("record 3", "T-long", TOO_LONG),
        ("record 4", "T-\x07", "the ticket id contains a control character"),
        ("record 5", "T-nul", "the title, url or assignee contains a NUL character"),
    ]
    assert snapshot.complete


async def test_an_item_that_is_not_a_ticket_makes_the_snapshot_incomplete() -> None:
    """Something else than a Ticket has no usable id: no closes for the source this cycle."""
    snapshot = await read_snapshot("bo", Listing([Ticket(id="T-1", title="one"), BAD[3]]), NS)
    (record,) = snapshot.invalid
    assert record == InvalidRecord("record 2", "the adapter yielded a str, not a Ticket")
    assert not snapshot.complete


async def test_duplicate_ids_keep_neither_copy_nor_its_uid() -> None:
    """A ticket id twice in one snapshot: neither copy is planned, its task is kept."""
    one, two = Ticket(id="T-1", title="one"), Ticket(id="T-2", title="two")
    snapshot = await read_snapshot("bo", Listing([one, two, one]), NS)
    assert snapshot.tickets == [two]
    assert set(snapshot.uids) == {"T-2"}
    assert snapshot.kept_ticket_ids == {"T-1"}
    assert not snapshot.complete


async def test_a_change_set_keeps_each_tickets_last_state_with_its_uid() -> None:
    """The same rules as a snapshot; a ticket changed twice counts in its last state."""
    first, last = Ticket(id="T-1", title="before"), Ticket(id="T-1", title="after")
    changes = await read_changes("bo", Listing([first, BAD[0], last]), NS, "cursor")
    assert changes.tickets == [last]
    assert changes.uids == {"T-1": task_uid(NS, "bo", "T-1")}
    assert changes.invalid == [InvalidRecord("change 2", TOO_LONG, "T-long")]
    assert changes.cursor == "next"


@pytest.mark.parametrize("error", [RuntimeError("plug-in bug"), KeyError("next_page")])
async def test_an_adapter_crash_is_the_same_source_error_from_both_entry_points(
    error: Exception,
) -> None:
    """Any exception from list_open() or changes_since() becomes one SourceError, worded once."""
    expected = f"adapter Listing failed: {error!r}"
    with pytest.raises(SourceError) as listing:
        await read_snapshot("bo", Listing([Ticket(id="T-1", title="one")], error), NS)
    with pytest.raises(SourceError) as polling:
        await read_changes("bo", Listing([], error), NS, None)
    assert str(listing.value) == str(polling.value) == expected
    assert listing.value.__cause__ is error and polling.value.__cause__ is error


async def test_an_adapters_own_source_error_passes_through() -> None:
    """A SourceError the adapter raised (auth, unavailable...) is not wrapped again."""
    refused = SourceError("the back-office refused the token")
    with pytest.raises(SourceError) as caught:
        await read_snapshot("bo", Listing([], refused), NS)
    assert caught.value is refused
