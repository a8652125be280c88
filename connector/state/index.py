"""The task index: per task of the connector, Fragment's last view of it (the mirror's rows).

Listing only open tasks is what keeps a cycle cheap, but then a task an operator closed is
invisible, and a blind `PUT` would reopen it. The index remembers, per uid, the status and who
closed it, from every listing and every write, so such a ticket is recognised without a request.
It is a cache, never the truth: with the store lost, the cycle asks Fragment about the uids it
does not know (`POST /tasks/query`) and rebuilds it as it goes. While its census holds
(`connector.state.census`), a uid it does not know is one Fragment never held.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from connector.identity import Markers, closed_by_connector
from connector.models import Task, TaskDigest, TaskStatus
from connector.state import census as _census
from connector.state.census import Census
from connector.state.database import Database
from connector.state.schema import task_index
from connector.values import parse_timestamp, task_digest

_CHUNK = 500
_Item = TypeVar("_Item")
UNSEEN = "UNSEEN"  # status of a mirror entry Fragment no longer lists as open
_OPEN_VALUES = (TaskStatus.TODO.value, TaskStatus.STARTED.value)
_READ = "read the task index"
_WRITE = "write the task index"


def _storable(text: str, limit: int) -> str:
    """Text any database keeps: PostgreSQL refuses NUL in text, and the column has a length.

    A task's ticket id is whatever Fragment holds in its marker field; one odd task must not
    make the store refuse the cycle (snapshots never carry such ids: they are invalid records).
    """
    return text.replace("\x00", "\ufffd")[:limit]


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _row_chunks(
    items: Iterable[_Item], row: Callable[[_Item], dict[str, Any]]
) -> Iterator[list[dict[str, Any]]]:
    """Rows built a chunk at a time: a 100k backlog's rows at once would weigh 40 MB more."""
    pending = iter(items)
    while chunk := [row(item) for item in itertools.islice(pending, _CHUNK)]:
        yield chunk


async def _present(conn: AsyncConnection, uids: set[str]) -> int:
    """How many of these uids have a row (those that do not are about to be inserted)."""
    query = sa.select(sa.func.count()).where(task_index.c.uid.in_(uids))
    return int((await conn.execute(query)).scalar_one())


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


class TaskIndex:
    """The task index (`fc_task_index`); every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lookup(self, uids: Iterable[str]) -> dict[str, IndexEntry]:
        """The index entries of these uids (unknown uids are absent)."""
        found: dict[str, IndexEntry] = {}
        async with self._db.read(_READ) as conn:
            for chunk in _chunks(list(uids)):
                rows = await conn.execute(sa.select(task_index).where(task_index.c.uid.in_(chunk)))
                for row in rows:
                    found[row.uid] = IndexEntry(
                        uid=row.uid,
                        source=row.source,
                        ticket_id=row.ticket_id,
                        status=None if row.status == UNSEEN else TaskStatus(row.status),
                        closed_by_connector=bool(row.closed_by_connector),
                        done_at=parse_timestamp(row.done_at),
                    )
        return found

    async def remember(
        self, source: str, tasks: Iterable[tuple[Task, str]], markers: Markers
    ) -> None:
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

        statement = self._db.insert(task_index)
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
        await self._write_rows(source, statement, _row_chunks(tasks, lambda pair: row(*pair)))

    async def expect(self, source: str, creates: Iterable[tuple[str, str]]) -> None:
        """Before creates are sent: a row for each (uid, ticket id) that has none, state unknown.

        The census takes a uid with no row for one Fragment never held; a create whose answer
        is lost, or that listings do not show yet, must not pass for that. Such a row is asked
        about like any task of unknown state, and the create's answer replaces it; a create
        never sent is forgotten again.
        """

        def row(uid: str, ticket_id: str) -> dict[str, Any]:
            return {
                "uid": uid,
                "source": source,
                "ticket_id": _storable(ticket_id, 512),
                "status": UNSEEN,
                "closed_by_connector": False,
            }

        statement = self._db.insert(task_index).on_conflict_do_nothing(
            index_elements=[task_index.c.uid]
        )
        await self._write_rows(source, statement, _row_chunks(creates, lambda pair: row(*pair)))

    async def _write_rows(
        self, source: str, statement: Any, chunks: Iterator[list[dict[str, Any]]]
    ) -> None:
        """Write rows of a source in one transaction; those it adds count in its census."""
        chunk = next(chunks, None)
        if chunk is None:
            return
        async with self._db.write(_WRITE) as conn:
            added = 0
            while chunk is not None:
                uids = {r["uid"] for r in chunk}
                added += len(uids) - await _present(conn, uids)
                await conn.execute(statement, chunk)
                chunk = next(chunks, None)
            await _census.count(conn, {source: added})

    async def digests(self, source: str) -> dict[str, TaskDigest]:
        """The source's tasks the mirror last saw open: uid -> digest."""
        columns = task_index.c
        query = sa.select(columns.uid, columns.status, columns.digest, columns.due_at).where(
            columns.source == source, columns.status.in_(_OPEN_VALUES)
        )
        async with self._db.read(_READ) as conn:
            return {
                uid: TaskDigest(TaskStatus(status), digest, due_at)
                for uid, status, digest, due_at in await conn.execute(query)
                if digest is not None
            }

    async def tasks(self, uids: Iterable[str]) -> dict[str, Task]:
        """These tasks as Fragment last showed them (those unknown or unseen are absent)."""
        columns = task_index.c
        found: dict[str, Task] = {}
        async with self._db.read(_READ) as conn:
            for chunk in _chunks(list(uids)):
                query = sa.select(task_index).where(
                    columns.uid.in_(chunk), columns.fields.is_not(None)
                )
                for row in await conn.execute(query):
                    found[row.uid] = Task(
                        uid=row.uid,
                        status=TaskStatus(row.status),
                        fields=json.loads(row.fields),
                        due_at=parse_timestamp(row.due_at),
                        updated_at=parse_timestamp(row.updated_at),
                        done_at=parse_timestamp(row.done_at),
                    )
        return found

    async def mark_unseen(self, source: str, seen: set[str]) -> int:
        """After a full listing of open tasks: those the mirror had open but Fragment did not
        list are no longer known to be open (closed or deleted there); returns how many."""
        columns = task_index.c
        query = sa.select(columns.uid).where(
            columns.source == source, columns.status.in_(_OPEN_VALUES)
        )
        async with self._db.write(_WRITE) as conn:
            stale = [row.uid for row in await conn.execute(query) if row.uid not in seen]
            for chunk in _chunks(stale):
                await conn.execute(
                    sa.update(task_index)
                    .where(columns.uid.in_(chunk))
                    .values(status=UNSEEN, fields=None, digest=None)
                )
        return len(stale)

    async def misses(self, source: str) -> dict[str, int]:
        """The tasks whose ticket was missing from the last snapshot(s): uid -> count."""
        columns = task_index.c
        query = sa.select(columns.uid, columns.misses).where(
            columns.source == source, columns.misses > 0
        )
        async with self._db.read(_READ) as conn:
            return {row.uid: row.misses for row in await conn.execute(query)}

    async def set_misses(self, source: str, counts: Mapping[str, int]) -> None:
        """After a complete snapshot: these counts, and zero for every other task of the source."""
        columns = task_index.c
        async with self._db.write(_WRITE) as conn:
            await conn.execute(
                sa.update(task_index)
                .where(columns.source == source, columns.misses > 0)
                .values(misses=0)
            )
            for uid, count in counts.items():
                await conn.execute(
                    sa.update(task_index).where(columns.uid == uid).values(misses=count)
                )

    async def sources(self) -> dict[str, int]:
        """Every source the index holds tasks of, with how many it last saw open."""
        columns = task_index.c
        query = (
            sa.select(columns.source, sa.func.count())
            .where(columns.status.in_(_OPEN_VALUES))
            .group_by(columns.source)
        )
        async with self._db.read(_READ) as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}

    async def count_open(self, source: str) -> int:
        """How many of a source's tasks the index last saw open."""
        query = sa.select(sa.func.count()).where(
            task_index.c.source == source, task_index.c.status.in_(_OPEN_VALUES)
        )
        async with self._db.read(_READ) as conn:
            return int((await conn.execute(query)).scalar_one())

    async def count_known(self, source: str) -> int:
        """How many of a source's tasks the index holds, in any status."""
        async with self._db.read(_READ) as conn:
            return await _census.rows_of(conn, source)

    async def managed(self, uids: Iterable[str]) -> dict[str, frozenset[str]]:
        """The keys the connector last wrote to these tasks (unknown: absent)."""
        columns = task_index.c
        found: dict[str, frozenset[str]] = {}
        async with self._db.read(_READ) as conn:
            for chunk in _chunks(list(uids)):
                query = sa.select(columns.uid, columns.managed).where(
                    columns.uid.in_(chunk), columns.managed.is_not(None)
                )
                for uid, managed in await conn.execute(query):
                    found[uid] = frozenset(json.loads(managed))
        return found

    async def due_written(self, source: str) -> set[str]:
        """The source's tasks whose last write from the connector gave them a due date."""
        columns = task_index.c
        query = sa.select(columns.uid).where(
            columns.source == source, columns.managed.like('%"due_at"%')
        )
        async with self._db.read(_READ) as conn:
            return {uid for (uid,) in await conn.execute(query)}

    async def set_managed(self, managed: Mapping[str, Iterable[str]]) -> None:
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
        async with self._db.write(_WRITE) as conn:
            for start in range(0, len(rows), _CHUNK):
                await conn.execute(statement, rows[start : start + _CHUNK])

    async def forget(self, uids: Iterable[str]) -> None:
        """Drop index entries (a task that Fragment no longer knows)."""
        columns = task_index.c
        async with self._db.write(_WRITE) as conn:
            removed: Counter[str] = Counter()
            for chunk in _chunks(list(uids)):
                query = (
                    sa.select(columns.source, sa.func.count())
                    .where(columns.uid.in_(chunk))
                    .group_by(columns.source)
                )
                for source, rows in await conn.execute(query):
                    removed[source] -= rows
                await conn.execute(sa.delete(task_index).where(columns.uid.in_(chunk)))
            await _census.count(conn, removed)

    # --- the census (connector.state.census): whether a uid with no row was never in Fragment

    async def census(self, source: str) -> Census | None:
        """The source's census (None: none), with the index's row count to check it against."""
        async with self._db.read(_READ) as conn:
            return await _census.read(conn, source)

    async def certify(self, source: str, complete: datetime) -> None:
        """After a listing in every status, read to its end, that started at `complete`."""
        async with self._db.write(_WRITE) as conn:
            await _census.certify(conn, source, complete)

    async def advance_census(self, source: str, complete: datetime) -> None:
        """After a listing of changes, read to its end, that started at `complete` and read
        from no later than the census's instant."""
        async with self._db.write(_WRITE) as conn:
            await _census.advance(conn, source, complete)

    async def drop_census(self, source: str) -> None:
        """Void the source's census (its index lost rows behind the connector's back)."""
        async with self._db.write(_WRITE) as conn:
            await _census.drop(conn, source)
