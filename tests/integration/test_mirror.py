"""The mirror between full listings: what operators do in Fragment, even while we write, is seen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from connector.config import load_settings
from connector.cycle import CycleOptions, report_counts
from connector.fragment import BatchAnswer
from connector.identity import instance_namespace, task_uid
from connector.models import CycleReport, JSONValue
from connector.runtime import open_runtime
from tests.conftest import TOKEN, Workspace, make_tickets


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAGMENT_CONNECTOR__FRAGMENT__TOKEN", TOKEN)


def uid(ticket_id: str) -> str:
    return task_uid(instance_namespace("tests"), "backoffice", ticket_id)


def actions(report: CycleReport) -> list[tuple[str, str, str]]:
    return [(a.kind.value, a.ticket_id, a.reason) for a in report.sources[0].planned]


def listings(ws: Workspace) -> list[str]:
    """The query strings of the GET /tasks requests since the log was last cleared."""
    return [
        r["query"]
        for r in ws.sandbox.store.requests()
        if r["method"] == "GET" and r["path"] == "/tasks"
    ]


async def test_operator_edits_during_the_apply_window_are_seen_by_the_next_delta_listing(
    workspace: Workspace,
) -> None:
    """Edits made in Fragment while a cycle writes are read by the next cycle's delta listing.

    The cycle's own writes move `updated_at` past the watermark too, so the next delta listing
    reads them back along with the operators' edits; the digests tell the two apart.
    """
    tickets = make_tickets(300)
    workspace.write_tickets(tickets)
    store = workspace.sandbox.store
    async with open_runtime(load_settings(workspace.config_path)) as reconciler:
        first = await reconciler.run(CycleOptions())
        assert report_counts(first.sources[0])["create"] == 300

        for ticket in tickets[:150]:
            ticket["title"] += " (edited)"
        workspace.write_tickets(tickets)
        send = reconciler.client.patch_batch

        async def patch_while_operators_act(
            items: Sequence[Mapping[str, JSONValue]],
        ) -> BatchAnswer:
            answer = await send(items)
            if items[0]["uid"] == uid("T-0"):  # after the first of the two batches
                store.operator_edit(uid("T-200"), fields={"title": "renamed by an operator"})
                store.operator_edit(uid("T-201"), status="DONE")
                store.operator_edit(uid("T-202"), fields={"notes": "the operator's own field"})
                store.operator_edit(uid("T-203"), status="STARTED")
            return answer

        reconciler.client.patch_batch = patch_while_operators_act  # type: ignore[method-assign]
        second = await reconciler.run(CycleOptions())
        reconciler.client.patch_batch = send  # type: ignore[method-assign]
        assert report_counts(second.sources[0])["update"] == 150

        store.clear_requests()
        third = await reconciler.run(CycleOptions())
        assert listings(workspace) and all("updated_at_after" in q for q in listings(workspace))
        assert actions(third) == [("update", "T-200", "title changed")]

        fourth = await reconciler.run(CycleOptions())
        assert actions(fourth) == []

    tasks = {t["fields"]["fc_ticket_id"]: t for t in workspace.tasks().values()}
    assert len(tasks) == 300
    assert tasks["T-200"]["fields"]["title"] == "Ticket number 200"
    assert tasks["T-201"]["status"] == "DONE"  # the operator's decision stands
    assert tasks["T-202"]["fields"]["notes"] == "the operator's own field"
    assert tasks["T-203"]["status"] == "STARTED"


async def test_a_lost_mirror_costs_a_full_listing_not_correctness(workspace: Workspace) -> None:
    """Without the state file, the next cycle lists everything and writes nothing more."""
    workspace.write_tickets(make_tickets(120))
    settings = load_settings(workspace.config_path)
    async with open_runtime(settings) as reconciler:
        await reconciler.run(CycleOptions())
    workspace.state_path.unlink()
    workspace.sandbox.store.clear_requests()
    async with open_runtime(settings) as reconciler:
        report = await reconciler.run(CycleOptions())
        assert actions(report) == []
        assert report.sources[0].open_tasks == 120
        assert listings(workspace) and not any("updated_at_after" in q for q in listings(workspace))
        assert actions(await reconciler.run(CycleOptions())) == []
