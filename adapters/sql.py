"""The `sql` adapter: open tickets from a query on any database SQLAlchemy speaks to.

A back-office that is a database needs no API: `query` is the SQL that returns the open tickets,
one row per ticket, and `mapping` says where each ticket value comes from (a TicketMapping over the
row as a dict: columns by name, templates, custom fields). An optional `incremental_query` with a
bound `:since` parameter returns the rows changed since the newest `updated_at` seen, less an
overlap window, closed ones included. Rows are streamed through a server-side cursor, so a 100k-row
backlog never sits in memory twice. Read-only in two layers: the options accept only a single
statement that reads (`_not_a_query`), and every statement runs in a read-only transaction
(PostgreSQL), read-only session (MySQL/MariaDB, whose DDL commits on its own) or `query_only`
connection (SQLite); nothing is ever committed. It runs on
SQLAlchemy's asyncio engine with the async drivers (asyncpg, aiomysql, aiosqlite: the `[postgres]`,
`[mysql]` and `[sqlite]` extras). Failures become the SourceError tree: unreachable →
AdapterUnavailable, refused credentials → AdapterAuthError, an error in the configured SQL →
AdapterConfigError naming it. The DSN is a secret: messages show it with the password masked.

Write-back (optional): `close_statement` and `comment_statement`, with the binds `:ticket_id`
and `:note`, run on a separate `write_dsn` (its own engine and credentials, so the listing's
connection stays read-only), each in one committed transaction. A statement that matches no row
means the ticket is gone (write it to match the ticket whatever its status, e.g. `UPDATE tickets
SET status = 'closed' WHERE id = :ticket_id`, so that closing twice changes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Final, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from sqlalchemy import (
    URL,
    DateTime,
    Integer,
    Select,
    TextClause,
    bindparam,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InvalidRequestError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import Executable

from adapters.base import (
    AdapterAuthError,
    AdapterConfig,
    AdapterConfigError,
    AdapterDataError,
    AdapterUnavailable,
    ChangeSet,
    Duration,
    InvalidRecord,
    SourceError,
    Ticket,
    TicketGone,
    WriteBackAction,
    WriteBackOutcome,
    WriteBackRequest,
)
from adapters.mapping import RecordMapper, TicketMapping
from connector.values import parse_timestamp

__all__ = ["SqlAdapter", "SqlOptions"]

# The driver a bare `postgresql://`, `mysql://` or `sqlite://` DSN gets: SQLAlchemy's own defaults
# (psycopg, mysqlclient, pysqlite) are not all asyncio drivers.
DEFAULT_DRIVERS: Final = {
    "postgresql": "asyncpg",
    "mysql": "aiomysql",
    "mariadb": "aiomysql",
    "sqlite": "aiosqlite",
}
EXTRAS: Final = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MESSAGE: Final = 300

# MySQL/MariaDB error numbers (pymysql gives them, with a SQLSTATE that is often just 42000/HY000).
_MYSQL_AUTH: Final = frozenset({1044, 1045, 1142, 1143, 1227, 1698})
_MYSQL_UNAVAILABLE: Final = frozenset(
    {1040, 1053, 1205, 1213, 1317, 1969, 2002, 2003, 2005, 2006, 2013, 2055, 3024}
)


def _default_mapping() -> TicketMapping:
    return TicketMapping(
        id="id",
        title="title",
        url="url",
        updated_at="updated_at",
        due_at="due_at",
        assignee_email="assignee_email",
    )


def _clean_sql(value: str, *, reads: bool = True) -> str:
    # A trailing semicolon would break the subquery that check() wraps around the query.
    value = value.strip().rstrip(";").rstrip()
    if not value:
        raise ValueError("must not be empty")
    # The listing's queries must only read; the write-back statements are writes by design
    # (they run on `write_dsn`, never on the read-only listing connection).
    problem = _not_a_query(value) if reads else None
    if problem:
        raise ValueError(f"must be a query that only reads: {problem}")
    return value


# Comments, string literals and quoted identifiers: their words are data, not SQL.
_INERT = re.compile(
    r"--[^\n]*|#[^\n]*|/\*.*?\*/|'(?:[^'\\]|''|\\.)*'|\"(?:[^\"]|\"\")*\"|`[^`]*`"
    r"|\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$",
    re.S,
)
_READING = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})
# Words that write, change the schema or call code, and `INTO` (SELECT INTO creates a table on
# PostgreSQL, INTO OUTFILE writes a file on MySQL/MariaDB, even in a read-only transaction).
_WRITING = frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "TRUNCATE", "DROP", "CREATE", "ALTER",
        "RENAME", "GRANT", "REVOKE", "CALL", "EXEC", "EXECUTE", "DO", "COPY", "LOCK", "INTO",
        "COMMIT", "ROLLBACK", "SET", "HANDLER", "LOAD", "VACUUM", "REINDEX", "CLUSTER",
    }
)  # fmt: skip


def _not_a_query(sql: str) -> str | None:
    """Why `sql` is not a single statement that only reads, or None.

    A conservative check before anything is sent: the database's read-only session is what
    enforces it (a function with side effects is only caught there), this refuses the obvious
    writes with a clear message, data-modifying CTEs (`WITH d AS (DELETE ...) SELECT`) included.
    A keyword scan is enough for that; a SQL parser's statement type misses such CTEs.
    """
    code = _INERT.sub(" ", sql)
    if ";" in code.strip().rstrip(";"):
        return "one statement only (found a `;` between statements)"
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", code)
    if not words or words[0].upper() not in _READING:
        first = words[0] if words else code.strip()[:20]
        return f"it starts with {first!r}, not SELECT, WITH, VALUES or TABLE"
    writing = sorted({w.upper() for w in words} & _WRITING)
    if writing:
        return f"it contains {', '.join(writing)}"
    return None


def _bind_names(sql: str) -> set[str]:
    return set(text(sql).compile().params)


WRITE_BINDS: Final = frozenset({"ticket_id", "note"})


class SqlOptions(AdapterConfig):
    """Options of the `sql` adapter."""

    # No validator here: pydantic quotes a failing value in its error, and this one holds the
    # password. The DSN is parsed on first use, into an AdapterConfigError that masks it.
    dsn: SecretStr = Field(
        description="SQLAlchemy URL, e.g. postgresql+asyncpg://user:password@host/db; a bare "
        "postgresql://, mysql:// or sqlite:/// gets asyncpg, aiomysql or aiosqlite."
    )
    query: str = Field(description="SQL returning one row per open ticket.")
    incremental_query: str | None = Field(
        None,
        description="SQL returning the rows changed at or after `:since`, closed ones included.",
    )
    mapping: TicketMapping = Field(
        default_factory=_default_mapping,
        description="Where each ticket value comes from in a row; default: the columns id, "
        "title, url, updated_at, due_at, assignee_email.",
    )
    since_type: Literal["datetime", "epoch_s", "epoch_ms"] = Field(
        "datetime",
        description="How `:since` is bound: a UTC timestamp, or Unix seconds or milliseconds.",
    )
    incremental_overlap: Duration = Field(
        timedelta(minutes=1),
        description="How far each poll reaches back before the newest `updated_at` seen: rows "
        "committed late with an older timestamp are not lost.",
    )
    fetch_size: int = Field(1000, ge=1, le=100_000, description="Rows per server-side fetch.")
    statement_timeout: Duration | None = Field(
        timedelta(minutes=5), description="Per statement (PostgreSQL, MySQL, MariaDB); null: none."
    )
    connect_timeout: Duration = Field(timedelta(seconds=10), gt=timedelta(0))
    write_dsn: SecretStr | None = Field(
        None,
        description="Write-back: a SQLAlchemy URL with write rights, used only by "
        "`close_statement` and `comment_statement` (the listing keeps `dsn`, read-only).",
    )
    close_statement: str | None = Field(
        None, description="Write-back: SQL closing the ticket `:ticket_id` (`:note` optional)."
    )
    comment_statement: str | None = Field(
        None, description="Write-back: SQL adding `:note` to the ticket `:ticket_id`."
    )
    ticket_id_type: Literal["text", "integer"] = Field(
        "text", description="How `:ticket_id` is bound (strict drivers such as asyncpg care)."
    )

    @field_validator("close_statement", "comment_statement")
    @classmethod
    def _write_binds(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = _clean_sql(value, reads=False)
        names = _bind_names(value)
        if "ticket_id" not in names or names - WRITE_BINDS:
            extra = ", ".join(f":{n}" for n in sorted(names - WRITE_BINDS))
            raise ValueError(
                "must use the bind parameter :ticket_id, and no other than :note"
                + (f" (found {extra})" if extra else "")
            )
        if info.data.get("write_dsn") is None:
            raise ValueError("needs `write_dsn`: write-backs never run on the listing's `dsn`")
        return value

    @field_validator("query")
    @classmethod
    def _query_has_no_binds(cls, value: str) -> str:
        value = _clean_sql(value)
        names = _bind_names(value)
        if names:
            listed = ", ".join(f":{n}" for n in sorted(names))
            raise ValueError(
                f"takes no bind parameters, found {listed} (write a literal colon as \\:)"
            )
        return value

    @field_validator("incremental_query")
    @classmethod
    def _incremental_binds_since(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _clean_sql(value)
        names = _bind_names(value)
        if names != {"since"}:
            extra = ", ".join(f":{n}" for n in sorted(names - {"since"}))
            raise ValueError(
                f"must use the bind parameter :since and no other (found {extra})"
                if extra
                else "must use the bind parameter :since (e.g. WHERE updated_at >= :since)"
            )
        return value

    @field_validator("incremental_overlap")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value


# --- rows to JSON values ------------------------------------------------------------------------

_PLAIN: Final = frozenset({str, int, bool, type(None)})


def _timestamp_text(value: datetime) -> str:
    # Naive timestamps are UTC: the session's time zone is set to UTC before every query.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_value(value: Any) -> Any:
    """A database value as a JSON value (timestamps as ISO 8601 text, decimals as numbers)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return _timestamp_text(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw.hex()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, str | int):  # subclasses: enums, ...
        return str(value) if isinstance(value, str) else int(value)
    return str(value)  # UUID, IP addresses, ranges...


# --- errors -------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the driver's error SQLAlchemy wraps, and their causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def _driver_error(exc: BaseException) -> BaseException:
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


def _codes(exc: BaseException) -> tuple[str | None, int | None]:
    """(SQLSTATE, MySQL error number) found anywhere in the chain."""
    state: str | None = None
    number: int | None = None
    for item in _chain(exc):
        found = getattr(item, "sqlstate", None) or getattr(item, "pgcode", None)
        if state is None and isinstance(found, str) and found:
            state = found
        args: tuple[Any, ...] = tuple(getattr(item, "args", ()))
        if number is None and args and type(args[0]) is int:
            number = args[0]
    return state, number


def _detail(exc: BaseException) -> str:
    """The driver's own message, first line, with MySQL's `(code, "text")` unwrapped."""
    error = _driver_error(exc)
    args: tuple[Any, ...] = tuple(getattr(error, "args", ()))
    if len(args) >= 2 and type(args[0]) is int and isinstance(args[1], str):
        message = args[1].strip()
    else:
        message = str(error).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    return first if len(first) <= _MESSAGE else first[: _MESSAGE - 1] + "…"


def _kind(exc: BaseException) -> type[SourceError]:
    """Which SourceError a database failure is: by MySQL number, SQLSTATE, then its words."""
    state, number = _codes(exc)
    if number is not None and number >= 1000:
        if number in _MYSQL_AUTH:
            return AdapterAuthError
        if number in _MYSQL_UNAVAILABLE or number >= 2000:  # 2xxx: client-side, the connection
            return AdapterUnavailable
        return AdapterConfigError
    if state is not None:
        if state.startswith("28") or state == "42501":  # refused login, no privilege
            return AdapterAuthError
        if state.startswith(("08", "40", "53", "57", "58", "HY", "XX")):
            return AdapterUnavailable  # connection, deadlock, resources, shutdown or timeout
        return AdapterConfigError  # syntax, unknown table or column, read-only violation...
    if isinstance(exc, SQLAlchemyError) and not isinstance(exc, DBAPIError):
        return AdapterConfigError  # SQLAlchemy's own: e.g. a `query` that returns no rows
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return AdapterUnavailable  # timeouts, refused connections
    # SQLite's errors carry no code: sorted by their words.
    message = _detail(exc).lower()
    if any(word in message for word in ("unable to open", "locked", "disk i/o", "busy")):
        return AdapterUnavailable
    if any(word in message for word in ("no such", "syntax", "readonly", "read-only")):
        return AdapterConfigError
    if type(_driver_error(exc)).__name__ in ("OperationalError", "InterfaceError"):
        return AdapterUnavailable
    return AdapterConfigError


def _describe(exc: BaseException) -> str:
    state, number = _codes(exc)
    detail = _detail(exc)
    if isinstance(exc, TimeoutError) and not str(exc):
        detail = "no answer in time"
    if number is not None and number >= 1000:
        return f"{detail} (error {number})"
    if state is not None:
        return f"{detail} (SQLSTATE {state})"
    return detail


# --- the adapter ----------------------------------------------------------------------------------


class SqlAdapter:
    """Open tickets from a SQL query, per the options."""

    name: ClassVar[str] = "sql"
    Config: ClassVar[type[SqlOptions]] = SqlOptions

    def __init__(self, config: SqlOptions, /) -> None:
        self.options = config
        self._mapper = RecordMapper(config.mapping)
        self._engine: AsyncEngine | None = None
        self._where = "the database"
        self._secrets: list[str] = []
        self._write_engine: AsyncEngine | None = None
        for secret in (config.dsn, config.write_dsn):
            if secret is None:
                continue
            dsn = secret.get_secret_value()
            self._secrets.append(dsn)
            with contextlib.suppress(ArgumentError, ValueError):
                password = make_url(dsn).password
                if password and len(password) >= 3:
                    self._secrets.append(password)
        since_type = Integer() if config.since_type != "datetime" else DateTime(timezone=True)
        self._query = text(config.query)
        self._incremental: TextClause | None = None
        if config.incremental_query is not None:
            # Typed, so that strict drivers get a value they accept: asyncpg refuses an aware
            # datetime for a bare parameter compared with a `timestamp` column.
            self._incremental = text(config.incremental_query).bindparams(
                bindparam("since", type_=since_type)
            )

    # --- engine and connections ---------------------------------------------------------------

    def _url(self, which: str = "dsn") -> URL:
        secret = self.options.write_dsn if which == "write_dsn" else self.options.dsn
        assert secret is not None  # write_dsn is asked for only when it is set
        try:
            url = make_url(secret.get_secret_value())
        except (ArgumentError, ValueError):
            raise AdapterConfigError(
                f"`{which}` is not a SQLAlchemy database URL "
                "(dialect+driver://user:password@host/db)"
            ) from None
        backend = url.get_backend_name()
        if "+" not in url.drivername and backend in DEFAULT_DRIVERS:
            url = url.set(drivername=f"{backend}+{DEFAULT_DRIVERS[backend]}")
        return url

    def _get_engine(self) -> AsyncEngine:
        if self._engine is not None:
            return self._engine
        url = self._url()
        # The query string may carry credentials too (sslpassword=...): never shown.
        self._where = url.set(query={}).render_as_string(hide_password=True)
        # From the name, not get_driver_name(): that loads the dialect, which may not exist.
        driver = url.drivername.partition("+")[2] or url.drivername
        extra = EXTRAS.get(url.get_backend_name())
        hint = f" (pip install 'fragment-connector[{extra}]')" if extra else ""
        try:
            # The asyncio engine rather than a sync one in a thread: the core is asyncio,
            # `AsyncConnection.stream()` is the server-side cursor, and a cancelled cycle (the
            # daemon draining on SIGTERM) cancels the query instead of leaving a blocking fetch
            # running in a worker thread. The price: greenlet (`sqlalchemy[asyncio]`), and
            # drivers that type binds strictly (asyncpg), hence the typed `:since`.
            # NullPool: one connection per listing or poll, minutes apart; a pooled one would
            # go stale in between, and belongs to the event loop that opened it.
            self._engine = create_async_engine(url, poolclass=NullPool)
        except NoSuchModuleError:
            raise AdapterConfigError(
                f"`dsn` names a database SQLAlchemy does not know: {url.drivername}"
            ) from None
        except ImportError as exc:
            raise AdapterConfigError(
                f"the {driver} driver for {self._where} is not installed{hint}: {exc.msg}"
            ) from None
        except InvalidRequestError:
            raise AdapterConfigError(
                f"{driver} is not an asyncio driver: name one in `dsn`, e.g. "
                f"{url.get_backend_name()}+{DEFAULT_DRIVERS.get(url.get_backend_name(), '...')}"
            ) from None
        except (ArgumentError, TypeError, ValueError) as exc:
            raise AdapterConfigError(
                f"unusable `dsn` for {self._where}: {self._mask(str(exc))}"
            ) from None
        return self._engine

    def _mask(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message

    def _error(self, exc: BaseException, doing: str) -> SourceError:
        # Only the driver's words are masked: `_where` is rendered without the password, and a
        # password that is a common substring (`sql`) would mask the dialect or the database.
        message = f"{doing} {self._where}: {self._mask(_describe(exc))}"
        if "greenlet" in message:
            return AdapterConfigError(
                f"{doing} {self._where}: SQLAlchemy's asyncio support needs greenlet "
                "(pip install 'sqlalchemy[asyncio]')"
            )
        return _kind(exc)(message)

    @contextlib.contextmanager
    def _translating(self, doing: str) -> Iterator[None]:
        """Database errors raised inside become SourceErrors that name the DSN, masked."""
        try:
            yield
        except SourceError:
            raise
        except Exception as exc:
            raise self._error(exc, doing) from None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        engine = self._get_engine()
        with self._translating("cannot connect to"):
            async with asyncio.timeout(self.options.connect_timeout.total_seconds()):
                conn = await engine.connect()
        try:
            with self._translating("cannot open a read-only session on"):
                await self._prepare(conn)
            yield conn
        finally:
            # Closing rolls back: nothing this adapter runs is ever committed.
            with contextlib.suppress(Exception):
                await conn.close()

    async def _prepare(self, conn: AsyncConnection) -> None:
        """UTC, a statement timeout and a read-only transaction, in each database's words."""
        dialect = conn.dialect
        timeout = self.options.statement_timeout
        statements: list[str] = []
        if dialect.name == "postgresql":
            # SET TRANSACTION must come first in the transaction the driver has just begun.
            statements.append("SET TRANSACTION READ ONLY")
            statements.append("SET LOCAL TIME ZONE 'UTC'")
            if timeout is not None:
                statements.append(f"SET LOCAL statement_timeout = {_millis(timeout)}")
        elif dialect.name in ("mysql", "mariadb"):
            statements.append("SET time_zone = '+00:00'")
            if timeout is not None and getattr(dialect, "is_mariadb", False):
                statements.append(f"SET SESSION max_statement_time = {_millis(timeout) / 1000}")
            elif timeout is not None:
                statements.append(f"SET SESSION max_execution_time = {_millis(timeout)}")
            # For the whole session, not just the next transaction: MariaDB and MySQL commit DDL
            # (TRUNCATE, DROP, CREATE) on their own, outside a one-transaction setting.
            statements.append("SET SESSION TRANSACTION READ ONLY")
        elif dialect.name == "sqlite":
            statements.append("PRAGMA query_only = ON")
        for statement in statements:
            await conn.exec_driver_sql(statement)

    async def aclose(self) -> None:
        """Dispose of the engines."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()
        if self._write_engine is not None:
            engine, self._write_engine = self._write_engine, None
            await engine.dispose()

    # --- reading ------------------------------------------------------------------------------

    async def _rows(
        self, which: str, statement: Executable, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Each row of `statement` as a dict of JSON values, streamed `fetch_size` at a time."""
        async with self._connection() as conn:
            with self._translating(f"`{which}` failed on"):
                size = self.options.fetch_size
                result = await conn.stream(statement.execution_options(yield_per=size), params)
                keys = tuple(result.keys())
                # The size given explicitly: without it, partitions() ignores the yield_per
                # option of a text() statement and fetches the whole result at once.
                async for partition in result.partitions(size):
                    for row in partition:
                        yield dict(zip(keys, map(_json_value, row), strict=True))

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Every row of `query`, streamed: tickets (closed ones per `mapping.is_open`), bad rows."""
        number = 0
        async for record in self._rows("query", self._query, {}):
            number += 1
            yield self._mapper.map(record, f"row {number}")

    async def check(self) -> None:
        """Connect, run each configured query for one row, and map that row."""
        async with self._connection() as conn:
            await self._probe(conn, "query", self._query, {})
            if self._incremental is not None:
                since = self._since_value(datetime.now(UTC))
                await self._probe(conn, "incremental_query", self._incremental, {"since": since})

    async def _probe(
        self, conn: AsyncConnection, which: str, query: TextClause, params: dict[str, Any]
    ) -> None:
        # The query as a subquery under the dialect's own LIMIT: the database stops at one row.
        probe: Select[Any] = select(literal_column("*")).select_from(
            query.columns().subquery("fc_probe")
        )
        with self._translating(f"`{which}` failed on"):
            result = await conn.execute(probe.limit(1), params)
            keys = tuple(result.keys())
            row = result.first()
        if row is None:
            return
        record = dict(zip(keys, map(_json_value, row), strict=True))
        item = self._mapper.map(record, "row 1")
        if isinstance(item, InvalidRecord):
            raise AdapterConfigError(
                f"the first row of `{which}` cannot become a ticket: {item.reason}; its "
                f"columns are {', '.join(keys)} (is `mapping` right?)"
            )

    def _since_value(self, moment: datetime) -> datetime | int:
        if self.options.since_type == "epoch_s":
            return math.floor(moment.timestamp())
        if self.options.since_type == "epoch_ms":
            return math.floor(moment.timestamp() * 1000)
        return moment.astimezone(UTC)

    @property
    def polls_changes(self) -> bool:
        """Whether `changes_since` can run: only with `incremental_query` configured."""
        return self.options.incremental_query is not None

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Rows of `incremental_query` since the cursor, and the cursor to resume from.

        The cursor is the newest `updated_at` seen; each poll binds `:since` to it less
        `incremental_overlap`. Without a cursor, nothing is returned: the full refresh has
        covered the past, and one pass over the query finds where the data's own clock stands.
        """
        if self._incremental is None:
            raise AdapterConfigError("incremental polling needs `incremental_query`")
        if cursor is None:
            since, newest = EPOCH, None
        else:
            newest = parse_timestamp(cursor)
            if newest is None:
                raise AdapterDataError(f"not a sql adapter cursor: {cursor[:40]!r}")
            since = max(EPOCH, newest - self.options.incremental_overlap)
        tickets: list[Ticket] = []
        number = 0
        params = {"since": self._since_value(since)}
        async for record in self._rows("incremental_query", self._incremental, params):
            number += 1
            item = self._mapper.map(record, f"change {number}")
            if not isinstance(item, Ticket):
                continue  # a bad row is reported by the next full refresh
            if cursor is not None:
                tickets.append(item)
            stamp = item.updated_at
            if stamp is not None and (newest is None or stamp > newest):
                newest = stamp
        return ChangeSet(tuple(tickets), (newest or since).isoformat())

    # --- write-back ---------------------------------------------------------------------------

    @property
    def writes_back(self) -> bool:
        """Whether a write-back statement is configured (with its `write_dsn`)."""
        options = self.options
        return options.write_dsn is not None and (
            options.close_statement is not None or options.comment_statement is not None
        )

    async def write_back(self, request: WriteBackRequest) -> WriteBackOutcome:
        """Run `close_statement` or `comment_statement` on `write_dsn`, committed."""
        closing = request.action is WriteBackAction.CLOSE
        options = self.options
        sql = options.close_statement if closing else options.comment_statement
        which = "close_statement" if closing else "comment_statement"
        if sql is None:
            raise AdapterConfigError(f"no `{which}` configured")
        ticket_id: str | int = request.ticket_id
        if options.ticket_id_type == "integer":
            try:
                ticket_id = int(request.ticket_id)
            except ValueError:
                raise TicketGone(
                    f"ticket id {request.ticket_id[:40]!r} is not an integer"
                ) from None
        params = {"ticket_id": ticket_id, "note": request.note or ""}
        statement = text(sql)
        names = _bind_names(sql)
        engine = self._get_write_engine()
        with self._translating("cannot connect to"):
            async with asyncio.timeout(options.connect_timeout.total_seconds()):
                conn = await engine.connect()
        try:
            with self._translating(f"`{which}` failed on"):
                async with conn.begin():
                    result = await conn.execute(
                        statement, {k: v for k, v in params.items() if k in names}
                    )
                    matched = result.rowcount
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
        if matched == 0:
            raise TicketGone(f"`{which}` matched no row for ticket {request.ticket_id[:40]!r}")
        return WriteBackOutcome.CLOSED if closing else WriteBackOutcome.COMMENTED

    def _get_write_engine(self) -> AsyncEngine:
        if self._write_engine is None:
            url = self._url("write_dsn")
            try:
                self._write_engine = create_async_engine(url, poolclass=NullPool)
            except (ImportError, NoSuchModuleError, InvalidRequestError, ArgumentError) as exc:
                raise AdapterConfigError(self._mask(f"unusable `write_dsn`: {exc}")) from None
        return self._write_engine


def _millis(value: timedelta) -> int:
    return max(1, round(value.total_seconds() * 1000))
