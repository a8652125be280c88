"""Safety guards: the pure step between a plan and its writes that refuses what could do harm.

Three guards, all about closes, since a wrong close is what costs an operations team a day:
a source whose snapshot failed or is incomplete gets no closes at all (absence proves nothing
then); an empty snapshot of a source that has open tasks gets no closes, whatever their number
(almost always an outage: a back-office answering `[]`), unless the source sets `allow_empty` or
the run allows mass closes; and a plan that would close more than
`max(close_min, close_ratio x open tasks)` of a source's tasks has its closes refused. Creates,
updates and reopens always pass. A fourth holds
back a mass write-back (`guard_write_backs`): a cycle that would close more than
`guards.write_back_max` tickets in a back-office (an operator's bulk DONE, a Fragment import)
closes none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from connector.models import Action, ActionKind, Plan, Refusal, WriteBack

GUARD_INCOMPLETE = "incomplete_snapshot"
GUARD_MASS_CLOSE = "mass_close"
GUARD_MASS_WRITE_BACK = "mass_write_back"
GUARD_EMPTY = "empty_snapshot"


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Thresholds of the mass-close guard, and the operator's explicit override."""

    close_ratio: float = 0.3
    close_min: int = 20
    allow_mass_close: bool = False
    allow_empty: bool = False  # the source's `allow_empty`: an empty snapshot may close all


def close_limit(open_tasks_before: int, policy: GuardPolicy) -> int:
    """The most closes one source may receive in one cycle."""
    return max(policy.close_min, int(policy.close_ratio * open_tasks_before))


def guard_plan(
    plan: Plan,
    *,
    snapshot_complete: bool,
    open_tasks_before: int,
    policy: GuardPolicy,
    snapshot_empty: bool = False,
) -> tuple[Refusal, ...]:
    """The actions of `plan` that must not be applied, each with the guard and its reason.

    `snapshot_empty`: the source's snapshot held no ticket at all.
    """
    closes: list[Action] = [a for a in plan.actions if a.kind is ActionKind.CLOSE]
    if not closes:
        return ()
    if not snapshot_complete:
        reason = "the source's snapshot was incomplete this cycle, so absence proves nothing"
        return tuple(Refusal(a, GUARD_INCOMPLETE, reason) for a in closes)
    if snapshot_empty and not (policy.allow_empty or policy.allow_mass_close):
        reason = (
            f"the source's snapshot is empty but it has {open_tasks_before} open tasks: "
            "an outage, most likely; set allow_empty: true on the source, or rerun with "
            "--allow-mass-close if every ticket really is gone"
        )
        return tuple(Refusal(a, GUARD_EMPTY, reason) for a in closes)
    limit = close_limit(open_tasks_before, policy)
    if len(closes) > limit and not policy.allow_mass_close:
        reason = (
            f"{len(closes)} closes exceed the limit of {limit} "
            f"(max of close_min={policy.close_min} and close_ratio={policy.close_ratio} "
            f"x {open_tasks_before} open tasks); rerun with --allow-mass-close if intended"
        )
        return tuple(Refusal(a, GUARD_MASS_CLOSE, reason) for a in closes)
    return ()


def guard_write_backs(write_backs: Sequence[WriteBack], *, limit: int, allow: bool) -> str | None:
    """Why this cycle's write-backs must all be held back, or None when they may be made."""
    if len(write_backs) <= limit or allow:
        return None
    return (
        f"{len(write_backs)} write-backs exceed guards.write_back_max={limit}; "
        "rerun with --allow-mass-write-back if intended"
    )
