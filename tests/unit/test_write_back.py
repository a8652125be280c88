"""Write-back's pure parts: detection, the note, the guard, the config, the plan's reopen rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from connector.config import WriteBackSection
from connector.cycle import source_exit_code, source_outcome
from connector.guards import guard_write_backs
from connector.identity import Markers, instance_namespace, owned_ticket_id, task_uid
from connector.models import (
    ActionKind,
    SourceReport,
    Task,
    TaskStatus,
    Ticket,
    WriteBack,
    WriteBackAction,
    WriteBackOutcome,
    WriteBackRequest,
)
from connector.plan import PlanPolicy, plan_source
from connector.writeback import find_write_backs

NS = instance_namespace("tests")
MARKERS = Markers()
DONE_AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CLOSE = WriteBackSection(on_done="close", comment="Done: $title ($ticket_id) at $done_at")


def task(ticket_id: str, status: TaskStatus = TaskStatus.DONE, **fields: object) -> Task:
    uid = task_uid(NS, "s", ticket_id)
    base = {"fc_source": "s", "fc_ticket_id": ticket_id, "title": f"Ticket {ticket_id}"}
    return Task(uid=uid, status=status, fields={**base, **fields}, done_at=DONE_AT)


def find(tickets: list[Ticket], tasks: list[Task], config: WriteBackSection = CLOSE) -> list[str]:
    found = find_write_backs(
        "s",
        tickets,
        {t.uid: t for t in tasks},
        uid_of=lambda ticket_id: task_uid(NS, "s", ticket_id),
        owned=lambda t: owned_ticket_id(t, source="s", namespace=NS, markers=MARKERS),
        markers=MARKERS,
        config=config,
    )
    return [w.request.ticket_id for w in found]


def test_only_an_operators_done_with_the_ticket_open_is_written_back() -> None:
    """DONE by an operator + ticket open → write-back; every other case → none."""
    tickets = [Ticket(id=f"T-{n}", title="t") for n in range(6)] + [
        Ticket(id="T-6", title="t", is_open=False)
    ]
    foreign = Task(uid=task_uid(NS, "s", "T-5"), status=TaskStatus.DONE, fields={"title": "x"})
    tasks = [
        task("T-0"),  # an operator's DONE: written back
        task("T-1", fc_closed_by="connector"),  # the connector closed it
        task("T-2", fc_written_back="2026-03-02T10:05:00Z"),  # written back already
        task("T-3", TaskStatus.STARTED),  # not DONE
        foreign,  # T-5: not the connector's task
        task("T-6"),  # its ticket is closed already
    ]
    assert find(tickets, tasks) == ["T-0"]
    assert find(tickets, tasks, WriteBackSection()) == []  # off by default


def test_the_note_is_the_template_filled_in() -> None:
    [made] = find_write_backs(
        "s",
        [Ticket(id="T-0", title="t")],
        {task("T-0").uid: task("T-0")},
        uid_of=lambda ticket_id: task_uid(NS, "s", ticket_id),
        owned=lambda t: "T-0",
        markers=MARKERS,
        config=CLOSE,
    )
    assert made.request.action is WriteBackAction.CLOSE
    assert made.request.note == "Done: Ticket T-0 (T-0) at 2026-03-02T10:00:00.000Z"
    assert made.request.key.endswith(":2026-03-02T10:00:00.000Z")


def test_the_guard_holds_back_more_than_the_limit_unless_allowed() -> None:
    many = [
        WriteBack(
            uid=str(n),
            source="s",
            request=WriteBackRequest(str(n), WriteBackAction.CLOSE),
            reason="r",
        )
        for n in range(3)
    ]
    assert guard_write_backs(many, limit=3, allow=False) is None
    refusal = guard_write_backs(many, limit=2, allow=False)
    assert refusal is not None and "--allow-mass-write-back" in refusal
    assert guard_write_backs(many, limit=2, allow=True) is None


def test_config_validates_the_template() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        WriteBackSection(on_done="close", comment="$nope")
    with pytest.raises(ValidationError, match="needs a `comment` template"):
        WriteBackSection(on_done="comment")
    assert not WriteBackSection().enabled


def test_the_write_backs_own_note_does_not_reopen_the_task() -> None:
    """reopen: on_activity counts ticket activity after the write-back, not the note itself."""
    policy = PlanPolicy(namespace=NS, reopen="on_activity")
    noted = DONE_AT + timedelta(minutes=1)
    marked = task("T-0", fc_written_back=(noted + timedelta(seconds=1)).isoformat())
    ticket = Ticket(id="T-0", title="Ticket T-0", updated_at=noted)
    assert plan_source("s", [ticket], {marked.uid: marked}, policy).actions == ()
    later = Ticket(id="T-0", title="Ticket T-0", updated_at=noted + timedelta(hours=1))
    [action] = plan_source("s", [later], {marked.uid: marked}, policy).actions
    assert action.kind is ActionKind.REOPEN


def test_exit_codes_and_outcomes_of_write_backs() -> None:
    def report(*outcomes: WriteBackOutcome, error: str | None = None) -> SourceReport:
        made = tuple(
            WriteBack(
                uid=uuid.uuid4().hex,
                source="s",
                request=WriteBackRequest("T", WriteBackAction.CLOSE),
                reason="r",
                outcome=o,
                error=error,
            )
            for o in outcomes
        )
        return SourceReport(name="s", ok=True, write_backs=made)

    assert source_exit_code(report(WriteBackOutcome.CLOSED), dry_run=False) == 0
    assert source_exit_code(report(WriteBackOutcome.PLANNED), dry_run=True) == 2
    assert source_exit_code(report(WriteBackOutcome.REFUSED, error="x"), dry_run=False) == 3
    assert source_exit_code(report(WriteBackOutcome.GONE), dry_run=False) == 1
    assert source_exit_code(report(WriteBackOutcome.CLOSED, error="no marker"), dry_run=False) == 1
    assert source_outcome(report(WriteBackOutcome.REJECTED)) == "partial"
    assert source_outcome(report(WriteBackOutcome.REFUSED, error="x")) == "refused"
