"""What a state-store call costs the event loop, and what it costs in time, three ways.

    python benchmarks/state_loop.py [--rows 20000] [--postgres postgresql://postgres@127.0.0.1/test]

The daemon's event loop also runs the lease heartbeat and answers /healthz, so a store call must
not hold it. Compared, on SQLite (a file) and PostgreSQL:

- `sync`: the blocking engine called from a coroutine (the store before issue 20);
- `thread`: the blocking engine in a worker thread (`asyncio.to_thread`);
- `asyncio`: SQLAlchemy's asyncio engine (aiosqlite; psycopg 3's async connection).

Prints, per database and way: the longest gap of a coroutine ticking every 5 ms while one slow
statement runs (PostgreSQL `pg_sleep(0.5)`; SQLite, a write that waits 0.5 s for another
connection's lock), then the time to upsert `--rows` index-like rows in chunks of 500 and to
read them back (into an emptied table, so every way inserts).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

TICK = 0.005
SLOW = 0.5

metadata = sa.MetaData()
rows_table = sa.Table(
    "bench_rows",
    metadata,
    sa.Column("uid", sa.String(36), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("fields", sa.Text),
)


async def longest_gap(work: Awaitable[Any]) -> float:
    """The longest time a 5 ms ticker waited for the loop while `work` ran."""
    gaps: list[float] = []
    finished = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not finished.is_set():
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            gaps.append(now - last - TICK)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(TICK * 2)
    await work
    finished.set()
    await ticking
    return max(gaps)


def sqlite_lock(path: Path) -> Callable[[], None]:
    """Hold the file's write lock for SLOW seconds from another connection (a slow disk)."""
    holder = sqlite3.connect(path, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")

    def release() -> None:
        time.sleep(SLOW)
        holder.commit()
        holder.close()

    return lambda: threading.Thread(target=release).start()


def rows(count: int) -> list[dict[str, Any]]:
    return [
        {"uid": f"{i:036d}", "source": "s", "fields": '{"title":"x"}' * 8} for i in range(count)
    ]


def upsert(dialect: str) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(rows_table)
    return statement.on_conflict_do_update(
        index_elements=[rows_table.c.uid], set_={"fields": statement.excluded.fields}
    )


async def measure(name: str, url: str, slow: str, count: int, file: Path | None) -> None:
    sync_engine = sa.create_engine(url)
    async_url = url.replace("sqlite://", "sqlite+aiosqlite://")
    async_engine = create_async_engine(async_url)
    with sync_engine.begin() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)
    batch = rows(count)
    statement = upsert(sync_engine.dialect.name)

    def sync_slow() -> None:
        with sync_engine.begin() as conn:
            conn.exec_driver_sql(slow)

    def sync_bulk() -> int:
        with sync_engine.begin() as conn:
            conn.execute(sa.delete(rows_table))
            for start in range(0, count, 500):
                conn.execute(statement, batch[start : start + 500])
        with sync_engine.connect() as conn:
            return len(list(conn.execute(sa.select(rows_table))))

    async def async_slow() -> None:
        async with async_engine.begin() as conn:
            await conn.exec_driver_sql(slow)

    async def async_bulk() -> int:
        async with async_engine.begin() as conn:
            await conn.execute(sa.delete(rows_table))
            for start in range(0, count, 500):
                await conn.execute(statement, batch[start : start + 500])
        async with async_engine.connect() as conn:
            return len(list(await conn.execute(sa.select(rows_table))))

    async def on_loop(fn: Callable[[], Any]) -> Any:
        return fn()

    ways: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = {
        "sync": (lambda: on_loop(sync_slow), lambda: on_loop(sync_bulk)),
        "thread": (lambda: asyncio.to_thread(sync_slow), lambda: asyncio.to_thread(sync_bulk)),
        "asyncio": (async_slow, async_bulk),
    }
    for way, (slow_call, bulk_call) in ways.items():
        # Warm: connections opened, so the figures are the calls' own.
        await slow_call() if file is None else await bulk_call()
        if file is not None:
            sqlite_lock(file)()
        gap = await longest_gap(slow_call())
        began = time.perf_counter()
        read = await bulk_call()
        took = time.perf_counter() - began
        print(
            f"{name:10} {way:8} loop stalled {gap * 1000:7.1f} ms during a {SLOW:.1f} s wait; "
            f"{count} rows upserted + read in {took:.2f} s ({read} read)"
        )
    with sync_engine.begin() as conn:
        metadata.drop_all(conn)
    sync_engine.dispose()
    await async_engine.dispose()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "state.db"
        await measure(
            "sqlite", f"sqlite:///{file}", "UPDATE bench_rows SET source = source", args.rows, file
        )
    await measure("postgresql", args.postgres, f"SELECT pg_sleep({SLOW})", args.rows, None)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
