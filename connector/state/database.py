"""Opening the state store: its URL, its asyncio engine, its schema, one transaction at a time.

The store is read and written from the event loop that also runs the lease heartbeat and answers
`/healthz`, so it uses SQLAlchemy's asyncio engine (psycopg 3's async connection, aiosqlite):
a slow disk or a slow PostgreSQL holds one coroutine, never the loop (benchmarks/state_loop.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from connector.errors import ConfigError, StateError
from connector.redaction import mask_url_password
from connector.state.schema import SCHEMA_VERSION, cursors, meta, metadata, watermarks
from connector.values import parse_timestamp

log = structlog.get_logger(__name__)

# The pg_advisory_xact_lock key (a bigint) that serialises the schema check of starting replicas.
_MIGRATION_LOCK = 0x46435F534348454D  # "FC_SCHEM"

# The cursor name under which releases before fc_watermarks kept a source's watermark.
_OLD_WATERMARK = "fragment:"

# libpq settings for every PostgreSQL connection: fail in seconds rather than hang when the
# server is unreachable, and notice a silent peer (network partition) through TCP keepalives.
POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    "application_name": "fragment-connector",
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,
}


class _Corrupt(Exception):
    """What `PRAGMA quick_check` found wrong with a SQLite file."""


_CORRUPT_WORDS = ("file is not a database", "malformed", "corrupt", "quick_check")


def _corrupt(exc: BaseException) -> bool:
    """Whether a SQLite error says the file is damaged (not busy, not missing, not read-only)."""
    text = str(exc).lower()
    return isinstance(exc, sa.exc.DatabaseError) and any(w in text for w in _CORRUPT_WORDS)


def _move_aside(path: Path) -> Path:
    """Rename a damaged state file (and its journal files) out of the way; return its new name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.rename(kept)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(kept.with_name(kept.name + suffix))
    return kept


def database_url(url: str) -> URL:
    """`state.url` as SQLAlchemy takes it; `postgresql://` (or `postgres://`) means psycopg 3."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # Masked: the malformed URL still holds the password, and this message is printed.
        shown = mask_url_password(url)
        raise ConfigError(f"state.url is not a database URL: {shown!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file `url` names when it does not exist yet (read-only commands then have
    nothing to read, and must not create it); None otherwise."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def is_postgres(url: URL) -> bool:
    """Whether the URL names a PostgreSQL database (where several replicas can share state)."""
    return url.get_backend_name() == "postgresql"


def _async_engine(parsed: URL) -> AsyncEngine:
    if is_postgres(parsed):
        # psycopg 3 is async itself: the same libpq settings as the leases' connections.
        return create_async_engine(parsed, connect_args=POSTGRES_CONNECT_ARGS, pool_pre_ping=True)
    if parsed.get_backend_name() == "sqlite":
        # One connection, so the store's transactions queue as they did when every call held
        # the loop: concurrent SQLite writers would wait on the file lock and time out instead.
        return create_async_engine(
            parsed.set(drivername="sqlite+aiosqlite"),
            pool_size=1,
            max_overflow=0,
            pool_timeout=600,
        )
    return create_async_engine(parsed)


class Database:
    """The store's engine: opened (schema checked, store claimed), then one transaction a call."""

    def __init__(self, url: str, *, instance: str) -> None:
        parsed = database_url(url)
        self.instance = instance
        self.file: Path | None = None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self.file = Path(parsed.database)
        self.postgres = is_postgres(parsed)
        self._parsed = parsed
        self.insert: Any = postgresql.insert if self.postgres else sqlite.insert
        self.engine: AsyncEngine | None = None

    async def open(self) -> None:
        """Create the engine and the tables, or rebuild them when their shape is older."""
        try:
            if self.file is not None:
                self.file.parent.mkdir(parents=True, exist_ok=True)
            self.engine = _async_engine(self._parsed)
            try:
                await self._migrate()
            except sa.exc.DatabaseError as exc:
                if self.file is None or not _corrupt(exc):
                    raise
                # A cache: a damaged file is moved aside (kept for a post-mortem) and rebuilt,
                # as a lost one is.
                await self.engine.dispose()
                kept = _move_aside(self.file)
                log.warning("state.corrupt_file_moved_aside", file=str(self.file), kept=str(kept))
                await self._migrate()
        except (ConfigError, StateError):
            await self.close()
            raise
        except (SQLAlchemyError, ImportError, OSError) as exc:
            await self.close()
            raise StateError(f"cannot open the state store: {self._why(exc)}") from None

    async def close(self) -> None:
        """Release the database connections."""
        if self.engine is not None:
            await self.engine.dispose()

    def _why(self, exc: BaseException) -> str:
        """An error's text, or what it means when the SQLite file went away under us."""
        if self.file is not None and not self.file.exists():
            # SQLite says "attempt to write a readonly database" when its file was deleted.
            return (
                f"the state file {self.file} was deleted or moved during the run "
                "(the store is a cache: the next run rebuilds it)"
            )
        if self.file is not None and _corrupt(exc):
            return f"the state file {self.file} is damaged (the next run moves it aside): {exc}"
        return str(exc)

    @contextlib.asynccontextmanager
    async def read(self, what: str) -> AsyncIterator[AsyncConnection]:
        """A connection to read with; a database error becomes `StateError("cannot {what}")`."""
        assert self.engine is not None, "the store is not open"
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StateError(f"cannot {what}: {self._why(exc)}") from None

    @contextlib.asynccontextmanager
    async def write(self, what: str) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed at the end of the block; errors as in `read`."""
        assert self.engine is not None, "the store is not open"
        try:
            async with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StateError(f"cannot {what}: {self._why(exc)}") from None

    async def _migrate(self) -> None:
        """Create the tables, or rebuild them when their shape is older; claim the store."""
        assert self.engine is not None
        async with self.engine.begin() as conn:
            if self.file is not None:
                # A file truncated mid-page opens fine and fails later, mid-cycle: check it now.
                verdict = (await conn.exec_driver_sql("PRAGMA quick_check")).scalar()
                if verdict != "ok":
                    raise sa.exc.DatabaseError("PRAGMA quick_check", None, _Corrupt(str(verdict)))
            if self.postgres:
                # Replicas starting together would race on CREATE TABLE: one checks, the others
                # wait for its transaction, then find the schema in place.
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            await conn.run_sync(metadata.create_all)
            found = {row.key: row.value for row in await conn.execute(sa.select(meta))}
            owner = found.get("instance")
            if owner is not None and owner != self.instance:
                raise ConfigError(
                    f"the state store at state.url belongs to connector.instance {owner!r}, "
                    f"not {self.instance!r}: give each instance its own database or schema"
                )
            stored = found.get("schema")
            if stored is not None and stored.isdigit() and int(stored) > int(SCHEMA_VERSION):
                # A newer release shares this store: rebuilding it to our older shape would break
                # that release's replicas (and it would rebuild it back, again and again).
                raise StateError(
                    f"the state store has schema {stored}, newer than this release's "
                    f"{SCHEMA_VERSION}: run the newer release (replicas are being upgraded?)"
                )
            if stored != SCHEMA_VERSION:
                await conn.run_sync(metadata.drop_all)
                await conn.run_sync(metadata.create_all)
                found = {}
            claims = [
                {"key": key, "value": value}
                for key, value in (("schema", SCHEMA_VERSION), ("instance", self.instance))
                if key not in found
            ]
            if claims:
                await conn.execute(sa.insert(meta), claims)
            await move_watermarks(conn)


async def move_watermarks(conn: AsyncConnection) -> None:
    """Move watermarks kept as `fragment:{source}` cursors (before fc_watermarks) to their table.

    Such a row exists after an older release ran on this store (source names hold no colon), so
    it is the newest watermark of its source and replaces the table's.
    """
    old = await conn.execute(
        sa.select(cursors.c.source, cursors.c.cursor).where(
            cursors.c.source.startswith(_OLD_WATERMARK, autoescape=True)
        )
    )
    rows = [(name.removeprefix(_OLD_WATERMARK), text) for name, text in old]
    if not rows:
        return
    for source, text in rows:
        try:
            data = json.loads(text)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        stamps = {
            key: stamp.isoformat() if (stamp := parse_timestamp(data.get(key))) else None
            for key in ("seen", "full_at", "checked_at")
        }
        await conn.execute(sa.delete(watermarks).where(watermarks.c.source == source))
        await conn.execute(sa.insert(watermarks), [{"source": source, **stamps}])
    await conn.execute(
        sa.delete(cursors).where(cursors.c.source.in_([_OLD_WATERMARK + s for s, _ in rows]))
    )
    log.info("state.watermarks_moved", sources=len(rows))
