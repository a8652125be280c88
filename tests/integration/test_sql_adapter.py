"""The `sql` adapter against the real PostgreSQL and MariaDB on this machine, and SQLite.

Each test creates its own table (a unique name per run) and drops it. Without a server the tests
for it are skipped, with the reason, unless CI=true: in CI a missing server fails them. The DSNs
can be overridden with FC_TEST_POSTGRES_URL and FC_TEST_MARIADB_URL (trust auth and an empty
root password are assumed by default, as on the development machines).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from pydantic import ValidationError
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from adapters.base import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterUnavailable,
    InvalidRecord,
    Ticket,
)
from adapters.sql import SqlAdapter
from adapters.testing import AdapterConformance
from tests.conftest import require_server

T = TypeVar("T")

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PG_PASSWORD = "kit-pg-password-4e1b"  # trust auth takes any password; the kit needs a secret
SERVERS = {
    "postgresql": os.environ.get(
        "FC_TEST_POSTGRES_URL", f"postgresql+asyncpg://postgres:{PG_PASSWORD}@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("FC_TEST_MARIADB_URL", "mysql+aiomysql://root:@127.0.0.1:3306/test"),
}
COLUMNS = "id, title, status, priority, amount, due_on, updated_at"
MAPPING: dict[str, Any] = {
    "id": "id",
    "title": "title",
    "url": "https://backoffice.example/t/{id}",
    "updated_at": "updated_at",
    "due_at": "due_on",
    "is_open": "status != 'closed'",
    "fields": {"priority": "priority", "amount": "amount"},
}


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion in a thread of its own, even from inside an event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


def server_dsn(kind: str) -> str:
    """The DSN of a server on this machine; a skip when it is absent (a failure in CI)."""
    require_server(kind, SERVERS[kind])
    return SERVERS[kind]


@dataclass
class Database:
    """One database to test against: its kind, a working DSN and one with wrong credentials."""

    kind: str
    dsn: str
    bad_dsn: str | None

    def sql_timestamp(self, moment: datetime) -> Any:
        """A timestamp as this database's table stores it (SQLite: text in SQLAlchemy's form)."""
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        return f"{naive:%Y-%m-%d %H:%M:%S.%f}" if self.kind == "sqlite" else naive

    def sql_value(self, value: Decimal | date) -> Any:
        """A decimal or a date as this database's driver takes it (sqlite3: text)."""
        return str(value) if self.kind == "sqlite" else value

    def ddl(self, table: str) -> str:
        stamp = {"postgresql": "TIMESTAMP", "mariadb": "DATETIME(6)", "sqlite": "TEXT"}[self.kind]
        return (
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, title VARCHAR(200) NOT NULL, "
            f"status VARCHAR(20) NOT NULL, priority VARCHAR(20), amount DECIMAL(10, 2), "
            f"due_on DATE, updated_at {stamp} NOT NULL)"
        )


def database_for(kind: str, tmp_path: Path) -> Database:
    """The Database of that kind (skipped, or failed in CI, when its server is absent)."""
    if kind == "sqlite":
        return Database(kind, f"sqlite+aiosqlite:///{tmp_path / 'backoffice.db'}", None)
    dsn = server_dsn(kind)
    url = make_url(dsn)
    if kind == "postgresql":  # trust auth: only an unknown role is refused
        bad = url.set(username=f"fc_no_such_role_{uuid.uuid4().hex[:6]}")
    else:
        bad = url.set(password="wrong-password-93a1")
    return Database(kind, dsn, bad.render_as_string(hide_password=False))


async def execute(dsn: str, *statements: tuple[str, Any]) -> list[list[Any]]:
    """Run statements in one committed transaction; the rows of each."""
    engine = create_async_engine(dsn, poolclass=NullPool)
    out: list[list[Any]] = []
    try:
        async with engine.begin() as conn:
            for sql, params in statements:
                result = await conn.execute(text(sql), params)
                out.append(list(result.fetchall()) if result.returns_rows else [])
    finally:
        await engine.dispose()
    return out


class SqlBackoffice:
    """A table of tickets with its own clock, implementing the kit's KitBackoffice."""

    def __init__(self, db: Database, *, rows: int = 120) -> None:
        self.db = db
        self.table = f"fc_tickets_{uuid.uuid4().hex[:12]}"
        self.now = START
        data = [
            {
                "id": n,
                "title": f"Refund request #{n}",
                "status": "closed" if n % 7 == 0 else ("pending" if n % 5 == 0 else "open"),
                "priority": "high" if n % 3 == 0 else None,
                "amount": db.sql_value(Decimal(n) * Decimal("1.5")),
                "due_on": db.sql_value(date(2026, 4, n % 28 + 1)) if n % 2 else None,
                "updated_at": db.sql_timestamp(self.now),
            }
            for n in range(1, rows + 1)
        ]
        insert = (
            f"INSERT INTO {self.table} ({COLUMNS}) VALUES "
            "(:id, :title, :status, :priority, :amount, :due_on, :updated_at)"
        )
        self._run((db.ddl(self.table), None), (insert, data))
        self._live = self.table

    def _run(self, *statements: tuple[str, Any]) -> list[list[Any]]:
        return run_async(lambda: execute(self.db.dsn, *statements))

    def drop(self) -> None:
        """Drop the table (under whatever name it has now)."""
        self._run((f"DROP TABLE IF EXISTS {self._live}", None))

    def options(self, **overrides: Any) -> dict[str, Any]:
        """The `sql` adapter's options for this table."""
        options: dict[str, Any] = {
            "dsn": self.db.dsn,
            "query": f"SELECT {COLUMNS} FROM {self.table} "
            "WHERE status IN ('open', 'pending') ORDER BY id",
            "incremental_query": f"SELECT {COLUMNS} FROM {self.table} "
            "WHERE updated_at >= :since ORDER BY updated_at, id",
            "mapping": MAPPING,
        }
        options.update(overrides)
        return options

    # --- KitBackoffice --------------------------------------------------------------------------

    def open_ids(self) -> set[str]:
        """The ids of the open (open or pending) rows."""
        (rows,) = self._run(
            (f"SELECT id FROM {self._live} WHERE status IN ('open', 'pending')", None)
        )
        return {str(row[0]) for row in rows}

    def listing_requests(self) -> int:
        """A query is one request; the kit only counts pages for paginated sources."""
        return 0

    def rate_limit_next(self, count: int) -> None:
        """A database has no rate limit: nothing to simulate."""

    def fail_page(self, page: int) -> None:
        """Make the query fail: the table moves away under another name."""
        moved = f"{self.table}_gone"
        self._run((f"ALTER TABLE {self._live} RENAME TO {moved}", None))
        self._live = moved

    def change(self, ticket_id: str) -> None:
        """Edit a row's title now."""
        self._run(
            (
                f"UPDATE {self._live} SET title = :title, updated_at = :now WHERE id = :id",
                {
                    "title": f"Refund request #{ticket_id} (edited {self.now:%H:%M:%S})",
                    "now": self.db.sql_timestamp(self.now),
                    "id": int(ticket_id),
                },
            )
        )

    def close(self, ticket_id: str) -> None:
        """Close a row now."""
        self._run(
            (
                f"UPDATE {self._live} SET status = 'closed', updated_at = :now WHERE id = :id",
                {"now": self.db.sql_timestamp(self.now), "id": int(ticket_id)},
            )
        )

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(seconds=seconds)


def make(options: dict[str, Any]) -> SqlAdapter:
    """An adapter from raw options, validated as the core does."""
    return SqlAdapter(SqlAdapter.Config.model_validate(options))


async def listing(options: dict[str, Any]) -> list[Ticket | InvalidRecord]:
    """Everything one listing yields."""
    adapter = make(options)
    try:
        return [item async for item in adapter.list_open()]
    finally:
        await adapter.aclose()


async def checked(options: dict[str, Any]) -> None:
    """Run check() on a fresh adapter."""
    adapter = make(options)
    try:
        await adapter.check()
    finally:
        await adapter.aclose()


KINDS = ["postgresql", "mariadb", "sqlite"]


@pytest.fixture(params=KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """Each database in turn."""
    return database_for(request.param, tmp_path)


@pytest.fixture
def table(db: Database) -> Iterator[SqlBackoffice]:
    """A fresh 120-row ticket table, dropped afterwards."""
    backoffice = SqlBackoffice(db)
    yield backoffice
    backoffice.drop()


# --- the conformance kit, on each database ------------------------------------------------------


class _SqlKit(AdapterConformance):
    adapter_class = SqlAdapter
    paginated = False
    kind: ClassVar[str]

    @pytest.fixture
    def backoffice(self, tmp_path: Path) -> Iterator[SqlBackoffice]:
        backoffice = SqlBackoffice(database_for(self.kind, tmp_path))
        yield backoffice
        backoffice.drop()

    @pytest.fixture
    def options(self, backoffice: SqlBackoffice) -> dict[str, Any]:
        return backoffice.options()

    @pytest.fixture
    def bad_options(self, backoffice: SqlBackoffice) -> dict[str, Any]:
        if backoffice.db.bad_dsn is None:
            return backoffice.options()
        return backoffice.options(dsn=backoffice.db.bad_dsn)


class TestPostgresKit(_SqlKit):
    kind = "postgresql"


class TestMariaDbKit(_SqlKit):
    kind = "mariadb"


class TestSqliteKit(_SqlKit):
    kind = "sqlite"
    remote = False


# --- listing ------------------------------------------------------------------------------------


async def test_rows_become_tickets_with_json_values(table: SqlBackoffice) -> None:
    """Each row maps to a ticket: decimals as numbers, dates and timestamps as UTC."""
    items = await listing(table.options())
    tickets = {t.id: t for t in items if isinstance(t, Ticket)}
    assert len(items) == len(tickets) == len(table.open_ids())
    ticket = tickets["3"]
    assert ticket.title == "Refund request #3"
    assert ticket.url == "https://backoffice.example/t/3"
    assert ticket.fields == {"priority": "high", "amount": 4.5}
    assert ticket.updated_at == START
    assert ticket.due_at == datetime(2026, 4, 4, tzinfo=UTC)
    assert tickets["2"].fields == {"priority": None, "amount": 3}
    assert tickets["2"].due_at is None


async def test_a_bare_dsn_gets_the_async_driver(table: SqlBackoffice) -> None:
    """`postgresql://`, `mysql://` and `sqlite://` DSNs run on asyncpg, aiomysql, aiosqlite."""
    url = make_url(table.db.dsn)
    bare = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)
    assert "+" not in bare.split("://")[0]
    assert len(await listing(table.options(dsn=bare))) == len(table.open_ids())


async def test_the_session_is_read_only(table: SqlBackoffice) -> None:
    """A query that writes is refused by the read-only transaction, and nothing changes.

    The options refuse such a query at start (tests/integration/test_sql_read_only.py); here
    that check is bypassed (`model_copy` does not validate) to reach the database's own refusal.
    """
    checked = SqlAdapter.Config.model_validate(table.options())
    query = f"DELETE FROM {table.table} RETURNING id, title"
    adapter = SqlAdapter(checked.model_copy(update={"query": query}))
    try:
        with pytest.raises(AdapterConfigError, match="`query` failed on") as raised:
            _ = [item async for item in adapter.list_open()]
    finally:
        await adapter.aclose()
    assert "read" in str(raised.value).lower()  # read-only / READ ONLY / readonly
    assert len(table.open_ids()) == 103


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("SELECT id, title FROM fc_no_such_table", r"(does not exist|doesn't exist|no such table)"),
        ("SELECT id, title FROM fc_tickets WHERE id = = 1", r"(syntax|SQL syntax)"),
    ],
)
async def test_sql_errors_are_config_errors_naming_the_problem(
    db: Database, query: str, problem: str
) -> None:
    """An error in the configured SQL is an AdapterConfigError with the database's words."""
    options = {"dsn": db.dsn, "query": query}
    with pytest.raises(AdapterConfigError, match=problem) as listed:
        await listing(options)
    with pytest.raises(AdapterConfigError, match=problem):
        await checked(options)
    message = str(listed.value)
    assert message.startswith("`query` failed on ")
    assert PG_PASSWORD not in message
    # The location names the database (issue 15): the DSN with its password masked, so host,
    # port and database stay visible; a DSN without userinfo (SQLite's) is shown whole.
    if "@" in db.dsn:
        head, _, place = db.dsn.rpartition("@")
        assert f"{head.rpartition(':')[0]}:***@{place}" in message
    else:
        assert db.dsn in message


async def test_check_names_the_columns_when_the_mapping_does_not_fit(table: SqlBackoffice) -> None:
    """check() fails with the query's columns when the first row cannot become a ticket."""
    options = table.options(mapping={**MAPPING, "title": "subject"})
    with pytest.raises(AdapterConfigError, match="columns are id, title, status"):
        await checked(options)


async def test_an_unreachable_server_is_unavailable() -> None:
    """A server that refuses connections makes the source unavailable, password masked."""
    for dsn in (
        "postgresql+asyncpg://postgres:secret-pw-0@127.0.0.1:1/test",
        "mysql+aiomysql://root:secret-pw-0@127.0.0.1:1/test",
    ):
        with pytest.raises(AdapterUnavailable, match="cannot connect to") as raised:
            await listing({"dsn": dsn, "query": "SELECT 1 AS id, 'x' AS title"})
        assert "secret-pw-0" not in str(raised.value)
        assert ":***@127.0.0.1:1/test" in str(raised.value)


async def test_wrong_credentials_are_an_auth_error_with_the_password_masked() -> None:
    """MariaDB refusing a password is an AdapterAuthError that never shows the password."""
    dsn = make_url(server_dsn("mariadb")).set(password="not-the-password-71")
    options = {"dsn": dsn.render_as_string(hide_password=False), "query": "SELECT 1"}
    with pytest.raises(AdapterAuthError, match=r"Access denied.*\(error 1045\)") as raised:
        await checked(options)
    assert "not-the-password-71" not in str(raised.value)
    assert "root:***@" in str(raised.value)


@pytest.mark.parametrize(
    ("kind", "query", "problem"),
    [
        ("postgresql", "SELECT 1 AS id, 'x' AS title FROM pg_sleep(3)", "statement timeout"),
        ("mariadb", "SELECT 1 AS id, 'x' AS title FROM (SELECT SLEEP(3)) AS s", "max_statement"),
    ],
)
async def test_a_query_past_the_statement_timeout_is_unavailable(
    kind: str, query: str, problem: str
) -> None:
    """The server cancels a query running past `statement_timeout`: the source is unavailable."""
    options = {"dsn": server_dsn(kind), "query": query, "statement_timeout": 0.2}
    began = time.perf_counter()
    with pytest.raises(AdapterUnavailable, match=problem):
        await listing(options)
    assert time.perf_counter() - began < 2.5


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        ("not a url", "not a SQLAlchemy database URL"),
        ("nosuchdb://host/db", "does not know"),
        ("postgresql+psycopg2://u:pw@127.0.0.1/db", "driver .* is not installed"),
        ("sqlite+pysqlite:///:memory:", "not an asyncio driver"),
    ],
)
async def test_unusable_dsns_are_config_errors(dsn: str, problem: str) -> None:
    """A malformed DSN, an unknown database, a missing driver or a sync driver are named."""
    with pytest.raises(AdapterConfigError, match=problem) as raised:
        await listing({"dsn": dsn, "query": "SELECT 1"})
    assert "pw@" not in str(raised.value)


def test_options_are_validated() -> None:
    """Bind parameters in `query`, none in `incremental_query`, or unknown keys are refused."""
    base = {"dsn": "sqlite+aiosqlite:///x.db", "query": "SELECT 1"}
    for broken in (
        {**base, "query": "SELECT * FROM t WHERE a = :a"},
        {**base, "incremental_query": "SELECT * FROM t"},
        {**base, "incremental_query": "SELECT * FROM t WHERE u >= :since AND k = :k"},
        {**base, "fetchsize": 10},
        {**base, "query": " ; "},
    ):
        with pytest.raises(ValidationError):
            SqlAdapter.Config.model_validate(broken)
    ok = SqlAdapter.Config.model_validate(
        {**base, "dsn": "postgresql://u:hunter22@h/db", "query": "SELECT x::int, '\\:y' AS z;"}
    )
    assert "hunter22" not in repr(ok)
    assert ok.query == "SELECT x::int, '\\:y' AS z"


# --- incremental --------------------------------------------------------------------------------


async def test_incremental_binds_since_less_the_overlap(table: SqlBackoffice) -> None:
    """A poll returns the rows changed since the cursor less the overlap, closed ones too."""
    adapter = make(table.options(incremental_overlap=30))
    try:
        start = await adapter.changes_since(None)
        assert start.tickets == ()
        assert start.cursor == START.isoformat()
        table.advance(20)
        table.change("1")
        table.advance(20)
        table.close("2")
        first = await adapter.changes_since(start.cursor)
        # since = 09:00:00 - 30 s: every row (all were written at 09:00:00) is in the window
        assert len(first.tickets) == 120
        assert first.cursor == (START + timedelta(seconds=40)).isoformat()
        second = await adapter.changes_since(first.cursor)
    finally:
        await adapter.aclose()
    # since = 09:00:40 - 30 s = 09:00:10: row 1 (09:00:20) and row 2 (09:00:40) only
    assert {t.id: t.is_open for t in second.tickets} == {"1": True, "2": False}
    assert second.cursor == first.cursor


async def test_since_binds_to_epoch_and_timestamptz_columns(tmp_path: Path) -> None:
    """`since_type: epoch_s` compares with integer columns; datetime with timestamptz ones."""
    sqlite = database_for("sqlite", tmp_path)
    table = f"fc_epoch_{uuid.uuid4().hex[:8]}"
    epoch = int(START.timestamp())
    await execute(
        sqlite.dsn,
        (f"CREATE TABLE {table} (id INTEGER, title TEXT, changed INTEGER)", None),
        (f"INSERT INTO {table} VALUES (1, 'old', {epoch}), (2, 'new', {epoch + 600})", None),
    )
    options = {
        "dsn": sqlite.dsn,
        "query": f"SELECT id, title FROM {table}",
        "incremental_query": f"SELECT id, title, datetime(changed, 'unixepoch') AS updated_at "
        f"FROM {table} WHERE changed >= :since",
        "since_type": "epoch_s",
    }
    adapter = make(options)
    try:
        changes = await adapter.changes_since((START + timedelta(seconds=300)).isoformat())
    finally:
        await adapter.aclose()
    assert [t.id for t in changes.tickets] == ["2"]
    assert changes.cursor == (START + timedelta(seconds=600)).isoformat()

    postgres = database_for("postgresql", tmp_path)
    table = f"fc_tz_{uuid.uuid4().hex[:8]}"
    await execute(
        postgres.dsn,
        (f"CREATE TABLE {table} (id INTEGER, title TEXT, updated_at TIMESTAMPTZ)", None),
        (
            f"INSERT INTO {table} VALUES (1, 'old', '2026-03-02 10:00:00+01'), "
            "(2, 'new', '2026-03-02 11:00:00+01')",
            None,
        ),
    )
    try:
        options = {
            "dsn": postgres.dsn,
            "query": f"SELECT id, title, updated_at FROM {table}",
            "incremental_query": f"SELECT id, title, updated_at FROM {table} "
            "WHERE updated_at >= :since",
            "incremental_overlap": 0,
        }
        adapter = make(options)
        try:
            changes = await adapter.changes_since("2026-03-02T09:30:00+00:00")
        finally:
            await adapter.aclose()
    finally:
        await execute(postgres.dsn, (f"DROP TABLE {table}", None))
    assert [(t.id, t.updated_at) for t in changes.tickets] == [
        ("2", datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    ]


async def test_polling_without_incremental_query_is_a_config_error(table: SqlBackoffice) -> None:
    """changes_since without `incremental_query` says what to configure."""
    adapter = make(table.options(incremental_query=None))
    try:
        with pytest.raises(AdapterConfigError, match="`incremental_query`"):
            await adapter.changes_since(None)
    finally:
        await adapter.aclose()


# --- memory -------------------------------------------------------------------------------------

BIG = 100_000


async def fill_big_table(db: Database, table: str) -> None:
    """A BIG-row ticket table, generated by the database itself."""
    select = {
        "postgresql": "SELECT g, 'Ticket number ' || g || ' needs a look', 'open', 'normal', "
        "g * 1.25, NULL, TIMESTAMP '2026-03-02 09:00:00' FROM generate_series(1, {n}) AS g",
        "mariadb": "SELECT seq, CONCAT('Ticket number ', seq, ' needs a look'), 'open', "
        "'normal', seq * 1.25, NULL, TIMESTAMP '2026-03-02 09:00:00' FROM seq_1_to_{n}",
        "sqlite": "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
        "WHERE n < {n}) SELECT n, 'Ticket number ' || n || ' needs a look', 'open', 'normal', "
        "n * 1.25, NULL, '2026-03-02 09:00:00.000000' FROM g",
    }[db.kind].format(n=BIG)
    await execute(
        db.dsn, (db.ddl(table), None), (f"INSERT INTO {table} ({COLUMNS}) {select}", None)
    )


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM becomes the current RSS


def memory_child(dsn: str, table: str) -> None:
    """In a fresh process: peak RSS growth streaming every row, then RSS holding them all once.

    A fresh process, so that memory freed by earlier tests cannot absorb a buffered result; RSS,
    so that the drivers' own buffers count too. Prints one JSON document.
    """

    async def count(options: dict[str, Any]) -> int:
        return sum([isinstance(item, Ticket) async for item in make_and_list(options)])

    async def main() -> dict[str, float]:
        query = f"SELECT {COLUMNS} FROM {table} ORDER BY id"
        options = {"dsn": dsn, "query": query, "mapping": MAPPING}
        await count({**options, "query": f"{query} LIMIT 10"})  # imports, caches, driver
        gc.collect()
        base = _status_kib("VmRSS")
        _reset_peak()
        began = time.perf_counter()
        streamed = await count(options)
        seconds = time.perf_counter() - began
        peak = _status_kib("VmHWM") - base
        held = [item async for item in make_and_list(options)]
        gc.collect()
        holding = _status_kib("VmRSS") - base
        return {
            "rows": streamed,
            "held": len(held),
            "seconds": seconds,
            "peak_kib": peak,
            "holding_kib": holding,
        }

    print(json.dumps(asyncio.run(main())))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_100k_rows_are_streamed_in_bounded_memory(db: Database) -> None:
    """Listing 100k rows grows peak RSS far less than holding every row twice would."""
    table = f"fc_big_{uuid.uuid4().hex[:8]}"
    run_async(lambda: fill_big_table(db, table))
    try:
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "from tests.integration.test_sql_adapter import memory_child; "
                f"memory_child({db.dsn!r}, {table!r})",
            ],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        run_async(lambda: execute(db.dsn, (f"DROP TABLE {table}", None)))
    assert child.returncode == 0, child.stderr[-2000:]
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    assert figures["rows"] == figures["held"] == BIG
    peak, twice = figures["peak_kib"] / 1024, 2 * figures["holding_kib"] / 1024
    print(
        f"\n{db.kind}: {BIG:,} rows listed in {figures['seconds']:.1f} s; peak RSS growth "
        f"{peak:.1f} MiB, while holding them twice takes ~{twice:.0f} MiB"
    )
    assert peak < twice / 10


async def make_and_list(options: dict[str, Any]) -> AsyncIterator[Ticket | InvalidRecord]:
    """List through a fresh adapter, closing it afterwards."""
    adapter = make(options)
    try:
        async for item in adapter.list_open():
            yield item
    finally:
        await adapter.aclose()
