"""`fragment-connector reconcile` end to end: the real CLI, a file back-office, the sandbox."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from connector.identity import PROJECT_NAMESPACE
from tests.conftest import BOTH_PROFILES, TOKEN, Workspace, make_tickets


def uid_of(ticket_id: str, source: str = "backoffice", instance: str = "tests") -> str:
    """The uid as DESIGN.md defines it, computed here independently of connector.identity."""
    return str(uuid.uuid5(uuid.uuid5(PROJECT_NAMESPACE, instance), f"{source}:{ticket_id}"))


def open_tasks(ws: Workspace) -> dict[str, dict[str, Any]]:
    return {uid: t for uid, t in ws.tasks().items() if t["status"] != "DONE"}


@BOTH_PROFILES
def test_250_tickets_become_250_tasks(workspace: Workspace) -> None:
    """Each ticket becomes one TODO task with its title, url, custom and static fields and uid."""
    workspace.write_tickets(make_tickets(250))
    result = workspace.reconcile()
    assert result.returncode == 0, result.stderr
    tasks = workspace.tasks()
    assert len(tasks) == 250
    for n in range(250):
        task = tasks[uid_of(f"T-{n}")]
        assert task["status"] == "TODO"
        assert task["fields"] == {
            "title": f"Ticket number {n}",
            "url": f"https://backoffice.example/t/{n}",
            "amount": n * 10,
            "country": "FR" if n % 2 else "DE",
            "team": "kyc",
            "fc_source": "backoffice",
            "fc_ticket_id": f"T-{n}",
        }
    puts = [w for w in workspace.writes() if w["method"] == "PUT"]
    assert [w["items"] for w in puts] == [100, 100, 50]
    assert "250 create" in result.stdout


def test_second_run_writes_nothing(workspace: Workspace) -> None:
    """Reconciling an unchanged back-office again sends no write at all."""
    workspace.write_tickets(make_tickets(250))
    assert workspace.reconcile().returncode == 0
    workspace.sandbox.store.clear_requests()
    result = workspace.reconcile()
    assert result.returncode == 0, result.stderr
    assert workspace.writes() == []
    assert "0 create, 0 update, 0 reopen, 0 close" in result.stdout


@BOTH_PROFILES
def test_churn_gives_exactly_the_expected_writes(workspace: Workspace) -> None:
    """Vanished, new and changed tickets give exactly those closes, creates and updates."""
    tickets = make_tickets(100)
    workspace.write_tickets(tickets)
    assert workspace.reconcile().returncode == 0
    kept = [t for t in tickets if t["id"] not in {f"T-{n}" for n in range(10)}]  # 10 vanish
    for t in kept[:7]:  # 7 change
        t["title"] += " (edited)"
    kept[8]["status"] = "resolved"  # 1 closed explicitly
    kept += make_tickets(5, start=500)  # 5 appear
    workspace.write_tickets(kept)
    workspace.sandbox.store.clear_requests()

    code, report = workspace.reconcile_json()
    assert code == 0
    assert report["counts"] == {
        "create": 5,
        "update": 7,
        "reopen": 0,
        "close": 11,
        "unchanged": 82,
        "refused": 0,
        "failed": 0,
    }
    reasons = {a["ticket_id"]: a["reason"] for a in report["sources"][0]["actions"]}
    assert reasons["T-0"] == "absent from snapshot"
    assert reasons[kept[8]["id"]] == "closed in source"
    assert reasons["T-10"] == "title changed"
    assert reasons["T-500"] == "new ticket"
    tasks = workspace.tasks()
    assert len(tasks) == 105
    assert {uid for uid, t in tasks.items() if t["status"] == "DONE"} == {
        uid_of(f"T-{n}") for n in range(10)
    } | {uid_of(kept[8]["id"])}
    assert tasks[uid_of("T-10")]["fields"]["title"] == "Ticket number 10 (edited)"
    assert all(tasks[uid_of(f"T-{n}")]["fields"]["fc_closed_by"] == "connector" for n in range(10))
    assert [(w["method"], w["items"]) for w in workspace.writes()] == [("PUT", 5), ("PATCH", 18)]


@BOTH_PROFILES
def test_foreign_and_operator_tasks_are_left_as_they_are(workspace: Workspace) -> None:
    """Foreign tasks, an operator's STARTED task and an operator's DONE task keep their state."""
    store = workspace.sandbox.store
    foreign = store.seed(
        [
            {"uid": str(uuid.uuid4()), "status": "TODO", "fields": {"title": "Hand-made"}},
            {
                "uid": str(uuid.uuid4()),
                "status": "TODO",
                "fields": {
                    "title": "Same source, not ours",
                    "fc_source": "backoffice",
                    "fc_ticket_id": "T-1",
                },
            },
        ]
    )
    workspace.write_tickets(make_tickets(5))
    assert workspace.reconcile().returncode == 0
    store.operator_edit(uid_of("T-1"), status="STARTED")
    store.operator_edit(uid_of("T-2"), status="DONE")
    tickets = make_tickets(5)
    tickets[1]["title"] = "Changed while STARTED"
    workspace.write_tickets(tickets)

    code, report = workspace.reconcile_json()
    assert code == 0
    tasks = workspace.tasks()
    assert tasks[uid_of("T-1")]["status"] == "STARTED"
    assert tasks[uid_of("T-1")]["fields"]["title"] == "Changed while STARTED"
    assert tasks[uid_of("T-2")]["status"] == "DONE"
    for seeded in foreign:
        assert tasks[seeded["uid"]]["status"] == "TODO"
        assert tasks[seeded["uid"]]["updated_at"] == seeded["updated_at"]
    assert report["counts"]["update"] == 1
    assert report["counts"]["create"] == 0

    workspace.state_path.unlink()  # the index is lost: the operator's DONE still stands
    code, report = workspace.reconcile_json()
    assert code == 0
    assert report["counts"]["create"] == 0
    assert workspace.tasks()[uid_of("T-2")]["status"] == "DONE"


@BOTH_PROFILES
def test_returning_ticket_reopens_its_task(workspace: Workspace) -> None:
    """A ticket back after its task was closed reopens that task, also with the state deleted."""
    workspace.write_tickets(make_tickets(30))
    assert workspace.reconcile().returncode == 0
    workspace.write_tickets(make_tickets(28))  # T-28 and T-29 vanish
    assert workspace.reconcile().returncode == 0
    assert workspace.tasks()[uid_of("T-28")]["status"] == "DONE"

    workspace.write_tickets(make_tickets(29))  # T-28 returns, the index knows it
    code, report = workspace.reconcile_json()
    assert code == 0
    assert [(a["kind"], a["ticket_id"], a["reason"]) for a in report["sources"][0]["actions"]] == [
        ("reopen", "T-28", "ticket reopened")
    ]
    workspace.state_path.unlink()  # now T-29 returns with no local state at all
    workspace.write_tickets(make_tickets(30))
    code, report = workspace.reconcile_json()
    assert code == 0
    assert [(a["kind"], a["ticket_id"]) for a in report["sources"][0]["actions"]] == [
        ("reopen", "T-29")
    ]
    tasks = workspace.tasks()
    assert len(tasks) == 30
    assert all(t["status"] == "TODO" for t in tasks.values())
    assert "fc_closed_by" not in tasks[uid_of("T-29")]["fields"]


@BOTH_PROFILES
def test_dry_run_writes_nothing_and_predicts_the_real_run(workspace: Workspace) -> None:
    """--dry-run exits 2 with pending changes, writes nothing, and its counts match the real run."""
    workspace.write_tickets(make_tickets(40))
    assert workspace.reconcile().returncode == 0
    tickets = make_tickets(35, start=3)
    tickets[0]["amount"] = -1
    workspace.write_tickets(tickets)
    workspace.sandbox.store.clear_requests()

    code, planned = workspace.reconcile_json("--dry-run")
    assert code == 2
    assert planned["dry_run"] is True and planned["exit_code"] == 2
    assert workspace.writes() == []
    code, done = workspace.reconcile_json()
    assert code == 0
    assert planned["counts"] == done["counts"]
    assert planned["counts"]["create"] == 0 and planned["counts"]["close"] == 5
    assert planned["sources"][0]["actions"] == done["sources"][0]["actions"]

    code, after = workspace.reconcile_json("--dry-run")
    assert code == 0
    assert after["counts"]["unchanged"] == 35


def test_text_plan_is_readable(workspace: Workspace) -> None:
    """The text dry-run shows counts, ticket ids, reasons and the fields an update changes."""
    workspace.write_tickets(make_tickets(3))
    assert workspace.reconcile().returncode == 0
    tickets = make_tickets(3)
    tickets[0]["title"] = "Renamed"
    workspace.write_tickets(tickets[:2])
    result = workspace.reconcile("--dry-run")
    assert result.returncode == 2
    out = result.stdout
    assert "0 to create, 1 to update, 0 to reopen, 1 to close, 1 unchanged" in out
    assert "title: Ticket number 0 → Renamed" in out
    assert "absent from snapshot" in out
    assert "Nothing was written" in out


def test_source_failure_closes_nothing(workspace: Workspace) -> None:
    """A back-office that cannot be read fails its source (exit 1) and closes nothing."""
    workspace.write_tickets(make_tickets(10))
    assert workspace.reconcile().returncode == 0
    workspace.tickets_path.unlink()
    code, report = workspace.reconcile_json()
    assert code == 1
    assert report["sources"][0]["ok"] is False
    assert "ticket file not found" in report["sources"][0]["error"]
    assert len(open_tasks(workspace)) == 10
    workspace.tickets_path.write_text("[{broken")
    result = workspace.reconcile()
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "not valid JSON" in result.stdout
    assert len(open_tasks(workspace)) == 10


@BOTH_PROFILES
def test_unreadable_record_blocks_closes_but_not_the_rest(workspace: Workspace) -> None:
    """A record without an id makes the snapshot incomplete: creates go on, closes are refused."""
    workspace.write_tickets(make_tickets(10))
    assert workspace.reconcile().returncode == 0
    tickets: list[dict[str, Any]] = make_tickets(8)  # T-8, T-9 vanish ...
    tickets.append({"title": "no id"})  # ... but this record can't be identified
    tickets += make_tickets(1, start=50)
    workspace.write_tickets(tickets)
    code, report = workspace.reconcile_json()
    # 1, not 3: a skipped record (a ticket with no task) is a failure, more severe than the
    # refusal, which the report still shows.
    assert code == 1
    source = report["sources"][0]
    assert source["counts"]["create"] == 1
    assert source["counts"]["refused"] == 2
    assert source["invalid_records"] == [
        {
            "position": "item 9",
            "ticket_id": None,
            "reason": "missing or unusable `id` (text or integer expected)",
        }
    ]
    assert len(open_tasks(workspace)) == 11


@BOTH_PROFILES
def test_empty_source_trips_the_empty_snapshot_guard(workspace: Workspace) -> None:
    """An empty back-office against 100 open tasks closes nothing and exits 3."""
    workspace.write_tickets(make_tickets(100))
    assert workspace.reconcile().returncode == 0
    workspace.write_tickets([])
    result = workspace.reconcile()
    assert result.returncode == 3
    assert "REFUSED 100 closes (empty_snapshot)" in result.stdout
    assert len(open_tasks(workspace)) == 100
    result = workspace.reconcile("--allow-mass-close")
    assert result.returncode == 0
    assert open_tasks(workspace) == {}


def test_source_option_reconciles_one_source(workspace: Workspace) -> None:
    """--source limits the cycle to one source; an unknown name is a usage error."""
    other = workspace.root / "other.json"
    other.write_text('[{"id": "O-1", "title": "Other"}]')
    workspace.write_tickets(make_tickets(2))
    workspace.write_config(
        sources=[
            {
                "name": "backoffice",
                "adapter": "file",
                "options": {"path": str(workspace.tickets_path)},
            },
            {"name": "other", "adapter": "file", "options": {"path": str(other)}},
        ]
    )
    code, report = workspace.reconcile_json("--source", "other")
    assert code == 0
    assert [s["name"] for s in report["sources"]] == ["other"]
    assert list(workspace.tasks()) == [uid_of("O-1", source="other")]
    result = workspace.reconcile("--source", "nope")
    assert result.returncode == 4
    assert "no source named 'nope'" in result.stderr


@pytest.mark.slow(seconds=8)
def test_bad_token_exits_1_without_leaking_it(workspace: Workspace) -> None:
    """A refused token exits 1 with a clear message, and the token appears in no output."""
    workspace.write_tickets(make_tickets(3))
    bad = "wrong-token-d41d8cd98f"
    for args in (
        ("reconcile",),
        ("reconcile", "--output", "json"),
        ("reconcile", "--dry-run"),
        ("check",),
        ("-vv", "reconcile"),
    ):
        result = workspace.cli(
            *args,
            "--config",
            str(workspace.config_path),
            env={"FRAGMENT_CONNECTOR__FRAGMENT__TOKEN": bad},
        )
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        output = result.stdout + result.stderr
        assert "401" in output or "refused the token" in output
        assert bad not in output
        assert TOKEN not in output
        assert "Traceback" not in output
    assert workspace.tasks() == {}
