"""Shared fixtures: a sandbox Fragment on a real socket, a back-office file, configs, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore  # noqa: F401 - imported before any pytester run, see below
import httpx  # noqa: F401
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from connector.models import CycleKind
from connector.sandbox import SandboxConfig, SandboxServer
from connector.state import database_url
from tests.forkserver import FORK_SERVER

# The kit's tests run pytest in-process (pytester), which drops the modules first imported
# inside that run when it ends; httpx/httpcore re-imported afterwards no longer match the
# exception classes httpx had already mapped. Importing them here keeps them loaded for good.
pytest_plugins = ["pytester"]

TOKEN = "sbx-secret-7f3a9c"
IN_CI = os.environ.get("CI") == "true"
POSTGRES_STATE_URL = os.environ.get(
    "FC_TEST_POSTGRES_STATE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _slow_seconds(item: pytest.Item) -> float | None:
    """About how long a `slow` scenario takes (`slow(seconds=...)`, 5 when not said), or None."""
    marker = item.get_closest_marker("slow")
    return None if marker is None else float(marker.kwargs.get("seconds", 5))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `slow` scenarios first, the longest first, each followed by a short test.

    pytest-xdist (`--dist loadgroup`, addopts) hands the tests out in this order, an
    `xdist_group` at once to one worker, the others one by one as a worker's queue runs low: so
    the long scenarios start at once, side by side, each with short tests rather than another
    long one queued behind it, and the rest fill the gaps; none starts last and runs alone. (A
    deterministic order: the same in every worker, as xdist requires.)"""
    slow = sorted(
        (item for item in items if _slow_seconds(item) is not None),
        key=lambda item: -(_slow_seconds(item) or 0),
    )
    fast = [item for item in items if _slow_seconds(item) is None]
    paired = [item for pair in zip(slow, fast, strict=False) for item in pair]
    items[:] = paired + slow[len(fast) :] + fast[len(slow) :]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Say once that there is no current event loop.

    looptime's plugin asks the policy for the current loop around every test, sync ones too;
    until a loop was ever set, Python 3.11 answers by creating one that nobody closes, and its
    ResourceWarning (an error here) fails whichever later test the collector runs in. Told
    "none", the policy answers RuntimeError instead, which looptime takes as "not my business".
    """
    asyncio.set_event_loop(None)


def require_server(kind: str, url: str) -> None:
    """Skip when the database server of `url` is absent on this machine (fail in CI)."""
    parsed = make_url(url)
    try:
        socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 0), timeout=1).close()
    except OSError:
        reason = f"no {kind} server on {parsed.host}:{parsed.port}"
        if IN_CI:
            pytest.fail(f"{reason}, and CI=true: the tests need it")
        pytest.skip(f"{reason} (start one, or set FC_TEST_{kind.upper()}_URL)")


@pytest.fixture
def postgres_state_url() -> Iterator[str]:
    """A PostgreSQL `state.url` confined to a schema of its own, dropped afterwards."""
    require_server("postgres_state", POSTGRES_STATE_URL)
    schema = f"fc_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(database_url(POSTGRES_STATE_URL), poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_STATE_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


PROFILES = ("strict", "lenient")
BOTH_PROFILES = pytest.mark.parametrize("sandbox_profile", PROFILES)
"""Runs a test against a strict and a lenient sandbox (connector.sandbox.config.PROFILES): a
connector correct against both is correct against any real server between them."""


@pytest.fixture
def sandbox_profile() -> str:
    """The sandbox's profile: strict unless a test parametrizes it (`BOTH_PROFILES`)."""
    return "strict"


@pytest.fixture
def sandbox(sandbox_profile: str) -> Iterator[SandboxServer]:
    """A test-mode sandbox Fragment with its rate limit lifted, on 127.0.0.1."""
    config = SandboxConfig(
        token=TOKEN, test_mode=True, requests_per_minute=None, profile=sandbox_profile
    )
    with SandboxServer(config) as server:
        yield server


def make_tickets(count: int, *, start: int = 0, prefix: str = "T-") -> list[dict[str, Any]]:
    """Back-office records with a url and typed custom fields."""
    return [
        {
            "id": f"{prefix}{n}",
            "title": f"Ticket number {n}",
            "url": f"https://backoffice.example/t/{n}",
            "amount": n * 10,
            "country": "FR" if n % 2 else "DE",
        }
        for n in range(start, start + count)
    ]


@dataclass
class Workspace:
    """A back-office file, a config pointing at the sandbox, and ways to run the connector."""

    root: Path
    sandbox: SandboxServer

    @property
    def tickets_path(self) -> Path:
        return self.root / "tickets.json"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state_path(self) -> Path:
        return self.root / "state.db"

    def write_tickets(self, tickets: list[dict[str, Any]]) -> None:
        self.tickets_path.write_text(json.dumps(tickets))

    def write_config(self, **sections: Any) -> Path:
        config: dict[str, Any] = {
            "connector": {"instance": "tests"},
            "fragment": {
                "base_url": self.sandbox.base_url,
                "requests_per_minute": 100000,
                "burst": 100,
                "retry_deadline": "20s",
            },
            "state": {"url": f"sqlite:///{self.state_path}"},
            "sources": [
                {
                    "name": "backoffice",
                    "adapter": "file",
                    "options": {"path": str(self.tickets_path)},
                    "task": {"fields": {"team": "kyc"}},
                }
            ],
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config_path.write_text(yaml.safe_dump(config))
        return self.config_path

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real command line in a child process (`python -m connector`, forked from
        tests/forkserver.py), token in the environment."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
        full_env["FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"] = TOKEN
        full_env.update(env or {})
        return FORK_SERVER.run(list(args), cwd=self.root, env=full_env, timeout=120)

    def reconcile(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("reconcile", "--config", str(self.config_path), *args)

    def reconcile_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.reconcile("--output", "json", *args)
        assert result.stdout, result.stderr
        return result.returncode, json.loads(result.stdout)

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Every task in the sandbox by uid."""
        return {t["uid"]: t for t in self.sandbox.store.all_tasks()}

    def writes(self) -> list[dict[str, Any]]:
        """The write requests the sandbox received."""
        return [
            r
            for r in self.sandbox.store.requests()
            if r["method"] in ("PUT", "PATCH", "POST") and "query" not in r["path"]
        ]


@pytest.fixture
def workspace(tmp_path: Path, sandbox: SandboxServer) -> Workspace:
    """A workspace with 0 tickets and a config for the `backoffice` file source."""
    ws = Workspace(tmp_path, sandbox)
    ws.write_tickets([])
    ws.write_config()
    return ws


async def source_cycle(ws: Workspace, adapter: Any, kind: CycleKind = CycleKind.FULL) -> Any:
    """One cycle of the workspace's only source, with `adapter` as it is, against the sandbox."""
    from connector.config import load_settings
    from connector.cycle import CycleOptions, Reconciler
    from connector.fragment import FragmentClient
    from connector.state import StateStore

    settings = load_settings(ws.config_path)
    source = settings.sources[0]
    store = await StateStore.open(settings.state.url, instance=settings.connector.instance)
    client = FragmentClient(settings.fragment.base_url, TOKEN, requests_per_minute=1e5)
    try:
        reconciler = Reconciler(
            settings, client=client, store=store, adapters={source.name: adapter}
        )
        return await reconciler.reconcile_source(source, CycleOptions(), kind=kind)
    finally:
        await client.aclose()
        await store.aclose()
