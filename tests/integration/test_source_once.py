"""A cycle computes each ticket's uid and desired fields once, against the sandbox, in-process.

The real functions are wrapped by counting spies wherever the core imported them, so a second
computation anywhere in a cycle (reading, the digests' check, the look-up, the plan) shows.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from connector import identity, plan
from connector.config import load_settings
from connector.cycle import FULL, INCREMENTAL, CycleOptions, source_exit_code
from connector.models import SourceReport
from connector.runtime import open_runtime
from tests.conftest import TOKEN, Workspace, make_tickets


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAGMENT_CONNECTOR__FRAGMENT__TOKEN", TOKEN)


def spy(
    monkeypatch: pytest.MonkeyPatch, function: Callable[..., Any], key: Callable[..., str]
) -> Counter[str]:
    """Count the calls of `function` by `key(*args)`, in every module of the core that holds it."""
    calls: Counter[str] = Counter()

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[key(*args)] += 1
        return function(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("connector") and getattr(module, function.__name__, None) is function:
            monkeypatch.setattr(module, function.__name__, counting)
    return calls


class Spies:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.uids = spy(monkeypatch, identity.task_uid, lambda _ns, _source, ticket_id: ticket_id)
        self.desired = spy(monkeypatch, plan.desired_fields, lambda _source, ticket, _p: ticket.id)

    def clear(self) -> None:
        self.uids.clear()
        self.desired.clear()


async def reconcile(ws: Workspace, kind: str) -> SourceReport:
    settings = load_settings(ws.config_path)
    async with open_runtime(settings) as reconciler:
        return await reconciler.reconcile_source(settings.sources[0], CycleOptions(), kind=kind)


async def test_a_full_cycle_computes_each_tickets_uid_and_desired_fields_once(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First import, then a cycle with an edit, a new ticket, a closed and a vanished one: each
    ticket read has its uid computed once, and its desired fields at most once (once for every
    open ticket, whether the digests found it in sync or the plan compared it)."""
    spies = Spies(monkeypatch)
    tickets = make_tickets(30)
    workspace.write_tickets(tickets)
    first = await reconcile(workspace, FULL)
    assert first.ok and len(first.planned) == 30
    assert spies.uids == Counter({t["id"]: 1 for t in tickets})
    assert spies.desired == Counter({t["id"]: 1 for t in tickets})

    spies.clear()
    tickets[1]["title"] = "Edited"
    tickets[2]["status"] = "closed"
    del tickets[3]
    tickets += make_tickets(1, start=30)
    workspace.write_tickets(tickets)
    second = await reconcile(workspace, FULL)
    assert source_exit_code(second, dry_run=False) == 0
    kinds = Counter(action.kind.value for action in second.planned)
    assert kinds == Counter({"update": 1, "create": 1, "close": 2}), second.planned
    read = {t["id"] for t in tickets}
    # T-3 is absent: its task's ownership is checked from the task's own markers (once).
    assert spies.uids == Counter({**dict.fromkeys(read, 1), "T-3": 1})
    open_ids = {t["id"] for t in tickets if t.get("status") != "closed"}
    assert spies.desired == Counter(dict.fromkeys(open_ids, 1))


async def test_an_incremental_cycle_computes_each_changed_tickets_uid_and_fields_once(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll's changed tickets: one uid and one set of desired fields each, look-up included."""
    tickets = make_tickets(20)
    workspace.write_tickets(tickets)
    assert (await reconcile(workspace, FULL)).ok
    assert (await reconcile(workspace, INCREMENTAL)).ok  # the first poll only takes a cursor
    spies = Spies(monkeypatch)
    tickets[0]["title"] = "Edited"
    tickets += make_tickets(1, start=20)
    workspace.write_tickets(tickets)
    report = await reconcile(workspace, INCREMENTAL)
    assert source_exit_code(report, dry_run=False) == 0
    assert Counter(a.kind.value for a in report.planned) == Counter({"update": 1, "create": 1})
    # Without `updated_at` every record of a touched file is a change: all 21 were read.
    assert spies.uids == Counter({t["id"]: 1 for t in tickets})
    assert spies.desired == Counter({t["id"]: 1 for t in tickets})
