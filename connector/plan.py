"""The plan: a pure diff from one source's tickets and tasks to the writes that reconcile them.

Given the tickets of a snapshot and the source's tasks known in Fragment (its open tasks, and the
DONE ones the index or a look-up found), `plan_source` decides, ticket by ticket, whether to
create, update, reopen, close or leave a task alone, with a reason for each. It does no I/O and
depends only on its arguments, so every rule is unit-tested here and the guards, the apply step and
the dry-run all see the same plan.

A large backlog is mostly unchanged from one cycle to the next, so the full tasks need not all be
at hand: `check_sync` finds, from the mirror's digests alone, the open tasks that already hold
what their tickets want, and `plan_source` counts those as unchanged without seeing them.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NamedTuple

from connector.identity import (
    CLOSED_BY_CONNECTOR,
    Markers,
    closed_by_connector,
    task_uid,
)
from connector.models import (
    Action,
    ActionKind,
    DesiredTask,
    Fields,
    JSONValue,
    Plan,
    Task,
    TaskDigest,
    TaskStatus,
    Ticket,
)
from connector.values import fields_digest, format_timestamp, normalise, parse_timestamp, same

ReopenPolicy = Literal["never", "on_activity"]
_SCALARS = frozenset({str, int, float, bool, type(None)})

# Shared by every action without changes: a 100k initial sync would hold 100k empty dicts.
_NO_CHANGES: Mapping[str, tuple[JSONValue, JSONValue]] = MappingProxyType({})

REASON_NEW = "new ticket"
REASON_ABSENT = "absent from snapshot"
REASON_CLOSED = "closed in source"
REASON_REOPENED = "ticket reopened"
REASON_ACTIVITY = "ticket changed after an operator closed the task"


@dataclass(frozen=True)
class PlanPolicy:
    """The settings a plan depends on."""

    namespace: uuid.UUID
    markers: Markers = field(default_factory=Markers)
    static_fields: Fields = field(default_factory=dict)
    reopen: ReopenPolicy = "never"
    close_after_misses: int = 1

    @functools.cached_property
    def normalised_static_fields(self) -> dict[str, JSONValue]:
        """The static fields, normalised once rather than for every ticket."""
        return {str(k): normalise(v) for k, v in self.static_fields.items()}


def desired_fields(source: str, ticket: Ticket, policy: PlanPolicy) -> dict[str, JSONValue]:
    """The fields a ticket's task should hold: title, url, custom and static fields, markers."""
    markers = policy.markers
    fields: dict[str, JSONValue] = dict(policy.normalised_static_fields)
    for key, value in ticket.fields.items():
        fields[key] = normalise(value)
    fields["title"] = normalise(ticket.title)
    fields["url"] = normalise(ticket.url)
    fields[markers.source] = source
    fields[markers.ticket_id] = ticket.id
    fields[markers.closed_by] = None
    return fields


def desired_task(
    source: str,
    ticket: Ticket,
    policy: PlanPolicy,
    *,
    uid: str | None = None,
    fields: Fields | None = None,
) -> DesiredTask:
    """The managed content of a ticket's task: its fields, due date and assignee.

    `uid` and `fields`, when the cycle has them already (computed once per ticket per cycle).
    """
    return DesiredTask(
        uid=uid or task_uid(policy.namespace, source, ticket.id),
        source=source,
        ticket_id=ticket.id,
        fields=desired_fields(source, ticket, policy) if fields is None else fields,
        due_at=ticket.due_at,
        assignee_email=ticket.assignee_email,
        updated_at=ticket.updated_at,
    )


DUE_AT = "due_at"


def written_keys(payload: Mapping[str, JSONValue]) -> frozenset[str]:
    """The keys a write gives a value: its non-null fields, and `due_at` when it sends one."""
    fields = payload.get("fields")
    keys = {k for k, v in fields.items() if v is not None} if isinstance(fields, Mapping) else set()
    if payload.get(DUE_AT) is not None:
        keys.add(DUE_AT)
    return frozenset(keys)


def with_cleared(desired: DesiredTask, managed: Collection[str] | None) -> DesiredTask:
    """`desired` with a null for each key the connector wrote before that the ticket no longer
    has (`managed`: the keys of its last write), so an update clears them; a field nobody
    wrote through the connector (an operator's) is never touched."""
    if not managed:
        return desired
    cleared = {k: None for k in managed if k != DUE_AT and k not in desired.fields}
    clear_due = DUE_AT in managed and desired.due_at is None
    if not cleared and not clear_due:
        return desired
    return dataclasses.replace(
        desired, fields={**desired.fields, **cleared}, clear_due_at=clear_due
    )


def field_changes(desired: DesiredTask, task: Task) -> dict[str, tuple[JSONValue, JSONValue]]:
    """The managed values that differ between a task and what it should hold, as (old, new)."""
    changes: dict[str, tuple[JSONValue, JSONValue]] = {}
    fields = task.fields
    for key, value in desired.fields.items():
        current = fields.get(key)
        # Inline fast path (most values come back exactly as sent); `same` has the full rules.
        if current == value and type(current) is type(value) and type(value) in _SCALARS:
            continue
        if not same(current, value):
            changes[key] = (current, value)
    if desired.due_at is not None:
        current_due = format_timestamp(task.due_at) if task.due_at else None
        wanted_due = format_timestamp(desired.due_at)
        if current_due != wanted_due:
            changes[DUE_AT] = (current_due, wanted_due)
    elif desired.clear_due_at:
        # Cleared: Fragment puts back its default (the creation time) [assumed].
        changes[DUE_AT] = (format_timestamp(task.due_at) if task.due_at else None, None)
    return changes


class SyncCheck(NamedTuple):
    """What the mirror's digests tell of a snapshot, before planning."""

    synced: set[str]  # ids of open tickets whose open task already holds what they want
    unsynced: list[str]  # uids of the other open tasks: the plan needs them in full
    # Ticket id -> desired fields, of the open tickets compared and found out of sync: the plan
    # takes them from here rather than computing them a second time.
    desired: dict[str, dict[str, JSONValue]]


def check_sync(
    source: str,
    tickets: Iterable[Ticket],
    digests: Mapping[str, TaskDigest],
    policy: PlanPolicy,
    due_written: Collection[str] = (),
    *,
    uids: Mapping[str, str] | None = None,
) -> SyncCheck:
    """Which open tasks already hold what their tickets want, from the digests alone.

    `digests` is the mirror: uid -> digest of each open task as Fragment last showed it. A
    digest that differs proves nothing (the task may carry fields the connector does not
    manage): that task goes to `plan_source` in full, which compares field by field.
    `due_written` are uids of tasks the connector gave a due date: a ticket of theirs without
    one goes there too (its due date is to be cleared), since a task always holds a due date.
    `uids`: ticket id -> task uid, as the source was read (those missing are computed).
    """
    uids = uids or {}
    synced: set[str] = set()
    matched: set[str] = set()
    desired: dict[str, dict[str, JSONValue]] = {}
    if not digests:  # an initial sync: nothing to hash the tickets against
        return SyncCheck(synced, [], desired)
    for ticket in tickets:
        if not ticket.is_open:
            continue
        uid = uids.get(ticket.id) or task_uid(policy.namespace, source, ticket.id)
        current = digests.get(uid)
        if current is None or current.status is TaskStatus.DONE:
            continue
        fields = desired_fields(source, ticket, policy)
        due = ticket.due_at
        if (
            current.fields != fields_digest(fields)
            or (due is not None and current.due_at != format_timestamp(due))
            or (due is None and uid in due_written)
        ):
            desired[ticket.id] = fields
            continue
        synced.add(ticket.id)
        matched.add(uid)
    return SyncCheck(synced, [uid for uid in digests if uid not in matched], desired)


def _write_item(
    desired: DesiredTask, *, status: TaskStatus | None, drop_nulls: bool
) -> dict[str, JSONValue]:
    fields = {k: v for k, v in desired.fields.items() if not (drop_nulls and v is None)}
    item: dict[str, JSONValue] = {"uid": desired.uid, "fields": fields}
    if status is not None:
        item["status"] = status.value
    if desired.due_at is not None:
        item[DUE_AT] = format_timestamp(desired.due_at)
    elif desired.clear_due_at and status is None:
        item[DUE_AT] = None
    if desired.assignee_email:
        item["assignee_email"] = desired.assignee_email
    return item


def _describe(changes: Mapping[str, object]) -> str:
    return ", ".join(sorted(changes)) + " changed"


def _title(desired: DesiredTask) -> str:
    title = desired.fields.get("title")
    return title if isinstance(title, str) else ""


def _action(
    kind: ActionKind,
    desired: DesiredTask,
    reason: str,
    changes: Mapping[str, tuple[JSONValue, JSONValue]] | None = None,
) -> Action:
    # Updates never send status: an operator's STARTED must survive them.
    status = None if kind is ActionKind.UPDATE else TaskStatus.TODO
    payload = _write_item(desired, status=status, drop_nulls=kind is ActionKind.CREATE)
    return Action(
        kind=kind,
        uid=desired.uid,
        source=desired.source,
        ticket_id=desired.ticket_id,
        reason=reason,
        payload=payload,
        title=_title(desired),
        changes=changes or _NO_CHANGES,
    )


def close_action(
    source: str, ticket_id: str, task: Task, *, reason: str, markers: Markers
) -> Action:
    """The PATCH that closes a task as DONE and marks the close as the connector's."""
    title = task.fields.get("title")
    return Action(
        kind=ActionKind.CLOSE,
        uid=task.uid,
        source=source,
        ticket_id=ticket_id,
        reason=reason,
        payload={
            "uid": task.uid,
            "status": TaskStatus.DONE.value,
            "fields": {markers.closed_by: CLOSED_BY_CONNECTOR},
        },
        title=title if isinstance(title, str) else "",
        changes={"status": (task.status.value, TaskStatus.DONE.value)},
    )


def _plan_open_ticket(
    desired: DesiredTask,
    task: Task | None,
    policy: PlanPolicy,
    managed: Collection[str] | None = None,
) -> Action | None:
    if task is None:
        return _action(ActionKind.CREATE, desired, REASON_NEW)
    if task.is_open:
        desired = with_cleared(desired, managed)
        changes = field_changes(desired, task)
        if not changes:
            return None
        return _action(ActionKind.UPDATE, desired, _describe(changes), changes)
    if closed_by_connector(task, policy.markers):
        return _action(ActionKind.REOPEN, desired, REASON_REOPENED)
    if policy.reopen == "on_activity" and _changed_after_close(desired, task, policy.markers):
        return _action(ActionKind.REOPEN, desired, REASON_ACTIVITY)
    return None


def _changed_after_close(desired: DesiredTask, task: Task, markers: Markers) -> bool:
    closed_at = task.done_at or task.updated_at
    # The connector's own write-back (a note, a close) changes the ticket after the task's
    # close: activity counts only after it, or the note would reopen the task it reports on.
    written_back = parse_timestamp(task.fields.get(markers.written_back))
    if written_back is not None and (closed_at is None or written_back > closed_at):
        closed_at = written_back
    return (
        desired.updated_at is not None and closed_at is not None and desired.updated_at > closed_at
    )


def plan_source(
    source: str,
    tickets: Sequence[Ticket],
    tasks: Mapping[str, Task],
    policy: PlanPolicy,
    *,
    kept_ticket_ids: Collection[str] = (),
    close_absent: bool = True,
    misses: Mapping[str, int] | None = None,
    synced: Collection[str] = (),
    managed: Mapping[str, Collection[str]] | None = None,
    uids: Mapping[str, str] | None = None,
    desired: Mapping[str, Fields] | None = None,
) -> Plan:
    """Plan the writes that make `tasks` (uid -> task) match `tickets` for one source.

    `synced` are ids of open tickets whose tasks `check_sync` found already holding what they want:
    left alone, those tasks need not be in `tasks`. Every other open task of the source must be.
    `kept_ticket_ids` are tickets seen but unreadable this cycle: their tasks are left as they are.
    With `close_absent` false (an incremental delta), absence from `tickets` closes nothing.
    `misses` counts the consecutive earlier snapshots each task's ticket was missing from; a task
    is closed once that reaches `policy.close_after_misses` (the plan's `misses` carries on the
    counts of those not closed yet).
    `managed` holds, per uid, the keys the connector last wrote to the task: those its ticket no
    longer has are cleared by the update (an operator's own fields are in no such set).
    Tasks that do not carry this source's markers and uid are ignored, whatever the caller passes.
    `uids` (ticket id -> task uid of every ticket, as the source was read) and `desired` (ticket
    id -> desired fields, from `check_sync`) are what the cycle computed already; without them
    they are computed here.
    """
    namespace, markers = policy.namespace, policy.markers
    if not uids:
        # Each uid is hashed once (the ownership check of a task reuses its ticket's uid), and
        # not at all for the tickets in sync.
        uids = {
            ticket.id: task_uid(namespace, source, ticket.id)
            for ticket in tickets
            if not (ticket.is_open and ticket.id in synced)
        }
    misses = misses or {}
    desired = desired or {}
    owned: dict[str, tuple[str, Task]] = {}
    for uid, task in tasks.items():
        fields = task.fields
        ticket_id = fields.get(markers.ticket_id)
        if fields.get(markers.source) != source or not isinstance(ticket_id, str) or not ticket_id:
            continue
        expected = uids.get(ticket_id) or task_uid(namespace, source, ticket_id)
        if expected == uid == task.uid:
            owned[uid] = (ticket_id, task)

    actions: list[Action] = []
    unchanged = 0
    seen: set[str] = set()
    for ticket in tickets:
        if ticket.is_open and ticket.id in synced:
            unchanged += 1
            continue
        uid = uids[ticket.id]
        seen.add(uid)
        entry = owned.get(uid)
        current = entry[1] if entry else None
        if not ticket.is_open:
            if current is not None and current.is_open:
                actions.append(
                    close_action(
                        source, ticket.id, current, reason=REASON_CLOSED, markers=policy.markers
                    )
                )
            else:
                unchanged += current is not None
            continue
        wanted = desired_task(source, ticket, policy, uid=uid, fields=desired.get(ticket.id))
        action = _plan_open_ticket(wanted, current, policy, (managed or {}).get(uid))
        if action is None:
            unchanged += 1
        else:
            actions.append(action)

    kept = {
        uids.get(ticket_id) or task_uid(namespace, source, ticket_id)
        for ticket_id in kept_ticket_ids
    }
    closes = []
    still_missing: dict[str, int] = {}
    for uid, (ticket_id, task) in owned.items():
        if uid in seen or ticket_id in synced or not task.is_open:
            continue
        if uid in kept or not close_absent:
            unchanged += 1
            continue
        count = misses.get(uid, 0) + 1
        if count < policy.close_after_misses:
            # Not yet: a ticket missing from one snapshot may be a back-office hiccup.
            still_missing[uid] = count
            unchanged += 1
            continue
        reason = REASON_ABSENT if count == 1 else f"{REASON_ABSENT} {count} times in a row"
        closes.append(close_action(source, ticket_id, task, reason=reason, markers=policy.markers))
    closes.sort(key=lambda a: a.ticket_id)
    return Plan(
        source=source,
        actions=(*actions, *closes),
        unchanged=unchanged,
        misses=still_missing,
    )
