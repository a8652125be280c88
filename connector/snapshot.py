"""Reading one source's snapshot: every ticket its adapter yields, checked, de-duplicated.

What the core accepts from any adapter, built-in or third-party, is decided here: a ticket whose
fields Fragment would refuse (empty or over-long title, values that are not JSON) or that is
hostile (control characters in its id, NUL characters, custom values nested too deep or too
large) is reported as an invalid record and skipped, its task kept; duplicate ids make the
snapshot incomplete (a sign of a pagination bug, so absence proves nothing this cycle), and any
exception from the adapter becomes a `SourceError`, so a broken adapter fails its source and never
the daemon.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from adapters.base import SourceAdapter
from connector.errors import SourceError
from connector.models import InvalidRecord, Ticket

log = structlog.get_logger(__name__)

MAX_TITLE = 1000
MAX_TICKET_ID = 255
# Bounds on one ticket's custom values: deeper or larger is a hostile or broken record, and
# would cost recursion (RecursionError) or memory further on.
MAX_FIELD_DEPTH = 32
MAX_FIELDS_SIZE = 256 * 1024  # characters of the fields as JSON
# C0 controls and DEL: no ticket id has them, and NUL is refused by PostgreSQL's text columns.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _depth_problem(fields: object) -> str | None:
    """Why these custom values are too deep or hold a NUL, walked without recursion."""
    stack: list[tuple[object, int]] = [(fields, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_FIELD_DEPTH:
            return f"a custom field is nested deeper than {MAX_FIELD_DEPTH} levels"
        if isinstance(value, str):
            if "\x00" in value:
                return "a custom field contains a NUL character"
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    return "a custom field name contains a NUL character"
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)
    return None


@dataclass
class Snapshot:
    """One source's tickets this cycle, and whether their absence may close tasks."""

    tickets: list[Ticket] = field(default_factory=list)
    invalid: list[InvalidRecord] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every record was identified once: absence from it then means closed."""
        return all(record.ticket_id is not None for record in self.invalid)

    @property
    def kept_ticket_ids(self) -> set[str]:
        """Tickets seen but unusable: their tasks stay as they are."""
        return {r.ticket_id for r in self.invalid if r.ticket_id is not None}


def ticket_problem(ticket: object) -> str | None:
    """Why a ticket cannot become a task, or None when it can."""
    if not isinstance(ticket, Ticket):
        return f"the adapter yielded a {type(ticket).__name__}, not a Ticket"
    if not isinstance(ticket.id, str) or not ticket.id or len(ticket.id) > MAX_TICKET_ID:
        return f"the ticket id must be text of 1 to {MAX_TICKET_ID} characters"
    if _CONTROL.search(ticket.id):
        return "the ticket id contains a control character"
    if not isinstance(ticket.title, str) or not ticket.title.strip():
        return "the title is empty"
    if len(ticket.title) > MAX_TITLE:
        return f"the title has {len(ticket.title)} characters; Fragment takes at most {MAX_TITLE}"
    if ticket.url is not None and not isinstance(ticket.url, str):
        return "the url is not text"
    texts = (ticket.title, ticket.url or "", ticket.assignee_email or "")
    if any("\x00" in text for text in texts if isinstance(text, str)):
        return "the title, url or assignee contains a NUL character"
    if not isinstance(ticket.fields, Mapping):
        return "the custom fields are not a mapping"
    problem = _depth_problem(ticket.fields)
    if problem:
        return problem
    try:
        size = len(json.dumps(dict(ticket.fields), allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        return f"a custom field is not a JSON value: {exc}"
    if size > MAX_FIELDS_SIZE:
        return f"the custom fields take {size} characters as JSON; at most {MAX_FIELDS_SIZE}"
    return None


async def read_snapshot(
    source: str, adapter: SourceAdapter, *, progress: Callable[[int], None] | None = None
) -> Snapshot:
    """Every ticket of a source; raises SourceError when the listing as a whole failed."""
    snapshot = Snapshot()
    first_seen: dict[str, int] = {}
    duplicates: set[str] = set()
    position = 0
    try:
        async for item in adapter.list_open():
            position += 1
            if isinstance(item, InvalidRecord):
                snapshot.invalid.append(item)
                continue
            problem = ticket_problem(item)
            if problem is not None:
                ticket_id = getattr(item, "id", None)
                ticket_id = ticket_id if isinstance(ticket_id, str) and ticket_id else None
                snapshot.invalid.append(InvalidRecord(f"record {position}", problem, ticket_id))
                continue
            if item.id in first_seen:
                duplicates.add(item.id)
                continue
            first_seen[item.id] = len(snapshot.tickets)
            snapshot.tickets.append(item)
            if progress is not None and position % 100 == 0:
                progress(position)
    except SourceError:
        raise
    except Exception as exc:
        log.exception("source.adapter_crashed", source=source)
        raise SourceError(f"adapter {type(adapter).__name__} failed: {exc!r}") from exc
    if progress is not None:
        progress(position)
    if duplicates:
        # Which copy is right is unknowable: keep neither, leave their tasks alone, close nothing.
        snapshot.tickets = [t for t in snapshot.tickets if t.id not in duplicates]
        for ticket_id in sorted(duplicates):
            snapshot.invalid.append(
                InvalidRecord("several records", "duplicate ticket id in one snapshot", ticket_id)
            )
        snapshot.invalid.append(
            InvalidRecord("snapshot", f"{len(duplicates)} ticket ids appeared more than once")
        )
    for record in snapshot.invalid:
        log.warning(
            "source.invalid_record",
            source=source,
            position=record.position,
            ticket_id=record.ticket_id,
            reason=record.reason,
        )
    return snapshot
