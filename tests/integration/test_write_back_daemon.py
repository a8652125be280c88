"""Write-back in the daemon: its metric, its log line, and the guard trip it counts."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from connector.config import load_settings
from connector.models import WriteBackOutcome
from tests.conftest import TOKEN, Workspace
from tests.e2e.test_reconcile import uid_of
from tests.fakes.write_back import backoffice
from tests.integration.test_daemon import running, wait_for


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAGMENT_CONNECTOR__FRAGMENT__TOKEN", TOKEN)


async def test_write_backs_are_counted_and_logged(workspace: Workspace) -> None:
    """`fragment_connector_write_backs_total{source,outcome}`, one `write_back` log line each,
    and the mass write-back guard's trip; `backoffice` has one DONE, `other` two (over the
    limit of one)."""
    with backoffice("rest") as bo, backoffice("rest") as other:
        workspace.write_config(
            sources=[bo.source(on_done="close"), other.source("other", on_done="close")],
            schedule={"full_refresh": "0.3s", "jitter": None, "grace_period": "10s"},
            server={"host": "127.0.0.1", "port": 0},
            guards={"write_back_max": 1},
        )
        assert workspace.reconcile().returncode == 0  # the tasks exist
        first = bo.open_ids()[0]
        workspace.sandbox.store.operator_edit(uid_of(first), status="DONE")
        held = other.open_ids()[:2]
        for ticket_id in held:
            workspace.sandbox.store.operator_edit(uid_of(ticket_id, "other"), status="DONE")
        settings = load_settings(workspace.config_path)
        with capture_logs() as logs:
            async with running(settings) as (_, http, reports):

                def seen(outcome: WriteBackOutcome) -> bool:
                    return any(w.outcome is outcome for r in reports for w in r.write_backs)

                await wait_for(lambda: seen(WriteBackOutcome.CLOSED))
                await wait_for(lambda: seen(WriteBackOutcome.REFUSED))
                text = (await http.get("/metrics")).text
        assert [other.closes(t) for t in held] == [0, 0]
    assert 'fragment_connector_write_backs_total{outcome="closed",source="backoffice"} 1.0' in text
    assert 'fragment_connector_write_backs_total{outcome="refused",source="other"}' in text
    assert 'fragment_connector_guard_trips_total{guard="mass_write_back",source="other"}' in text
    lines = [e for e in logs if e["event"] == "write_back"]
    assert [(e["source"], e["ticket_id"], e["action"], e["outcome"]) for e in lines] == [
        ("backoffice", first, "close", "closed")
    ]
