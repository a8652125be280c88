"""`explain` and `status` drawn from their typed models: the documented JSON, the labelled text
lines, and control characters from outside shown, never obeyed (the CLI's side:
tests/e2e/test_cli_documents.py)."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime
from typing import Any

from connector.models import (
    CycleKind,
    ExplainedTask,
    Explanation,
    IndexView,
    InvalidRecord,
    TaskStatus,
    Ticket,
)
from connector.progress import ProgressSnapshot
from connector.render_explain import explain_json, explain_lines, write_explain_json
from connector.render_status import status_json, status_lines, write_status_text
from connector.state import RunRecord
from connector.status import RunningCycle, RunsOverview

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
TICKET = Ticket(id="T-1", title="Refund \x1b[2J", fields={"amount": 10}, updated_at=AT)


EXPLANATION = Explanation(
    source="bo",
    ticket_id="T-1",
    uid="u-1",
    ticket=TICKET,
    invalid_records=(),
    snapshot_complete=True,
    task=ExplainedTask(
        status=TaskStatus.DONE,
        fields={"title": "Refund"},
        updated_at=AT,
        owned=True,
        closed_by="connector",
    ),
    index=IndexView(status=None, closed_by_connector=True, misses=2),
    next_cycle="reopen: ticket reopened",
    write_back="off for this source (sources[].write_back.on_done: none)",
    changes={"title": ("Refund", "Refund \x1b[2J")},
)


def explanation(**changes: Any) -> Explanation:
    return dataclasses.replace(EXPLANATION, **changes)


def test_explain_json_is_the_documented_document() -> None:
    """Every key in its documented order; timestamps in ISO 8601; an unknown index status."""
    document = explain_json(explanation())
    assert document == {
        "version": 1,
        "source": "bo",
        "ticket_id": "T-1",
        "uid": "u-1",
        "ticket": {
            "id": "T-1",
            "title": "Refund \x1b[2J",
            "url": None,
            "fields": {"amount": 10},
            "updated_at": "2026-03-04T05:06:07+00:00",
            "is_open": True,
            "due_at": None,
            "assignee_email": None,
        },
        "invalid_records": [],
        "snapshot_complete": True,
        "task": {
            "status": "DONE",
            "fields": {"title": "Refund"},
            "updated_at": "2026-03-04T05:06:07+00:00",
            "owned": True,
        },
        "index": {"status": "unknown", "closed_by_connector": True, "misses": 2},
        "next_cycle": "reopen: ticket reopened",
        "write_back": "off for this source (sources[].write_back.on_done: none)",
        "changes": {"title": ["Refund", "Refund \x1b[2J"]},
    }
    assert list(document) == list(json.loads(json.dumps(document)))
    out = io.StringIO()
    write_explain_json(explanation(), out)
    assert out.getvalue() == json.dumps(document) + "\n"
    assert "\x1b" not in out.getvalue()  # JSON escapes it


def test_explain_text_labels_each_fact_and_shows_control_characters() -> None:
    """One labelled line per fact; an escape sequence in a title is shown, not obeyed."""
    lines = explain_lines(explanation())
    assert lines == [
        "ticket   bo/T-1: open in the back-office, title 'Refund \\x1b[2J'",
        "uid      u-1",
        "task     DONE (closed by connector), updated 2026-03-04T05:06:07+00:00",
        "index    last seen unknown, missing from 2 snapshot(s)",
        "next     reopen: ticket reopened",
        "         title: 'Refund' → 'Refund \\x1b[2J'",
        "write    off for this source (sources[].write_back.on_done: none)",
    ]


def test_explain_text_without_ticket_or_task_and_with_an_unreadable_record() -> None:
    """No ticket, a foreign task, an unreadable record and an incomplete snapshot are said."""
    foreign = ExplainedTask(status=TaskStatus.TODO, fields={}, updated_at=None, owned=False)
    lines = explain_lines(
        explanation(
            ticket=None,
            task=foreign,
            index=None,
            invalid_records=(InvalidRecord("row 3", "the title is empty", "T-1"),),
            snapshot_complete=False,
            changes={},
        )
    )
    assert lines[:4] == [
        "ticket   bo/T-1: not in the back-office's snapshot (solved, deleted, or never existed)",
        "         unreadable at row 3: the title is empty",
        "uid      u-1",
        "task     TODO, updated None — NOT the connector's (markers do not match)",
    ]
    assert "snapshot incomplete this cycle (unreadable records): no closes for this source" in lines
    assert not any(line.startswith("index") for line in lines)
    assert explain_lines(explanation(task=None))[2] == "task     none in Fragment"


RUN = RunRecord(
    run_id="r1",
    source="bo",
    kind="incremental",
    started_at=AT,
    finished_at=datetime(2026, 3, 4, 5, 6, 19, tzinfo=UTC),
    outcome="source_unavailable",
    counts={"create": 0, "unchanged": 5, "update": 2},
    requests=3,
    error="502 from \x1b]8;;evil\x07",
    replica=None,
)
RUNNING = RunningCycle(
    progress=ProgressSnapshot(
        source="zd",
        kind=CycleKind.FULL,
        run_id="r2",
        phase="list",
        done=200,
        total=None,
        rate=None,
        eta_s=None,
        started_at=AT,
        updated_at=AT,
    ),
    age_s=4.2,
    elapsed_s=61.0,
    stale=False,
)


def test_status_json_is_the_documented_document() -> None:
    """running (the progress document plus `stale`), runs (the record, ISO 8601), cursors."""
    overview = RunsOverview(running=(RUNNING,), runs=(RUN,), cursors={"bo": None, "zd": "c-9"})
    document = status_json(overview)
    assert list(document) == ["version", "running", "runs", "cursors"]
    assert document["running"] == [{**RUNNING.progress.to_json(), "stale": False}]
    assert document["runs"] == [
        {
            "run_id": "r1",
            "source": "bo",
            "kind": "incremental",
            "started_at": "2026-03-04T05:06:07+00:00",
            "finished_at": "2026-03-04T05:06:19+00:00",
            "outcome": "source_unavailable",
            "counts": {"create": 0, "unchanged": 5, "update": 2},
            "requests": 3,
            "error": "502 from \x1b]8;;evil\x07",
            "replica": None,
        }
    ]
    assert document["cursors"] == {"bo": None, "zd": "c-9"}
    assert status_json(RunsOverview(missing_store="/x/state.db")) == {
        "version": 1,
        "running": [],
        "runs": [],
        "cursors": {},
    }


def test_status_text_shows_runs_cursors_and_control_characters() -> None:
    """A running cycle, a run with its non-zero counts and its error (escapes shown), the set
    cursors only."""
    overview = RunsOverview(running=(RUNNING,), runs=(RUN,), cursors={"bo": None, "zd": "c-9"})
    out = io.StringIO()
    write_status_text(overview, out)
    assert out.getvalue().splitlines() == [
        f"running zd               full        {RUNNING.progress.describe()}, 61s so far",
        "2026-03-04 05:06:07 bo               incremental source_unavailable       12.0s    3 req"
        "  update 2  error: 502 from \\x1b]8;;evil\\x07",
        "cursor zd: c-9",
    ]


def test_status_text_without_a_store_or_runs() -> None:
    """No store yet, or a store without runs, is said in one line."""
    assert status_lines(RunsOverview(missing_store="/x/state.db")) == [
        "no state store at /x/state.db yet: no run recorded"
    ]
    assert status_lines(RunsOverview()) == [
        "no runs recorded yet (the daemon records them: `fragment-connector run`)"
    ]
