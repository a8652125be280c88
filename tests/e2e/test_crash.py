"""The process killed (SIGKILL) in the middle of applying a plan, then run again: exact result."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from connector.sandbox import Faults
from tests.conftest import TOKEN, Workspace, make_tickets
from tests.forkserver import FORK_SERVER


def assert_exact(ws: Workspace, open_ids: set[str], foreign: set[str] = frozenset()) -> None:
    """One task per ticket, open exactly for the open tickets; foreign tasks untouched."""
    tasks = ws.tasks().values()
    ours = [t for t in tasks if t["uid"] not in foreign]
    per_ticket = Counter(t["fields"]["fc_ticket_id"] for t in ours)
    assert max(per_ticket.values(), default=1) == 1, "a ticket has two tasks"
    assert {t["fields"]["fc_ticket_id"] for t in ours if t["status"] != "DONE"} == open_ids


def kill_when(ws: Workspace, condition: Callable[[], bool]) -> None:
    """Start `reconcile` (forked from tests/forkserver.py), SIGKILL it once `condition` holds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    env["FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"] = TOKEN
    process = FORK_SERVER.start(
        ["reconcile", "--config", str(ws.config_path)], cwd=ws.root, env=env
    )
    try:
        deadline = time.monotonic() + 30
        while not condition():
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL


def writes(ws: Workspace, method: str) -> int:
    return sum(1 for r in ws.sandbox.store.requests() if r["method"] == method)


@pytest.mark.parametrize("lose_state", [False, True])
def test_killed_mid_creates_then_rerun_converges(workspace: Workspace, lose_state: bool) -> None:
    """Killed while creating 500 tasks (and, or not, the state file lost): the rerun finishes
    the job with no duplicate."""
    workspace.write_tickets(make_tickets(500))
    workspace.sandbox.store.set_faults(Faults(latency_s=0.4))
    kill_when(workspace, lambda: writes(workspace, "PUT") >= 2)
    assert 0 < len(workspace.tasks()) < 500
    if lose_state:
        workspace.state_path.unlink(missing_ok=True)
    workspace.sandbox.store.set_faults(Faults())
    code, _ = workspace.reconcile_json()
    assert code == 0
    assert_exact(workspace, {f"T-{n}" for n in range(500)})
    code, again = workspace.reconcile_json()
    assert (code, again["counts"]["create"], again["counts"]["update"]) == (0, 0, 0)


def test_killed_mid_closes_then_rerun_converges(workspace: Workspace) -> None:
    """Killed while closing: the rerun closes the rest, touching no operator or foreign task."""
    foreign = {
        t["uid"]
        for t in workspace.sandbox.store.seed(
            [
                {
                    "uid": "00000000-0000-4000-8000-00000000f001",
                    "status": "TODO",
                    "fields": {"title": "hand-made"},
                }
            ]
        )
    }
    workspace.write_config(guards={"close_ratio": 1.0})
    workspace.write_tickets(make_tickets(300))
    assert workspace.reconcile().returncode == 0
    started = next(
        u for u, t in workspace.tasks().items() if t["fields"].get("fc_ticket_id") == "T-299"
    )
    workspace.sandbox.store.operator_edit(started, status="STARTED")
    workspace.write_tickets(make_tickets(100))  # 200 vanish (T-299, STARTED, among them)
    workspace.sandbox.store.clear_requests()
    workspace.sandbox.store.set_faults(Faults(latency_s=0.4))
    kill_when(workspace, lambda: writes(workspace, "PATCH") >= 1)
    workspace.sandbox.store.set_faults(Faults())
    code, _ = workspace.reconcile_json()
    assert code == 0
    assert_exact(workspace, {f"T-{n}" for n in range(100)}, foreign)
    assert workspace.tasks()[next(iter(foreign))]["status"] == "TODO"
