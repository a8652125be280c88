"""The status document: the last plans in the store, the budget's last minute, the running cycle,
holdings, and secrets masked (the page in a browser: tests/e2e/test_status_page.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connector.config import Settings
from connector.guards import GUARD_INCOMPLETE, GUARD_MASS_CLOSE
from connector.identity import Markers
from connector.models import (
    Action,
    ActionFailure,
    ActionKind,
    CycleKind,
    InvalidRecord,
    Plan,
    Refusal,
    SourceReport,
    Task,
    TaskStatus,
)
from connector.progress import ProgressSnapshot
from connector.state import RunRecord, StateStore
from connector.status import (
    PLAN_ACTIONS_KEPT,
    apply_command,
    plan_document,
    record_cycle,
    redactor_for,
    requests_last_minute,
    status_document,
)
from connector.statuspage import render_page

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "zd-api-token-91c2e7"
TOKEN = "frag-token-55aa01"


def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "connector": {"instance": "tests"},
            "fragment": {"token": TOKEN, "requests_per_minute": 60},
            "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
            "sources": [
                {"name": "bo", "adapter": "file", "options": {"path": "x.json"}},
                {"name": "zd", "adapter": "zendesk", "options": {"api_token": SECRET}},
            ],
        }
    )


def action(kind: ActionKind, ticket_id: str, url: Any = None) -> Action:
    fields: dict[str, Any] = {"title": f"ticket {ticket_id}"}
    if url is not None:
        fields["url"] = url
    return Action(
        kind=kind,
        uid=f"uid-{ticket_id}",
        source="bo",
        ticket_id=ticket_id,
        reason="new ticket",
        payload={"uid": f"uid-{ticket_id}", "fields": fields},
        title=f"ticket {ticket_id}",
    )


def run(
    source: str, kind: str, ended: datetime, *, requests: int, error: str | None = None
) -> RunRecord:
    return RunRecord(
        run_id=f"r{ended:%H%M%S}",
        source=source,
        kind=kind,
        started_at=ended - timedelta(seconds=20),
        finished_at=ended,
        outcome="ok" if error is None else "error",
        counts={"create": 1},
        requests=requests,
        error=error,
        replica="other-host:7",
    )


def test_plan_document_keeps_reasons_refusals_with_their_command_and_safe_links() -> None:
    """Each action keeps its reason and what became of it; a mass-close refusal carries the exact
    command that applies it; a ticket url that is not http(s) is no link; invalid records."""
    closes = [action(ActionKind.CLOSE, f"C-{n}") for n in range(3)]
    create = action(ActionKind.CREATE, "N-1", "https://bo.example/N-1")
    hostile = action(ActionKind.CREATE, "N-2", "javascript:alert(1)")
    report = SourceReport(
        name="bo",
        ok=True,
        plan=Plan(source="bo", actions=(create, hostile, *closes), unchanged=4),
        refusals=tuple(Refusal(c, GUARD_MASS_CLOSE, "3 closes exceed the limit") for c in closes),
        invalid_records=tuple(
            InvalidRecord(position=f"item {n}", reason="no id") for n in range(7)
        ),
        applied=True,
    )
    document = plan_document(report, run_id="r1", recorded_at=NOW)
    states = {a["ticket_id"]: a["state"] for a in document["actions"]}
    assert states == {
        "N-1": "applied",
        "N-2": "applied",
        "C-0": "refused",
        "C-1": "refused",
        "C-2": "refused",
    }
    links = {a["ticket_id"]: a["url"] for a in document["actions"]}
    assert links["N-1"] == "https://bo.example/N-1" and links["N-2"] is None
    assert document["refusal"] == {
        "guard": GUARD_MASS_CLOSE,
        "count": 3,
        "reason": "3 closes exceed the limit",
        "command": "fragment-connector reconcile --source bo --allow-mass-close",
    }
    assert document["counts"] == {"create": 2, "close": 3} and document["unchanged"] == 4
    assert document["invalid_records"]["count"] == 7
    assert len(document["invalid_records"]["first"]) == 5
    assert apply_command("bo", GUARD_INCOMPLETE) is None  # no flag applies those: fix the source


def test_a_large_plan_keeps_its_first_actions_and_counts_all() -> None:
    """A first import's plan is cut to PLAN_ACTIONS_KEPT rows; the counts still cover it all."""
    actions = tuple(action(ActionKind.CREATE, f"T-{n}") for n in range(PLAN_ACTIONS_KEPT + 20))
    report = SourceReport(name="bo", ok=True, plan=Plan(source="bo", actions=actions), applied=True)
    document = plan_document(report, run_id="r1", recorded_at=NOW)
    assert len(document["actions"]) == PLAN_ACTIONS_KEPT
    assert document["actions_not_kept"] == 20
    assert document["counts"] == {"create": PLAN_ACTIONS_KEPT + 20}


def test_requests_last_minute_spreads_each_run_over_its_duration() -> None:
    """A run half inside the last minute counts half its requests; older ones none."""
    runs = [
        run("bo", "full", NOW - timedelta(seconds=10), requests=40),  # 20 s, all inside
        run("bo", "full", NOW - timedelta(seconds=50), requests=60),  # 70..50 s ago: half inside
        run("bo", "full", NOW - timedelta(minutes=5), requests=1000),  # outside
    ]
    assert requests_last_minute(runs, NOW) == 40 + 30


def test_redactor_masks_every_configured_secret(tmp_path: Path) -> None:
    """The Fragment token and a source option named like a secret are both masked."""
    redactor = redactor_for(settings(tmp_path))
    masked = redactor.mask(f"error: 401 with {SECRET} and {TOKEN}")
    assert SECRET not in masked and TOKEN not in masked
    assert masked.count("[REDACTED]") == 2


def test_status_document_from_the_store_alone(tmp_path: Path) -> None:
    """A second store object on the same database (another replica) sees the last plans, the runs,
    the running cycle's progress, who holds each source, and never a secret."""
    config = settings(tmp_path)
    writer = StateStore(config.state.url, instance="tests")
    started = datetime.now(UTC) - timedelta(seconds=5)
    create = action(ActionKind.CREATE, "T-1", "https://bo.example/1")
    report = SourceReport(
        name="bo",
        ok=True,
        plan=Plan(source="bo", actions=(create,), unchanged=2),
        applied=True,
        tickets=3,
        open_tasks=2,
        requests=4,
    )
    finished = started + timedelta(seconds=1)
    record_cycle(
        writer, report, run_id="first", started=started, finished=finished, replica="here:1"
    )
    quiet = SourceReport(name="bo", ok=True, plan=Plan(source="bo", unchanged=3), applied=True)
    record_cycle(
        writer, quiet, run_id="second", started=started, finished=finished, replica="here:1"
    )
    failed = SourceReport(
        name="zd", ok=False, error=f"401: bad token {SECRET}", kind=CycleKind.FULL
    )
    record_cycle(
        writer, failed, run_id="zd1", started=started, finished=finished, replica="other:2"
    )
    now = datetime.now(UTC)
    writer.set_progress(
        ProgressSnapshot(
            source="zd",
            kind=CycleKind.FULL,
            run_id="zd2",
            phase="applying",
            done=300,
            total=5000,
            rate=1.5,
            eta_s=3000.0,
            started_at=now - timedelta(seconds=200),
            updated_at=now,
            replica="other:2",
        )
    )
    reader = StateStore(config.state.url, instance="tests")
    document = status_document(
        config, reader, holdings={"bo": "held", "zd": "standby"}, replica="here:1", now=now
    )
    assert document["version"] == 1
    bo, zd = document["sources"]
    assert bo["held"] == "here" and zd["held"] == "other" and zd["held_by"] == "other:2"
    assert bo["plan"]["run_id"] == "second" and bo["plan"]["actions"] == []
    assert bo["last_changes"]["run_id"] == "first"  # the last cycle that changed something
    assert bo["last_changes"]["actions"][0]["ticket_id"] == "T-1"
    assert bo["last_full"]["requests"] == 0 and bo["last_incremental"] is None
    assert zd["running"]["done"] == 300 and "300/5,000" in zd["running"]["describe"]
    assert zd["last_error"]["error"] == "401: bad token [REDACTED]"
    assert document["budget"]["limit_per_minute"] == 60
    assert [c["source"] for c in document["budget"]["per_cycle"]] == ["bo", "bo", "zd"]
    html = render_page(document)
    assert SECRET not in html and TOKEN not in html and SECRET not in str(document)
    assert "applying 300/5,000" in html
    writer.close()
    reader.close()


def test_an_older_store_gains_the_plans_table_and_keeps_its_index(tmp_path: Path) -> None:
    """The table of last plans is added to a store written before it existed; nothing is rebuilt."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url, instance="tests")
    store.remember("bo", [(Task(uid="u1", status=TaskStatus.TODO, fields={}), "T-1")], Markers())
    store.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE fc_plans"))  # the shape of the previous release
    engine.dispose()
    store = StateStore(url, instance="tests")
    assert set(store.lookup(["u1"])) == {"u1"}
    store.set_last_plan("bo", "full", run_id="r", recorded_at=NOW, document={"actions": []})
    assert store.last_plans() == {("bo", "full"): {"actions": []}}
    store.close()


def test_refusals_and_failures_find_their_action_by_uid() -> None:
    """A refusal or failure holding an equal copy of the action (not the same object, as after a
    store round trip or a `dataclasses.replace`) still marks that action, and only that one."""
    close, update = action(ActionKind.CLOSE, "C-1"), action(ActionKind.UPDATE, "U-1")
    report = SourceReport(
        name="bo",
        ok=True,
        plan=Plan(source="bo", actions=(close, update)),
        refusals=(Refusal(dataclasses.replace(close), GUARD_MASS_CLOSE, "too many"),),
        failures=(ActionFailure(dataclasses.replace(update), "422: refused"),),
        applied=True,
    )
    assert report.planned == (update,)
    rows = plan_document(report, run_id="r1", recorded_at=NOW)["actions"]
    assert [(r["ticket_id"], r["state"], r.get("note")) for r in rows] == [
        ("C-1", "refused", "too many"),
        ("U-1", "failed", "422: refused"),
    ]
