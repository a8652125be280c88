"""The state store and the source leases on the real PostgreSQL of this machine.

Each test works in a schema of its own (`postgres_state_url`); the leases use a fresh instance name
so that advisory locks of concurrent runs never meet.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from connector.errors import ConfigError, StateError
from connector.identity import Markers
from connector.leases import PostgresLeases, leases_for, lock_id
from connector.models import Task, TaskStatus
from connector.state import SCHEMA_VERSION, RunRecord, StateStore, StoredWatermark, database_url
from tests.conftest import POSTGRES_STATE_URL, require_server

SOURCES = ["s1", "s2", "s3", "s4"]


def execute(url: str, statement: str) -> list[sa.Row[tuple[object, ...]]]:
    """One statement in its own connection (in the test's schema); its rows, if any."""
    engine = sa.create_engine(database_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


async def test_store_round_trip_on_postgresql(postgres_state_url: str) -> None:
    """Index, cursors, watermarks and run history (with the replica that ran it) live in
    PostgreSQL."""
    store = await StateStore.open(postgres_state_url, instance="pg-tests")
    tasks = [(Task(uid=f"u{n}", status=TaskStatus.TODO, fields={}), f"T-{n}") for n in range(1200)]
    await store.index.remember("bo", tasks, Markers())
    await store.cursors.set("bo", "cursor-1")
    now = datetime.now(UTC)
    await store.watermarks.set("bo", StoredWatermark(now, now, None))
    record = RunRecord("r1", "bo", "full", now, now, "ok", {"create": 3}, 4, None, "host:42")
    await store.runs.record(record)
    await store.aclose()

    store = await StateStore.open(postgres_state_url, instance="pg-tests")
    try:
        assert len(await store.index.lookup(f"u{n}" for n in range(1500))) == 1200
        assert await store.index.count_open("bo") == 1200
        assert await store.cursors.get("bo") == "cursor-1"
        assert await store.watermarks.get("bo") == StoredWatermark(now, now, None)
        assert (await store.runs.recent())[0].replica == "host:42"
    finally:
        await store.aclose()
    tables = execute(
        postgres_state_url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )
    assert {row[0] for row in tables} == {
        "fc_task_index",
        "fc_cursors",
        "fc_runs",
        "fc_meta",
        "fc_plans",  # the status page's last plans
        "fc_progress",  # the running cycles' progress (issue 16)
        "fc_watermarks",  # how far the mirror has read Fragment (issue 20)
        "fc_index_census",  # the proof that the index is complete (issue 17)
    }


def test_replicas_starting_together_migrate_once(postgres_state_url: str) -> None:
    """Eight stores opened at the same instant on an empty schema: all open, one schema."""
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_store() -> None:
        barrier.wait()
        try:
            asyncio.run(open_and_close(postgres_state_url, "pg-tests"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = execute(postgres_state_url, "SELECT key, value FROM fc_meta ORDER BY key")
    assert [tuple(r) for r in rows] == [("instance", "pg-tests"), ("schema", SCHEMA_VERSION)]


async def test_an_older_schema_is_rebuilt_and_another_instance_refused(
    postgres_state_url: str,
) -> None:
    """A store of an older shape is rebuilt (it is a cache); another instance's is refused."""
    await open_and_close(postgres_state_url, "pg-tests")
    execute(postgres_state_url, "UPDATE fc_meta SET value = '1' WHERE key = 'schema'")
    execute(postgres_state_url, "INSERT INTO fc_cursors VALUES ('bo', 'old', 'then')")
    store = await StateStore.open(postgres_state_url, instance="pg-tests")
    assert await store.cursors.get("bo") is None
    await store.aclose()

    with pytest.raises(
        ConfigError, match=r"belongs to connector\.instance 'pg-tests', not 'other'"
    ):
        await StateStore.open(postgres_state_url, instance="other")

    # A newer release's store is left alone: no rebuild ping-pong during a rolling upgrade.
    newer = str(int(SCHEMA_VERSION) + 1)
    execute(postgres_state_url, f"UPDATE fc_meta SET value = '{newer}' WHERE key = 'schema'")
    with pytest.raises(StateError, match=f"schema {newer}, newer than this release's"):
        await StateStore.open(postgres_state_url, instance="pg-tests")
    stored = execute(postgres_state_url, "SELECT value FROM fc_meta WHERE key = 'schema'")
    assert stored[0][0] == newer


class LeasePool:
    """Makes PostgresLeases of one fresh instance, and closes every one it made."""

    def __init__(self) -> None:
        self.instance = f"leases-{uuid.uuid4().hex[:8]}"
        self.made: list[PostgresLeases] = []

    def make(self, **options: float) -> PostgresLeases:
        leases = PostgresLeases(
            POSTGRES_STATE_URL, instance=self.instance, sources=SOURCES, **options
        )
        self.made.append(leases)
        return leases

    def lock_sessions(self) -> list[int]:
        """The backend pids holding this instance's presence lock (one per live replica)."""
        rows = execute(
            POSTGRES_STATE_URL,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid::bigint = 0"
            f" AND classid::bigint = {lock_id(f'fragment-connector/{self.instance}')}",
        )
        return [int(row[0]) for row in rows]


@pytest.fixture
async def pool() -> AsyncIterator[LeasePool]:
    """A LeasePool (skipped without PostgreSQL, failed in CI)."""
    require_server("postgres_state", POSTGRES_STATE_URL)
    made = LeasePool()
    yield made
    for leases in made.made:
        await leases.close()


async def acquired(leases: PostgresLeases) -> set[str]:
    return {s for s in SOURCES if await leases.acquire(s)}


async def test_two_replicas_share_the_sources_and_never_both_hold_one(pool: LeasePool) -> None:
    """With two replicas alive each holds its fair share, disjoint; the survivor takes all."""
    a, b = pool.make(), pool.make()
    await a.start()
    await b.start()
    assert len(pool.lock_sessions()) == 2
    held_a = await acquired(a)
    held_b = await acquired(b)
    assert len(held_a) == 2 and len(held_b) == 2
    assert held_a.isdisjoint(held_b)
    assert a.held() == held_a and all(a.holds(s) for s in held_a)
    assert [await a.confirm(s) for s in sorted(held_a)] == [True, True]
    assert not await a.confirm(sorted(held_b)[0])

    await b.close()  # its connection closes: PostgreSQL frees its locks
    assert await acquired(a) == set(SOURCES)


async def test_a_replica_beyond_its_share_hands_sources_over(pool: LeasePool) -> None:
    """Alone, a replica takes every source; once a second one is alive it lets half go."""
    a = pool.make()
    await a.start()
    assert await acquired(a) == set(SOURCES)
    b = pool.make()
    await b.start()
    assert await acquired(b) == set()  # all held by a
    for source in SOURCES:
        await a.settle(source)
    assert len(a.held()) == 2
    assert await acquired(b) == set(SOURCES) - a.held()


async def test_jobs_that_fire_together_take_and_hand_over_only_the_share(
    pool: LeasePool,
) -> None:
    """Every source's job at the same instant (`schedule.jitter: null`): the decision and the count
    are one step, so a replica takes its share, not every source, and hands over the surplus,
    not every source it holds."""
    a, b = pool.make(), pool.make()
    await a.start()
    alone = await asyncio.gather(*(a.acquire(s) for s in SOURCES))
    assert all(alone)
    await b.start()
    await asyncio.gather(*(a.settle(s) for s in SOURCES))
    assert len(a.held()) == len(SOURCES) // 2  # the surplus only
    taken = await asyncio.gather(*(b.acquire(s) for s in SOURCES))
    assert sum(taken) == len(SOURCES) // 2
    assert a.held().isdisjoint(b.held()) and a.held() | b.held() == set(SOURCES)

    c = pool.make()
    await c.start()
    await b.close()
    await a.close()
    d = pool.make()
    await d.start()
    taken = await asyncio.gather(*(c.acquire(s) for s in SOURCES))
    assert sum(taken) == len(SOURCES) // 2  # two replicas alive: half each, at once


async def test_instances_do_not_contend(pool: LeasePool) -> None:
    """Two instances may use one database: their locks live in different key spaces."""
    a = pool.make()
    other = leases_for(POSTGRES_STATE_URL, instance=f"{pool.instance}-2", sources=SOURCES)
    assert isinstance(other, PostgresLeases)
    pool.made.append(other)
    await a.start()
    await other.start()
    assert await acquired(a) == set(SOURCES)
    assert await acquired(other) == set(SOURCES)


async def test_a_lost_connection_drops_every_lease(pool: LeasePool) -> None:
    """The server ends the lock session: the replica holds nothing at its next heartbeat,
    another replica takes over, and the first reconnects by itself as a standby."""
    a = pool.make(heartbeat_s=0.1)
    await a.start()
    assert await acquired(a) == set(SOURCES)
    (session,) = pool.lock_sessions()
    execute(POSTGRES_STATE_URL, f"SELECT pg_terminate_backend({session})")
    for _ in range(100):
        if not a.held() and a.problem() is None:  # lost, then reconnected
            break
        await asyncio.sleep(0.05)
    assert a.held() == frozenset() and a.problem() is None
    assert session not in pool.lock_sessions()
    assert not await a.confirm("s1")

    b = pool.make()
    await b.start()
    assert await acquired(b) == {"s1", "s2"}  # two replicas alive: a share of two
    assert await acquired(a) == {"s3", "s4"}


async def test_the_database_gone_is_a_problem_not_a_crash(pool: LeasePool) -> None:
    """No server at the URL: start() does not raise, nothing is held, problem() says why."""
    leases = PostgresLeases(
        "postgresql://postgres@127.0.0.1:1/test", instance=pool.instance, sources=SOURCES
    )
    pool.made.append(leases)
    await leases.start()
    assert not await leases.acquire("s1")
    assert leases.held() == frozenset()
    problem = leases.problem()
    assert problem is not None and "state database unreachable" in problem


async def test_an_unconfirmed_session_stops_writing_before_the_server_frees_it(
    pool: LeasePool,
) -> None:
    """No answer from the database for `trust_s` (a partition): holds() turns False even
    though nothing failed yet, well before PostgreSQL would free the locks (~25 s)."""
    a = pool.make(heartbeat_s=3600, trust_s=0.3)
    await a.start()
    assert await a.acquire("s1") and a.holds("s1")
    # The server's side of the bargain: it gives up on a silent lock session after 10 + 3 x 5 s.
    settings = [await a._query(f"SHOW tcp_keepalives_{n}") for n in ("idle", "interval", "count")]
    assert settings == ["10", "5", "3"]
    await asyncio.sleep(0.4)
    assert not a.holds("s1")
    assert await a.acquire("s1") and a.holds("s1")  # a successful query confirms it again


class Partition:
    """A TCP relay to PostgreSQL that can stop relaying without closing anything: to both ends
    the network just goes silent, as in a partition."""

    def __init__(self) -> None:
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.upstreams: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    @property
    def url(self) -> str:
        parsed = make_url(POSTGRES_STATE_URL)
        return parsed.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parsed = make_url(POSTGRES_STATE_URL)
        up_reader, up_writer = await asyncio.open_connection(parsed.host, parsed.port)
        self.upstreams.append(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.close()

    def server_gives_up(self) -> None:
        """What PostgreSQL does once its keepalives to the silent replica fail: end the session."""
        for upstream in self.upstreams:
            upstream.close()


async def test_a_partitioned_replica_stops_and_is_replaced_only_once_its_session_ends(
    pool: LeasePool,
) -> None:
    """Partition between a replica and the database: its next confirm fails within the query
    timeout (it stops writing) while its locks stay held, so nobody else starts yet; once the
    server ends the silent session, another replica takes the source."""
    partition = Partition()
    relay = await partition.start()
    try:
        cut_off = PostgresLeases(
            partition.url,
            instance=pool.instance,
            sources=SOURCES,
            heartbeat_s=3600,
            query_timeout_s=1.0,
        )
        pool.made.append(cut_off)
        await cut_off.start()
        assert await cut_off.acquire("s1")

        partition.flowing.clear()
        began = time.monotonic()
        assert not await cut_off.confirm("s1")
        assert time.monotonic() - began < 2.0
        assert cut_off.held() == frozenset()
        problem = cut_off.problem()
        assert problem is not None and "unreachable" in problem

        other = pool.make()
        await other.start()
        assert not await other.acquire("s1")  # the silent session still holds it: no overlap

        partition.server_gives_up()
        for _ in range(100):
            if await other.acquire("s1"):
                break
            await asyncio.sleep(0.05)
        assert other.held() == {"s1"}
    finally:
        partition.flowing.set()
        relay.close()


async def test_last_plans_are_shared_through_postgres(postgres_state_url: str) -> None:
    """One replica's last plan is what another replica's store reads (the status page's data)."""
    writer = await StateStore.open(postgres_state_url, instance="tests")
    reader = await StateStore.open(postgres_state_url, instance="tests")
    try:
        now = datetime.now(UTC)
        plans = writer.runs
        await plans.set_last_plan("bo", "full", run_id="r1", recorded_at=now, document={"n": 1})
        await plans.set_last_plan("bo", "full", run_id="r2", recorded_at=now, document={"n": 2})
        await plans.set_last_plan(
            "bo", "incremental", run_id="r3", recorded_at=now, document={"n": 3}
        )
        assert await reader.runs.last_plans() == {
            ("bo", "full"): {"n": 2},
            ("bo", "incremental"): {"n": 3},
        }
    finally:
        await writer.aclose()
        await reader.aclose()


async def test_an_older_store_keeps_its_index_and_its_watermark_moves_on_postgresql(
    postgres_state_url: str,
) -> None:
    """A store written before fc_watermarks (the watermark as the `fragment:{source}` cursor)
    opens with its task index and cursors intact; the watermark moves to its own table once."""
    store = await StateStore.open(postgres_state_url, instance="pg-tests")
    task = Task(uid="u1", status=TaskStatus.TODO, fields={})
    await store.index.remember("bo", [(task, "T-1")], Markers())
    await store.aclose()
    execute(postgres_state_url, "DROP TABLE fc_watermarks")  # the older release's shape
    old = '{"seen": "2026-03-01T12:00:00+00:00", "full_at": "2026-03-01T11:00:00Z"}'
    execute(postgres_state_url, f"INSERT INTO fc_cursors VALUES ('fragment:bo', '{old}', 'then')")
    execute(postgres_state_url, "INSERT INTO fc_cursors VALUES ('bo', 'adapter-cursor', 'then')")

    store = await StateStore.open(postgres_state_url, instance="pg-tests")
    try:
        seen = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        full = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
        assert await store.watermarks.get("bo") == StoredWatermark(seen, full, None)
        assert await store.cursors.get("bo") == "adapter-cursor"
        assert set(await store.index.lookup(["u1"])) == {"u1"}  # no rebuild: no re-listing
    finally:
        await store.aclose()
    names = execute(postgres_state_url, "SELECT source FROM fc_cursors")
    assert [row[0] for row in names] == ["bo"]  # the fake cursor is gone
    schema = execute(postgres_state_url, "SELECT value FROM fc_meta WHERE key = 'schema'")
    assert schema[0][0] == SCHEMA_VERSION


async def test_a_store_call_waiting_on_postgresql_leaves_the_loop_free(
    postgres_state_url: str,
) -> None:
    """While a write waits for a lock another session holds (a slow PostgreSQL), the event loop
    that also runs the lease heartbeat and /healthz keeps turning: this coroutine runs, and
    it is the one that lets the write through."""
    store = await StateStore.open(postgres_state_url, instance="pg-tests")
    engine = sa.create_engine(database_url(postgres_state_url), poolclass=NullPool)
    holder = engine.connect()
    try:
        holder.execute(sa.text("LOCK TABLE fc_cursors IN ACCESS EXCLUSIVE MODE"))
        write = asyncio.create_task(store.cursors.set("bo", "c-1"))
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not write.done()  # it waits for the lock, and this loop turned meanwhile
        holder.commit()
        await write
        assert await store.cursors.get("bo") == "c-1"
    finally:
        holder.close()
        engine.dispose()
        await store.aclose()


async def open_and_close(url: str, instance: str) -> None:
    """Open a store (creating, migrating or claiming it) and close it."""
    store = await StateStore.open(url, instance=instance)
    await store.aclose()
