"""The mirror between full listings: what operators do in Fragment, even while we write, is seen."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from connector.config import load_settings
from connector.cycle import CycleOptions, report_counts
from connector.fragment import BatchAnswer, TaskPage
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


async def test_an_edit_during_a_long_full_listing_is_seen_by_the_next_delta_listing(
    workspace: Workspace,
) -> None:
    """The watermark is the start of the listing in Fragment's clock, not the newest task read.

    The full listing here outlasts the overlap (1 s): an operator renames a task of the first
    page once it was read, then, past the overlap, a task of the last page before it is read.
    Anchored at the newest `updated_at` read, the next delta listing would start after the first
    edit and miss it until the next full listing.
    """
    tickets = make_tickets(300)
    workspace.write_tickets(tickets)
    workspace.write_config(fragment={"page_size": 100, "listing_overlap": "1s"})
    settings = load_settings(workspace.config_path)
    store = workspace.sandbox.store
    async with open_runtime(settings) as reconciler:
        await reconciler.run(CycleOptions())
    workspace.state_path.unlink()  # the next cycle lists every open task

    async with open_runtime(settings) as reconciler:
        client = reconciler.client
        iter_tasks = client.iter_tasks

        async def listing_while_operators_act(**filters: Any) -> AsyncIterator[TaskPage]:
            pages = 0
            async for page in iter_tasks(**filters):
                pages += 1
                if pages == 1:
                    assert uid("T-0") in {t.uid for t in page}
                    assert uid("T-299") not in {t.uid for t in page}
                    store.operator_edit(uid("T-0"), fields={"title": "renamed early"})
                    await asyncio.sleep(1.5)  # longer than the overlap
                    store.operator_edit(uid("T-299"), fields={"title": "renamed late"})
                yield page
            assert pages == 3

        client.iter_tasks = listing_while_operators_act  # type: ignore[method-assign]
        second = await reconciler.run(CycleOptions())
        client.iter_tasks = iter_tasks  # type: ignore[method-assign]
        assert actions(second) == [("update", "T-299", "title changed")]

        store.clear_requests()
        third = await reconciler.run(CycleOptions())
        assert listings(workspace) and all("updated_at_after" in q for q in listings(workspace))
        assert actions(third) == [("update", "T-0", "title changed")]

    titles = {t["fields"]["fc_ticket_id"]: t["fields"]["title"] for t in workspace.tasks().values()}
    assert titles["T-0"] == "Ticket number 0"
    assert titles["T-299"] == "Ticket number 299"


async def test_a_full_listing_only_when_fragments_count_differs_from_the_mirrors(
    workspace: Workspace,
) -> None:
    """The drift check: Fragment's count of the source's open tasks (`meta.total_count` of a
    one-item listing) against the mirror's; equal, the cycle stays incremental; a task deleted
    in Fragment makes them differ, and that cycle lists in full and re-creates it."""
    tickets = make_tickets(300)
    workspace.write_tickets(tickets)
    workspace.write_config(fragment={"drift_check_every": "1ms"})
    store = workspace.sandbox.store
    async with open_runtime(load_settings(workspace.config_path)) as reconciler:
        await reconciler.run(CycleOptions())

        def kinds() -> Counter[str]:
            return Counter(
                "count" if q.startswith("limit=1&") else "changes" if "updated_at" in q else "full"
                for q in listings(workspace)
            )

        store.clear_requests()
        quiet = await reconciler.run(CycleOptions())
        assert actions(quiet) == []
        assert kinds()["count"] == 1 and kinds()["full"] == 0
        (counted,) = (q for q in listings(workspace) if q.startswith("limit=1&"))
        assert "status=TODO&status=STARTED&fields.fc_source=backoffice" in counted

        assert store.delete([uid("T-7")]) == 1
        store.clear_requests()
        repaired = await reconciler.run(CycleOptions())
        assert [(kind, ticket) for kind, ticket, _ in actions(repaired)] == [("create", "T-7")]
        assert repaired.sources[0].listing == "full"
        assert kinds()["count"] == 1 and kinds()["full"] == 3  # 300 open tasks, pages of 100

        store.clear_requests()
        assert actions(await reconciler.run(CycleOptions())) == []
        assert kinds()["count"] == 1 and kinds()["full"] == 0
    assert len(workspace.tasks()) == 300
