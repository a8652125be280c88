"""The command line's contract: config errors exit 4 with a message, check, demo, help."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Workspace, make_tickets
from tests.fakes.zendesk import EMAIL, TOKEN, ZendeskFake


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("fragment: {tokn: x}\nsources: []\n", "fragment.tokn: unknown key"),
        ("fragment: {batch_size: many}\n", "fragment.batch_size: Input should be a valid integer"),
        (
            "sources: [{name: bo, adapter: file, options: {path: x.json, formt: csv}}]\n",
            "sources[bo].options.formt: unknown key",
        ),
        ("sources: [{name: bo, adapter: zendeskk}]\n", "unknown adapter 'zendeskk'"),
        ("sources: []\n", "no sources configured"),
        (
            "state: {url: 'not a url'}\nsources: [{name: bo, adapter: file, options: {path: x}}]\n",
            "state.url",
        ),
    ],
)
def test_invalid_config_exits_4_naming_the_problem(
    workspace: Workspace, config: str, message: str
) -> None:
    """Unknown keys, wrong types, bad options or adapters: exit 4, a message, no traceback."""
    workspace.config_path.write_text(config)
    result = workspace.reconcile()
    assert result.returncode == 4, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_config_file_exits_4(workspace: Workspace) -> None:
    """--config naming a missing file exits 4; so does $FRAGMENT_CONNECTOR_CONFIG."""
    result = workspace.cli("reconcile", "--config", "absent.yaml")
    assert result.returncode == 4
    assert "config file not found: absent.yaml" in result.stderr
    result = workspace.cli("reconcile", env={"FRAGMENT_CONNECTOR_CONFIG": "gone.yaml"})
    assert result.returncode == 4
    assert "config file not found: gone.yaml" in result.stderr


def test_config_before_or_after_the_subcommand(workspace: Workspace) -> None:
    """--config works before the subcommand too, and ./config.yaml is the default."""
    workspace.write_tickets(make_tickets(1))
    assert (
        workspace.cli("--config", str(workspace.config_path), "reconcile", "--dry-run").returncode
        == 2
    )
    assert workspace.cli("reconcile", "--dry-run").returncode == 2  # cwd holds config.yaml


def test_usage_errors_exit_4(workspace: Workspace) -> None:
    """An unknown option or subcommand is a usage error, exit 4."""
    assert workspace.cli("reconcile", "--dryrun").returncode == 4
    assert workspace.cli("frobnicate").returncode == 4
    assert workspace.cli("reconcile", "--output", "xml").returncode == 4


def test_missing_token_is_a_config_error(workspace: Workspace) -> None:
    """Without a token for a real Fragment URL the command says how to set one, exit 4."""
    workspace.write_tickets(make_tickets(1))
    result = workspace.cli(
        "reconcile",
        "--config",
        str(workspace.config_path),
        env={"FRAGMENT_CONNECTOR__FRAGMENT__TOKEN": ""},
    )
    assert result.returncode == 4
    assert "FRAGMENT_CONNECTOR__FRAGMENT__TOKEN" in result.stderr


def test_check_reports_each_part(workspace: Workspace) -> None:
    """check validates Fragment's token and each source, exit 0 when all are fine, else 1."""
    workspace.write_tickets(make_tickets(1))
    result = workspace.cli("check", "--config", str(workspace.config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok      fragment: token accepted" in result.stdout
    assert "ok      source backoffice" in result.stdout
    workspace.tickets_path.unlink()
    result = workspace.cli("check", "--config", str(workspace.config_path))
    assert result.returncode == 1
    assert "FAILED  source backoffice: ticket file not found" in result.stdout


def test_check_shows_the_deprecated_retry_keys_and_refuses_both_dialects(
    workspace: Workspace,
) -> None:
    """`retry_attempts` / `retry_deadline` still work, and `check` names each with the key to
    write instead (also logged, once); given next to `retry:` they are a config error (exit 4)."""
    with ZendeskFake(tickets=3) as fake:
        options = {"base_url": fake.url, "email": EMAIL, "api_token": TOKEN}
        old = {**options, "retry_attempts": 2, "retry_deadline": "5s"}
        workspace.write_config(sources=[{"name": "support", "adapter": "zendesk", "options": old}])
        result = workspace.cli("check", "--config", str(workspace.config_path))
        assert result.returncode == 0, result.stdout + result.stderr
        prefix = "sources[support].options."
        renamed = (("retry_attempts", "retry.attempts"), ("retry_deadline", "retry.deadline"))
        for key, new in renamed:
            line = f"{prefix}{key} is deprecated: write {prefix}{new}"
            assert f"note    {line}\n" in result.stdout
            assert result.stderr.count(line) == 1
        assert "ok      source support" in result.stdout

        both = {**old, "retry": {"attempts": 3}}
        workspace.write_config(sources=[{"name": "support", "adapter": "zendesk", "options": both}])
        result = workspace.cli("check", "--config", str(workspace.config_path))
        assert result.returncode == 4
        assert (
            f"{prefix}retry_attempts: given together with `retry`: write only `retry.attempts`"
            in result.stderr
        )


def test_demo_runs_on_embedded_defaults(tmp_path: Path, workspace: Workspace) -> None:
    """`demo` needs no config and no account, and shows every kind of action."""
    result = workspace.cli(
        "demo",
        "--workdir",
        str(tmp_path / "demo"),
        env={"FRAGMENT_CONNECTOR__FRAGMENT__TOKEN": "ignored"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "24 tickets, 0 open tasks → 24 to create" in out
    assert "Dry run: would 2 create, 2 update, 0 reopen, 3 close. Nothing was written" in out
    assert "Applied: 2 create, 2 update, 0 reopen, 3 close" in out
    assert "Applied: 0 create, 0 update, 0 reopen, 0 close" in out
    assert "title: …stomer #4200 → …stomer #4200 (documents received)" in out
    # Computed from the sandbox's tasks: the operator's decisions stood, the hand-made task too.
    assert (
        "The hand-made task is TODO with its title 'Quarterly audit (created by hand, not by the "
        "connector)'. T-1001 (started by the operator) is STARTED; T-1002 (closed by the "
        "operator) is DONE." in " ".join(out.split())
    )


def test_version_and_help(workspace: Workspace) -> None:
    """--version and --help exit 0."""
    assert workspace.cli("--version").returncode == 0
    help_text = workspace.cli("--help").stdout
    for command in ("reconcile", "check", "demo", "sandbox"):
        assert command in help_text


def test_embedded_sandbox_keeps_its_tasks_between_runs(workspace: Workspace) -> None:
    """fragment.base_url: sandbox needs no token and remembers its tasks between runs."""
    workspace.write_tickets(make_tickets(5))
    workspace.write_config(fragment={"base_url": "sandbox"})
    env = {"FRAGMENT_CONNECTOR__FRAGMENT__TOKEN": ""}
    first = workspace.cli("reconcile", "--output", "json", env=env)
    assert first.returncode == 0, first.stderr
    assert (workspace.root / "fragment-sandbox.json").is_file()
    second = workspace.cli("reconcile", "--dry-run", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "5 unchanged" in second.stdout


@pytest.mark.parametrize("profile", ["strict", "lenient"])
def test_sandbox_command_serves_the_api(workspace: Workspace, profile: str) -> None:
    """`fragment-connector sandbox --profile P` serves the fake API until stopped; strict refuses
    an undocumented listing parameter (422), lenient ignores it."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "connector", "sandbox", "--port", str(port)),
            *("--token", "tok", "--profile", profile),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/accounts/me",
                    headers={"Authorization": "Bearer tok", "User-Agent": "test"},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        listing = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/tasks?colour=red",
            headers={"Authorization": "Bearer tok", "User-Agent": "test"},
        )
        assert listing.status_code == (200 if profile == "lenient" else 422)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
