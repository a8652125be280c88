"""The census: the proof that a source's task index holds every task of that source.

A new ticket's uid must be proven absent from Fragment before its create: `PUT` is
create-or-update, and over an operator's DONE task it would reopen it. Asking Fragment
(`POST /tasks/query`) costs a request every cycle that has a new ticket. The census lets the
index be the proof instead:

- a listing of the source's tasks in every status, read to its last page, brings every task
  Fragment held when it started into the index: the census is *certified* at that start;
- a later listing of what changed (`updated_at_after`, every status) that reads from no later
  than the census's instant shows every task created since: the census *advances* to its start;
- the connector's creates are written ahead into the index (`TaskIndex.expect`) before they are
  sent, so a create whose answer was lost, or that a listing does not show yet (Fragment's
  eventual-consistency delay), is never taken for absent;
- every row the connector's own writes add or delete is counted in `rows`, in the same
  transaction: an index whose row count differs lost rows some other way (a partial restore, a
  hand edit), and its census is void.

Under a valid census a uid with no row was never in Fragment. Without one (an older store, a void
one, a listing that did not chain on) the cycle asks Fragment, as it always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from connector.state.schema import index_census, task_index
from connector.values import parse_timestamp


@dataclass(frozen=True, slots=True)
class Census:
    """A source's census as stored, with the index's row count now."""

    complete: datetime  # every task Fragment held before this instant (its clock) has a row
    rows: int  # the rows the connector's own writes left in the index
    found: int  # the rows the index holds now

    @property
    def intact(self) -> bool:
        """Whether the index lost (or gained) no row behind the connector's back."""
        return self.rows == self.found


async def rows_of(conn: AsyncConnection, source: str) -> int:
    """How many rows the task index holds for a source, in any status."""
    query = sa.select(sa.func.count()).where(task_index.c.source == source)
    return int((await conn.execute(query)).scalar_one())


async def read(conn: AsyncConnection, source: str) -> Census | None:
    """The source's census, or None when it has none (or an unreadable one)."""
    columns = index_census.c
    row = (
        await conn.execute(
            sa.select(columns.complete, columns.rows).where(columns.source == source)
        )
    ).first()
    complete = parse_timestamp(row.complete) if row is not None else None
    if row is None or complete is None:
        return None
    return Census(complete=complete, rows=int(row.rows), found=await rows_of(conn, source))


async def certify(conn: AsyncConnection, source: str, complete: datetime) -> None:
    """After a listing in every status that started at `complete`: the index is the proof."""
    await drop(conn, source)
    await conn.execute(
        sa.insert(index_census),
        [
            {
                "source": source,
                "complete": complete.isoformat(),
                "rows": await rows_of(conn, source),
            }
        ],
    )


async def advance(conn: AsyncConnection, source: str, complete: datetime) -> None:
    """After a listing of changes that chained on the census: it now holds up to `complete`."""
    columns = index_census.c
    await conn.execute(
        sa.update(index_census)
        .where(columns.source == source)
        .values(complete=complete.isoformat())
    )


async def drop(conn: AsyncConnection, source: str) -> None:
    """The source has no census any more (a void one)."""
    await conn.execute(sa.delete(index_census).where(index_census.c.source == source))


async def count(conn: AsyncConnection, changes: Mapping[str, int]) -> None:
    """Count rows the connector's writes just added (or, negative, deleted) per source."""
    columns = index_census.c
    for source, change in changes.items():
        if change:
            await conn.execute(
                sa.update(index_census)
                .where(columns.source == source)
                .values(rows=columns.rows + change)
            )
