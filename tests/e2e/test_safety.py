"""Safety features: close_after_misses, orphaned sources, `explain`, and secrets in no output."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.conftest import TOKEN, Workspace, make_tickets


def test_close_after_misses_waits_for_consecutive_absences(workspace: Workspace) -> None:
    """With close_after_misses: 2, a ticket must be missing twice in a row before its close."""
    workspace.write_config(guards={"close_after_misses": 2})
    workspace.write_tickets(make_tickets(5))
    assert workspace.reconcile().returncode == 0
    workspace.write_tickets(make_tickets(4))  # T-4 vanishes...

    def explain() -> str:
        result = workspace.cli(
            "explain", "backoffice", "T-4", "--config", str(workspace.config_path)
        )
        return result.stdout

    assert "nothing yet: missing from 1 snapshot(s), closes after 2" in explain()
    code, first = workspace.reconcile_json()
    assert code == 0
    assert first["counts"]["close"] == 0
    assert "next     close: absent from snapshot 2 times in a row" in explain()

    workspace.write_tickets(make_tickets(5))  # ... comes back: the count starts again
    assert workspace.reconcile_json()[1]["counts"]["close"] == 0
    workspace.write_tickets(make_tickets(4))
    assert workspace.reconcile_json()[1]["counts"]["close"] == 0
    code, second = workspace.reconcile_json()
    assert code == 0
    (action,) = second["sources"][0]["actions"]
    assert (action["kind"], action["ticket_id"]) == ("close", "T-4")
    assert action["reason"] == "absent from snapshot 2 times in a row"


def test_removed_source_is_orphaned_not_emptied(workspace: Workspace) -> None:
    """Tasks of a source removed from the config stay open, and the run says so."""
    other = workspace.root / "other.json"
    other.write_text(json.dumps(make_tickets(3, prefix="O-")))
    workspace.write_tickets(make_tickets(2))
    both = [
        {"name": "backoffice", "adapter": "file", "options": {"path": str(workspace.tickets_path)}},
        {"name": "other", "adapter": "file", "options": {"path": str(other)}},
    ]
    workspace.write_config(sources=both)
    assert workspace.reconcile().returncode == 0
    workspace.write_config(sources=both[:1])
    code, report = workspace.reconcile_json()
    assert code == 0
    assert report["orphaned_sources"] == {"other": 3}
    assert report["counts"]["close"] == 0
    text = workspace.reconcile().stdout
    assert "note: source 'other' is no longer in the config; its 3 open tasks are left" in text
    still_open = [t for t in workspace.tasks().values() if t["fields"]["fc_source"] == "other"]
    assert [t["status"] for t in still_open] == ["TODO"] * 3


def test_explain_tells_each_case(workspace: Workspace) -> None:
    """`explain` shows the ticket, its uid and task, and what the next cycle would do."""
    workspace.write_tickets(make_tickets(3))
    assert workspace.reconcile().returncode == 0
    tickets = make_tickets(3)
    tickets[0]["title"] = "Renamed in the back-office"
    workspace.write_tickets(tickets)
    uid_t2 = next(u for u, t in workspace.tasks().items() if t["fields"]["fc_ticket_id"] == "T-2")
    workspace.sandbox.store.operator_edit(uid_t2, status="DONE")

    def explain(ticket_id: str) -> str:
        result = workspace.cli(
            "explain", "backoffice", ticket_id, "--config", str(workspace.config_path)
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    out = explain("T-0")
    assert "next     update: title changed" in out
    assert "title: 'Ticket number 0' → 'Renamed in the back-office'" in out
    assert "nothing: the task already matches the ticket" in explain("T-1")
    assert "an operator closed the task; their decision stands" in explain("T-2")
    missing = explain("T-99")
    assert "not in the back-office's snapshot" in missing and "task     none in Fragment" in missing


def test_secrets_never_appear_in_any_output(workspace: Workspace) -> None:
    """The Fragment token is in no output: plans, JSON, logs at debug, errors, status, metrics."""
    workspace.write_tickets(make_tickets(3))
    config = str(workspace.config_path)
    outputs = []
    for args in (
        ("-vv", "reconcile", "--config", config),
        ("-vv", "reconcile", "--dry-run", "--output", "json", "--config", config),
        ("-vv", "check", "--config", config),
        ("-vv", "explain", "backoffice", "T-1", "--config", config),
        ("status", "--config", config),
    ):
        result = workspace.cli(*args)
        outputs.append(result.stdout + result.stderr)
    workspace.tickets_path.unlink()  # an error path too
    failed = workspace.cli("-vv", "reconcile", "--config", config)
    outputs.append(failed.stdout + failed.stderr)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace.write_tickets(make_tickets(3))
    workspace.write_config(
        schedule={"full_refresh": "1h", "jitter": None}, server={"host": "127.0.0.1", "port": port}
    )
    env = {"FRAGMENT_CONNECTOR__FRAGMENT__TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    # Into a file, not a pipe: at -vv the daemon logs every SQL statement, and a pipe nobody
    # reads until the end fills up and blocks it before it is ready.
    log_path = workspace.root / "daemon.log"
    with log_path.open("w") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "connector", "-vv", "run", "--config", config],
            cwd=workspace.root,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the daemon did not become ready"
            time.sleep(0.1)
        outputs.append(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
    finally:
        daemon.kill()
    outputs.append(log_path.read_text())
    everything = "\n".join(outputs)
    assert "fragment_connector_cycles_total" in everything and "DEBUG" in everything.upper()
    assert TOKEN not in everything
    assert TOKEN[:8] not in everything
