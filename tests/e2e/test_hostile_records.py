"""Issue 15, items 9 and 10: hostile records cost one invalid record, never the source or the run.

Against the sandbox and the real PostgreSQL state store, through the real command line.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.conftest import Workspace, make_tickets


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"level": value}
    return value


def test_a_nul_in_a_ticket_id_is_an_invalid_record_and_closes_still_happen(
    workspace: Workspace, postgres_state_url: str
) -> None:
    """Control characters in ids are reported, their tasks kept, and the source goes on."""
    workspace.write_config(state={"url": postgres_state_url})
    hostile = [
        {"id": "T-\u0000nul", "title": "a NUL in the id"},
        {"id": "T-\u001b[31mred", "title": "an escape sequence in the id"},
        {"id": "T-title", "title": "a NUL \u0000 in the title"},
    ]
    workspace.write_tickets(make_tickets(5) + hostile)
    code, report = workspace.reconcile_json()
    assert code == 1, report  # skipped records exit 1 (README, exit codes); the rest is applied
    (source,) = report["sources"]
    assert source["ok"], source
    reasons = {r["ticket_id"]: r["reason"] for r in source["invalid_records"]}
    assert reasons == {
        "T-\u0000nul": "the ticket id contains a control character",
        "T-\u001b[31mred": "the ticket id contains a control character",
        "T-title": "the title, url or assignee contains a NUL character",
    }
    assert {t["fields"]["fc_ticket_id"] for t in workspace.tasks().values()} == {
        f"T-{n}" for n in range(5)
    }
    # A task with a NUL in its marker (made by hand in Fragment) does not stop the store either.
    workspace.sandbox.store.seed(
        [
            {
                "uid": str(uuid.uuid4()),
                "title": "made by hand",
                "fields": {"fc_source": "backoffice", "fc_ticket_id": "T-\u0000hand"},
            }
        ]
    )
    # Later runs still write: a vanished ticket is closed although the hostile records remain.
    workspace.write_tickets(make_tickets(4) + hostile)
    code, report = workspace.reconcile_json()
    assert code == 1, report
    closes = [a["ticket_id"] for a in report["sources"][0]["actions"] if a["kind"] == "close"]
    assert "T-4" in closes
    code, report = workspace.reconcile_json()
    assert code == 1, report
    assert all(a["kind"] == "unchanged" for a in report["sources"][0]["actions"]), report


def test_a_deeply_nested_custom_field_is_an_invalid_record_and_other_sources_run(
    workspace: Workspace,
) -> None:
    """800 levels of nesting: an invalid record with the report printed, the next source served."""
    deep = {"id": "T-deep", "title": "deep", "payload": _nested(800)}
    huge = {"id": "T-huge", "title": "huge", "payload": "x" * 300_000}
    workspace.write_tickets([*make_tickets(3), deep, huge])
    other = workspace.root / "other.json"
    other.write_text(json.dumps(make_tickets(2, prefix="O-")))
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
    text = workspace.reconcile()
    assert text.returncode == 1, text.stdout + text.stderr  # two skipped records
    assert "RecursionError" not in text.stdout + text.stderr
    code, report = workspace.reconcile_json()
    assert code == 1
    by_name = {s["name"]: s for s in report["sources"]}
    reasons = {r["ticket_id"]: r["reason"] for r in by_name["backoffice"]["invalid_records"]}
    assert reasons["T-deep"] == "a custom field is nested deeper than 32 levels"
    assert reasons["T-huge"].startswith("the custom fields take 30")
    assert by_name["other"]["ok"]
    ids = {t["fields"]["fc_ticket_id"] for t in workspace.tasks().values()}
    assert ids == {"T-0", "T-1", "T-2", "O-0", "O-1"}
