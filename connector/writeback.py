"""Write-back: an operator's DONE in Fragment closes (or comments) the ticket in the back-office.

Opt-in per source (`sources[].write_back`). Detection is pure (`find_write_backs`): a ticket the
snapshot still shows open whose task an operator moved to DONE (not the connector: its
`fc_closed_by` tells them apart) and that carries no write-back marker. The cycle finds those
tasks where it already looks (the delta listing of changed tasks feeds the index, the look-up of
open tickets without an open task reads them), so no extra listing is made.

Exactly once, across crashes and a lost state store: `perform_write_backs` re-reads the tasks
from Fragment first (the operator may have reopened one, a killed run may have marked it), asks
the adapter, and only once the back-office accepted records the marker field (when, ISO time) on
the task in Fragment, where no local state can lose it. A run killed between the two leaves a
ticket already closed, which the next snapshot no longer lists, and a second close would change
nothing anyway: adapters close idempotently (see `adapters.base.SupportsWriteBack`).
"""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime

import structlog

from adapters.base import SupportsWriteBack
from connector.config import WriteBackSection
from connector.errors import (
    FragmentAuthError,
    FragmentError,
    SourceError,
    TicketGone,
    WriteBackRejected,
)
from connector.fragment import FragmentClient
from connector.identity import Markers, closed_by_connector
from connector.models import (
    JSONValue,
    Task,
    TaskStatus,
    Ticket,
    WriteBack,
    WriteBackAction,
    WriteBackOutcome,
    WriteBackRequest,
)
from connector.values import format_timestamp

log = structlog.get_logger(__name__)

REASON_DONE = "an operator moved the task to DONE while the ticket is still open"

# Outcomes that mean the back-office accepted (the marker is then recorded on the task).
ACCEPTED = frozenset(
    {WriteBackOutcome.CLOSED, WriteBackOutcome.COMMENTED, WriteBackOutcome.ALREADY_CLOSED}
)
# Outcomes that make a cycle's exit code a failure.
FAILED = frozenset({WriteBackOutcome.GONE, WriteBackOutcome.REJECTED, WriteBackOutcome.FAILED})


def wants_write_back(task: Task, markers: Markers) -> bool:
    """Whether a task is an operator's DONE not yet written back (its ticket aside)."""
    return (
        task.status is TaskStatus.DONE
        and not closed_by_connector(task, markers)
        and not task.fields.get(markers.written_back)
    )


def write_back_note(template: str | None, task: Task, *, source: str, ticket_id: str) -> str | None:
    """The note of a write-back, from the source's `comment` template."""
    if template is None:
        return None
    title = task.fields.get("title")
    return string.Template(template).safe_substitute(
        title=title if isinstance(title, str) else "",
        ticket_id=ticket_id,
        done_at=format_timestamp(task.done_at) if task.done_at else "",
        uid=task.uid,
        source=source,
    )


def write_back_for(source: str, ticket_id: str, task: Task, config: WriteBackSection) -> WriteBack:
    """The write-back of one operator's DONE task."""
    title = task.fields.get("title")
    stamp = format_timestamp(task.done_at) if task.done_at else ""
    return WriteBack(
        uid=task.uid,
        source=source,
        request=WriteBackRequest(
            ticket_id=ticket_id,
            action=WriteBackAction(config.on_done),
            note=write_back_note(config.comment, task, source=source, ticket_id=ticket_id),
            # One DONE of one task: a reopened-then-DONE-again task would get a new key.
            key=f"fragment-connector:{task.uid}:{stamp}",
        ),
        reason=REASON_DONE,
        title=title if isinstance(title, str) else "",
    )


def find_write_backs(
    source: str,
    tickets: Iterable[Ticket],
    tasks: Mapping[str, Task],
    *,
    uid_of: Callable[[str], str],
    owned: Callable[[Task], str | None],
    markers: Markers,
    config: WriteBackSection,
) -> list[WriteBack]:
    """The write-backs a cycle should make: pure, from the snapshot's tickets and known tasks."""
    if not config.enabled:
        return []
    found = []
    for ticket in tickets:
        if not ticket.is_open:
            continue
        task = tasks.get(uid_of(ticket.id))
        if task is None or owned(task) != ticket.id or not wants_write_back(task, markers):
            continue
        found.append(write_back_for(source, ticket.id, task, config))
    found.sort(key=lambda w: w.request.ticket_id)
    return found


async def _ask(adapter: SupportsWriteBack, request: WriteBackRequest) -> WriteBackOutcome:
    outcome = await adapter.write_back(request)
    if not isinstance(outcome, WriteBackOutcome) or outcome not in ACCEPTED:
        raise SourceError(f"adapter answered {outcome!r}, not closed/commented/already_closed")
    if request.action is WriteBackAction.COMMENT and outcome is WriteBackOutcome.CLOSED:
        raise SourceError("adapter closed a ticket it was asked only to comment")
    return outcome


async def perform_write_backs(
    planned: Sequence[WriteBack],
    *,
    adapter: SupportsWriteBack,
    client: FragmentClient,
    current: Callable[[Sequence[str]], Awaitable[Mapping[str, Task]]],
    markers: Markers,
    owned: Callable[[Task], str | None],
    now: Callable[[], datetime],
    may_write: Callable[[], Awaitable[bool]],
    on_marked: Callable[[Task, str], None],
) -> tuple[WriteBack, ...]:
    """Make the write-backs, each marked on its task once the back-office accepted it.

    `current` reads the tasks again from Fragment (the cycle's TaskFinder): a task Fragment no
    longer shows as an operator's unmarked DONE is skipped (reopened since, or marked by an
    earlier run that was killed before it could remember so), and so is one it cannot show.
    """
    if not planned:
        return ()
    fresh = await current([w.uid for w in planned])
    done: list[WriteBack] = []
    for write_back in planned:
        task = fresh.get(write_back.uid)
        ticket_id = write_back.request.ticket_id
        if task is None or owned(task) != ticket_id or not wants_write_back(task, markers):
            log.info(
                "write_back.skipped",
                source=write_back.source,
                ticket_id=ticket_id,
                reason="the task is no longer an operator's DONE without a write-back marker",
            )
            continue
        if not await may_write():
            break
        outcome, error = await _one(adapter, write_back)
        if outcome in ACCEPTED:
            marker_error = await _mark(client, task, markers, now(), on_marked, ticket_id)
            error = marker_error
        result = WriteBack(
            uid=write_back.uid,
            source=write_back.source,
            request=write_back.request,
            reason=write_back.reason,
            title=write_back.title,
            outcome=outcome,
            error=error,
        )
        log_write_back(result)
        done.append(result)
    return tuple(done)


async def _one(
    adapter: SupportsWriteBack, write_back: WriteBack
) -> tuple[WriteBackOutcome, str | None]:
    try:
        return await _ask(adapter, write_back.request), None
    except TicketGone as exc:
        return WriteBackOutcome.GONE, str(exc)
    except WriteBackRejected as exc:
        return WriteBackOutcome.REJECTED, str(exc)
    except SourceError as exc:
        return WriteBackOutcome.FAILED, str(exc)
    except Exception as exc:  # a plug-in's bug must not end the cycle of the other sources
        log.exception("write_back.adapter_crashed", source=write_back.source)
        return WriteBackOutcome.FAILED, f"adapter {type(adapter).__name__} failed: {exc!r}"


async def _mark(
    client: FragmentClient,
    task: Task,
    markers: Markers,
    moment: datetime,
    on_marked: Callable[[Task, str], None],
    ticket_id: str,
) -> str | None:
    """Record the write-back on the task (PATCH merges fields: nothing else changes)."""
    item: dict[str, JSONValue] = {
        "uid": task.uid,
        "fields": {markers.written_back: format_timestamp(moment)},
    }
    # The back-office has it; without the marker a `comment` may be repeated next cycle (a
    # `close` is not: the ticket is closed then).
    lost = "written back, but the marker could not be recorded in Fragment"
    try:
        answer = await client.patch_batch([item])
    except FragmentAuthError:
        raise
    except FragmentError as exc:
        return f"{lost}: {exc}"
    refused = answer.errors.get(task.uid) or answer.errors.get("#0")
    if refused is not None:
        return f"{lost}: {refused}"
    marked = next((t for t in answer.tasks if t.uid == task.uid), None)
    if marked is None or not marked.fields.get(markers.written_back):
        # A 200 alone proves nothing about one item (docs/fragment-contract.md).
        return f"{lost}: the answer does not show it"
    on_marked(marked, ticket_id)
    return None


def log_write_back(write_back: WriteBack) -> None:
    """One log line per write-back, whatever came of it."""
    request = write_back.request
    failed = write_back.outcome in FAILED or write_back.error is not None
    emit = log.warning if failed else log.info
    emit(
        "write_back",
        source=write_back.source,
        ticket_id=request.ticket_id,
        uid=write_back.uid,
        action=request.action.value,
        outcome=write_back.outcome.value,
        error=write_back.error,
    )
