"""Several `fragment-connector run` replicas on one PostgreSQL state store and one Fragment.

Three daemon processes share six file sources through per-source advisory locks: each source is
worked by one replica at a time (the sandbox counts concurrent writers per source, the run
history in PostgreSQL has every cycle's start and end), a replica killed with SIGKILL has its
sources taken over within one interval, and the final backlog is exact, with no duplicate.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from connector.leases import PostgresLeases, lock_id
from connector.sandbox import Faults, SandboxServer
from tests.conftest import POSTGRES_STATE_URL, TOKEN, Workspace, make_tickets
from tests.e2e.test_run import free_port
from tests.integration.test_postgres_state import execute

INTERVAL_S = 2.0
JITTER_S = 0.5
SOURCES = [f"s{n}" for n in range(1, 7)]
PER_SOURCE = 120
OPEN = ("TODO", "STARTED")

# One worker runs these one after the other (`--dist loadgroup`): each starts three daemons and
# asserts how soon they react (a takeover within one interval); two of them at once, twelve
# processes on a 2-core machine, were late.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("replicas")]


@dataclass
class Backoffice:
    """Six ticket files and what each should show in Fragment."""

    root: Path
    sources: list[str] = field(default_factory=lambda: list(SOURCES))
    tickets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    next_id: int = 0

    def create(self, per_source: int = PER_SOURCE) -> None:
        for name in self.sources:
            self.tickets[name] = make_tickets(per_source, start=self.next_id, prefix=f"{name}-")
            self.next_id += per_source
            self.save(name)

    def save(self, name: str) -> None:
        path = self.root / f"{name}.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.tickets[name]))
        path.with_suffix(".tmp").replace(path)  # a replica never reads a half-written file

    def churn(self, names: list[str], round_: int) -> None:
        """Per source: 5 tickets closed, 5 opened, 5 retitled."""
        for name in names:
            tickets = self.tickets[name][5:]
            for ticket in tickets[:5]:
                ticket["title"] = f"{ticket['title']} (round {round_})"
            tickets += make_tickets(5, start=self.next_id, prefix=f"{name}-")
            self.next_id += 5
            self.tickets[name] = tickets
            self.save(name)

    def matches(self, sandbox: SandboxServer) -> bool:
        """Whether Fragment's open tasks are exactly the open tickets, titles included."""
        shown: dict[str, dict[str, str]] = {name: {} for name in self.sources}
        for task in sandbox.store.all_tasks():
            fields = task["fields"]
            if task["status"] in OPEN and fields["fc_source"] in shown:
                shown[fields["fc_source"]][fields["fc_ticket_id"]] = fields["title"]
        return all(
            shown[name] == {t["id"]: t["title"] for t in self.tickets[name]}
            for name in self.sources
        )


@dataclass
class Replica:
    """One daemon process and its HTTP port."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def holdings(self) -> dict[str, str]:
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
        except httpx.HTTPError:
            return {}
        sources: dict[str, str] = answer.json().get("sources", {})
        return sources

    def held(self) -> set[str]:
        return {name for name, state in self.holdings().items() if state == "held"}


def instance_for(root: Path) -> str:
    """The replicas' shared `connector.instance`, unique to the test: advisory locks are
    database-wide, and under xdist two tests run at once with the same `tmp_path.name` (pytest
    cuts it to 30 characters, so both parametrisations of a test end `…0` on their workers)."""
    return f"replicas-{uuid.uuid5(uuid.NAMESPACE_URL, str(root)).hex[:12]}"


def start_replica(
    name: str,
    root: Path,
    sandbox: SandboxServer,
    state_url: str,
    sources: list[str] = SOURCES,
    jitter: str | None = f"{JITTER_S}s",
    requests_per_minute: float = 100000,
) -> Replica:
    workdir = root / name
    workdir.mkdir()
    port = free_port()
    config = {
        "connector": {"instance": instance_for(root)},
        "fragment": {
            "base_url": sandbox.base_url,
            "requests_per_minute": requests_per_minute,
            "burst": 100,
            "retry_deadline": "20s",
        },
        "schedule": {
            "full_refresh": f"{INTERVAL_S}s",
            "jitter": jitter,
            "grace_period": "5s",
        },
        "state": {"url": state_url},
        "server": {"host": "127.0.0.1", "port": port},
        "sources": [
            {"name": s, "adapter": "file", "options": {"path": str(root / f"{s}.json")}}
            for s in sources
        ],
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    env["FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"] = TOKEN
    log = workdir / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "--config", "config.yaml"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Replica(name, process, port, log)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until true; the seconds it took.

    Every 50 ms, or less often for a condition that takes a while to check: comparing the
    sandbox's 15,000 tasks takes tens of milliseconds under its lock, and polled back to back
    it held up the replicas it watches and took a core (a poll costs at most a fifth of the
    time). The cheap conditions, those whose time is measured, are still polled every 50 ms.
    """
    began = time.monotonic()
    while True:
        checked = time.monotonic()
        if condition():
            return time.monotonic() - began
        now = time.monotonic()
        assert now - began < timeout, f"not within {timeout}s: {what}"
        time.sleep(max(0.05, 4 * (now - checked)))


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    """Where the test's replicas are kept; all killed at the end, their logs shown on failure."""
    started: list[Replica] = []
    yield started
    for replica in started:
        if replica.process.poll() is None:
            replica.process.kill()
            replica.process.wait()
        print(f"--- {replica.name}\n{replica.log.read_text()[-6000:]}")


def holders(running: list[Replica]) -> dict[str, list[str]]:
    """Each source -> the replicas that say they hold it."""
    found: dict[str, list[str]] = {name: [] for name in SOURCES}
    for replica in running:
        for name in replica.held():
            found[name].append(replica.name)
    return found


def each_held_once(running: list[Replica], share: int) -> bool:
    """Every source held by exactly one of the live replicas, and each of them holds `share`."""
    owners = holders(running)
    live = {r.name for r in running}
    counts = Counter(owner for names in owners.values() for owner in names)
    exclusive = all(len(names) == 1 and names[0] in live for names in owners.values())
    return exclusive and all(counts[r.name] == share for r in running)


def answering(replica: Replica) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{replica.port}/healthz", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def stays(condition: Callable[[], bool], seconds: float) -> None:
    """Assert the condition holds at every look for that long."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert condition()
        time.sleep(0.1)


def run_history(state_url: str) -> list[tuple[str, str, datetime, datetime]]:
    rows = execute(state_url, "SELECT source, replica, started_at, finished_at FROM fc_runs")
    return [(r[0], r[1], datetime.fromisoformat(r[2]), datetime.fromisoformat(r[3])) for r in rows]


@pytest.mark.slow(seconds=15)
def test_three_replicas_share_six_sources_and_survive_a_sigkill(
    tmp_path: Path,
    sandbox: SandboxServer,
    postgres_state_url: str,
    replicas: list[Replica],
) -> None:
    """Every source reconciled, never by two replicas at once; a killed replica's sources
    are taken over within one interval; the final Fragment state is exact."""
    backoffice = Backoffice(tmp_path)
    backoffice.create()
    sandbox.store.set_faults(
        Faults(latency_s=0.03)
    )  # cycles long enough to overlap, were it possible
    replicas.extend(
        start_replica(name, tmp_path, sandbox, postgres_state_url) for name in ("a", "b", "c")
    )
    wait_for(lambda: backoffice.matches(sandbox), 60, "the initial sync of six sources")
    wait_for(lambda: each_held_once(replicas, share=2), 30, "two sources per replica")
    for replica in replicas:  # /metrics agrees with /readyz
        metrics = httpx.get(f"http://127.0.0.1:{replica.port}/metrics", timeout=5).text
        for name, state in replica.holdings().items():
            held = "1.0" if state == "held" else "0.0"
            assert f'fragment_connector_source_held{{source="{name}"}} {held}' in metrics

    for round_ in (1, 2):
        backoffice.churn(SOURCES, round_)
        wait_for(lambda: backoffice.matches(sandbox), 30, f"churn round {round_}")
    ran = {replica for _, replica, _, _ in run_history(postgres_state_url)}
    assert len(ran) == 3, f"every replica worked some source: {ran}"

    victim = next(r for r in replicas if r.held())
    orphaned = victim.held()
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    killed = time.monotonic()
    backoffice.churn(sorted(orphaned), 3)
    survivors = [r for r in replicas if r is not victim]
    took = wait_for(lambda: all(holders(survivors)[name] for name in orphaned), 30, "the takeover")
    assert took <= INTERVAL_S + JITTER_S + 1.0, f"taken over in {took:.1f}s, over one interval"
    wait_for(lambda: backoffice.matches(sandbox), 30, "the orphaned sources' churn")
    assert each_held_once(survivors, share=3)
    exact = time.monotonic() - killed
    print(f"takeover of {sorted(orphaned)} {took:.2f}s after SIGKILL, exact after {exact:.2f}s")

    for replica in survivors:
        replica.process.send_signal(signal.SIGTERM)
    for replica in survivors:
        assert replica.process.wait(timeout=20) == 0

    # `status` reads the shared history: the three replicas' cycles, each with its host:pid.
    config = tmp_path / "a" / "config.yaml"
    status = subprocess.run(
        [sys.executable, "-m", "connector", "status", "--config", str(config), "--limit", "500"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "FRAGMENT_CONNECTOR__FRAGMENT__TOKEN": TOKEN},
    )
    pids = {f":{r.process.pid}" for r in replicas}
    shown = {
        line.rsplit(" by ", 1)[1].split()[0]
        for line in status.stdout.splitlines()
        if " by " in line
    }
    assert {p[p.index(":") :] for p in shown} == pids

    # Exact: the open tasks are the open tickets (checked above, still true after the stop)
    # and no ticket ever got a second task.
    assert backoffice.matches(sandbox)
    tasks = sandbox.store.all_tasks()
    per_ticket = Counter((t["fields"]["fc_source"], t["fields"]["fc_ticket_id"]) for t in tasks)
    assert len(per_ticket) == backoffice.next_id
    assert max(per_ticket.values()) == 1

    # Never two writers of one source at once, as Fragment saw it...
    writers = sandbox.store.stats()["max_concurrent_writers"]
    assert set(writers) == set(SOURCES)
    assert max(writers.values()) == 1, writers
    # ...and as the run history saw it: no source's cycles overlap, whoever ran them.
    history = run_history(postgres_state_url)
    for name in SOURCES:
        cycles = sorted((s, f, r) for src, r, s, f in history if src == name)
        for (_, finished, _), (started, _, _) in itertools.pairwise(cycles):
            assert started >= finished, f"{name}: overlapping cycles {cycles}"


@pytest.mark.slow(seconds=19)
@pytest.mark.parametrize("jitter", [None, f"{JITTER_S}s"], ids=["jitter-off", "jitter-on"])
def test_the_fair_share_settles_within_one_period_and_stays(
    tmp_path: Path,
    sandbox: SandboxServer,
    postgres_state_url: str,
    replicas: list[Replica],
    jitter: str | None,
) -> None:
    """Three replicas started together settle to 2/2/2 of six sources within one period and stay
    there; after a SIGKILL the two survivors settle to 3/3 within one period and stay there.

    With `jitter: null` every source's job fires at the same instant: the share decision and the
    count it rests on must be one step, or one replica takes all six and hands them all back.
    """
    backoffice = Backoffice(tmp_path)
    backoffice.create(per_source=20)
    one_period = INTERVAL_S + (JITTER_S if jitter else 0.0) + 1.5  # + a cycle and the polling
    replicas.extend(
        start_replica(name, tmp_path, sandbox, postgres_state_url, jitter=jitter)
        for name in ("a", "b", "c")
    )
    wait_for(lambda: all(answering(r) for r in replicas), 60, "three replicas up")
    took = wait_for(lambda: each_held_once(replicas, share=2), 30, "2/2/2")
    assert took <= one_period, f"2/2/2 after {took:.1f}s"
    stays(lambda: each_held_once(replicas, share=2), 3 * INTERVAL_S)
    assert backoffice.matches(sandbox)

    victim = replicas[0]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    survivors = replicas[1:]
    took = wait_for(lambda: each_held_once(survivors, share=3), 30, "3/3")
    assert took <= one_period, f"3/3 after {took:.1f}s"
    stays(lambda: each_held_once(survivors, share=3), 3 * INTERVAL_S)
    print(f"settled 3/3 {took:.2f}s after the SIGKILL")


def busiest_window(times: list[float], window: float) -> int:
    """The most requests that arrived within any `window` seconds, wherever it starts."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.timeout(300)
@pytest.mark.slow(seconds=80)
def test_three_replicas_and_a_one_shot_run_share_one_request_budget(
    tmp_path: Path,
    sandbox: SandboxServer,
    postgres_state_url: str,
    replicas: list[Replica],
) -> None:
    """One Fragment account, one budget: three daemons and a one-shot `reconcile`, all busy at
    once, never send more than `requests_per_minute` within any window of a minute, as the
    sandbox received them.

    Scaled for test time: 120 requests a minute (Fragment allows 60), measured over every
    60-second window of a load that lasts longer. Each process alone would be allowed 120 a
    minute with a burst of 100; sharing nothing, they would send well over the budget. Not
    faster: the budget tolerates a request arriving up to half a spacing late (0.25 s here),
    and at 300 a minute (0.1 s) the loaded sandbox's own delay in stamping arrivals was
    enough to put 301 in a window now and then.
    """
    rpm, window = 120.0, 60.0
    allowed = int(rpm * window / 60)
    backoffice = Backoffice(tmp_path)
    backoffice.create(per_source=20)
    replicas.extend(
        start_replica(name, tmp_path, sandbox, postgres_state_url, requests_per_minute=rpm)
        for name in ("a", "b", "c")
    )
    wait_for(lambda: backoffice.matches(sandbox), 60, "the initial sync")
    wait_for(lambda: each_held_once(replicas, share=2), 30, "2/2/2")

    # The one-shot run: a seventh source no daemon works, same instance, token and database.
    one_shot = tmp_path / "one-shot"
    one_shot.mkdir()
    config = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    config["sources"] = [
        {"name": "s7", "adapter": "file", "options": {"path": str(one_shot / "s7.json")}}
    ]
    (one_shot / "s7.json").write_text(json.dumps(make_tickets(1500, prefix="s7-")))
    (one_shot / "config.yaml").write_text(yaml.safe_dump(config))

    sandbox.store.clear_requests()
    began = time.monotonic()
    # Every daemon has 40 batches to send at once (creates only: the index's census proves the
    # new uids absent without a query).
    for name in SOURCES:
        backoffice.tickets[name] += make_tickets(2000, start=backoffice.next_id, prefix=f"{name}-")
        backoffice.next_id += 2000
        backoffice.save(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    env["FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"] = TOKEN
    reconcile = subprocess.run(
        [sys.executable, "-m", "connector", "reconcile", "--config", "config.yaml"],
        cwd=one_shot,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert reconcile.returncode == 0, reconcile.stderr[-3000:]
    wait_for(lambda: backoffice.matches(sandbox), 300, "the daemons' backlog")
    took = time.monotonic() - began

    arrivals = [datetime.fromisoformat(r["at"]).timestamp() for r in sandbox.store.requests()]
    busiest = busiest_window(arrivals, window)
    writes = [r for r in sandbox.store.requests() if r["method"] == "PUT"]
    print(f"{len(arrivals)} requests in {took:.1f}s, busiest {window:g}s window: {busiest}")
    assert len(writes) >= 135  # 120 batches of the daemons and 15 of the one-shot run
    assert busiest <= allowed, f"{busiest} requests within {window:g}s, over {allowed}"
    assert busiest >= allowed * 0.8, "the budget was not the limit: the test proves nothing"


def test_without_shared_state_two_replicas_do_overlap(
    tmp_path: Path, sandbox: SandboxServer, replicas: list[Replica]
) -> None:
    """The control: replicas with a SQLite store each know nothing of each other, and the
    sandbox does see two writers of one source at once (so the check above can fail)."""
    backoffice = Backoffice(tmp_path)
    backoffice.create(per_source=600)  # six batches of 0.25 s per source: a wide window to meet
    sandbox.store.set_faults(Faults(latency_s=0.25))
    for name in ("a", "b"):
        replicas.append(start_replica(name, tmp_path, sandbox, f"sqlite:///{tmp_path / name}.db"))
    wait_for(lambda: backoffice.matches(sandbox), 60, "the initial sync")
    assert max(sandbox.store.stats()["max_concurrent_writers"].values()) >= 2


async def test_a_one_shot_reconcile_skips_the_sources_a_daemon_holds(
    workspace: Workspace, postgres_state_url: str
) -> None:
    """`reconcile` against a shared store writes nothing to a source a daemon holds (exit 1,
    `source_held_elsewhere`), and runs it once the lock is free; --dry-run needs no lock."""
    instance = f"one-shot-{uuid.uuid4().hex[:8]}"
    workspace.write_tickets(make_tickets(30))
    workspace.write_config(connector={"instance": instance}, state={"url": postgres_state_url})
    daemon = PostgresLeases(POSTGRES_STATE_URL, instance=instance, sources=["backoffice"])
    await daemon.start()
    try:
        assert await daemon.acquire("backoffice")
        code, report = await asyncio.to_thread(workspace.reconcile_json)
        assert code == 1
        (source,) = report["sources"]
        assert source["error_type"] == "source_held_elsewhere", source
        assert workspace.writes() == []
        code, _ = await asyncio.to_thread(workspace.reconcile_json, "--dry-run")
        assert code == 2
    finally:
        await daemon.close()
    code, report = await asyncio.to_thread(workspace.reconcile_json)
    assert code == 0, report
    assert len(workspace.tasks()) == 30


def test_a_replica_whose_lock_session_dies_stops_writing_and_resumes(
    tmp_path: Path,
    sandbox: SandboxServer,
    postgres_state_url: str,
    replicas: list[Replica],
) -> None:
    """The server ends the daemon's lock session while it is writing (a database restart, an
    admin's pg_terminate_backend): the next batch is not sent, the cycle fails with
    `lease_lost`, and the daemon reconnects and finishes at its next tick, exactly."""
    backoffice = Backoffice(tmp_path, sources=["s1"])
    backoffice.create(per_source=800)
    sandbox.store.set_faults(Faults(latency_s=0.4))
    replica = start_replica("a", tmp_path, sandbox, postgres_state_url, sources=["s1"])
    replicas.append(replica)

    def puts() -> int:
        return sum(1 for r in sandbox.store.requests() if r["method"] == "PUT")

    wait_for(lambda: puts() >= 1, 30, "the first batch in flight")
    space = lock_id(f"fragment-connector/{instance_for(tmp_path)}")
    (ended,) = execute(
        POSTGRES_STATE_URL,
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
        f" AND objid::bigint = 0 AND classid::bigint = {space}",
    )
    assert ended[0] is True
    wait_for(lambda: "cycle.lease_lost" in replica.log.read_text(), 10, "the cycle to stop")
    assert puts() <= 2, "at most the batch in flight and the one confirmed just before the end"
    stopped_at = puts()

    sandbox.store.set_faults(Faults())
    wait_for(lambda: backoffice.matches(sandbox), 30, "the next tick to finish the plan")
    assert puts() == stopped_at + (800 - 100 * stopped_at + 99) // 100
    log = replica.log.read_text()
    assert '"lease.lost"' in log and '"cycle.lease_lost"' in log
    assert '"apply.not_sent"' in log and '"apply.failed"' not in log  # one line, not 600
    replica.process.send_signal(signal.SIGTERM)
    assert replica.process.wait(timeout=20) == 0
    assert len(sandbox.store.all_tasks()) == 800
