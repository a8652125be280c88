"""Reading a source: the one door between the cycle and an adapter's tickets.

A full cycle reads the source's snapshot (`read_snapshot`: every open ticket), an incremental one
what changed since its cursor (`read_changes`). Both hold each ticket to the contract's rules
(`adapters.base.ticket_problem`), report one that fails them as an invalid record (its task kept
as it is), and give every ticket kept its task's uid, computed here once per cycle: the
look-up, the plan and write-back read it from `uids`. Duplicate ids make a snapshot incomplete
(a sign of a pagination bug, so absence proves nothing this cycle); in a change set the last
state of a ticket counts. Any exception from the adapter becomes a `SourceError` here, so a
broken adapter fails its source and never the daemon.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import structlog

from adapters.base import SourceAdapter, SupportsChanges, ticket_problem
from connector.errors import SourceError
from connector.identity import task_uid
from connector.models import InvalidRecord, Ticket

log = structlog.get_logger(__name__)


@dataclass
class Snapshot:
    """One source's tickets this cycle, and whether their absence may close tasks."""

    tickets: list[Ticket] = field(default_factory=list)
    invalid: list[InvalidRecord] = field(default_factory=list)
    uids: dict[str, str] = field(default_factory=dict)  # ticket id -> its task's uid

    @property
    def complete(self) -> bool:
        """True when every record was identified once: absence from it then means closed."""
        return all(record.ticket_id is not None for record in self.invalid)

    @property
    def kept_ticket_ids(self) -> set[str]:
        """Tickets seen but unusable: their tasks stay as they are."""
        return {r.ticket_id for r in self.invalid if r.ticket_id is not None}


@dataclass
class Changes:
    """What changed in a source since a cursor: each ticket's last state, and the next cursor."""

    tickets: list[Ticket]
    invalid: list[InvalidRecord]
    uids: dict[str, str]  # ticket id -> its task's uid
    cursor: str | None


@contextlib.contextmanager
def _adapter_errors(source: str, adapter: object) -> Iterator[None]:
    """Whatever the adapter raises, as a SourceError (its own SourceErrors as they are)."""
    try:
        yield
    except SourceError:
        raise
    except Exception as exc:
        log.exception("source.adapter_crashed", source=source)
        raise SourceError(f"adapter {type(adapter).__name__} failed: {exc!r}") from exc


def _invalid(position: str, item: object, problem: str) -> InvalidRecord:
    """An item that broke the rules, with its id when that is usable text (its task is kept)."""
    ticket_id = getattr(item, "id", None)
    if not isinstance(ticket_id, str) or not ticket_id:
        ticket_id = None
    return InvalidRecord(position, problem, ticket_id)


def _log_invalid(source: str, invalid: list[InvalidRecord]) -> None:
    for record in invalid:
        log.warning(
            "source.invalid_record",
            source=source,
            position=record.position,
            ticket_id=record.ticket_id,
            reason=record.reason,
        )


async def read_snapshot(
    source: str,
    adapter: SourceAdapter,
    namespace: uuid.UUID,
    *,
    progress: Callable[[int], None] | None = None,
) -> Snapshot:
    """Every ticket of a source, with its uid; raises SourceError when the listing failed."""
    snapshot = Snapshot()
    duplicates: set[str] = set()
    position = 0
    with _adapter_errors(source, adapter):
        async for item in adapter.list_open():
            position += 1
            if isinstance(item, InvalidRecord):
                snapshot.invalid.append(item)
                continue
            problem = ticket_problem(item)
            if problem is not None:
                snapshot.invalid.append(_invalid(f"record {position}", item, problem))
                continue
            if item.id in snapshot.uids:
                duplicates.add(item.id)
                continue
            snapshot.uids[item.id] = task_uid(namespace, source, item.id)
            snapshot.tickets.append(item)
            if progress is not None and position % 100 == 0:
                progress(position)
    if progress is not None:
        progress(position)
    if duplicates:
        # Which copy is right is unknowable: keep neither, leave their tasks alone, close nothing.
        snapshot.tickets = [t for t in snapshot.tickets if t.id not in duplicates]
        for ticket_id in sorted(duplicates):
            del snapshot.uids[ticket_id]
            snapshot.invalid.append(
                InvalidRecord("several records", "duplicate ticket id in one snapshot", ticket_id)
            )
        snapshot.invalid.append(
            InvalidRecord("snapshot", f"{len(duplicates)} ticket ids appeared more than once")
        )
    _log_invalid(source, snapshot.invalid)
    return snapshot


async def read_changes(
    source: str,
    adapter: SupportsChanges,
    namespace: uuid.UUID,
    cursor: str | None,
    *,
    progress: Callable[[int], None] | None = None,
) -> Changes:
    """The tickets changed since `cursor`, with their uids; raises SourceError when it failed."""
    with _adapter_errors(source, adapter):
        changes = await adapter.changes_since(cursor)
    if progress is not None:
        progress(len(changes.tickets))
    latest: dict[str, Ticket] = {}
    invalid: list[InvalidRecord] = []
    for position, ticket in enumerate(changes.tickets, start=1):
        problem = ticket_problem(ticket)
        if problem is None:
            latest[ticket.id] = ticket  # a ticket changed twice: its last state counts
        else:
            invalid.append(_invalid(f"change {position}", ticket, problem))
    _log_invalid(source, invalid)
    return Changes(
        tickets=list(latest.values()),
        invalid=invalid,
        uids={ticket_id: task_uid(namespace, source, ticket_id) for ticket_id in latest},
        cursor=changes.cursor,
    )
