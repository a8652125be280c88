"""Cycles against a misbehaving sandbox: retries converge, nothing is duplicated or lost."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import stamina

from connector.config import load_settings
from connector.cycle import CycleOptions, cycle_exit_code, report_counts
from connector.models import CycleReport
from connector.runtime import open_runtime
from connector.sandbox import FailRule, Faults
from tests.conftest import TOKEN, Workspace, make_tickets


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAGMENT_CONNECTOR__FRAGMENT__TOKEN", TOKEN)


@pytest.fixture
def no_retry_waits() -> Iterator[None]:
    """stamina's testing mode, for tests of what retries converge to rather than when: every
    attempt the client is configured for (`cap`: never more), none of the waits between them."""
    with stamina.set_testing(True, attempts=1000, cap=True):
        yield


async def cycle(ws: Workspace, **options: Any) -> CycleReport:
    settings = load_settings(ws.config_path)
    async with open_runtime(settings) as reconciler:
        return await reconciler.run(CycleOptions(**options))


def assert_exact(ws: Workspace, open_ids: set[str]) -> None:
    """One task per ticket ever seen, open exactly for the open tickets."""
    tasks = ws.tasks().values()
    per_ticket = Counter(t["fields"]["fc_ticket_id"] for t in tasks)
    assert max(per_ticket.values(), default=1) == 1
    assert {t["fields"]["fc_ticket_id"] for t in tasks if t["status"] != "DONE"} == open_ids


@pytest.mark.usefixtures("no_retry_waits")
async def test_random_429_and_5xx_are_retried_to_an_exact_result(workspace: Workspace) -> None:
    """With 30% 429s and 20% 5xx, one cycle still creates exactly one task per ticket."""
    # 1,000 tickets: a first import costs one listing and ten PUTs, enough requests to be faulted.
    workspace.write_tickets(make_tickets(1000))
    workspace.sandbox.store.set_faults(Faults(p_429=0.3, p_5xx=0.2, retry_after_s=0))
    report = await cycle(workspace)
    assert cycle_exit_code(report) == 0
    statuses: Counter[str] = Counter()
    for key, count in report.requests.items():
        statuses[key.rsplit(" ", 1)[1]] += count
    assert statuses["429"] + statuses["500"] + statuses["502"] + statuses["503"] > 0
    assert_exact(workspace, {f"T-{n}" for n in range(1000)})


@pytest.mark.usefixtures("no_retry_waits")
async def test_lost_write_responses_do_not_duplicate(workspace: Workspace) -> None:
    """A batch applied by Fragment whose answer is lost is sent again, harmlessly."""
    workspace.write_tickets(make_tickets(150))
    rules = (FailRule("PUT", "/tasks/batch", "lost", 2),)
    workspace.sandbox.store.set_faults(Faults(fail_next=rules))
    report = await cycle(workspace)
    assert cycle_exit_code(report) == 0
    assert_exact(workspace, {f"T-{n}" for n in range(150)})
    puts = [r for r in workspace.sandbox.store.requests() if r["method"] == "PUT"]
    assert len(puts) == 4  # two lost, each sent again

    workspace.write_tickets(make_tickets(110))  # 40 closes, under the mass-close limit
    workspace.sandbox.store.set_faults(
        Faults(fail_next=(FailRule("PATCH", "/tasks/batch", "lost", 1),))
    )
    report = await cycle(workspace)
    assert cycle_exit_code(report) == 0
    assert_exact(workspace, {f"T-{n}" for n in range(110)})


@pytest.mark.usefixtures("no_retry_waits")
async def test_dropped_connections_are_retried(workspace: Workspace) -> None:
    """Connections dropped before an answer are retried on listing, query and writes."""
    workspace.write_tickets(make_tickets(120))
    workspace.sandbox.store.set_faults(Faults(p_drop=0.3))
    report = await cycle(workspace)
    assert cycle_exit_code(report) == 0
    assert_exact(workspace, {f"T-{n}" for n in range(120)})


async def test_fragment_down_fails_the_cycle_and_the_next_one_converges(
    workspace: Workspace,
) -> None:
    """Fragment down past the deadline: exit 1, unsent actions reported, next cycle repairs."""
    workspace.write_tickets(make_tickets(250))
    workspace.write_config(
        fragment={
            "base_url": workspace.sandbox.base_url,
            "requests_per_minute": 100000,
            "burst": 100,
            "retry_deadline": "1s",
        }
    )
    workspace.sandbox.store.set_faults(
        Faults(fail_next=(FailRule("PUT", "/tasks/batch", 503, 50),))
    )
    report = await cycle(workspace)
    assert cycle_exit_code(report) == 1
    (source,) = report.sources
    assert not source.ok
    assert source.error is not None and "503" in source.error
    assert len(source.failures) == 250
    assert workspace.tasks() == {}

    workspace.sandbox.store.set_faults(Faults())
    report = await cycle(workspace)
    assert cycle_exit_code(report) == 0
    assert_exact(workspace, {f"T-{n}" for n in range(250)})


async def test_invisible_new_tasks_are_not_duplicated(workspace: Workspace) -> None:
    """While Fragment hides new tasks from listings, a second cycle adds no duplicate."""
    workspace.sandbox.store.update_config(visibility_delay_s=30)
    workspace.write_tickets(make_tickets(20))
    await cycle(workspace)
    report = await cycle(workspace)
    assert cycle_exit_code(report) == 0
    assert_exact(workspace, {f"T-{n}" for n in range(20)})


async def test_cycle_over_the_real_rate_limit_meets_no_429(workspace: Workspace) -> None:
    """Paced just under the server's rate with the default burst, the client meets no 429.

    The margins (90% of the server's rate, a burst of 5 where the server tolerates 10) absorb
    network and scheduling jitter; pacing at exactly the server's rate and burst does meet 429s.
    """
    workspace.sandbox.store.update_config(requests_per_minute=600, rate_burst=10)
    workspace.write_config(
        fragment={
            "base_url": workspace.sandbox.base_url,
            "requests_per_minute": 540,
            "burst": 5,
            "page_size": 10,
            "batch_size": 10,
        }
    )
    workspace.write_tickets(make_tickets(200))  # a first import: one listing, 20 PUTs
    report = await cycle(workspace)
    assert cycle_exit_code(report) == 0
    assert sum(report.requests.values()) >= 20
    assert not any(key.endswith(" 429") for key in report.requests)


async def test_slow_responses_past_the_timeout_are_retried(workspace: Workspace) -> None:
    """Answers slower than the client's timeout are retried; the cycle still converges."""
    workspace.write_tickets(make_tickets(30))
    workspace.write_config(
        fragment={
            "base_url": workspace.sandbox.base_url,
            "requests_per_minute": 100000,
            "burst": 100,
            "timeout": "0.3s",
            "retry_deadline": "20s",
        }
    )
    rules = (FailRule("PUT", "/tasks/batch", "lost", 1),)
    workspace.sandbox.store.set_faults(Faults(latency_s=0.5, fail_next=rules))
    first = cycle(workspace)
    task = asyncio.ensure_future(first)
    await asyncio.sleep(1.5)  # every request times out while the latency lasts
    workspace.sandbox.store.set_faults(Faults())
    report = await task
    assert cycle_exit_code(report) == 0
    assert any(key.endswith(("ReadTimeout", "RemoteProtocolError")) for key in report.requests)
    assert_exact(workspace, {f"T-{n}" for n in range(30)})


async def test_back_office_duplicates_and_bad_records(workspace: Workspace) -> None:
    """Duplicate ids and bad records: reported, their tasks left alone, no closes, rest applied."""
    workspace.write_tickets(make_tickets(10))
    await cycle(workspace)
    tickets = make_tickets(8)  # T-8, T-9 vanish, but the snapshot is not trustworthy:
    tickets.append(dict(tickets[0]))  # T-0 twice
    tickets.append({"id": "T-3", "title": "x" * 1001})  # T-3 again, title too long
    tickets += make_tickets(2, start=20)
    workspace.write_tickets(tickets)
    report = await cycle(workspace)
    (source,) = report.sources
    reasons = {(r.ticket_id, r.reason) for r in source.invalid_records}
    assert ("T-0", "duplicate ticket id in one snapshot") in reasons
    assert ("T-3", "the title has 1001 characters; Fragment takes at most 1000") in reasons
    # The closes of T-8/T-9 were refused (3), but skipped records are a failure (1), which wins.
    assert cycle_exit_code(report) == 1
    assert len(source.refusals) == 2
    assert_exact(workspace, {f"T-{n}" for n in range(10)} | {"T-20", "T-21"})


async def test_a_lost_lease_stops_the_writes_and_the_next_owner_finishes(
    workspace: Workspace,
) -> None:
    """The replica's lock is lost after its second batch: no further batch is sent, the cycle
    fails with `lease_lost`, and the next cycle (the next owner) creates exactly the rest."""
    workspace.write_tickets(make_tickets(450))

    def puts() -> int:
        return sum(1 for r in workspace.sandbox.store.requests() if r["method"] == "PUT")

    async def may_write() -> bool:
        return puts() < 2

    report = await cycle(workspace, may_write=may_write)
    (source,) = report.sources
    assert not source.ok and source.error_label == "lease_lost", source.error
    assert cycle_exit_code(report) == 1
    assert len(workspace.tasks()) == 200 and puts() == 2
    assert len(source.failures) == 250  # the unsent actions, reported as such

    again = await cycle(workspace)
    assert cycle_exit_code(again) == 0
    assert report_counts(again.sources[0])["create"] == 250
    assert_exact(workspace, {f"T-{n}" for n in range(450)})


async def test_creates_never_sent_leave_no_row_to_look_up(workspace: Workspace) -> None:
    """A cycle stopped after its first batch: the creates it never sent lose the index rows
    written ahead of them, so the next cycle creates them under the census with no look-up."""
    workspace.write_tickets(make_tickets(5))
    await cycle(workspace)
    workspace.write_tickets(make_tickets(255))
    batches = 0

    async def one_batch() -> bool:
        nonlocal batches
        batches += 1
        return batches == 1

    report = await cycle(workspace, may_write=one_batch)
    assert report_counts(report.sources[0])["failed"] == 150
    assert len(workspace.tasks()) == 105
    workspace.sandbox.store.clear_requests()
    report = await cycle(workspace)
    assert cycle_exit_code(report) == 0
    assert report_counts(report.sources[0])["create"] == 150
    assert "/tasks/query" not in [r["route"] for r in workspace.sandbox.store.requests()]
    assert_exact(workspace, {f"T-{n}" for n in range(255)})
