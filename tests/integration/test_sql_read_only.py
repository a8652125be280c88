"""Issue 15, item 14: the `sql` adapter is read-only on PostgreSQL and MariaDB, every write form.

Two layers, each tested on its own against the real servers: the options refuse a statement that
is not a query before anything is sent (a ConfigError at start), and the session the adapter
opens refuses the write even when that check is bypassed (`model_construct`), with the victim
table, its rows and the schema left as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.base import SourceError
from adapters.sql import SqlAdapter, SqlOptions
from connector.config import SourceSection
from connector.errors import ConfigError
from connector.registry import build_adapter
from tests.integration.test_sql_adapter import Database, database_for, execute, run_async


@dataclass
class Victim:
    """A table with 3 rows, and a procedure that inserts one, in one database."""

    db: Database
    table: str

    @property
    def procedure(self) -> str:
        return f"{self.table}_insert"

    def rows(self) -> int:
        sql = f"SELECT count(*) FROM {self.table}"
        (rows,) = run_async(lambda: execute(self.db.dsn, (sql, {})))
        return int(rows[0][0])

    def tables_like(self) -> set[str]:
        schema = "current_schema()" if self.db.kind == "postgresql" else "database()"
        sql = (
            "SELECT table_name FROM information_schema.tables "
            f"WHERE table_schema = {schema} AND table_name LIKE '{self.table}%'"
        )
        (rows,) = run_async(lambda: execute(self.db.dsn, (sql, {})))
        return {str(r[0]) for r in rows}


@pytest.fixture(params=["postgresql", "mariadb"])
def victim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Victim]:
    """A victim table in the database named by the parameter."""
    db = database_for(request.param, tmp_path)
    name = f"fc_victim_{uuid.uuid4().hex[:8]}"
    body = f"INSERT INTO {name} (id, title) VALUES (99, 'written')"
    procedure = (
        f"CREATE PROCEDURE {name}_insert() LANGUAGE SQL AS $$ {body} $$"
        if db.kind == "postgresql"
        else f"CREATE PROCEDURE {name}_insert() {body}"
    )
    run_async(
        lambda: execute(
            db.dsn,
            (f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, title VARCHAR(50))", {}),
            (f"INSERT INTO {name} (id, title) VALUES (1, 'a'), (2, 'b'), (3, 'c')", {}),
            (procedure, {}),
        )
    )
    yield Victim(db, name)
    run_async(
        lambda: execute(
            db.dsn,
            (f"DROP PROCEDURE IF EXISTS {name}_insert", {}),
            (f"DROP TABLE IF EXISTS {name}_copy", {}),
            (f"DROP TABLE IF EXISTS {name}_new", {}),
            (f"DROP TABLE IF EXISTS {name}", {}),
        )
    )


WRITES = {
    "delete_returning": "DELETE FROM {t} RETURNING id, title",
    "insert_returning": "INSERT INTO {t} (id, title) VALUES (7, 'x') RETURNING id, title",
    "update": "UPDATE {t} SET title = 'changed'",
    "data_modifying_cte": "WITH d AS (DELETE FROM {t} RETURNING id, title) SELECT id, title FROM d",
    "truncate": "TRUNCATE TABLE {t}",
    "drop": "DROP TABLE {t}",
    "create": "CREATE TABLE {t}_new (id INTEGER)",
    "create_as": "CREATE TABLE {t}_new AS SELECT id, title FROM {t}",
    "call": "CALL {t}_insert()",
    "select_into": "SELECT id, title INTO {t}_copy FROM {t}",
    "two_statements": "SELECT id, title FROM {t}; DELETE FROM {t}",
}
# Not refused by the database's read-only session (it writes a file on the server, not a table):
# only the options' check stops it. docs/adapters.md says to give the account no FILE privilege.
ONLY_CHECKED = {"mariadb": {"select_into"}}
# aiomysql always allows several statements in one call: the SELECT is answered, the DELETE after
# it refused by the session (its error lost when the driver closes the cursor): nothing written.
ANSWERS_FIRST = {("mariadb", "two_statements")}


def _section(victim: Victim, query: str) -> SourceSection:
    options = {"dsn": victim.db.dsn, "query": query}
    return SourceSection(name="victim", adapter="sql", options=options)


@pytest.mark.parametrize("form", sorted(WRITES))
def test_a_statement_that_writes_is_refused_at_start(victim: Victim, form: str) -> None:
    """The options refuse it: a ConfigError naming the query, before any connection."""
    query = WRITES[form].format(t=victim.table)
    with pytest.raises(ConfigError, match="must be a query that only reads"):
        build_adapter(_section(victim, query))
    assert victim.rows() == 3


@pytest.mark.parametrize(
    ("victim", "form"),
    [
        (kind, form)
        for kind in ("postgresql", "mariadb")
        for form in sorted(WRITES)
        if form not in ONLY_CHECKED.get(kind, set())
    ],
    indirect=["victim"],
)
async def test_the_session_refuses_every_write_even_unchecked(victim: Victim, form: str) -> None:
    """With the check bypassed, the database's read-only session refuses the write."""
    query = WRITES[form].format(t=victim.table)
    adapter = SqlAdapter(SqlOptions.model_construct(dsn=SecretStr(victim.db.dsn), query=query))
    try:
        for _ in range(2):  # the second on a new connection: a session setting holds for each
            if (victim.db.kind, form) in ANSWERS_FIRST:
                assert len([item async for item in adapter.list_open()]) == 3
                continue
            with pytest.raises(SourceError):
                _ = [item async for item in adapter.list_open()]
    finally:
        await adapter.aclose()
    assert victim.rows() == 3
    assert victim.tables_like() == {victim.table}


def test_a_query_still_reads(victim: Victim) -> None:
    """The same session reads as before."""
    query = f"SELECT id, title FROM {victim.table} WHERE title <> 'delete; drop'"
    adapter = build_adapter(_section(victim, query))

    async def read() -> int:
        try:
            return len([item async for item in adapter.list_open()])
        finally:
            await adapter.aclose()

    assert run_async(read) == 3
