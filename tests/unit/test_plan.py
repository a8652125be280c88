"""The plan rules of DESIGN.md, one test each, plus the convergence property."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.identity import Markers, instance_namespace, task_uid
from connector.models import ActionKind, Task, TaskDigest, TaskStatus, Ticket
from connector.plan import (
    REASON_ABSENT,
    REASON_ACTIVITY,
    REASON_CLOSED,
    REASON_NEW,
    REASON_REOPENED,
    PlanPolicy,
    SyncCheck,
    check_sync,
    desired_fields,
    desired_task,
    plan_source,
    written_keys,
)
from connector.values import task_digest

NS = instance_namespace("test")
POLICY = PlanPolicy(namespace=NS, static_fields={"team": "kyc"})
SOURCE = "backoffice"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ticket(ticket_id: str = "T-1", **kw: Any) -> Ticket:
    return Ticket(id=ticket_id, title=kw.pop("title", f"Ticket {ticket_id}"), **kw)


def task_for(
    t: Ticket,
    *,
    status: TaskStatus = TaskStatus.TODO,
    policy: PlanPolicy = POLICY,
    done_at: datetime | None = None,
    **fields: Any,
) -> Task:
    """The task the connector would have written for a ticket, with optional field overrides."""
    desired = desired_task(SOURCE, t, policy)
    content = {k: v for k, v in desired.fields.items() if v is not None}
    content.update(fields)
    content = {k: v for k, v in content.items() if v is not None}
    return Task(uid=desired.uid, status=status, fields=content, due_at=t.due_at, done_at=done_at)


def index(*tasks: Task) -> dict[str, Task]:
    return {t.uid: t for t in tasks}


def test_new_ticket_is_created_as_todo_with_markers_and_static_fields() -> None:
    """An open ticket without a task is created as TODO with title, url, fields and markers."""
    t = ticket(url="https://bo/T-1", fields={"amount": 12, "note": None})
    plan = plan_source(SOURCE, [t], {}, POLICY)
    (action,) = plan.actions
    assert action.kind is ActionKind.CREATE
    assert action.reason == REASON_NEW
    assert action.uid == task_uid(NS, SOURCE, "T-1")
    assert action.payload == {
        "uid": action.uid,
        "status": "TODO",
        "fields": {
            "team": "kyc",
            "amount": 12,
            "title": "Ticket T-1",
            "url": "https://bo/T-1",
            "fc_source": SOURCE,
            "fc_ticket_id": "T-1",
        },
    }


def test_unchanged_ticket_makes_no_action() -> None:
    """A ticket whose task already holds its content plans nothing."""
    t = ticket(fields={"amount": 12.0})
    plan = plan_source(SOURCE, [t], index(task_for(t, amount=12)), POLICY)
    assert plan.actions == ()
    assert plan.unchanged == 1


def test_normalisation_hides_cosmetic_differences() -> None:
    """Whitespace, line ends, float/int and timestamp formats never cause a write."""
    due = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    t = ticket(title="  Refund\r\nplease ", fields={"n": 3.0, "meta": {"b": 1, "a": 2}}, due_at=due)
    task = task_for(t, title="Refund\nplease", n=3, meta={"a": 2, "b": 1})
    task = Task(
        uid=task.uid, status=task.status, fields=task.fields, due_at=due.replace(microsecond=123000)
    )
    assert plan_source(SOURCE, [t], index(task), POLICY).actions == ()


def test_changed_title_updates_managed_fields_only_and_never_status() -> None:
    """A changed ticket is updated with its managed fields; status is not sent, STARTED survives."""
    old = ticket(title="Old")
    task = task_for(old, status=TaskStatus.STARTED, operator_note="keep me")
    new = ticket(title="New")
    (action,) = plan_source(SOURCE, [new], index(task), POLICY).actions
    assert action.kind is ActionKind.UPDATE
    assert action.reason == "title changed"
    assert action.changes == {"title": ("Old", "New")}
    assert "status" not in action.payload
    assert "operator_note" not in action.payload["fields"]
    assert action.payload["fields"]["title"] == "New"


def test_vanished_ticket_closes_its_task_as_done_marked_by_connector() -> None:
    """An open task whose ticket is absent from the snapshot is closed as DONE by the connector."""
    gone = task_for(ticket("T-9"))
    (action,) = plan_source(SOURCE, [], index(gone), POLICY).actions
    assert action.kind is ActionKind.CLOSE
    assert action.reason == REASON_ABSENT
    assert action.ticket_id == "T-9"
    assert action.payload == {
        "uid": gone.uid,
        "status": "DONE",
        "fields": {"fc_closed_by": "connector"},
    }


def test_ticket_reported_closed_closes_its_task() -> None:
    """A ticket reported not open closes its open task, reason 'closed in source'."""
    t = ticket()
    (action,) = plan_source(SOURCE, [ticket(is_open=False)], index(task_for(t)), POLICY).actions
    assert (action.kind, action.reason) == (ActionKind.CLOSE, REASON_CLOSED)


def test_closed_ticket_without_open_task_plans_nothing() -> None:
    """A closed ticket whose task is DONE or absent needs no write."""
    t = ticket(is_open=False)
    done = task_for(ticket(), status=TaskStatus.DONE, fc_closed_by="connector")
    assert plan_source(SOURCE, [t], {}, POLICY).actions == ()
    assert plan_source(SOURCE, [t], index(done), POLICY).actions == ()


def test_ticket_back_after_connector_close_reopens_the_same_task() -> None:
    """A task the connector closed is reopened (PATCH TODO) when its ticket is open again."""
    t = ticket(title="Back")
    closed = task_for(t, status=TaskStatus.DONE, fc_closed_by="connector")
    (action,) = plan_source(SOURCE, [t], index(closed), POLICY).actions
    assert action.kind is ActionKind.REOPEN
    assert action.reason == REASON_REOPENED
    assert action.uid == closed.uid
    assert action.payload["status"] == "TODO"
    assert action.payload["fields"]["fc_closed_by"] is None  # PATCH null removes the marker


def test_operator_done_task_is_left_alone() -> None:
    """A task an operator closed stays DONE while its ticket is open (default policy)."""
    t = ticket(updated_at=T0 + timedelta(days=1))
    done = task_for(t, status=TaskStatus.DONE, done_at=T0)
    plan = plan_source(SOURCE, [t], index(done), POLICY)
    assert plan.actions == ()
    assert plan.unchanged == 1


def test_operator_done_task_reopens_on_activity_when_configured() -> None:
    """With reopen: on_activity, a ticket changed after the operator's close reopens the task."""
    policy = PlanPolicy(namespace=NS, static_fields={"team": "kyc"}, reopen="on_activity")
    t = ticket(updated_at=T0 + timedelta(hours=1))
    done = Task(uid=task_for(t).uid, status=TaskStatus.DONE, fields=task_for(t).fields, done_at=T0)
    (action,) = plan_source(SOURCE, [t], index(done), policy).actions
    assert (action.kind, action.reason) == (ActionKind.REOPEN, REASON_ACTIVITY)
    older = ticket(updated_at=T0 - timedelta(hours=1))
    assert plan_source(SOURCE, [older], index(done), policy).actions == ()


def test_foreign_and_other_source_tasks_are_never_touched() -> None:
    """Tasks without our markers, of another source, or whose uid does not match are ignored."""
    foreign = Task(uid=str(uuid.uuid4()), status=TaskStatus.TODO, fields={"title": "mine"})
    other = Task(
        uid=task_uid(NS, "other", "T-1"),
        status=TaskStatus.TODO,
        fields={"title": "x", "fc_source": "other", "fc_ticket_id": "T-1"},
    )
    forged = Task(
        uid=str(uuid.uuid4()),
        status=TaskStatus.TODO,
        fields={"title": "x", "fc_source": SOURCE, "fc_ticket_id": "T-1"},
    )
    other_instance = Task(
        uid=task_uid(instance_namespace("elsewhere"), SOURCE, "T-2"),
        status=TaskStatus.TODO,
        fields={"title": "x", "fc_source": SOURCE, "fc_ticket_id": "T-2"},
    )
    plan = plan_source(SOURCE, [], index(foreign, other, forged, other_instance), POLICY)
    assert plan.actions == ()


def test_kept_tickets_keep_their_tasks() -> None:
    """A ticket seen but unreadable this cycle neither closes nor updates its task."""
    task = task_for(ticket("T-5"))
    plan = plan_source(SOURCE, [], index(task), POLICY, kept_ticket_ids={"T-5"})
    assert plan.actions == ()
    assert plan.unchanged == 1


def test_delta_without_close_absent_closes_nothing() -> None:
    """An incremental delta (close_absent=False) never closes by absence."""
    task = task_for(ticket("T-5"))
    assert plan_source(SOURCE, [], index(task), POLICY, close_absent=False).actions == ()


def test_custom_markers_are_used() -> None:
    """Configured marker names replace the defaults in payloads and in ownership checks."""
    markers = Markers(source="src", ticket_id="tid", closed_by="cb")
    policy = PlanPolicy(namespace=NS, markers=markers)
    (create,) = plan_source(SOURCE, [ticket()], {}, policy).actions
    assert create.payload["fields"]["src"] == SOURCE
    assert create.payload["fields"]["tid"] == "T-1"
    existing = task_for(ticket(), policy=policy)
    (close,) = plan_source(SOURCE, [], index(existing), policy).actions
    assert close.payload["fields"] == {"cb": "connector"}


def test_ticket_fields_cannot_override_title_or_markers() -> None:
    """Custom fields named like the managed ones do not replace them."""
    t = ticket(fields={"title": "spoof", "fc_source": "evil", "team": "risk"})
    (action,) = plan_source(SOURCE, [t], {}, POLICY).actions
    fields = action.payload["fields"]
    assert (fields["title"], fields["fc_source"], fields["team"]) == ("Ticket T-1", SOURCE, "risk")


def test_due_date_is_managed_when_the_ticket_has_one() -> None:
    """A changed due date updates the task; a ticket without one leaves Fragment's default."""
    t = ticket(due_at=T0)
    task = task_for(t)
    moved = ticket(due_at=T0 + timedelta(days=2))
    (action,) = plan_source(SOURCE, [moved], index(task), POLICY).actions
    assert action.changes == {"due_at": ("2026-01-01T00:00:00.000Z", "2026-01-03T00:00:00.000Z")}
    no_due = Task(
        uid=task.uid, status=task.status, fields=task.fields, due_at=T0 + timedelta(days=9)
    )
    assert plan_source(SOURCE, [ticket()], index(no_due), POLICY).actions == ()


# --- property: applying a plan and planning again yields an empty plan ---------------------------

field_values = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.text(max_size=5),
    st.booleans(),
)
tickets_strategy = st.lists(
    st.builds(
        Ticket,
        id=st.sampled_from([f"T-{n}" for n in range(12)]),
        title=st.text(min_size=1, max_size=8).filter(lambda s: s.strip() != ""),
        url=st.one_of(st.none(), st.just("https://x/1")),
        fields=st.dictionaries(st.sampled_from(["a", "b", "team"]), field_values, max_size=3),
        is_open=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda t: t.id,
)


def apply_to(tasks: dict[str, Task], plan_actions: Any) -> dict[str, Task]:
    """A minimal model of Fragment's PUT (replace) and PATCH (merge, null removes) semantics."""
    result = dict(tasks)
    for action in plan_actions:
        payload = action.payload
        if action.kind is ActionKind.CREATE:
            fields = dict(payload["fields"])
            status = TaskStatus.TODO
        else:
            current = result[action.uid]
            fields = dict(current.fields)
            for key, value in payload.get("fields", {}).items():
                if value is None:
                    fields.pop(key, None)
                else:
                    fields[key] = value
            status = TaskStatus(payload.get("status", current.status.value))
        result[action.uid] = Task(uid=action.uid, status=status, fields=fields)
    return result


@settings(max_examples=300, deadline=None)
@given(
    before=tickets_strategy,
    after=tickets_strategy,
    operator=st.lists(st.sampled_from(range(12)), max_size=4),
)
def test_planning_again_after_applying_is_empty(
    before: list[Ticket], after: list[Ticket], operator: list[int]
) -> None:
    """Whatever the tickets and operator actions, plan -> apply -> plan converges to nothing."""
    tasks = apply_to({}, plan_source(SOURCE, before, {}, POLICY).actions)
    for n in operator:  # operators start or close some tasks
        uid = task_uid(NS, SOURCE, f"T-{n}")
        if uid in tasks:
            t = tasks[uid]
            tasks[uid] = Task(
                uid=uid, status=TaskStatus.DONE if n % 2 else TaskStatus.STARTED, fields=t.fields
            )
    first = plan_source(SOURCE, after, tasks, POLICY)
    tasks = apply_to(tasks, first.actions)
    second = plan_source(SOURCE, after, tasks, POLICY)
    assert second.actions == ()
    open_ids = {t.id for t in after if t.is_open}
    for task in tasks.values():
        ticket_id = task.fields["fc_ticket_id"]
        if ticket_id not in open_ids:
            assert task.status is TaskStatus.DONE


def digests(*tasks: Task) -> dict[str, TaskDigest]:
    return {t.uid: task_digest(t) for t in tasks}


def test_check_sync_finds_unchanged_tasks_from_their_digests() -> None:
    """A task holding what its ticket wants is in sync; a changed field or due date is not."""
    same, retitled, moved = ticket("T-1"), ticket("T-2"), ticket("T-3", due_at=T0)
    tasks = [task_for(same), task_for(retitled), task_for(moved)]
    check = check_sync(
        SOURCE,
        [same, ticket("T-2", title="New title"), ticket("T-3", due_at=T0 + timedelta(days=1))],
        digests(*tasks),
        POLICY,
    )
    assert check.synced == {"T-1"}
    assert sorted(check.unsynced) == sorted([tasks[1].uid, tasks[2].uid])


def test_check_sync_leaves_done_tasks_and_closed_tickets_to_the_plan() -> None:
    """A DONE task, or a ticket reported closed, is never decided from a digest."""
    done, closing = ticket("T-1"), ticket("T-2")
    tasks = [task_for(done, status=TaskStatus.DONE), task_for(closing)]
    check = check_sync(SOURCE, [done, ticket("T-2", is_open=False)], digests(*tasks), POLICY)
    assert check.synced == set()


def test_a_digest_that_differs_only_by_a_foreign_field_plans_nothing() -> None:
    """An operator's own field changes the digest, not the plan: the full compare decides."""
    t = ticket("T-1")
    task = task_for(t, notes="the operator's own field")
    check = check_sync(SOURCE, [t], digests(task), POLICY)
    assert check == SyncCheck(set(), [task.uid], {"T-1": desired_fields(SOURCE, t, POLICY)})
    plan = plan_source(SOURCE, [t], index(task), POLICY, synced=check.synced, desired=check.desired)
    assert plan.actions == () and plan.unchanged == 1


def test_synced_tickets_are_unchanged_without_their_tasks() -> None:
    """Tickets in sync count as unchanged and their tasks, not passed, are never closed."""
    synced, edited = ticket("T-1"), ticket("T-2")
    gone = ticket("T-3")
    tasks = index(task_for(edited), task_for(gone))
    plan = plan_source(SOURCE, [synced, ticket("T-2", title="New")], tasks, POLICY, synced={"T-1"})
    assert [(a.kind, a.ticket_id) for a in plan.actions] == [
        (ActionKind.UPDATE, "T-2"),
        (ActionKind.CLOSE, "T-3"),
    ]
    assert plan.unchanged == 1


@settings(max_examples=200, deadline=None)
@given(
    title=st.text(max_size=12),
    task_title=st.text(max_size=12),
    amount=st.one_of(st.none(), st.integers(-3, 3), st.floats(-3, 3), st.booleans()),
    task_amount=st.one_of(st.none(), st.integers(-3, 3), st.floats(-3, 3), st.booleans()),
)
def test_in_sync_never_hides_a_change(
    title: str, task_title: str, amount: Any, task_amount: Any
) -> None:
    """Whatever the values, a ticket found in sync is one the full compare leaves alone."""
    t = ticket("T-1", title=title or "x", fields={"amount": amount})
    task = task_for(t, title=task_title or "x", amount=task_amount)
    check = check_sync(SOURCE, [t], digests(task), POLICY)
    full = plan_source(SOURCE, [t], index(task), POLICY)
    if check.synced:
        assert full.actions == ()


def test_values_the_ticket_lost_are_cleared_but_operator_fields_kept() -> None:
    """A managed key the ticket no longer has (custom field, due date) is cleared with a null;
    a field an operator added, in no managed set, is left as it is."""
    before = ticket(fields={"amount": 5, "country": "FR"}, due_at=T0)
    task = task_for(before, operator_note="keep me")
    payload = {"fields": {"amount": 5, "country": "FR", "x": None}, "due_at": "2026-01-01"}
    written = written_keys(payload)
    assert written == {"amount", "country", "due_at"}
    after = ticket(fields={"country": "FR"})
    managed = {task.uid: written}
    (action,) = plan_source(SOURCE, [after], index(task), POLICY, managed=managed).actions
    assert action.kind is ActionKind.UPDATE
    assert action.changes == {"amount": (5, None), "due_at": ("2026-01-01T00:00:00.000Z", None)}
    assert action.payload["fields"]["amount"] is None
    assert action.payload["due_at"] is None
    assert "operator_note" not in action.payload["fields"]
    # Without a record of what was written (a lost index), nothing is cleared.
    assert plan_source(SOURCE, [after], index(task), POLICY).actions == ()
    # The digests alone cannot see a lost due date: a task given one goes to the full plan.
    still = ticket(fields={"amount": 5, "country": "FR"})
    synced_task = task_for(still)
    digests = {synced_task.uid: task_digest(synced_task)}
    assert check_sync(SOURCE, [still], digests, POLICY).synced == {"T-1"}
    assert check_sync(SOURCE, [still], digests, POLICY, {synced_task.uid}).synced == set()
