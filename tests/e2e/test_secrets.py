"""Issue 15, item 1: a distinct secret in every secret-bearing option, searched for in every output.

A hostile Fragment and a hostile back-office quote every request back in their errors (the
`Authorization` header, the decoded basic-auth pair, query strings, custom headers). The
connector runs every command against them (`check`, `reconcile` in text and JSON, a dry run,
`status`), then as a daemon whose `/healthz`, `/readyz` and `/metrics` are read while its cycles
fail, and the run history in the PostgreSQL state store is read back. No secret may appear in
any of it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from connector.state import database_url
from tests.conftest import POSTGRES_STATE_URL
from tests.fakes.echo import EchoServer
from tests.forkserver import FORK_SERVER

SECRETS = {
    "fragment_token": "frag-tok-1f9a7c2e",
    "state_password": "state-pw-8b41d0",
    "bearer": "rest-bearer-3c0e55a1",
    "header": "hdr-secret-72aa9f",
    "basic_password": "basic-pw-c4d1e8",
    "api_key_query": "qkey-0b96f3d2",
    "api_key_header": "hkey-5e17ab40",
    "sql_password": "sql-pw-94c2b7",
}


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _config(tmp_path: Path, echo: EchoServer, state_url: str, port: int) -> Path:
    state = make_url(state_url).set(password=SECRETS["state_password"])
    pg = make_url(POSTGRES_STATE_URL).set(
        drivername="postgresql+asyncpg", password=SECRETS["sql_password"]
    )
    tickets = tmp_path / "tickets.json"
    tickets.write_text(json.dumps([{"id": "T-1", "title": "One"}]))
    mapping = {"id": "id", "title": "title"}
    rest = {"base_url": echo.url, "mapping": mapping, "retry": {"attempts": 1}}
    config: dict[str, Any] = {
        "connector": {"instance": "secrets"},
        "fragment": {
            "base_url": f"{echo.url}/api/v1",
            "token": SECRETS["fragment_token"],
            "retry_deadline": "2s",
        },
        "state": {"url": state.render_as_string(hide_password=False)},
        "schedule": {"full_refresh": "1s", "jitter": None},
        "server": {"host": "127.0.0.1", "port": port},
        "sources": [
            # A readable source, so that its cycles reach (the hostile) Fragment.
            {"name": "file", "adapter": "file", "options": {"path": str(tickets)}},
            {
                "name": "bearer",
                "adapter": "rest",
                "options": {
                    **rest,
                    "auth": {"type": "bearer", "token": SECRETS["bearer"]},
                    "headers": {"X-Tenant-Secret": SECRETS["header"]},
                },
            },
            {
                "name": "basic",
                "adapter": "rest",
                "options": {
                    **rest,
                    "auth": {
                        "type": "basic",
                        "username": "agent",
                        "password": SECRETS["basic_password"],
                    },
                },
            },
            {
                "name": "keyquery",
                "adapter": "rest",
                "options": {
                    **rest,
                    "auth": {
                        "type": "api_key",
                        "in": "query",
                        "name": "api_key",
                        "key": SECRETS["api_key_query"],
                    },
                },
            },
            {
                "name": "keyheader",
                "adapter": "rest",
                "options": {
                    **rest,
                    "auth": {
                        "type": "api_key",
                        "in": "header",
                        "name": "X-Key",
                        "key": SECRETS["api_key_header"],
                    },
                },
            },
            {
                "name": "database",
                "adapter": "sql",
                "options": {
                    "dsn": pg.render_as_string(hide_password=False),
                    "query": "SELECT id, title FROM fc_no_such_table_for_secrets",
                },
            },
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cli(tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    result = FORK_SERVER.run(list(args), cwd=tmp_path, env=env, timeout=120)
    return result.stdout + result.stderr


@pytest.mark.slow(seconds=18)
def test_no_secret_reaches_any_output_or_the_state_store(
    tmp_path: Path, echo: EchoServer, postgres_state_url: str
) -> None:
    port = _free_port()
    config = str(_config(tmp_path, echo, postgres_state_url, port))
    outputs: dict[str, str] = {}
    for name, args in {
        "check": ("-vv", "check", "--config", config),
        "reconcile": ("-vv", "reconcile", "--config", config),
        "reconcile-json": ("-vv", "reconcile", "--output", "json", "--config", config),
        "dry-run": ("reconcile", "--dry-run", "--output", "json", "--config", config),
    }.items():
        outputs[name] = _cli(tmp_path, *args)

    daemon = subprocess.Popen(
        [sys.executable, "-m", "connector", "-vv", "run", "--config", config],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        answers: list[str] = []
        while True:
            try:
                answers = [
                    httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text
                    for path in ("/healthz", "/readyz", "/metrics")
                ]
                if "last error: fragment_" in answers[1]:
                    break
            except httpx.TransportError:
                pass
            assert daemon.poll() is None, daemon.communicate()[0]
            assert time.monotonic() < deadline, f"no failed cycle shown: {answers}"
            time.sleep(0.2)
        outputs["http"] = "\n".join(answers)
        daemon.send_signal(signal.SIGTERM)
        outputs["daemon"] = daemon.communicate(timeout=30)[0]
    finally:
        daemon.kill()
    outputs["status"] = _cli(tmp_path, "status", "--config", config)
    outputs["status-json"] = _cli(tmp_path, "status", "--output", "json", "--config", config)

    engine = sa.create_engine(database_url(postgres_state_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            errors = [row.error for row in conn.execute(sa.text("SELECT error FROM fc_runs"))]
    finally:
        engine.dispose()
    outputs["fc_runs"] = json.dumps(errors)

    # The hostile servers did quote the requests (or this test would prove nothing).
    assert echo.hits(), "the echo server was never called"
    assert any(e and "credential=[REDACTED]" in e for e in errors), errors
    assert "[REDACTED]" in outputs["reconcile"] and "[REDACTED]" in outputs["check"]
    assert "last error: fragment_" in outputs["http"], outputs["http"]
    leaks = {
        (where, secret)
        for where, text in outputs.items()
        for secret, value in SECRETS.items()
        if value in text
    }
    assert not leaks, leaks


def test_a_malformed_state_url_is_shown_without_its_password(tmp_path: Path) -> None:
    """Item 3: exit 4, the host, port and database named, the password masked."""
    tickets = tmp_path / "tickets.json"
    tickets.write_text("[]")
    password = "state-pw-malformed-51c9"
    for url in (
        f"postgresql://fc:{password}@db.internal:notaport/backoffice",
        f"postgres ql://fc:{password}@db.internal:5432/backoffice",
    ):
        config = {
            "fragment": {"base_url": "sandbox"},
            "state": {"url": url},
            "sources": [{"name": "f", "adapter": "file", "options": {"path": str(tickets)}}],
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
        for command in ("reconcile", "status"):
            result = FORK_SERVER.run(
                [command, "--config", str(path)], cwd=tmp_path, env=env, timeout=120
            )
            assert result.returncode == 4, result.stderr
            assert "state.url is not a database URL" in result.stderr
            assert "fc:***@db.internal:" in result.stderr and "/backoffice" in result.stderr
            assert password not in result.stdout + result.stderr


async def test_a_dsn_error_keeps_dialect_host_and_database_visible() -> None:
    """Item 3: a password that is a common substring (`sql`) masks only itself."""
    from adapters.base import AdapterAuthError
    from adapters.sql import SqlAdapter
    from tests.integration.test_sql_adapter import server_dsn

    url = make_url(server_dsn("mariadb")).set(password="sql")
    options = {"dsn": url.render_as_string(hide_password=False), "query": "SELECT 1 AS id"}
    adapter = SqlAdapter(SqlAdapter.Config.model_validate(options))
    try:
        with pytest.raises(AdapterAuthError) as raised:
            await adapter.check()
    finally:
        await adapter.aclose()
    message = str(raised.value)
    shown = url.set(query={}).render_as_string(hide_password=True)
    assert shown in message, message  # e.g. mysql+aiomysql://root:***@127.0.0.1:3306/test
    assert ":sql@" not in message
