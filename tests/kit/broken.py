"""Deliberately broken variants of the example adapters (Helpdesk, Searchdesk): each must fail
the kit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from adapters.base import AdapterAuthError, AdapterUnavailable, ChangeSet, InvalidRecord, Ticket
from adapters.http import PageNumber, get_json, paginate
from fc_helpdesk import HelpdeskAdapter
from fc_searchdesk import SearchdeskAdapter


class DuplicateIds(HelpdeskAdapter):
    """Yields its first ticket twice (overlapping pages)."""

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        first = None
        async for item in super().list_open():
            first = first or item
            yield item
        if first is not None:
            yield first


class LostPage(HelpdeskAdapter):
    """Stops after the first page, as if it misread the page signal."""

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        body = await get_json(
            self.client,
            "tickets",
            params={"status": ["open", "pending"], "per_page": self.options.per_page},
        )
        for n, record in enumerate(body["tickets"]):
            yield self.mapper.map(record, f"ticket {n}")


class RepeatedPageToken(HelpdeskAdapter):
    """Hand-rolled paging that asks for the same page again and again."""

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        while True:  # the bug: the page parameter never advances
            body = await get_json(
                self.client, "tickets", params={"page": 1, "per_page": self.options.per_page}
            )
            for n, record in enumerate(body["tickets"]):
                yield self.mapper.map(record, f"ticket {n}")
            if body.get("next_page") is None:
                return


class NonMonotonicCursor(HelpdeskAdapter):
    """Returns the cursor it was given: every poll starts from the beginning again."""

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        changes = await super().changes_since(cursor)
        return ChangeSet(tickets=changes.tickets, cursor=cursor or changes.cursor)


class WrongAuthError(HelpdeskAdapter):
    """Reports refused credentials as an outage."""

    async def check(self) -> None:
        try:
            await super().check()
        except Exception as exc:
            raise AdapterUnavailable(f"helpdesk is down: {exc}") from None

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        try:
            async for item in super().list_open():
                yield item
        except Exception as exc:
            raise AdapterUnavailable(f"helpdesk is down: {exc}") from None


class SecretInError(HelpdeskAdapter):
    """Puts its token in an error message."""

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        token = self.options.token.get_secret_value()
        try:
            async for item in super().list_open():
                yield item
        except Exception as exc:
            raise type(exc)(f"listing with token {token} failed: {exc}") from None


class SecretInCheckError(HelpdeskAdapter):
    """Puts its token in the error of check() (list_open() is clean)."""

    async def check(self) -> None:
        try:
            await super().check()
        except AdapterAuthError:
            token = self.options.token.get_secret_value()
            raise AdapterAuthError(f"helpdesk refused token {token}") from None


class SecretInChangesError(HelpdeskAdapter):
    """Puts its token in the error of changes_since() (check() and list_open() are clean)."""

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        try:
            return await super().changes_since(cursor)
        except Exception as exc:
            token = self.options.token.get_secret_value()
            raise type(exc)(f"polling with {token} failed") from None


class StopsAtCap(SearchdeskAdapter):
    """Searches once, without windows, and stops where the vendor's pages stop: past the cap
    the snapshot is silently short (the easy version of a capped search)."""

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        pages = paginate(
            self.client,
            "search/tickets",
            PageNumber(size_param=None, size=30),
            records=lambda body: body["results"],
            params={"status": ["open", "pending"]},
            policy=self.policy,
            max_pages=10,  # the vendor refuses page 11: stop before it
        )
        position = 0
        try:
            async for record in pages:
                position += 1
                yield self.mapper.map(record, f"ticket {position}")
        except Exception as exc:
            if "max_pages" not in str(exc):
                raise


def _nested(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = {"level": value}
    return value


class HostileTicket(HelpdeskAdapter):
    """Yields, after its tickets, one built by hand past the mapper that Fragment would refuse
    (or that is hostile): each subclass breaks one rule of `adapters.base.ticket_problem`."""

    hostile: ClassVar[Ticket] = Ticket(id="H-nul", title="a NUL \x00 in the title")

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        async for item in super().list_open():
            yield item
        yield self.hostile


class ControlCharacterInId(HostileTicket):
    hostile = Ticket(id="H-\x07bell", title="a bell in the id")


class TitleTooLong(HostileTicket):
    hostile = Ticket(id="H-long", title="x" * 1001)


class NestedTooDeep(HostileTicket):
    hostile = Ticket(id="H-deep", title="deep", fields={"payload": _nested(40)})
