"""Long work is visible where operators look: log lines off a terminal, /readyz, `status`."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from connector.sandbox import Faults
from tests.conftest import TOKEN, Workspace, make_tickets
from tests.e2e.test_run import free_port, wait_until

PROMISE_S = 15.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    env["FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"] = TOKEN
    return env


@pytest.mark.slow(seconds=34)
def test_paced_first_import_logs_progress_at_least_every_15s(workspace: Workspace) -> None:
    """A first import paced at Fragment's real 60 requests/minute, off a terminal, at the
    default verbosity and the default interval: a `cycle.progress` line (phase, done/total,
    rate, ETA) arrives at least every 15 s from start to exit (~35 s: 1 listing, 36 batches)."""
    workspace.write_tickets(make_tickets(3600))
    workspace.write_config(
        fragment={
            "base_url": workspace.sandbox.base_url,
            "requests_per_minute": 60,
            "burst": 5,
            "retry_deadline": "20s",
        }
    )
    report = workspace.root / "report.txt"
    arrivals: list[tuple[float, dict[str, Any]]] = []
    began = time.monotonic()
    with report.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "connector",
                "reconcile",
                "--config",
                str(workspace.config_path),
            ],
            cwd=workspace.root,
            env=_env(),
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        for line in process.stderr:
            if '"cycle.progress"' in line:
                arrivals.append((time.monotonic(), json.loads(line)))
        process.wait(timeout=180)
        process.stderr.close()
    ended = time.monotonic()
    stdout = report.read_text()
    assert process.returncode == 0, stdout
    assert len(workspace.tasks()) == 3600
    assert ended - began > 2 * PROMISE_S  # long enough for the promise to mean something
    moments = [began, *(at for at, _ in arrivals), ended]
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
    assert max(gaps) <= PROMISE_S, gaps
    phases = [line["phase"] for _, line in arrivals]
    # A first import lists the source's tasks in every status, so it looks nothing up.
    assert {"read", "list", "apply"} <= set(phases), phases
    applying = [line for _, line in arrivals if line["phase"] == "apply" and line["done"]]
    assert applying, phases
    assert applying[-1]["total"] == 3600
    assert applying[-1]["rate_per_s"] > 0 and applying[-1]["eta_s"] is not None


@pytest.mark.slow(seconds=8)
def test_daemon_shows_its_first_cycle_in_readyz_and_status(workspace: Workspace) -> None:
    """While a first cycle runs, /readyz (unready) and `status` from another process show its
    phase and figures; SIGTERM mid-apply then logs what was really done."""
    workspace.write_tickets(make_tickets(2000))
    workspace.sandbox.store.set_faults(Faults(latency_s=0.8))
    port = free_port()
    workspace.write_config(
        connector={"instance": "tests", "progress_interval": "1s"},
        schedule={"full_refresh": "1h", "jitter": None, "grace_period": "20s"},
        server={"host": "127.0.0.1", "port": port},
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "--config", str(workspace.config_path)],
        cwd=workspace.root,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def running(phase: str) -> dict[str, Any] | None:
            try:
                body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
            except httpx.TransportError:
                return None
            found = body.get("running", {}).get("backoffice")
            if found is None or found["phase"] != phase or not found["done"]:
                return None
            return body

        # The creates of the 2,000 tickets: 20 batches of 0.8 s.
        wait_until(lambda: running("apply") is not None, timeout=60)
        body = running("apply")
        assert body is not None and body["status"] == "unready"
        assert body["running"]["backoffice"]["total"] == 2000
        assert "full cycle running: applying" in body["reasons"]["backoffice"]
        status = workspace.cli("status", "--config", str(workspace.config_path))
        assert status.returncode == 0, status.stderr
        assert "running backoffice" in status.stdout, status.stdout
        assert "full" in status.stdout and "/2,000" in status.stdout
        shown = json.loads(
            workspace.cli(
                "status", "--config", str(workspace.config_path), "--output", "json"
            ).stdout
        )
        assert shown["running"][0]["source"] == "backoffice"
        assert shown["running"][0]["total"] == 2000
        assert shown["running"][0]["stale"] is False
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0, output
    created = len(workspace.tasks())
    assert 0 < created < 2000
    final = [json.loads(line) for line in output.splitlines() if '"cycle.source"' in line]
    assert len(final) == 1, output
    # What it really did: the creates that happened, the rest not sent, not "ok".
    assert final[0]["create"] == created
    assert final[0]["failed"] == 2000 - created
    assert final[0]["ok"] is False and final[0]["outcome"] == "partial"
    # The finished cycle's figures are gone from the store.
    status = workspace.cli("status", "--config", str(workspace.config_path))
    assert "running backoffice" not in status.stdout
