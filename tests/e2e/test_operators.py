"""How the product talks to the people who run it, through the real CLI: exit codes and
summaries that count what happened, files and paths as users write them, a CLI that matches
its docs."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.sandbox import Faults
from connector.sandbox.store import FailRule
from tests.conftest import TOKEN, Workspace, make_tickets
from tests.forkserver import FORK_SERVER


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    full.update(env or {})
    return FORK_SERVER.run(list(args), cwd=cwd, env=full, timeout=120)


# --- honest exit codes and summaries -------------------------------------------------------


def test_skipped_records_exit_1_and_the_summary_says_how_many(workspace: Workspace) -> None:
    """An over-long title and a row without an id got no task: exit 1, named in the summary."""
    tickets: list[dict[str, Any]] = make_tickets(3)
    tickets.append({"id": "T-long", "title": "x" * 1_000_001})
    tickets.append({"title": "a row without an id"})
    workspace.write_tickets(tickets)
    result = workspace.reconcile()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Applied: 3 create" in result.stdout
    summary = " ".join(result.stdout.split())
    assert "Skipped 2 records that got no task (backoffice 2)" in summary
    assert "invalid_records in --output json" in summary.replace("`", "")
    assert len(workspace.tasks()) == 3
    code, report = workspace.reconcile_json()
    assert code == report["exit_code"] == 1
    assert len(report["sources"][0]["invalid_records"]) == 2


def test_json_output_on_a_refused_token_is_still_the_document(workspace: Workspace) -> None:
    """--output json with a refused token prints the versioned document, with the error."""
    workspace.write_tickets(make_tickets(3))
    result = workspace.cli(
        "reconcile",
        "--config",
        str(workspace.config_path),
        "--output",
        "json",
        env={"FRAGMENT_CONNECTOR__FRAGMENT__TOKEN": "refused-token-8c1e4a"},
    )
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["version"] == 1 and document["exit_code"] == 1
    assert document["error"]["type"] == "fragment_auth_error"
    assert document["error"]["message"]
    assert "refused-token-8c1e4a" not in result.stdout + result.stderr
    workspace.config_path.write_text("fragment: {batch_size: many}\n")
    result = workspace.reconcile("--output", "json")
    assert result.returncode == 4
    document = json.loads(result.stdout)
    assert document["exit_code"] == 4 and document["error"]["type"] == "config_error"
    assert "fragment.batch_size" in document["error"]["message"]


def test_an_error_is_said_once_on_a_terminal(workspace: Workspace) -> None:
    """On a terminal, a refused token is one `error:` line, not also a log line."""
    workspace.write_tickets(make_tickets(3))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    env["FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"] = "refused-token-8c1e4a"
    master, slave = pty.openpty()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "connector",
                "reconcile",
                "--config",
                str(workspace.config_path),
            ],
            cwd=workspace.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=120,
            check=False,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert result.returncode == 1
    assert terminal.count("refused") == 1, terminal
    assert "error:" in terminal


def test_the_summary_counts_what_was_applied(workspace: Workspace) -> None:
    """One create refused by Fragment out of five: "4 create ... 1 failed", in text and JSON."""
    workspace.write_tickets(make_tickets(5))
    # The first PUT and the bisected halves leading to the first item are refused (422).
    workspace.sandbox.store.set_faults(
        Faults(fail_next=(FailRule("PUT", "/tasks/batch", 422, count=3),))
    )
    result = workspace.reconcile()
    assert result.returncode == 1
    assert "Applied: 4 create, 0 update, 0 reopen, 0 close, 1 failed" in result.stdout
    assert len(workspace.tasks()) == 4
    workspace.sandbox.store.set_faults(Faults())
    code, report = workspace.reconcile_json()
    assert code == 0 and report["counts"]["create"] == 1 and report["counts"]["failed"] == 0


# --- files, paths, encodings ---------------------------------------------------------------


def test_a_csv_with_a_byte_order_mark_syncs(workspace: Workspace) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: read by default, every row becomes a task."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "title"])
    writer.writerows([["T-1", "Première demande"], ["T-2", "Second"]])
    path = workspace.root / "tickets.csv"
    path.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode())
    workspace.write_config(
        sources=[{"name": "backoffice", "adapter": "file", "options": {"path": str(path)}}]
    )
    check = workspace.cli("check", "--config", str(workspace.config_path))
    assert check.returncode == 0, check.stdout
    result = workspace.reconcile()
    assert result.returncode == 0, result.stdout
    titles = sorted(t["fields"]["title"] for t in workspace.tasks().values())
    assert titles == ["Première demande", "Second"]


def test_relative_paths_resolve_against_the_config_file(workspace: Workspace) -> None:
    """`path: tickets.json` and `sqlite:///./state.db` live next to the config file, whatever
    the current directory; nothing is left in the current directory."""
    etc = workspace.root / "etc"
    elsewhere = workspace.root / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    (etc / "tickets.json").write_text(json.dumps(make_tickets(2)))
    config = yaml.safe_load(workspace.config_path.read_text())
    config["state"] = {"url": "sqlite:///./state.db"}
    config["sources"][0]["options"] = {"path": "tickets.json"}
    (etc / "config.yaml").write_text(yaml.safe_dump(config))
    env = {"FRAGMENT_CONNECTOR__FRAGMENT__TOKEN": TOKEN}
    result = _run("reconcile", "--config", str(etc / "config.yaml"), cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(workspace.tasks()) == 2
    assert (etc / "state.db").is_file()
    assert list(elsewhere.iterdir()) == []


def test_check_reads_every_source_in_full(workspace: Workspace) -> None:
    """`check` reads the file: counts when it is good, the skipped records or the parse error
    (exit 1) when not, and it writes nothing."""
    check = ("check", "--config", str(workspace.config_path))
    workspace.write_tickets(make_tickets(3))
    result = workspace.cli(*check)
    assert result.returncode == 0, result.stdout
    assert "ok      source backoffice: 3 ticket(s) read, 3 open" in result.stdout
    workspace.write_tickets([*make_tickets(2), {"title": "no id"}])
    result = workspace.cli(*check)
    assert result.returncode == 1
    assert "FAILED  source backoffice: 2 ticket(s) read, 2 open, 1 record(s) would be skipped" in (
        result.stdout
    )
    assert "missing or unusable `id`" in result.stdout
    workspace.tickets_path.write_text('[{"id": "T-1", "title": "cut short"')
    result = workspace.cli(*check)
    assert result.returncode == 1
    assert "FAILED  source backoffice" in result.stdout
    assert workspace.tasks() == {}


def test_status_needs_no_config_no_secret_and_creates_nothing(tmp_path: Path) -> None:
    """`status` in an empty directory says there is nothing yet and creates no database; with
    a config whose sources need secrets, it does not need them."""
    result = _run("status", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no state store" in result.stdout
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {
                        "name": "support",
                        "adapter": "zendesk",
                        "options": {
                            "subdomain": "acme",
                            "email": "a@b.example",
                            "api_token": "${ZENDESK_API_TOKEN_UNSET_HERE}",
                        },
                    }
                ]
            }
        )
    )
    result = _run("status", "--output", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


# --- the CLI and its docs agree ------------------------------------------------------------


@pytest.mark.slow(seconds=8)
def test_every_command_accepts_config(workspace: Workspace) -> None:
    """--config is documented for every command, so every command takes it."""
    config = str(workspace.config_path)
    assert workspace.cli("adapters", "--config", config).returncode == 0
    assert workspace.cli("--config", config, "adapters").returncode == 0
    for command in ("demo", "sandbox", "healthcheck", "status", "check", "explain", "run"):
        result = workspace.cli(command, "--config", config, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "--config" in result.stdout


def test_adapter_schema_shows_durations_the_way_the_config_takes_them(
    workspace: Workspace,
) -> None:
    """`adapters --schema` shows `1m`, not `PT1M`, and what it shows is accepted back."""
    result = workspace.cli("adapters", "--output", "json")
    document = json.loads(result.stdout)
    file_schema = next(a for a in document["adapters"] if a["name"] == "file")["options_schema"]
    overlap = file_schema["properties"]["incremental_overlap"]["default"]
    assert overlap == "1m"
    assert "PT" not in workspace.cli("adapters", "--schema").stdout
    workspace.write_tickets(make_tickets(1))
    workspace.write_config(
        sources=[
            {
                "name": "backoffice",
                "adapter": "file",
                "options": {"path": str(workspace.tickets_path), "incremental_overlap": overlap},
            }
        ]
    )
    assert workspace.reconcile("--dry-run").returncode == 2


def test_unknown_environment_variables_are_named(workspace: Workspace) -> None:
    """A typo in a FRAGMENT_CONNECTOR__ variable is an error naming it (exit 4), not ignored,
    and not blamed on the config file."""
    result = workspace.cli(
        "reconcile",
        "--config",
        str(workspace.config_path),
        env={
            "FRAGMENT_CONNECTOR__GAURDS__CLOSE_MIN": "5",
            "FRAGMENT_CONNECTOR__FRAGMENT__TOKNE": "x",
        },
    )
    assert result.returncode == 4
    assert "FRAGMENT_CONNECTOR__GAURDS__CLOSE_MIN: (top level) has no key 'gaurds'" in result.stderr
    assert "FRAGMENT_CONNECTOR__FRAGMENT__TOKNE: fragment has no key 'tokne'" in result.stderr
    assert "config.yaml" not in result.stderr


def test_explain_says_what_is_true_without_a_task(workspace: Workspace) -> None:
    """A ticket closed in the source with no task, and an unknown ticket, are said as such;
    --output json is versioned with ISO 8601 timestamps."""
    tickets: list[dict[str, Any]] = make_tickets(1)
    tickets[0]["updated_at"] = "2026-03-04T05:06:07Z"
    tickets.append({"id": "T-closed", "title": "Solved before it got a task", "status": "closed"})
    workspace.write_tickets(tickets)
    assert workspace.reconcile().returncode == 0

    def explain(*args: str) -> str:
        result = workspace.cli(
            "explain", "backoffice", *args, "--config", str(workspace.config_path)
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "closed in the back-office and has no task" in explain("T-closed")
    assert "does not list this ticket and Fragment has no task" in explain("T-404")
    for ticket in ("T-closed", "T-404"):
        assert "already matches" not in explain(ticket)
    document = json.loads(explain("T-0", "--output", "json"))
    assert document["version"] == 1
    assert document["ticket"]["updated_at"] == "2026-03-04T05:06:07+00:00"
    assert "T" in document["task"]["updated_at"]  # ISO 8601, not str(datetime)


def test_run_on_a_busy_port_names_the_port_and_its_key(workspace: Workspace) -> None:
    """The port is taken: exit 4, saying which port and which key sets it."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        workspace.write_config(server={"host": "127.0.0.1", "port": port})
        result = workspace.cli("run", "--config", str(workspace.config_path))
    assert result.returncode == 4, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "server.port" in result.stderr
    assert "internal error" not in result.stderr
