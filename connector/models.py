"""The data that flows through a cycle: tickets in, tasks read, plans out, reports at the end.

Everything here is frozen and free of I/O, so the pure core (`identity`, `plan`, `guards`) and the
renderers can be tested without a network or a database. `Ticket` and `ChangeSet` are also part of
the adapter contract (re-exported by `adapters.base`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, TypeAlias

JSONValue: TypeAlias = dict[str, "JSONValue"] | list["JSONValue"] | str | int | float | bool | None
"""A JSON value, as `json.loads` gives it and `json.dumps` takes it."""

Fields: TypeAlias = Mapping[str, JSONValue]


@dataclass(frozen=True, slots=True)
class Ticket:
    """One back-office ticket, as an adapter reports it."""

    id: str
    title: str
    url: str | None = None
    fields: Fields = field(default_factory=dict)
    updated_at: datetime | None = None
    is_open: bool = True
    due_at: datetime | None = None
    assignee_email: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """A back-office record an adapter could not turn into a ticket; reported, then skipped.

    `ticket_id` is set when the record's id was readable: its task is then kept as it is. A record
    without a usable id makes the snapshot incomplete, so the source gets no closes this cycle.
    """

    position: str
    reason: str
    ticket_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """What an incremental poll found: changed tickets (open or closed) and the next cursor."""

    tickets: tuple[Ticket, ...]
    cursor: str | None


class WriteBackAction(enum.StrEnum):
    """What a write-back asks of the back-office."""

    CLOSE = "close"  # close or resolve the ticket, with the note when there is one
    COMMENT = "comment"  # only add the note


@dataclass(frozen=True, slots=True)
class WriteBackRequest:
    """One write-back an adapter is asked to make: an operator's DONE, told to the back-office.

    Part of the adapter contract (`adapters.base.SupportsWriteBack`). `key` is stable for one
    DONE of one task: an adapter that can make its write idempotent by a key uses it.
    """

    ticket_id: str
    action: WriteBackAction
    note: str | None = None
    key: str = ""


class WriteBackOutcome(enum.StrEnum):
    """What the back-office did with a write-back (the metric's `outcome` label)."""

    CLOSED = "closed"
    COMMENTED = "commented"
    ALREADY_CLOSED = "already_closed"  # nothing to do: the ticket was closed already
    GONE = "gone"  # the ticket no longer exists (404)
    REJECTED = "rejected"  # the back-office refused it (409/422: no such transition...)
    FAILED = "failed"  # any other error: tried again next cycle
    REFUSED = "refused"  # a guard held it back
    PLANNED = "planned"  # a dry-run: would be done


class TaskStatus(enum.StrEnum):
    """A Fragment task's status."""

    TODO = "TODO"
    STARTED = "STARTED"
    DONE = "DONE"


OPEN_STATUSES: tuple[TaskStatus, ...] = (TaskStatus.TODO, TaskStatus.STARTED)


@dataclass(frozen=True, slots=True)
class Task:
    """A Fragment task, reduced to what the connector reads."""

    uid: str
    status: TaskStatus
    fields: Fields
    due_at: datetime | None = None
    updated_at: datetime | None = None
    done_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        """Whether the task still needs work (TODO or STARTED)."""
        return self.status is not TaskStatus.DONE


class TaskDigest(NamedTuple):
    """A task as the mirror keeps it: its status, a digest of its fields, its due date.

    A tuple of three small values instead of a Task with its fields: the mirror of a 100k backlog
    holds one per open task, and the plan needs the full task only when the digest differs.
    """

    status: TaskStatus
    fields: bytes  # values.fields_digest of the task's fields
    due_at: str | None  # values.format_timestamp of the due date


@dataclass(frozen=True, slots=True)
class DesiredTask:
    """What the connector wants a ticket's task to hold: the managed part of a Fragment task."""

    uid: str
    source: str
    ticket_id: str
    fields: Fields
    due_at: datetime | None = None
    assignee_email: str | None = None
    updated_at: datetime | None = None
    clear_due_at: bool = False  # the ticket lost the due date the connector had written


class CycleKind(enum.StrEnum):
    """Which cycle ran: a full one reads every ticket and may close by absence; an incremental
    poll reads the tickets changed since the adapter's cursor and never closes by absence."""

    FULL = "full"
    INCREMENTAL = "incremental"


class ActionKind(enum.StrEnum):
    """What a plan does to one task."""

    CREATE = "create"
    UPDATE = "update"
    CLOSE = "close"
    REOPEN = "reopen"


@dataclass(frozen=True, slots=True)
class Action:
    """One write a plan asks for, with the reason shown to people and the item sent to Fragment."""

    kind: ActionKind
    uid: str
    source: str
    ticket_id: str
    reason: str
    payload: Mapping[str, JSONValue]
    title: str = ""
    changes: Mapping[str, tuple[JSONValue, JSONValue]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """The writes that make one source's tasks match its tickets; `unchanged` counts the rest.

    At most one action per task: an action's `uid` is its key in refusals, failures and reports.
    """

    source: str
    actions: tuple[Action, ...] = ()
    unchanged: int = 0
    misses: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An action a safety guard refused, and why."""

    action: Action
    guard: str
    reason: str


@dataclass(frozen=True, slots=True)
class ActionFailure:
    """An action Fragment did not apply, and the error it gave."""

    action: Action
    error: str
    # False: never sent (the run stopped first), so Fragment neither refused nor applied it
    sent: bool = True


@dataclass(frozen=True, slots=True)
class WriteBack:
    """One write-back of a cycle: the operator's DONE task, the request, and what came of it."""

    uid: str
    source: str
    request: WriteBackRequest
    reason: str
    title: str = ""
    outcome: WriteBackOutcome = WriteBackOutcome.PLANNED
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SourceReport:
    """What one cycle did for one source."""

    name: str
    ok: bool
    error: str | None = None
    error_label: str | None = None
    plan: Plan | None = None
    refusals: tuple[Refusal, ...] = ()
    failures: tuple[ActionFailure, ...] = ()
    invalid_records: tuple[InvalidRecord, ...] = ()
    applied: bool = False
    tickets: int = 0
    open_tasks: int = 0
    kind: CycleKind = CycleKind.FULL
    duration_s: float = 0.0
    requests: int = 0
    # Ids of open tickets whose task Fragment could neither show nor prove absent: no create was
    # planned for them (it could replace an operator's task); they are looked up again next cycle.
    unresolved: tuple[str, ...] = ()
    listing: str = ""  # which listing of Fragment the plan came from (cycle.LISTING_*)
    write_backs: tuple[WriteBack, ...] = ()

    @property
    def planned(self) -> tuple[Action, ...]:
        """Actions that passed the guards (applied, or to be applied in a dry-run)."""
        if self.plan is None:
            return ()
        refused = {r.action.uid for r in self.refusals}
        return tuple(a for a in self.plan.actions if a.uid not in refused)


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one reconciliation cycle did, for every source it covered."""

    run_id: str
    dry_run: bool
    sources: tuple[SourceReport, ...]
    started_at: datetime
    finished_at: datetime
    requests: Mapping[str, int] = field(default_factory=dict)
    orphaned: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExplainedTask:
    """The ticket's task as Fragment shows it now, for `explain`."""

    status: TaskStatus
    fields: Fields
    updated_at: datetime | None
    owned: bool  # it carries this source's markers for this ticket
    closed_by: JSONValue = None  # its closed-by marker's value (`connector`, an operator's...)


@dataclass(frozen=True, slots=True)
class IndexView:
    """What the state store's task index remembers of the ticket's task, for `explain`."""

    status: TaskStatus | None  # None: it stopped being listed as open, its state unknown
    closed_by_connector: bool
    misses: int  # consecutive complete snapshots its ticket was absent from


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one ticket's task is as it is, and what the next full cycle would do with it."""

    source: str
    ticket_id: str
    uid: str
    ticket: Ticket | None  # None: not in the back-office's snapshot
    invalid_records: tuple[InvalidRecord, ...]  # unreadable records carrying this ticket's id
    snapshot_complete: bool
    task: ExplainedTask | None  # None: no task holds the uid in Fragment
    index: IndexView | None  # None: the index has no entry for the uid
    next_cycle: str
    write_back: str
    changes: Mapping[str, tuple[JSONValue, JSONValue]] = field(default_factory=dict)
