"""The connector's local memory: task index, incremental cursors and run history (SQL database).

Listing only open tasks is what keeps a cycle cheap, but then a task an operator closed is
invisible, and a blind `PUT` would reopen it. The index remembers, per uid, the status and who
closed it, from every listing and every write, so such a ticket is recognised without a request.
It is a cache, never the truth: with the file lost, the cycle asks Fragment about the uids it
does not know (`POST /tasks/query`) and rebuilds it as it goes. The same store keeps each
source's incremental cursor (written only once its changes were applied) and a short history of
runs for `fragment-connector status`, and the last plan of each source for the status page;
losing those is harmless too.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from connector.errors import ConfigError, StateError
from connector.identity import Markers, closed_by_connector
from connector.models import Task, TaskDigest, TaskStatus
from connector.progress import ProgressSnapshot
from connector.redaction import REDACTOR, mask_url_password
from connector.values import parse_timestamp, task_digest

log = structlog.get_logger(__name__)

_CHUNK = 500


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


def _storable(text: str, limit: int) -> str:
    """Text any database keeps: PostgreSQL refuses NUL in text, and the column has a length.

    A task's ticket id is whatever Fragment holds in its marker field; one odd task must not
    make the store refuse the cycle (snapshots never carry such ids: they are invalid records).
    """
    return text.replace("\x00", "\ufffd")[:limit]


metadata = sa.MetaData()

task_index = sa.Table(
    "fc_task_index",
    metadata,
    sa.Column("uid", sa.String(36), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False, index=True),
    sa.Column("ticket_id", sa.String(512), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("closed_by_connector", sa.Boolean, nullable=False, default=False),
    sa.Column("done_at", sa.String(32)),
    sa.Column("updated_at", sa.String(32)),
    # Fragment's view of the task's fields (canonical JSON), their digest and its due date: the
    # mirror that lets a cycle read only what changed in Fragment since the last one, and plan an
    # unchanged task from its digest alone.
    sa.Column("fields", sa.Text),
    sa.Column("digest", sa.LargeBinary(16)),
    sa.Column("due_at", sa.String(32)),
    # Consecutive complete snapshots the task's ticket was missing from (guards.close_after_misses).
    sa.Column("misses", sa.Integer, nullable=False, default=0),
    # The keys the connector last wrote to the task (a JSON list, `due_at` included when it wrote
    # one): those the ticket no longer has are cleared, the operators' own fields never.
    sa.Column("managed", sa.Text),
)

meta = sa.Table(
    "fc_meta",
    metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
)

# Bumped when a table changes shape; an older store is dropped and rebuilt (it is a cache).
SCHEMA_VERSION = "5"

# The pg_advisory_xact_lock key (a bigint) that serialises the schema check of starting replicas.
_MIGRATION_LOCK = 0x46435F534348454D  # "FC_SCHEM"

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


cursors = sa.Table(
    "fc_cursors",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("cursor", sa.Text, nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)

runs = sa.Table(
    "fc_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("source", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("started_at", sa.String(32), nullable=False),
    sa.Column("finished_at", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(48), nullable=False),
    sa.Column("counts", sa.Text, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("replica", sa.String(128)),
)

# The running cycle of each source, as its process last reported it (connector.progress): what
# `status` and `/readyz` show while a long first import runs. One row per source; a row whose
# `updated_at` stops moving belongs to a process that died mid-cycle.
progress = sa.Table(
    "fc_progress",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
    sa.Column("document", sa.Text, nullable=False),
)

# The last plan of each source and kind of cycle, as the daemon recorded it (connector.status):
# its actions with their reasons, the refusals waiting for a human, the skipped records. Every
# replica reads it, so the status page shows the same picture whichever replica serves it. A
# table added in place of a bump of SCHEMA_VERSION: `create_all` adds it to an older store, whose
# task index (a full re-listing to rebuild) stays, and an older release ignores it.
plans = sa.Table(
    "fc_plans",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.String(32), nullable=False),
    sa.Column("document", sa.Text, nullable=False),
)

HISTORY_PER_SOURCE = 50
UNSEEN = "UNSEEN"  # status of a mirror entry Fragment no longer lists as open
_OPEN_VALUES = (TaskStatus.TODO.value, TaskStatus.STARTED.value)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One past cycle of one source."""

    run_id: str
    source: str
    kind: str
    started_at: datetime
    finished_at: datetime
    outcome: str
    counts: dict[str, int]
    requests: int
    error: str | None
    replica: str | None = None  # host:pid of the daemon that ran it (None: a one-shot command)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the index remembers of one task."""

    uid: str
    source: str
    ticket_id: str
    status: TaskStatus | None  # None: Fragment stopped listing it as open, state unknown
    closed_by_connector: bool
    done_at: datetime | None

    def as_task(self, markers: Markers) -> Task:
        """A Task carrying just enough (markers, status, close time) for the plan to decide."""
        fields: dict[str, str] = {markers.source: self.source, markers.ticket_id: self.ticket_id}
        if self.closed_by_connector:
            fields[markers.closed_by] = "connector"
        status = self.status or TaskStatus.DONE
        return Task(uid=self.uid, status=status, fields=fields, done_at=self.done_at)


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


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


class StateStore:
    """The task index in a SQL database; every method is one short transaction.

    A store belongs to one `connector.instance`: the task index is keyed by source name, so two
    instances sharing one would read each other's tasks. Opening another instance's store is a
    configuration error.
    """

    def __init__(self, url: str, *, instance: str) -> None:
        parsed = database_url(url)
        self.instance = instance
        self._file: Path | None = None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self._file = Path(parsed.database)
            self._file.parent.mkdir(parents=True, exist_ok=True)
        self._postgres = is_postgres(parsed)
        connect_args = POSTGRES_CONNECT_ARGS if self._postgres else {}
        try:
            self._engine = sa.create_engine(
                parsed, connect_args=connect_args, pool_pre_ping=self._postgres
            )
            try:
                self._migrate()
            except sa.exc.DatabaseError as exc:
                if self._file is None or not _corrupt(exc):
                    raise
                # A cache: a damaged file is moved aside (kept for a post-mortem) and rebuilt,
                # as a lost one is.
                self._engine.dispose()
                kept = _move_aside(self._file)
                log.warning("state.corrupt_file_moved_aside", file=str(self._file), kept=str(kept))
                self._migrate()
        except (ConfigError, StateError):
            self._engine.dispose()
            raise
        except (SQLAlchemyError, ImportError, OSError) as exc:
            raise StateError(f"cannot open the state store: {self._why(exc)}") from None
        self._insert: Any = postgresql.insert if self._postgres else sqlite.insert

    def _why(self, exc: BaseException) -> str:
        """An error's text, or what it means when the SQLite file went away under us."""
        if self._file is not None and not self._file.exists():
            # SQLite says "attempt to write a readonly database" when its file was deleted.
            return (
                f"the state file {self._file} was deleted or moved during the run "
                "(the store is a cache: the next run rebuilds it)"
            )
        if self._file is not None and _corrupt(exc):
            return f"the state file {self._file} is damaged (the next run moves it aside): {exc}"
        return str(exc)

    def _migrate(self) -> None:
        """Create the tables, or rebuild them when their shape is older; claim the store."""
        with self._engine.begin() as conn:
            if self._file is not None:
                # A file truncated mid-page opens fine and fails later, mid-cycle: check it now.
                verdict = conn.exec_driver_sql("PRAGMA quick_check").scalar()
                if verdict != "ok":
                    raise sa.exc.DatabaseError("PRAGMA quick_check", None, _Corrupt(str(verdict)))
            if self._postgres:
                # Replicas starting together would race on CREATE TABLE: one checks, the others
                # wait for its transaction, then find the schema in place.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            metadata.create_all(conn)
            found = {row.key: row.value for row in conn.execute(sa.select(meta))}
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
                metadata.drop_all(conn)
                metadata.create_all(conn)
                found = {}
            claims = [
                {"key": key, "value": value}
                for key, value in (("schema", SCHEMA_VERSION), ("instance", self.instance))
                if key not in found
            ]
            if claims:
                conn.execute(sa.insert(meta), claims)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def lookup(self, uids: Iterable[str]) -> dict[str, IndexEntry]:
        """The index entries of these uids (unknown uids are absent)."""
        wanted = list(uids)
        found: dict[str, IndexEntry] = {}
        try:
            with self._engine.connect() as conn:
                for chunk in _chunks(wanted):
                    rows = conn.execute(sa.select(task_index).where(task_index.c.uid.in_(chunk)))
                    for row in rows:
                        found[row.uid] = IndexEntry(
                            uid=row.uid,
                            source=row.source,
                            ticket_id=row.ticket_id,
                            status=None if row.status == UNSEEN else TaskStatus(row.status),
                            closed_by_connector=bool(row.closed_by_connector),
                            done_at=parse_timestamp(row.done_at),
                        )
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the task index: {self._why(exc)}") from None
        return found

    def remember(self, source: str, tasks: Iterable[tuple[Task, str]], markers: Markers) -> None:
        """Record (task, ticket id) pairs as Fragment last showed them."""

        def row(task: Task, ticket_id: str) -> dict[str, Any]:
            digest = task_digest(task)
            return {
                "uid": task.uid,
                "source": source,
                "ticket_id": _storable(ticket_id, 512),
                "status": task.status.value,
                "closed_by_connector": closed_by_connector(task, markers),
                "done_at": task.done_at.isoformat() if task.done_at else None,
                "updated_at": task.updated_at.isoformat() if task.updated_at else None,
                "fields": json.dumps(task.fields, sort_keys=True, separators=(",", ":")),
                "digest": digest.fields,
                "due_at": digest.due_at,
            }

        statement = self._insert(task_index)
        statement = statement.on_conflict_do_update(
            index_elements=[task_index.c.uid],
            set_={
                name: statement.excluded[name]
                for name in (
                    "status",
                    "closed_by_connector",
                    "done_at",
                    "updated_at",
                    "fields",
                    "digest",
                    "due_at",
                )
            },
        )
        pending = iter(tasks)
        try:
            with self._engine.begin() as conn:
                # Rows are built a chunk at a time: 100k of them at once would double the memory
                # a large backlog already takes.
                while chunk := [row(t, i) for t, i in itertools.islice(pending, _CHUNK)]:
                    conn.execute(statement, chunk)
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the task index: {self._why(exc)}") from None

    def digests(self, source: str) -> dict[str, TaskDigest]:
        """The source's tasks the mirror last saw open: uid -> digest."""
        columns = task_index.c
        query = sa.select(columns.uid, columns.status, columns.digest, columns.due_at).where(
            columns.source == source, columns.status.in_(_OPEN_VALUES)
        )
        try:
            with self._engine.connect() as conn:
                return {
                    uid: TaskDigest(TaskStatus(status), digest, due_at)
                    for uid, status, digest, due_at in conn.execute(query)
                    if digest is not None
                }
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the task index: {self._why(exc)}") from None

    def tasks(self, uids: Iterable[str]) -> dict[str, Task]:
        """These tasks as Fragment last showed them (those unknown or unseen are absent)."""
        columns = task_index.c
        found: dict[str, Task] = {}
        try:
            with self._engine.connect() as conn:
                for chunk in _chunks(list(uids)):
                    query = sa.select(task_index).where(
                        columns.uid.in_(chunk), columns.fields.is_not(None)
                    )
                    for row in conn.execute(query):
                        found[row.uid] = Task(
                            uid=row.uid,
                            status=TaskStatus(row.status),
                            fields=json.loads(row.fields),
                            due_at=parse_timestamp(row.due_at),
                            updated_at=parse_timestamp(row.updated_at),
                            done_at=parse_timestamp(row.done_at),
                        )
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the task index: {self._why(exc)}") from None
        return found

    def mark_unseen(self, source: str, seen: set[str]) -> int:
        """After a full listing of open tasks: those the mirror had open but Fragment did not
        list are no longer known to be open (closed or deleted there); returns how many."""
        columns = task_index.c
        query = sa.select(columns.uid).where(
            columns.source == source, columns.status.in_(_OPEN_VALUES)
        )
        try:
            with self._engine.begin() as conn:
                stale = [row.uid for row in conn.execute(query) if row.uid not in seen]
                for chunk in _chunks(stale):
                    conn.execute(
                        sa.update(task_index)
                        .where(columns.uid.in_(chunk))
                        .values(status=UNSEEN, fields=None, digest=None)
                    )
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the task index: {self._why(exc)}") from None
        return len(stale)

    def misses(self, source: str) -> dict[str, int]:
        """The tasks whose ticket was missing from the last snapshot(s): uid -> count."""
        columns = task_index.c
        query = sa.select(columns.uid, columns.misses).where(
            columns.source == source, columns.misses > 0
        )
        try:
            with self._engine.connect() as conn:
                return {row.uid: row.misses for row in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the task index: {self._why(exc)}") from None

    def set_misses(self, source: str, counts: Mapping[str, int]) -> None:
        """After a complete snapshot: these counts, and zero for every other task of the source."""
        columns = task_index.c
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    sa.update(task_index)
                    .where(columns.source == source, columns.misses > 0)
                    .values(misses=0)
                )
                for uid, count in counts.items():
                    conn.execute(
                        sa.update(task_index).where(columns.uid == uid).values(misses=count)
                    )
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the task index: {self._why(exc)}") from None

    def sources(self) -> dict[str, int]:
        """Every source the index holds tasks of, with how many it last saw open."""
        columns = task_index.c
        query = (
            sa.select(columns.source, sa.func.count())
            .where(columns.status.in_(_OPEN_VALUES))
            .group_by(columns.source)
        )
        try:
            with self._engine.connect() as conn:
                return {row[0]: int(row[1]) for row in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the task index: {self._why(exc)}") from None

    def count_open(self, source: str) -> int:
        """How many of a source's tasks the index last saw open."""
        query = sa.select(sa.func.count()).where(
            task_index.c.source == source, task_index.c.status.in_(_OPEN_VALUES)
        )
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the task index: {self._why(exc)}") from None

    def count_known(self, source: str) -> int:
        """How many of a source's tasks the index holds, in any status."""
        query = sa.select(sa.func.count()).where(task_index.c.source == source)
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the task index: {exc}") from None

    def get_cursor(self, source: str) -> str | None:
        """The incremental cursor stored for a source, if any."""
        try:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(cursors.c.cursor).where(cursors.c.source == source))
                value = row.scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the cursor of {source!r}: {self._why(exc)}") from None
        return value if isinstance(value, str) else None

    def set_cursor(self, source: str, cursor: str | None) -> None:
        """Store (or, with None, drop) a source's incremental cursor."""
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.delete(cursors).where(cursors.c.source == source))
                if cursor is not None:
                    now = datetime.now(UTC).isoformat()
                    conn.execute(
                        sa.insert(cursors),
                        [{"source": source, "cursor": cursor, "updated_at": now}],
                    )
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the cursor of {source!r}: {self._why(exc)}") from None

    def record_run(self, record: RunRecord) -> None:
        """Add a run to the history, keeping the last HISTORY_PER_SOURCE of each source."""
        row = {
            "run_id": record.run_id,
            "source": record.source,
            "kind": record.kind,
            "started_at": record.started_at.isoformat(),
            "finished_at": record.finished_at.isoformat(),
            "outcome": record.outcome,
            "counts": json.dumps(record.counts, sort_keys=True),
            "requests": record.requests,
            # Errors quote servers, and servers echo credentials: the store keeps them scrubbed.
            "error": REDACTOR.scrub(record.error) if record.error else None,
            "replica": record.replica,
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(runs), [row])
                old = conn.execute(
                    sa.select(runs.c.id)
                    .where(runs.c.source == record.source)
                    .order_by(runs.c.id.desc())
                    .offset(HISTORY_PER_SOURCE)
                )
                ids = [r.id for r in old]
                if ids:
                    conn.execute(sa.delete(runs).where(runs.c.id.in_(ids)))
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the run history: {self._why(exc)}") from None

    def recent_runs(self, limit: int = 20, *, source: str | None = None) -> list[RunRecord]:
        """The most recent runs, newest first."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if source is not None:
            query = query.where(runs.c.source == source)
        try:
            with self._engine.connect() as conn:
                rows = list(conn.execute(query))
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the run history: {self._why(exc)}") from None
        return [
            RunRecord(
                run_id=r.run_id,
                source=r.source,
                kind=r.kind,
                started_at=datetime.fromisoformat(r.started_at),
                finished_at=datetime.fromisoformat(r.finished_at),
                outcome=r.outcome,
                counts=json.loads(r.counts),
                requests=r.requests,
                error=r.error,
                replica=r.replica,
            )
            for r in rows
        ]

    def set_progress(self, snapshot: ProgressSnapshot) -> None:
        """Store the figures of a source's running cycle (replacing the previous ones)."""
        row = {
            "source": snapshot.source,
            "run_id": snapshot.run_id,
            "updated_at": snapshot.updated_at.isoformat(),
            "document": json.dumps(snapshot.to_json(), sort_keys=True),
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.delete(progress).where(progress.c.source == snapshot.source))
                conn.execute(sa.insert(progress), [row])
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the progress of {snapshot.source!r}: {exc}") from None

    def clear_progress(self, source: str, run_id: str) -> None:
        """The source's cycle `run_id` ended: drop its figures (not a newer cycle's)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    sa.delete(progress).where(
                        progress.c.source == source, progress.c.run_id == run_id
                    )
                )
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the progress of {source!r}: {exc}") from None

    def running_cycles(self) -> list[ProgressSnapshot]:
        """The cycles running now, by source, as their processes last reported them.

        A snapshot's `updated_at` tells how fresh it is: the heartbeat rewrites it every
        `connector.progress_interval`, so one much older belongs to a process that stopped.
        """
        try:
            with self._engine.connect() as conn:
                rows = list(conn.execute(sa.select(progress).order_by(progress.c.source)))
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the progress of the running cycles: {exc}") from None
        found = []
        for row in rows:
            try:
                found.append(ProgressSnapshot.from_json(json.loads(row.document)))
            except (ValueError, KeyError, TypeError):
                continue  # a row written by another release: not worth failing `status` over
        return found

    def set_last_plan(
        self, source: str, kind: str, *, run_id: str, recorded_at: datetime, document: Any
    ) -> None:
        """Store the plan of a source's latest cycle of that kind (replacing the previous one)."""
        row = {
            "source": source,
            "kind": kind,
            "run_id": run_id,
            "recorded_at": recorded_at.isoformat(),
            "document": json.dumps(document, sort_keys=True),
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.delete(plans).where(plans.c.source == source, plans.c.kind == kind))
                conn.execute(sa.insert(plans), [row])
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the last plan of {source!r}: {exc}") from None

    def last_plans(self) -> dict[tuple[str, str], Any]:
        """The stored last plans: (source, kind) -> the document given to `set_last_plan`."""
        try:
            with self._engine.connect() as conn:
                rows = list(conn.execute(sa.select(plans)))
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the last plans: {exc}") from None
        found: dict[tuple[str, str], Any] = {}
        for row in rows:
            try:
                found[(row.source, row.kind)] = json.loads(row.document)
            except ValueError:
                continue  # a row this release cannot read: not worth failing the page over
        return found

    def managed(self, uids: Iterable[str]) -> dict[str, frozenset[str]]:
        """The keys the connector last wrote to these tasks (unknown: absent)."""
        columns = task_index.c
        found: dict[str, frozenset[str]] = {}
        try:
            with self._engine.connect() as conn:
                for chunk in _chunks(list(uids)):
                    query = sa.select(columns.uid, columns.managed).where(
                        columns.uid.in_(chunk), columns.managed.is_not(None)
                    )
                    for uid, managed in conn.execute(query):
                        found[uid] = frozenset(json.loads(managed))
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the task index: {exc}") from None
        return found

    def due_written(self, source: str) -> set[str]:
        """The source's tasks whose last write from the connector gave them a due date."""
        columns = task_index.c
        query = sa.select(columns.uid).where(
            columns.source == source, columns.managed.like('%"due_at"%')
        )
        try:
            with self._engine.connect() as conn:
                return {uid for (uid,) in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read the task index: {exc}") from None

    def set_managed(self, managed: Mapping[str, Iterable[str]]) -> None:
        """Record the keys just written to these tasks (their index entries exist)."""
        if not managed:
            return
        column = task_index.c
        statement = (
            sa.update(task_index)
            .where(column.uid == sa.bindparam("key"))
            .values(managed=sa.bindparam("keys"))
        )
        rows = [{"key": uid, "keys": json.dumps(sorted(keys))} for uid, keys in managed.items()]
        try:
            with self._engine.begin() as conn:
                for start in range(0, len(rows), _CHUNK):
                    conn.execute(statement, rows[start : start + _CHUNK])
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the task index: {exc}") from None

    def forget(self, uids: Iterable[str]) -> None:
        """Drop index entries (a task that Fragment no longer knows)."""
        try:
            with self._engine.begin() as conn:
                for chunk in _chunks(list(uids)):
                    conn.execute(sa.delete(task_index).where(task_index.c.uid.in_(chunk)))
        except SQLAlchemyError as exc:
            raise StateError(f"cannot write the task index: {self._why(exc)}") from None
