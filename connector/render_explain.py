"""`explain`'s answer for people (a few labelled lines) and for programs (a versioned document).

`Reconciler.explain` builds the `Explanation`; this module only draws it. The JSON document is
version 1 of docs/output.md (fields are only ever added); the text quotes the back-office and
Fragment, so every line goes through `visible` (no control character reaches the terminal).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import IO

from connector.models import Explanation, InvalidRecord, JSONValue, Ticket
from connector.printable import visible

EXPLAIN_VERSION = 1


def _timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _ticket_json(ticket: Ticket) -> dict[str, JSONValue]:
    return {
        "id": ticket.id,
        "title": ticket.title,
        "url": ticket.url,
        "fields": dict(ticket.fields),
        "updated_at": _timestamp(ticket.updated_at),
        "is_open": ticket.is_open,
        "due_at": _timestamp(ticket.due_at),
        "assignee_email": ticket.assignee_email,
    }


def _record_json(record: InvalidRecord) -> dict[str, JSONValue]:
    return {"position": record.position, "reason": record.reason, "ticket_id": record.ticket_id}


def explain_json(found: Explanation) -> dict[str, JSONValue]:
    """The explanation as the documented JSON document."""
    task, index = found.task, found.index
    return {
        "version": EXPLAIN_VERSION,
        "source": found.source,
        "ticket_id": found.ticket_id,
        "uid": found.uid,
        "ticket": None if found.ticket is None else _ticket_json(found.ticket),
        "invalid_records": [_record_json(r) for r in found.invalid_records],
        "snapshot_complete": found.snapshot_complete,
        "task": None
        if task is None
        else {
            "status": task.status.value,
            "fields": dict(task.fields),
            "updated_at": _timestamp(task.updated_at),
            "owned": task.owned,
        },
        "index": None
        if index is None
        else {
            "status": index.status.value if index.status else "unknown",
            "closed_by_connector": index.closed_by_connector,
            "misses": index.misses,
        },
        "next_cycle": found.next_cycle,
        "write_back": found.write_back,
        "changes": {key: [old, new] for key, (old, new) in found.changes.items()},
    }


def write_explain_json(found: Explanation, out: IO[str]) -> None:
    """Print the JSON document, one line."""
    out.write(json.dumps(explain_json(found)) + "\n")


def explain_lines(found: Explanation) -> list[str]:
    """The explanation for a person, one labelled line per fact (control characters shown)."""
    ticket, task, index = found.ticket, found.task, found.index
    if ticket is not None:
        state = "open" if ticket.is_open else "closed"
        where = f"{state} in the back-office, title {ticket.title!r}"
    else:
        where = "not in the back-office's snapshot (solved, deleted, or never existed)"
    lines = [f"ticket   {found.source}/{found.ticket_id}: {where}"]
    lines += [f"         unreadable at {r.position}: {r.reason}" for r in found.invalid_records]
    lines.append(f"uid      {found.uid}")
    if task is None:
        lines.append("task     none in Fragment")
    else:
        by = f" (closed by {task.closed_by})" if task.closed_by else ""
        mine = "" if task.owned else " — NOT the connector's (markers do not match)"
        updated = _timestamp(task.updated_at)
        lines.append(f"task     {task.status.value}{by}, updated {updated}{mine}")
    if index is not None:
        status = index.status.value if index.status else "unknown"
        lines.append(f"index    last seen {status}, missing from {index.misses} snapshot(s)")
    if not found.snapshot_complete:
        lines.append(
            "snapshot incomplete this cycle (unreadable records): no closes for this source"
        )
    lines.append(f"next     {found.next_cycle}")
    lines += [f"         {key}: {old!r} → {new!r}" for key, (old, new) in found.changes.items()]
    lines.append(f"write    {found.write_back}")
    return [visible(line) for line in lines]


def write_explain_text(found: Explanation, out: IO[str]) -> None:
    """Print the explanation for a person."""
    out.writelines(line + "\n" for line in explain_lines(found))
