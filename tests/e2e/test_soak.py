"""A bounded soak: the daemon every second against a faulty sandbox and a churning back-office.

Loopback only, bounded in time (SOAK_SECONDS, 40 by default). Memory and open file descriptors
of the daemon must stay flat, and once the faults stop the final Fragment state must be exact.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from connector.sandbox import Faults
from tests.conftest import TOKEN, Workspace, make_tickets

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "40"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow(seconds=45)
@pytest.mark.timeout(SOAK_SECONDS + 120)
def test_soak_daemon_stays_flat_and_converges(workspace: Workspace) -> None:
    """Under faults and churn the daemon's RSS and fds stay flat, and the end state is exact."""
    rng = random.Random(7)
    tickets = {t["id"]: t for t in make_tickets(300)}
    workspace.write_tickets(list(tickets.values()))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace.write_config(
        schedule={"full_refresh": "1s", "incremental": None, "jitter": None, "grace_period": "5s"},
        server={"host": "127.0.0.1", "port": port},
        fragment={
            "base_url": workspace.sandbox.base_url,
            "requests_per_minute": 100000,
            "burst": 100,
            "retry_deadline": "5s",
            "full_listing_every": "10s",
        },
        guards={"close_ratio": 1.0},
    )
    workspace.sandbox.store.set_faults(
        Faults(p_429=0.05, p_5xx=0.05, p_drop=0.02, p_lost_response=0.02, retry_after_s=0)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    env["FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"] = TOKEN
    daemon = subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "--config", str(workspace.config_path)],
        cwd=workspace.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples: list[tuple[float, int, int]] = []
    next_id = 1000
    try:
        began = time.monotonic()
        while time.monotonic() - began < SOAK_SECONDS:
            assert daemon.poll() is None, "the daemon died during the soak"
            for ticket_id in rng.sample(sorted(tickets), 3):  # churn: close, edit, open
                del tickets[ticket_id]
            for ticket_id in rng.sample(sorted(tickets), 3):
                tickets[ticket_id]["title"] = f"edited at {time.monotonic():.1f}"
            for _ in range(3):
                tickets[f"T-{next_id}"] = make_tickets(1, start=next_id)[0]
                next_id += 1
            workspace.write_tickets(list(tickets.values()))
            samples.append((time.monotonic() - began, rss_kb(daemon.pid), open_fds(daemon.pid)))
            time.sleep(0.5)
        workspace.sandbox.store.set_faults(Faults())
        time.sleep(4)  # faults off: a few clean cycles
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz").status_code
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    finally:
        daemon.kill()

    warm = [s for s in samples if s[0] > SOAK_SECONDS / 4]
    first, last = warm[0], warm[-1]
    print(
        f"soak: {len(samples)} samples, RSS {first[1]} -> {last[1]} kB, fds {first[2]} -> {last[2]}"
    )
    assert last[1] < first[1] * 1.25 + 10_000, f"RSS grew from {first[1]} to {last[1]} kB"
    assert last[2] <= first[2] + 5, f"open fds grew from {first[2]} to {last[2]}"
    assert ready == 200
    assert 'outcome="ok"' in metrics

    tasks = workspace.tasks().values()
    per_ticket = Counter(t["fields"]["fc_ticket_id"] for t in tasks)
    assert max(per_ticket.values()) == 1, "a ticket got two tasks"
    open_ids = {t["fields"]["fc_ticket_id"] for t in tasks if t["status"] != "DONE"}
    assert open_ids == set(tickets)
