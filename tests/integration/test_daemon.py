"""The daemon in-process: schedule, overlap protection, incremental polling, health, metrics."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from stamina.instrumentation import get_prometheus_counter

from connector.config import Settings, load_settings
from connector.models import CycleKind, SourceReport
from connector.sandbox import FailRule, Faults
from connector.scheduler import Daemon, daemon_running
from tests.conftest import TOKEN, Workspace, make_tickets


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAGMENT_CONNECTOR__FRAGMENT__TOKEN", TOKEN)


def settings_for(ws: Workspace, **schedule: Any) -> Settings:
    ws.write_config(
        schedule={"jitter": None, "grace_period": "10s", **schedule},
        server={"host": "127.0.0.1", "port": 0},
    )
    return load_settings(ws.config_path)


@asynccontextmanager
async def running(
    settings: Settings,
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient, list[SourceReport]]]:
    """A started daemon, an HTTP client on its port, and the reports of every cycle it ran."""
    stop = asyncio.Event()
    async with daemon_running(settings, stop) as (daemon, port):
        reports: list[SourceReport] = []
        observe = daemon.observe

        def recording(report: SourceReport, **kw: Any) -> None:
            reports.append(report)
            observe(report, **kw)

        daemon.observe = recording  # type: ignore[method-assign]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield daemon, http, reports


async def wait_for(condition: Callable[[], bool], within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def open_ids(ws: Workspace) -> set[str]:
    return {t["fields"]["fc_ticket_id"] for t in ws.tasks().values() if t["status"] != "DONE"}


async def test_first_cycle_at_start_then_on_the_interval(workspace: Workspace) -> None:
    """A full cycle runs at start, then again every full_refresh."""
    workspace.write_tickets(make_tickets(3))
    async with running(settings_for(workspace, full_refresh="1s")) as (_, _http, reports):
        await wait_for(lambda: len(reports) >= 1, within=3)
        first = time.monotonic()
        assert open_ids(workspace) == {"T-0", "T-1", "T-2"}
        workspace.write_tickets(make_tickets(4))
        await wait_for(lambda: len(reports) >= 3, within=5)
        assert time.monotonic() - first >= 1.5
    assert open_ids(workspace) == {"T-0", "T-1", "T-2", "T-3"}
    assert all(r.kind is CycleKind.FULL for r in reports)


async def test_overrunning_cycle_is_never_run_twice(workspace: Workspace) -> None:
    """A cycle longer than the interval is not started again while it runs."""
    workspace.write_tickets(make_tickets(5))
    workspace.sandbox.store.set_faults(Faults(latency_s=0.6))
    async with running(settings_for(workspace, full_refresh="0.5s")) as (daemon, _http, reports):
        active = 0
        most = 0
        inner = daemon.reconciler.reconcile_source

        async def counting(*args: Any, **kw: Any) -> SourceReport:
            nonlocal active, most
            active += 1
            most = max(most, active)
            try:
                return await inner(*args, **kw)
            finally:
                active -= 1

        daemon.reconciler.reconcile_source = counting  # type: ignore[method-assign]
        await wait_for(lambda: len(reports) >= 3, within=20)
    assert most == 1
    assert workspace.sandbox.store.stats()["max_concurrent_writers"].get("backoffice", 0) <= 1


async def test_incremental_polling_between_full_refreshes(workspace: Workspace) -> None:
    """Incremental polls apply a change and a close at once, and resume from their cursor."""
    tickets = make_tickets(10)
    for t in tickets:
        t["updated_at"] = "2026-01-01T00:00:00Z"
    workspace.write_tickets(tickets)
    settings = settings_for(workspace, full_refresh="1h", incremental="0.3s")
    async with running(settings) as (_, _http, reports):
        await wait_for(lambda: any(r.kind is CycleKind.INCREMENTAL for r in reports))
        tickets[0]["title"] = "Edited in the back-office"
        tickets[0]["updated_at"] = "2026-01-02T00:00:00Z"
        tickets[1]["status"] = "closed"
        tickets[1]["updated_at"] = "2026-01-02T00:00:00Z"
        workspace.write_tickets(tickets)
        await wait_for(lambda: "T-1" not in open_ids(workspace))
    tasks = {t["fields"]["fc_ticket_id"]: t for t in workspace.tasks().values()}
    assert tasks["T-0"]["fields"]["title"] == "Edited in the back-office"
    assert tasks["T-1"]["status"] == "DONE"
    assert sum(r.kind is CycleKind.FULL for r in reports) == 1  # the changes came from the polls

    # A restarted daemon resumes from the stored cursor: its first poll returns the records at
    # or after the cursor's newest updated_at (minus the overlap), not nothing (a fresh cursor)
    # and not everything.
    stored = workspace.sandbox  # the sandbox lives on; only the daemon restarts
    tickets[2]["title"] = "Edited while the daemon was down"
    tickets[2]["updated_at"] = "2026-01-03T00:00:00Z"
    workspace.write_tickets(tickets)
    async with running(settings) as (_, _http, reports):
        await wait_for(lambda: any(r.kind is CycleKind.INCREMENTAL for r in reports))
        first_poll = next(r for r in reports if r.kind is CycleKind.INCREMENTAL)
    assert first_poll.tickets == 3  # T-0, T-1 (2026-01-02) and T-2 (2026-01-03)
    titles = {t["fields"]["fc_ticket_id"]: t["fields"]["title"] for t in stored.store.all_tasks()}
    assert titles["T-2"] == "Edited while the daemon was down"


async def test_absence_from_a_delta_closes_nothing(workspace: Workspace) -> None:
    """A ticket missing from an incremental delta keeps its task; only a full refresh closes it."""
    workspace.write_tickets(make_tickets(5))
    async with running(settings_for(workspace, full_refresh="1h", incremental="0.2s")) as (
        _,
        _h,
        reports,
    ):
        await wait_for(lambda: any(r.kind is CycleKind.INCREMENTAL for r in reports))
        workspace.write_tickets(make_tickets(3))  # T-3, T-4 vanish: the file changed
        count = len(reports)
        await wait_for(lambda: len(reports) >= count + 3)
        assert open_ids(workspace) == {f"T-{n}" for n in range(5)}


async def test_readiness_follows_the_source(workspace: Workspace) -> None:
    """/readyz turns unready when the source keeps failing and ready again once it recovers."""
    workspace.write_tickets(make_tickets(2))
    async with running(settings_for(workspace, full_refresh="0.3s")) as (_, http, reports):
        assert (await http.get("/healthz")).status_code == 200
        await wait_for(lambda: len(reports) >= 1)
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        # `running` has the figures of a cycle running right now (one starts every 0.3 s).
        assert set(body.pop("running")) <= {"backoffice"}
        assert body == {"status": "ready", "reasons": {}, "sources": {"backoffice": "held"}}

        workspace.tickets_path.unlink()
        # The limit is 3 x 0.3 s: after about a second of failures the source is stale.
        await wait_for(lambda: len(reports) >= 5 and not reports[-1].ok)
        await asyncio.sleep(1.0)
        unready = await http.get("/readyz")
        assert unready.status_code == 503
        reason = unready.json()["reasons"]["backoffice"]
        # A stable label, not the error's text: /readyz listens on every interface (issue 15).
        assert "last successful full cycle" in reason and "last error: source_unavailable" in reason
        assert "ticket file not found" not in reason

        workspace.write_tickets(make_tickets(2))
        await wait_for(lambda: reports[-1].ok)
        assert (await http.get("/readyz")).status_code == 200


async def test_metrics_move_with_the_work(workspace: Workspace) -> None:
    """/metrics counts cycles, task writes, requests and guard trips as they happen."""
    workspace.write_tickets(make_tickets(30))
    async with running(settings_for(workspace, full_refresh="0.3s")) as (_, http, reports):
        await wait_for(lambda: len(reports) >= 1)
        workspace.write_tickets(make_tickets(1))  # 29 closes > max(20, 0.3 x 30): the guard trips
        await wait_for(lambda: any(r.refusals for r in reports))
        text = (await http.get("/metrics")).text
    assert 'fragment_connector_tasks_total{action="create",source="backoffice"} 30.0' in text
    assert 'fragment_connector_cycles_total{kind="full",outcome="ok",source="backoffice"}' in text
    assert (
        'fragment_connector_cycles_total{kind="full",outcome="refused",source="backoffice"}' in text
    )
    assert 'fragment_connector_guard_trips_total{guard="mass_close",source="backoffice"}' in text
    put = '{endpoint="/tasks/batch",method="PUT",status="200"}'
    assert f"fragment_connector_fragment_requests_total{put} 1.0" in text
    assert "fragment_connector_cycle_duration_seconds_bucket" in text
    assert (
        'fragment_connector_last_success_timestamp_seconds{kind="full",source="backoffice"}' in text
    )


async def test_run_history_is_recorded(workspace: Workspace) -> None:
    """Every cycle lands in the run history that `status` shows."""
    workspace.write_tickets(make_tickets(2))
    async with running(settings_for(workspace, full_refresh="0.3s")) as (daemon, _http, reports):
        await wait_for(lambda: len(reports) >= 2)
        runs = daemon.reconciler.store.recent_runs(10)
    assert runs[-1].counts["create"] == 2
    assert {r.outcome for r in runs} == {"ok"}
    result = workspace.cli("status", "--output", "json", "--config", str(workspace.config_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["source"] == "backoffice"
    assert os.environ.get("FRAGMENT_CONNECTOR__FRAGMENT__TOKEN") == TOKEN


def stamina_retries() -> float:
    """What stamina's own counter (in prometheus_client's default registry) has counted."""
    counter = get_prometheus_counter()
    if counter is None:
        return 0.0
    samples = (sample for metric in counter.collect() for sample in metric.samples)
    return sum(sample.value for sample in samples if sample.name == "stamina_retries_total")


async def test_a_retry_is_counted_once_on_metrics(workspace: Workspace) -> None:
    """A retried Fragment request moves the one retry counter /metrics serves, and not stamina's
    `stamina_retries_total`, which would sit in a registry nobody serves."""
    workspace.write_tickets(make_tickets(2))
    rule = FailRule("PUT", "/tasks/batch", 503, 1)
    workspace.sandbox.store.set_faults(Faults(fail_next=(rule,), retry_after_s=0))
    before = stamina_retries()
    async with running(settings_for(workspace, full_refresh="1h")) as (_, http, reports):
        await wait_for(lambda: len(reports) >= 1)
        text = (await http.get("/metrics")).text
    assert reports[0].ok and open_ids(workspace) == {"T-0", "T-1"}
    put = '{endpoint="/tasks/batch",method="PUT",status="503"}'
    assert f"fragment_connector_fragment_requests_total{put} 1.0" in text
    assert "fragment_connector_fragment_retries_total 1.0" in text
    assert "stamina" not in text
    assert stamina_retries() == before
