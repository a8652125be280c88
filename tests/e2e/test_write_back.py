"""Write-back end to end, per built-in adapter: the real CLI, the sandbox, a fake back-office.

An operator's DONE in Fragment closes (or comments) the ticket exactly once: across a SIGKILL
between the back-office's answer and the marker, and after the state store is lost. Tasks the
connector closed itself are never written back; a dry-run lists without writing; the guard
refuses a mass write-back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connector.sandbox import FailRule, Faults
from tests.conftest import Workspace
from tests.e2e.test_crash import kill_when
from tests.e2e.test_reconcile import uid_of
from tests.fakes.write_back import WRITING_ADAPTERS, Backoffice, backoffice

MARKER = "fc_written_back"
NOTE = "Finished in Fragment: $title ($ticket_id)"


@pytest.fixture(params=WRITING_ADAPTERS)
def bo(request: pytest.FixtureRequest) -> Iterator[Backoffice]:
    """A fake back-office of each adapter that writes back."""
    with backoffice(request.param) as running:
        yield running


def configure(ws: Workspace, bo: Backoffice, **write_back: Any) -> None:
    """The workspace's config with the back-office as its only source."""
    guards = write_back.pop("guards", {})
    ws.write_config(sources=[bo.source(**write_back)], guards=guards)


def done(ws: Workspace, ticket_id: str) -> None:
    """An operator moves the ticket's task to DONE in Fragment."""
    ws.sandbox.store.operator_edit(uid_of(ticket_id), status="DONE")


def task(ws: Workspace, ticket_id: str) -> dict[str, Any]:
    found = ws.sandbox.store.task(uid_of(ticket_id))
    assert found is not None
    return found


def write_backs(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for s in report["sources"] for w in s["write_backs"]]


def first_sync(ws: Workspace) -> None:
    code, report = ws.reconcile_json()
    assert code == 0, report.get("error", report)
    assert report["counts"]["create"] > 2


def test_operator_done_closes_the_ticket_once(workspace: Workspace, bo: Backoffice) -> None:
    """DONE → the ticket is closed once with the note; a connector-closed task is never written
    back; a later reopen of the task does not reopen the ticket."""
    configure(workspace, bo, on_done="close", comment=NOTE)
    first_sync(workspace)
    finished, solved_there = bo.open_ids()[:2]
    done(workspace, finished)
    bo.fake.close(solved_there)  # closed in the back-office: the connector closes its task

    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["counts"]["close"] == 1
    [made] = write_backs(report)
    assert (made["ticket_id"], made["action"], made["outcome"]) == (finished, "close", "closed")
    assert bo.closes(finished) == 1 and not bo.is_open(finished)
    title = task(workspace, finished)["fields"]["title"]
    assert bo.notes(finished) == [f"Finished in Fragment: {title} ({finished})"]
    assert task(workspace, finished)["fields"][MARKER]
    assert task(workspace, finished)["status"] == "DONE"

    assert task(workspace, solved_there)["fields"]["fc_closed_by"] == "connector"
    code, again = workspace.reconcile_json()
    assert (code, write_backs(again)) == (0, [])
    assert bo.fake.writes_to(solved_there) == []

    # The operator reopens the task: the ticket stays closed (the connector closes the task
    # again, since its ticket is closed), and nothing is written back a second time.
    workspace.sandbox.store.operator_edit(uid_of(finished), status="TODO")
    code, third = workspace.reconcile_json()
    assert (code, write_backs(third)) == (0, [])
    assert not bo.is_open(finished)
    assert bo.closes(finished) == 1 and len(bo.notes(finished)) == 1


@pytest.mark.parametrize(
    ("killed", "lose_state"), [("before_answer", False), ("before_marker", True)]
)
def test_killed_between_the_backoffice_and_the_marker(
    workspace: Workspace, bo: Backoffice, killed: str, lose_state: bool
) -> None:
    """SIGKILL after the back-office closed the ticket but before the marker was recorded
    (before its answer arrived, or while Fragment refused the marker): the rerun, with or
    without its state store, does not close it again."""
    configure(workspace, bo, on_done="close")
    first_sync(workspace)
    finished = bo.open_ids()[0]
    done(workspace, finished)
    if killed == "before_answer":
        if bo.adapter == "sql":
            pytest.skip("a database answers when it commits: there is no answer to hold back")
        bo.fake.write_delay = 30  # the back-office applies the close, then holds its answer
    else:
        # The back-office answers; Fragment keeps failing the marker's PATCH (retried).
        rule = FailRule("PATCH", "/tasks/batch", 503, count=10_000)
        workspace.sandbox.store.set_faults(Faults(fail_next=(rule,)))
    kill_when(workspace, lambda: bo.closes(finished) >= 1)
    assert MARKER not in task(workspace, finished)["fields"]
    if lose_state:
        workspace.state_path.unlink()
    bo.fake.write_delay = 0
    workspace.sandbox.store.set_faults(Faults())

    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert bo.closes(finished) == 1 and not bo.is_open(finished)
    assert task(workspace, finished)["status"] == "DONE"
    code, again = workspace.reconcile_json()
    assert (code, write_backs(again)) == (0, [])
    assert bo.closes(finished) == 1


def test_comment_is_written_once_even_after_the_state_store_is_lost(
    workspace: Workspace, bo: Backoffice
) -> None:
    """`comment` leaves the ticket open: the marker on the task alone keeps it to one note."""
    configure(workspace, bo, on_done="comment", comment=NOTE)
    first_sync(workspace)
    finished = bo.open_ids()[0]
    done(workspace, finished)

    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert [(w["ticket_id"], w["outcome"]) for w in write_backs(report)] == [
        (finished, "commented")
    ]
    assert bo.is_open(finished) and bo.closes(finished) == 0
    assert len(bo.notes(finished)) == 1
    assert task(workspace, finished)["fields"][MARKER]

    workspace.state_path.unlink()
    for _ in range(2):
        code, again = workspace.reconcile_json()
        assert (code, write_backs(again)) == (0, [])
    assert len(bo.notes(finished)) == 1
    assert task(workspace, finished)["status"] == "DONE"  # the operator's decision stands


def test_dry_run_lists_write_backs_without_writing(workspace: Workspace, bo: Backoffice) -> None:
    """A dry-run shows each write-back with its reason (exit 2) and writes nothing anywhere;
    `explain` tells what the next cycle will write back, then that it was written back."""
    configure(workspace, bo, on_done="close", comment=NOTE)
    first_sync(workspace)
    finished = bo.open_ids()[0]
    done(workspace, finished)
    before = len(workspace.writes())

    code, report = workspace.reconcile_json("--dry-run")
    assert code == 2
    [planned] = write_backs(report)
    assert (planned["ticket_id"], planned["outcome"]) == (finished, "planned")
    assert "operator" in planned["reason"] and finished in planned["note"]
    text = workspace.reconcile("--dry-run")
    assert text.returncode == 2 and "Write back to the back-office (1)" in text.stdout
    assert bo.fake.applied == [] and bo.is_open(finished)
    assert len(workspace.writes()) == before

    assert "write    close: an operator moved the task to DONE" in explain(workspace, finished)

    code, report = workspace.reconcile_json()
    assert code == 0 and bo.closes(finished) == 1
    assert "write    done: written back to the back-office at 20" in explain(workspace, finished)


def explain(ws: Workspace, ticket_id: str) -> str:
    result = ws.cli("explain", "backoffice", ticket_id, "--config", str(ws.config_path))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_guard_refuses_a_mass_write_back(workspace: Workspace, bo: Backoffice) -> None:
    """More write-backs than guards.write_back_max: none is made (exit 3) until overridden."""
    configure(workspace, bo, on_done="close", guards={"write_back_max": 1})
    first_sync(workspace)
    finished = bo.open_ids()[:2]
    for ticket_id in finished:
        done(workspace, ticket_id)

    code, report = workspace.reconcile_json()
    assert code == 3
    assert {w["outcome"] for w in write_backs(report)} == {"refused"}
    assert "--allow-mass-write-back" in write_backs(report)[0]["error"]
    assert bo.fake.applied == []

    code, report = workspace.reconcile_json("--allow-mass-write-back")
    assert code == 0, report
    assert [bo.closes(t) for t in finished] == [1, 1]


def test_a_ticket_gone_from_the_backoffice_fails_visibly(
    workspace: Workspace, bo: Backoffice
) -> None:
    """404 on the write (a SQL statement matching no row): outcome `gone`, exit 1, no marker
    (the next cycle looks again)."""
    configure(workspace, bo, on_done="close")
    first_sync(workspace)
    finished = bo.open_ids()[0]
    done(workspace, finished)
    bo.fake.gone.add(finished)

    code, report = workspace.reconcile_json()
    assert code == 1
    [failed] = write_backs(report)
    gone = "matched no row" if bo.adapter == "sql" else "404"
    assert failed["outcome"] == "gone" and gone in failed["error"]
    assert MARKER not in task(workspace, finished)["fields"]
