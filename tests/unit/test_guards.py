"""The safety guards: no closes from an incomplete snapshot, none past the mass-close limit."""

from __future__ import annotations

from connector.guards import (
    GUARD_EMPTY,
    GUARD_INCOMPLETE,
    GUARD_MASS_CLOSE,
    GuardPolicy,
    close_limit,
    guard_plan,
)
from connector.models import Action, ActionKind, Plan


def action(kind: ActionKind, n: int) -> Action:
    return Action(kind=kind, uid=f"u{n}", source="s", ticket_id=f"T-{n}", reason="r", payload={})


def plan_with(closes: int, creates: int = 2) -> Plan:
    actions = [action(ActionKind.CREATE, n) for n in range(creates)]
    actions += [action(ActionKind.CLOSE, 100 + n) for n in range(closes)]
    return Plan(source="s", actions=tuple(actions))


def test_limit_is_the_larger_of_min_and_ratio() -> None:
    """The close limit is max(close_min, close_ratio x open tasks)."""
    policy = GuardPolicy(close_ratio=0.3, close_min=20)
    assert close_limit(10, policy) == 20
    assert close_limit(1000, policy) == 300


def test_closes_within_the_limit_pass() -> None:
    """A plan closing no more than the limit is refused nothing."""
    assert (
        guard_plan(
            plan_with(30), snapshot_complete=True, open_tasks_before=100, policy=GuardPolicy()
        )
        == ()
    )


def test_mass_close_refuses_every_close_but_not_creates() -> None:
    """Past the limit, all closes are refused (never a partial mass close); creates pass."""
    refusals = guard_plan(
        plan_with(31), snapshot_complete=True, open_tasks_before=100, policy=GuardPolicy()
    )
    assert len(refusals) == 31
    assert {r.guard for r in refusals} == {GUARD_MASS_CLOSE}
    assert all(r.action.kind is ActionKind.CLOSE for r in refusals)
    assert "31 closes exceed the limit of 30" in refusals[0].reason


def test_empty_source_against_100_tasks_trips_the_guard() -> None:
    """An empty snapshot that would close 100 of 100 tasks is refused."""
    refusals = guard_plan(
        plan_with(100, 0), snapshot_complete=True, open_tasks_before=100, policy=GuardPolicy()
    )
    assert len(refusals) == 100


def test_allow_mass_close_lets_them_through() -> None:
    """--allow-mass-close disables the mass-close guard."""
    policy = GuardPolicy(allow_mass_close=True)
    assert (
        guard_plan(plan_with(100, 0), snapshot_complete=True, open_tasks_before=100, policy=policy)
        == ()
    )


def test_incomplete_snapshot_gets_no_closes_even_when_allowed() -> None:
    """An incomplete snapshot refuses every close, whatever the mass-close override says."""
    policy = GuardPolicy(allow_mass_close=True)
    refusals = guard_plan(
        plan_with(1), snapshot_complete=False, open_tasks_before=100, policy=policy
    )
    assert [r.guard for r in refusals] == [GUARD_INCOMPLETE]


def test_empty_snapshot_refuses_closes_whatever_their_number() -> None:
    """An empty snapshot of a source with 17 open tasks (under close_min) closes nothing,
    unless the source allows it (allow_empty) or the run allows mass closes."""
    refusals = guard_plan(
        plan_with(17, 0),
        snapshot_complete=True,
        open_tasks_before=17,
        policy=GuardPolicy(),
        snapshot_empty=True,
    )
    assert len(refusals) == 17 and {r.guard for r in refusals} == {GUARD_EMPTY}
    assert "snapshot is empty but it has 17 open tasks" in refusals[0].reason
    for policy in (GuardPolicy(allow_empty=True), GuardPolicy(allow_mass_close=True)):
        assert (
            guard_plan(
                plan_with(17, 0),
                snapshot_complete=True,
                open_tasks_before=17,
                policy=policy,
                snapshot_empty=True,
            )
            == ()
        )
