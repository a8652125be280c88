"""`fragment-connector run` as a process: SIGTERM drains the batch in flight and exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from connector.sandbox import Faults
from tests.conftest import TOKEN, Workspace, make_tickets


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(
    ws: Workspace, *, grace: str = "20s", token: str = TOKEN
) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    ws.write_config(
        schedule={"full_refresh": "1h", "jitter": None, "grace_period": grace},
        server={"host": "127.0.0.1", "port": port},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    env["FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "--config", str(ws.config_path)],
        cwd=ws.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, port


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def puts(ws: Workspace) -> int:
    return sum(1 for r in ws.sandbox.store.requests() if r["method"] == "PUT")


def test_sigterm_finishes_the_batch_in_flight_and_exits_0(workspace: Workspace) -> None:
    """SIGTERM mid-apply: the batch being sent completes, no other is sent, exit 0; the next
    cycle has only the unsent tickets to create."""
    workspace.write_tickets(make_tickets(500))
    workspace.sandbox.store.set_faults(Faults(latency_s=0.7))
    process, _ = start(workspace)
    try:
        wait_until(lambda: puts(workspace) >= 1)  # the first PUT is in flight (or done)
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        output, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert time.monotonic() - began < 5
    assert "daemon.stopping" in output and "daemon.stopped" in output
    created = len(workspace.tasks())
    assert created in (100, 200), created  # whole batches only: nothing half-written
    assert puts(workspace) == created // 100

    workspace.sandbox.store.set_faults(Faults())
    code, report = workspace.reconcile_json()
    assert code == 0
    assert report["counts"]["create"] == 500 - created
    assert report["counts"]["update"] == 0 and report["counts"]["close"] == 0
    assert len(workspace.tasks()) == 500


def test_second_signal_exits_at_once(workspace: Workspace) -> None:
    """A second SIGTERM does not wait for the grace period."""
    workspace.write_tickets(make_tickets(300))
    workspace.sandbox.store.set_faults(Faults(latency_s=5))
    process, _ = start(workspace, grace="60s")
    try:
        wait_until(lambda: len(workspace.sandbox.store.requests()) >= 1)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        process.communicate(timeout=10)
    finally:
        process.kill()
    assert time.monotonic() - began < 3
    assert process.returncode == 1


def test_daemon_serves_health_then_stops_cleanly(workspace: Workspace) -> None:
    """/healthz answers while running; SIGINT stops it with exit 0."""
    workspace.write_tickets(make_tickets(3))
    process, port = start(workspace)
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert len(workspace.tasks()) == 3


def test_bad_token_stops_the_daemon_at_start(workspace: Workspace) -> None:
    """A daemon whose token is refused exits 1 at once with the reason, never the token."""
    workspace.write_tickets(make_tickets(3))
    process, _ = start(workspace, token="not-the-token-42")
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 1
    assert "refused the token" in output
    assert "not-the-token-42" not in output
