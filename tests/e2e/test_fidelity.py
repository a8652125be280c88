"""Fidelity to the documented Fragment API: an operator's decision survives state loss, a query
the server ignores or refuses, and a look-up that cannot conclude. Each runs against a strict and a
lenient sandbox (tests/conftest.py, BOTH_PROFILES)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from connector.sandbox import FailRule, Faults
from tests.conftest import BOTH_PROFILES, Workspace, make_tickets
from tests.e2e.test_reconcile import uid_of


def _synced_with_operator_done(ws: Workspace) -> str:
    """Five tickets synced, then an operator marks T-2's task DONE while T-2 stays open."""
    ws.write_tickets(make_tickets(5))
    assert ws.reconcile().returncode == 0
    done = uid_of("T-2")
    ws.sandbox.store.operator_edit(done, status="DONE")
    return done


def _index_forgets(ws: Workspace, uid: str) -> None:
    """The state store loses one task's entry (a partial loss: an older backup, a bad edit),
    and a later write moves the listing watermark past the operator's edit, so the next
    incremental listing does not show that task again (on a server that honours the filter)."""
    # Past the 1 s listing overlap these tests configure, counted from the listing's start in
    # Fragment's clock: its Date header, which counts whole seconds, and which the sandbox's
    # uvicorn renews about once a second (later on a loaded machine): up to 3 s before the edit
    # below. (1.2 s passed only while the command line took half a second to start.)
    time.sleep(3.1)
    ws.sandbox.store.operator_edit(uid_of("T-0"), fields={"title": "edited by hand"})
    assert ws.reconcile().returncode == 0  # writes T-0's title back: a newer updated_at
    with sqlite3.connect(ws.state_path) as db:
        db.execute("DELETE FROM fc_task_index WHERE uid = ?", (uid,))


def _census_lost(ws: Workspace) -> None:
    """The index keeps its rows but loses the proof that they are all of the source's tasks (a
    store written before the census existed): new tickets are looked up in Fragment again."""
    with sqlite3.connect(ws.state_path) as db:
        assert db.execute("DELETE FROM fc_index_census").rowcount == 1


def _puts(ws: Workspace) -> list[dict[str, Any]]:
    return [r for r in ws.sandbox.store.requests() if r["method"] == "PUT"]


@BOTH_PROFILES
def test_operator_done_survives_state_loss(workspace: Workspace) -> None:
    """State file deleted: the operator's DONE task is not re-created or reopened (issue 1)."""
    done = _synced_with_operator_done(workspace)
    workspace.state_path.unlink()
    workspace.sandbox.store.clear_requests()
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["counts"]["create"] == 0
    assert workspace.tasks()[done]["status"] == "DONE"
    assert _puts(workspace) == []


@BOTH_PROFILES
def test_operator_done_survives_a_partial_state_loss(workspace: Workspace) -> None:
    """The index forgot the DONE task: the query finds it on a strict server; a lenient one
    ignores the listing's filters, so the listing itself shows the task again."""
    workspace.write_config(fragment={"listing_overlap": "1s"})
    done = _synced_with_operator_done(workspace)
    assert workspace.reconcile().returncode == 0  # the index learns of the DONE
    _index_forgets(workspace, done)
    workspace.sandbox.store.clear_requests()
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["counts"]["create"] == 0 and report["sources"][0]["unresolved"] == []
    assert workspace.tasks()[done]["status"] == "DONE"
    assert _puts(workspace) == []
    routes = [r["route"] for r in workspace.sandbox.store.requests()]
    assert ("/tasks/query" in routes) is not workspace.sandbox.config.lenient


@BOTH_PROFILES
def test_new_tickets_need_no_lookup_while_the_index_census_holds(workspace: Workspace) -> None:
    """The first import listed every status, and every later listing of changes chains on it:
    the index holds every task of the source, so new tickets are created without asking
    Fragment about their uids (issue 17), and the operator's DONE task is left alone."""
    workspace.write_config(fragment={"listing_overlap": "1s"})
    done = _synced_with_operator_done(workspace)
    assert workspace.reconcile().returncode == 0
    workspace.write_tickets(make_tickets(8))
    workspace.sandbox.store.clear_requests()
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["counts"]["create"] == 3 and report["sources"][0]["unresolved"] == []
    requests = workspace.sandbox.store.requests()
    assert [r["route"] for r in requests if r["method"] != "GET" or r["route"] != "/tasks"] == [
        "/tasks/batch"
    ]
    assert [put["items"] for put in _puts(workspace)] == [3]
    tasks = workspace.tasks()
    assert tasks[done]["status"] == "DONE"
    assert len(tasks) == 8 and {uid_of(f"T-{n}") for n in (5, 6, 7)} <= tasks.keys()


@BOTH_PROFILES
def test_a_damaged_index_is_noticed_and_a_full_run_proves_it_complete_again(
    workspace: Workspace,
) -> None:
    """The index lost a row behind the connector's back: its census is void (said in the log),
    new tickets are looked up again; `reconcile --full` lists every status and restores it."""
    workspace.write_config(fragment={"listing_overlap": "1s"})
    done = _synced_with_operator_done(workspace)
    assert workspace.reconcile().returncode == 0
    _index_forgets(workspace, done)
    result = workspace.reconcile()
    assert result.returncode == 0, result.stderr
    assert "state.census_void" in result.stderr
    assert workspace.tasks()[done]["status"] == "DONE"

    workspace.write_tickets(make_tickets(6))
    workspace.sandbox.store.clear_requests()
    result = workspace.cli("-v", "reconcile", "--config", str(workspace.config_path))
    assert result.returncode == 0, result.stderr
    assert "state.no_census" in result.stderr and "reconcile --full" in result.stderr
    routes = [r["route"] for r in workspace.sandbox.store.requests()]
    assert ("/tasks/query" in routes) is not workspace.sandbox.config.lenient
    code, report = workspace.reconcile_json("--full")
    assert code == 0, report
    assert report["sources"][0]["listing"] == "full, every status"

    workspace.write_tickets(make_tickets(7))
    workspace.sandbox.store.clear_requests()
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["counts"]["create"] == 1
    assert "/tasks/query" not in [r["route"] for r in workspace.sandbox.store.requests()]
    assert workspace.tasks()[done]["status"] == "DONE"


def test_a_create_whose_answer_was_lost_is_looked_up_not_taken_for_absent(
    workspace: Workspace,
) -> None:
    """Fragment applied a create but its answer was lost, listings do not show the new task yet
    (its consistency delay), and an operator closes it meanwhile. The index row written ahead
    of the create makes the next run look the uid up rather than trust the census: the
    operator's DONE is not PUT back to TODO."""
    workspace.write_config(fragment={"listing_overlap": "1s", "retry_deadline": "1s"})
    workspace.write_tickets(make_tickets(5))
    assert workspace.reconcile().returncode == 0
    store = workspace.sandbox.store
    store.update_config(visibility_delay_s=300)
    workspace.write_tickets(make_tickets(6))
    store.set_faults(Faults(fail_next=(FailRule("PUT", "/tasks/batch", "lost", count=50),)))
    code, report = workspace.reconcile_json()
    assert code == 1 and report["counts"]["failed"] == 1, report
    created = uid_of("T-5")
    store.operator_edit(created, status="DONE")  # Fragment did create it
    # The query hides young tasks too, so it is refused: the look-up asks by uid.
    store.set_faults(Faults(fail_next=(FailRule("POST", "/tasks/query", 422, count=50),)))
    store.clear_requests()
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["counts"]["create"] == 0
    assert workspace.tasks()[created]["status"] == "DONE"
    assert _puts(workspace) == []
    assert "/tasks/{uid}" in [r["route"] for r in store.requests()]


@BOTH_PROFILES
def test_new_tickets_are_created_once_when_the_query_is_ignored(workspace: Workspace) -> None:
    """New tickets are looked up before their create; a lenient server answers the query with
    every task (foreign ones too), which proves nothing: the look-up falls back and each new
    ticket gets exactly one task."""
    workspace.sandbox.store.seed([{"uid": uid_of("X-1", source="other"), "fields": {"title": "x"}}])
    workspace.write_tickets(make_tickets(3))
    assert workspace.reconcile().returncode == 0
    _census_lost(workspace)
    workspace.write_tickets(make_tickets(6))
    workspace.sandbox.store.clear_requests()
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["counts"]["create"] == 3
    assert len(workspace.tasks()) == 7
    routes = [r["route"] for r in workspace.sandbox.store.requests()]
    assert "/tasks/query" in routes


@BOTH_PROFILES
def test_operator_done_survives_when_the_query_is_refused(workspace: Workspace) -> None:
    """A 422 from POST /tasks/query no longer falls through to re-creating (issue 3)."""
    workspace.write_config(fragment={"listing_overlap": "1s"})
    done = _synced_with_operator_done(workspace)
    assert workspace.reconcile().returncode == 0
    _index_forgets(workspace, done)
    workspace.sandbox.store.set_faults(
        Faults(fail_next=(FailRule("POST", "/tasks/query", 422, count=5),))
    )
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["counts"]["create"] == 0
    assert workspace.tasks()[done]["status"] == "DONE"


@BOTH_PROFILES
def test_unprovable_absence_leaves_the_ticket_unresolved(workspace: Workspace) -> None:
    """A new ticket whose uid neither the query nor GET /tasks/{uid} can settle gets no PUT (it
    could replace an operator's task): reported unresolved, exit 1; the next run, with Fragment
    answering again, creates it."""
    workspace.write_tickets(make_tickets(5))
    assert workspace.reconcile().returncode == 0
    _census_lost(workspace)
    workspace.write_tickets(make_tickets(6))
    refuse = (
        FailRule("POST", "/tasks/query", 422, count=5),
        FailRule("GET", "/tasks/{uid}", 422, count=5),
    )
    workspace.sandbox.store.set_faults(Faults(fail_next=refuse))
    workspace.sandbox.store.clear_requests()
    code, report = workspace.reconcile_json()
    assert code == 1
    assert report["sources"][0]["unresolved"] == ["T-5"]
    assert report["counts"]["create"] == 0
    assert _puts(workspace) == []
    text = workspace.reconcile()
    assert text.returncode == 1
    assert "UNRESOLVED 1 tickets (T-5)" in text.stdout
    workspace.sandbox.store.set_faults(Faults())
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["sources"][0]["unresolved"] == []
    assert report["counts"]["create"] == 1
    assert len(workspace.tasks()) == 6


@BOTH_PROFILES
def test_an_item_missing_from_a_200_batch_answer_fails_and_is_retried(
    workspace: Workspace,
) -> None:
    """Fragment answers a batch 200 without one of its items (not created): that action is
    reported failed (exit 1) and planned again by the next run, which creates it (issue 4)."""
    workspace.write_tickets(make_tickets(5))
    rule = FailRule("PUT", "/tasks/batch", "partial")
    workspace.sandbox.store.set_faults(Faults(fail_next=(rule,)))
    code, report = workspace.reconcile_json()
    assert code == 1
    assert report["counts"]["failed"] == 1
    [failed] = report["sources"][0]["failed"]
    assert failed["ticket_id"] == "T-4" and failed["kind"] == "create"
    assert "did not include the task" in failed["error"]
    assert uid_of("T-4") not in workspace.tasks()
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert [(a["kind"], a["ticket_id"]) for a in report["sources"][0]["actions"]] == [
        ("create", "T-4")
    ]
    assert len(workspace.tasks()) == 5

    tickets = make_tickets(5)
    for ticket in tickets:
        ticket["title"] += " (edited)"
    workspace.write_tickets(tickets)
    workspace.sandbox.store.set_faults(
        Faults(fail_next=(FailRule("PATCH", "/tasks/batch", "partial"),))
    )
    code, report = workspace.reconcile_json()
    assert code == 1 and report["counts"]["failed"] == 1
    assert report["sources"][0]["failed"][0]["kind"] == "update"
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert [(a["kind"], a["ticket_id"]) for a in report["sources"][0]["actions"]] == [
        ("update", "T-4")
    ]
    assert all(t["fields"]["title"].endswith("(edited)") for t in workspace.tasks().values())


@BOTH_PROFILES
def test_dry_run_shows_what_the_real_run_does_and_full_lists_everything(
    workspace: Workspace,
) -> None:
    """Tasks deleted in Fragment: between full listings the dry-run and the real run agree (both
    plan from the changes listing, and say so); with --full both list every task and recreate
    them, the dry-run's action list identical to the real run's (issue 5)."""
    workspace.write_tickets(make_tickets(10))
    assert workspace.reconcile().returncode == 0
    deleted = [uid_of(f"T-{n}") for n in (3, 5, 7)]
    assert workspace.sandbox.store.delete(deleted) == 3

    code, planned = workspace.reconcile_json("--dry-run")
    assert code == 0
    assert planned["sources"][0]["listing"] == "changes since the last listing"
    code, done = workspace.reconcile_json()
    assert code == 0
    assert done["sources"][0]["actions"] == planned["sources"][0]["actions"] == []
    text = workspace.reconcile("--dry-run")
    assert "planned from Fragment's listing: changes since the last listing" in text.stdout
    assert "--full lists now" in text.stdout

    workspace.sandbox.store.clear_requests()
    code, planned = workspace.reconcile_json("--dry-run", "--full")
    assert code == 2
    assert planned["sources"][0]["listing"] == "full"
    assert workspace.writes() == []
    code, done = workspace.reconcile_json("--full")
    assert code == 0
    assert done["sources"][0]["actions"] == planned["sources"][0]["actions"]
    assert sorted(a["ticket_id"] for a in done["sources"][0]["actions"]) == ["T-3", "T-5", "T-7"]
    assert {a["kind"] for a in done["sources"][0]["actions"]} == {"create"}
    assert len(workspace.tasks()) == 10


@BOTH_PROFILES
def test_first_import_into_an_empty_fragment_asks_nothing_per_uid(workspace: Workspace) -> None:
    """A first import lists the source in every status (one request when Fragment is empty)
    and then only writes: no query, no look-up by uid."""
    workspace.write_tickets(make_tickets(250))
    code, report = workspace.reconcile_json()
    assert code == 0
    assert report["sources"][0]["listing"] == "full, every status"
    routes = [(r["method"], r["route"]) for r in workspace.sandbox.store.requests()]
    assert routes == [("GET", "/tasks")] + [("PUT", "/tasks/batch")] * 3


@BOTH_PROFILES
def test_empty_snapshot_of_a_small_source_is_refused(workspace: Workspace) -> None:
    """17 open tasks (under close_min: 20) and a back-office answering []: no close, exit 3;
    the source's allow_empty: true lets them through (issue 6)."""
    workspace.write_tickets(make_tickets(17))
    assert workspace.reconcile().returncode == 0
    workspace.write_tickets([])
    result = workspace.reconcile()
    assert result.returncode == 3
    assert "REFUSED 17 closes (empty_snapshot)" in result.stdout
    assert all(t["status"] == "TODO" for t in workspace.tasks().values())
    source = {
        "name": "backoffice",
        "adapter": "file",
        "options": {"path": str(workspace.tickets_path)},
        "allow_empty": True,
    }
    workspace.write_config(sources=[source])
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["counts"]["close"] == 17
    assert all(t["status"] == "DONE" for t in workspace.tasks().values())


@BOTH_PROFILES
def test_values_a_ticket_lost_are_cleared_on_its_task(workspace: Workspace) -> None:
    """A ticket loses a custom field and its due date: its task loses them too (a PATCH of
    null); the field an operator added by hand stays (issue 7)."""
    tickets = make_tickets(3)
    tickets[1]["due_at"] = "2031-05-01T09:00:00Z"
    workspace.write_tickets(tickets)
    assert workspace.reconcile().returncode == 0
    uid = uid_of("T-1")
    created = workspace.tasks()[uid]
    assert created["due_at"] == "2031-05-01T09:00:00.000Z"
    workspace.sandbox.store.operator_edit(uid, fields={"operator_note": "call back"})
    del tickets[1]["due_at"], tickets[1]["amount"]
    workspace.write_tickets(tickets)

    code, planned = workspace.reconcile_json("--dry-run")
    assert code == 2
    [action] = planned["sources"][0]["actions"]
    assert action["changes"] == {
        "amount": [10, None],
        "due_at": ["2031-05-01T09:00:00.000Z", None],
    }
    code, report = workspace.reconcile_json()
    assert code == 0, report
    assert report["sources"][0]["actions"] == planned["sources"][0]["actions"]
    task = workspace.tasks()[uid]
    assert "amount" not in task["fields"]
    assert task["fields"]["operator_note"] == "call back"
    assert task["due_at"] == created["created_at"]
    code, report = workspace.reconcile_json()
    assert code == 0 and report["sources"][0]["actions"] == []
