"""`explain` and `status` through the real CLI: the documented JSON documents keep their exact
shape and bytes (docs/output.md, version 1), and the text says the same as before."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from connector.models import CycleKind
from connector.progress import ProgressSnapshot
from connector.state import RunRecord, StateStore
from tests.conftest import Workspace, make_tickets

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
FINISHED = datetime(2026, 1, 2, 3, 4, 7, 500000, tzinfo=UTC)


def _seed_history(workspace: Workspace) -> None:
    """One recorded run, one running cycle whose process stopped long ago, one cursor."""
    store = StateStore(f"sqlite:///{workspace.state_path}", instance="tests")
    try:
        store.record_run(
            RunRecord(
                run_id="3f9c0a1b2c4d",
                source="backoffice",
                kind="full",
                started_at=STARTED,
                finished_at=FINISHED,
                outcome="partial",
                counts={"create": 3, "failed": 1, "unchanged": 0},
                requests=7,
                error=None,
                replica="host-1:7",
            )
        )
        store.set_progress(
            ProgressSnapshot(
                source="backoffice",
                kind=CycleKind.INCREMENTAL,
                run_id="aa11bb22cc33",
                phase="apply",
                done=300,
                total=5000,
                rate=1.5,
                eta_s=3133.3,
                started_at=STARTED,
                updated_at=FINISHED,
                replica="host-2:9",
            )
        )
        store.set_cursor("backoffice", "2026-01-02T03:04:05Z")
    finally:
        store.close()


def test_status_json_is_the_documented_document_byte_for_byte(workspace: Workspace) -> None:
    """`status --output json` prints the version-1 document, keys in their documented order."""
    _seed_history(workspace)
    result = workspace.cli("status", "--config", str(workspace.config_path), "--output", "json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        '{"version": 1, "running": [{"version": 1, "source": "backoffice", "kind": "incremental", '
        '"run_id": "aa11bb22cc33", "replica": "host-2:9", "phase": "apply", "done": 300, '
        '"total": 5000, "rate": 1.5, "eta_s": 3133.3, "started_at": "2026-01-02T03:04:05+00:00", '
        '"updated_at": "2026-01-02T03:04:07.500000+00:00", "stale": true}], "runs": [{"run_id": '
        '"3f9c0a1b2c4d", "source": "backoffice", "kind": "full", "started_at": '
        '"2026-01-02T03:04:05+00:00", "finished_at": "2026-01-02T03:04:07.500000+00:00", '
        '"outcome": "partial", "counts": {"create": 3, "failed": 1, "unchanged": 0}, '
        '"requests": 7, "error": null, "replica": "host-1:7"}], "cursors": {"backoffice": '
        '"2026-01-02T03:04:05Z"}}\n'
    )


def test_status_text_lists_running_cycles_runs_and_cursors(workspace: Workspace) -> None:
    """`status` shows the stale running cycle, the run with its counts, and the cursor."""
    _seed_history(workspace)
    result = workspace.cli("status", "--config", str(workspace.config_path))
    assert result.returncode == 0, result.stderr
    running, run, cursor = result.stdout.splitlines()
    assert re.fullmatch(
        r"running backoffice       incremental applying 300/5,000 \(1\.5/s, ETA 52m13s\), "
        r"\d+s so far by host-2:9  \(no news for \d+s: its process may have stopped\)",
        running,
    ), running
    assert run == (
        "2026-01-02 03:04:05 backoffice       full        partial                   2.5s    7 req"
        "  create 3, failed 1  by host-1:7"
    )
    assert cursor == "cursor backoffice: 2026-01-02T03:04:05Z"


def test_status_without_a_store_is_the_empty_document(workspace: Workspace) -> None:
    """No state store yet: the same document, empty, and nothing is created."""
    result = workspace.cli("status", "--config", str(workspace.config_path), "--output", "json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{"version": 1, "running": [], "runs": [], "cursors": {}}\n'
    assert not workspace.state_path.exists()


def test_explain_json_keeps_its_documented_shape(workspace: Workspace) -> None:
    """`explain --output json` has the version-1 keys in their order, timestamps in ISO 8601,
    and is printed as `json.dumps` prints it (ASCII, one line)."""
    tickets = make_tickets(2)
    tickets[0]["updated_at"] = "2026-03-04T05:06:07Z"
    workspace.write_tickets(tickets)
    assert workspace.reconcile().returncode == 0
    tickets[0]["title"] = "Renamed — in the back-office"
    workspace.write_tickets(tickets)
    result = workspace.cli(
        "explain", "backoffice", "T-0", "--config", str(workspace.config_path), "--output", "json"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert result.stdout == json.dumps(document) + "\n"
    assert list(document) == [
        "version",
        "source",
        "ticket_id",
        "uid",
        "ticket",
        "invalid_records",
        "snapshot_complete",
        "task",
        "index",
        "next_cycle",
        "write_back",
        "changes",
    ]
    assert list(document["ticket"]) == [
        "id",
        "title",
        "url",
        "fields",
        "updated_at",
        "is_open",
        "due_at",
        "assignee_email",
    ]
    assert document["ticket"]["updated_at"] == "2026-03-04T05:06:07+00:00"
    assert list(document["task"]) == ["status", "fields", "updated_at", "owned"]
    assert document["task"]["status"] == "TODO" and document["task"]["owned"] is True
    assert datetime.fromisoformat(document["task"]["updated_at"]).tzinfo is not None
    assert document["index"] == {"status": "TODO", "closed_by_connector": False, "misses": 0}
    assert document["next_cycle"] == "update: title changed"
    assert document["changes"] == {"title": ["Ticket number 0", "Renamed — in the back-office"]}
    assert document["invalid_records"] == [] and document["snapshot_complete"] is True
    assert document["write_back"] == "off for this source (sources[].write_back.on_done: none)"


def test_explain_json_of_an_unreadable_record_and_no_task(workspace: Workspace) -> None:
    """A record whose title is unreadable: listed with its position, no task, no index entry."""
    workspace.write_tickets([{"id": "T-bad", "title": ""}])
    result = workspace.cli(
        "explain", "backoffice", "T-bad", "--config", str(workspace.config_path), "--output", "json"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ticket"] is None and document["task"] is None and document["index"] is None
    (record,) = document["invalid_records"]
    assert list(record) == ["position", "reason", "ticket_id"]
    assert record["ticket_id"] == "T-bad"
    assert (
        document["next_cycle"] == "nothing: the record is unreadable (see above), so it is skipped"
    )
    text = workspace.cli("explain", "backoffice", "T-bad", "--config", str(workspace.config_path))
    assert text.stdout.splitlines()[:2] == [
        "ticket   backoffice/T-bad: not in the back-office's snapshot (solved, deleted, or never "
        "existed)",
        f"         unreadable at {record['position']}: {record['reason']}",
    ]
