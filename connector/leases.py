"""Which sources this replica works: one PostgreSQL advisory lock per source, shared out fairly.

Replicas that share a PostgreSQL state store coordinate through session-level advisory locks held
on one dedicated connection each, one lock per (instance, source), always taken without waiting.
A replica keeps a source from the cycle that wins its lock until it stops, loses its connection,
or holds more than its fair share, ceil(sources / live replicas): then it lets that source go
after its cycle, and a replica holding fewer picks it up at its next tick. Each replica also holds
a shared "presence" lock; counting those in `pg_locks` is how replicas know how many are alive,
with no table to expire. A replica that dies closes its connection and PostgreSQL frees its
locks at once; the others take its sources at their next tick.

The connection is pinged every few seconds. A replica that has not confirmed its session for
`trust_s` stops writing; on a network partition PostgreSQL drops the silent session only after
its keepalives fail (about 25 s, set on the session below), later than that, so a new owner can
start only after the old one stopped sending batches (but for one already in flight, and batches
are idempotent PUTs of the same desired state).

A one-shot `reconcile` takes the same locks without announcing itself as a replica: it runs
only the sources no daemon holds.

Without PostgreSQL (SQLite), `SoleReplica` grants every source: one replica per store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import Sequence
from typing import Any, LiteralString, Protocol

import psycopg
import structlog

from connector.clock import SYSTEM_CLOCK, Clock
from connector.state import Session, close_session, database_url, is_postgres, open_session

log = structlog.get_logger(__name__)

HEARTBEAT_S = 5.0
TRUST_S = 15.0
QUERY_TIMEOUT_S = 5.0

# Server-side keepalives of the lock session: PostgreSQL frees a partitioned replica's locks
# after about idle + interval x count = 25 s without an answer (the default is hours).
_SESSION_SETTINGS: LiteralString = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)
# Keys are (instance space, source id); the presence lock is (space, 0), source ids never 0.
_TRY_LOCK: LiteralString = "SELECT pg_try_advisory_lock(%(space)s::int4, %(key)s::int4)"
_UNLOCK: LiteralString = "SELECT pg_advisory_unlock(%(space)s::int4, %(key)s::int4)"
_ANNOUNCE: LiteralString = "SELECT pg_try_advisory_lock_shared(%(space)s::int4, 0)"
_PING: LiteralString = "SELECT 1"
_REPLICAS: LiteralString = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid::bigint = %(space)s AND objid::bigint = 0 AND objsubid = 2"
)


def lock_id(text: str) -> int:
    """A stable, positive 31-bit id for one half of an advisory lock key."""
    digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF or 1


class Leases(Protocol):
    """What the daemon asks before, during and after each source's cycle."""

    async def start(self) -> None:
        """Connect and start confirming the session (never raises: see `problem`)."""
        ...

    async def acquire(self, source: str) -> bool:
        """Whether this replica may run the source now (taking its lock if free and due)."""
        ...

    def holds(self, source: str) -> bool:
        """Whether this replica held the source at its last confirmed contact with the database."""
        ...

    async def confirm(self, source: str) -> bool:
        """Whether this replica still holds the source, asked of the database: before a batch."""
        ...

    async def settle(self, source: str) -> None:
        """After a cycle: hand the source over if this replica holds more than its share."""
        ...

    def held(self) -> frozenset[str]:
        """The sources this replica holds now."""
        ...

    def problem(self) -> str | None:
        """Why this replica cannot take sources now (lost database), or None."""
        ...

    async def close(self) -> None:
        """Release every lock (by closing the connection)."""
        ...


class SoleReplica:
    """The only replica of its state store: every source is always held."""

    def __init__(self, sources: Sequence[str]) -> None:
        self._sources = frozenset(sources)

    async def start(self) -> None:
        return None

    async def acquire(self, source: str) -> bool:
        return True

    def holds(self, source: str) -> bool:
        return True

    async def confirm(self, source: str) -> bool:
        return True

    async def settle(self, source: str) -> None:
        return None

    def held(self) -> frozenset[str]:
        return self._sources

    def problem(self) -> str | None:
        return None

    async def close(self) -> None:
        return None


class PostgresLeases:
    """Advisory locks on a dedicated PostgreSQL connection, fairly shared between replicas."""

    def __init__(
        self,
        url: str,
        *,
        instance: str,
        sources: Sequence[str],
        heartbeat_s: float = HEARTBEAT_S,
        trust_s: float = TRUST_S,
        query_timeout_s: float = QUERY_TIMEOUT_S,
        replica: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        parsed = database_url(url).set(drivername="postgresql")
        self._conninfo = parsed.render_as_string(hide_password=False)
        self._space = lock_id(f"fragment-connector/{instance}")
        self._keys = {name: lock_id(name) for name in sources}
        self._heartbeat_s = heartbeat_s
        self._trust_s = trust_s
        self._query_timeout_s = query_timeout_s
        self._clock = clock
        self._replica = replica  # False: a one-shot command, not counted, no fair share
        self._conn: Session | None = None
        self._guard = asyncio.Lock()  # one statement at a time on the connection
        self._deciding = asyncio.Lock()  # one share decision (count, then lock) at a time
        self._held: set[str] = set()
        self._confirmed = -math.inf
        self._problem: str | None = "not connected yet"
        self._beating: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect (or note why not) and keep the session confirmed in the background."""
        await self._ping()
        self._beating = asyncio.create_task(self._beat(), name="leases-heartbeat")

    async def acquire(self, source: str) -> bool:
        # One decision at a time: jobs that fire together (no jitter) would otherwise all find
        # this replica below its share while the database answers, and take every source.
        async with self._deciding:
            replicas = await self._query(_REPLICAS if self._replica else _PING)
            if replicas is None:
                return False
            if source in self._held:
                return True
            share = self._share(int(replicas)) if self._replica else len(self._keys)
            if len(self._held) >= share:
                return False
            won = await self._query(_TRY_LOCK, key=self._keys[source])
            if not won:
                return False
            self._held.add(source)
            log.info("lease.acquired", source=source, replicas=replicas, share=share)
            return True

    def holds(self, source: str) -> bool:
        fresh = self._clock.monotonic() - self._confirmed < self._trust_s
        return source in self._held and fresh

    async def confirm(self, source: str) -> bool:
        # A live session still holds its advisory locks: one round trip proves it, and a dead
        # one clears `_held`. A round trip that hangs (partition) fails by the query timeout.
        return source in self._held and await self._query(_PING) is not None and self.holds(source)

    async def settle(self, source: str) -> None:
        # Under the same lock as `acquire`: cycles that end together would each count this
        # replica over its share and hand every source back, not just the surplus.
        async with self._deciding:
            if source not in self._held:
                return
            replicas = await self._query(_REPLICAS)
            if replicas is None or len(self._held) <= self._share(int(replicas)):
                return
            if await self._query(_UNLOCK, key=self._keys[source]) is not None:
                self._held.discard(source)
                log.info(
                    "lease.handed_over", source=source, replicas=replicas, held=len(self._held)
                )

    def held(self) -> frozenset[str]:
        return frozenset(s for s in self._held if self.holds(s))

    def problem(self) -> str | None:
        return self._problem

    async def close(self) -> None:
        self._held.clear()  # a cycle still running past the grace period stops writing
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
        async with self._guard:
            await self._disconnect()

    # --- internals -------------------------------------------------------------------------

    def _share(self, replicas: int) -> int:
        return math.ceil(len(self._keys) / max(1, replicas))

    async def _beat(self) -> None:
        while True:
            await self._clock.sleep(self._heartbeat_s)
            await self._ping()

    async def _ping(self) -> None:
        await self._query(_PING)

    async def _query(self, statement: LiteralString, *, key: int | None = None) -> Any:
        """The statement's single value, or None once the connection failed (locks lost)."""
        params = {"space": self._space, "key": key}
        async with self._guard:
            try:
                if self._conn is None:
                    async with asyncio.timeout(self._query_timeout_s):
                        self._conn = await self._connect()
                value = await self._answer(self._conn, statement, params)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._lost(exc)
                return None
            self._confirmed = self._clock.monotonic()
            if self._problem is not None:
                log.info("lease.database_reachable", previous_problem=self._problem)
                self._problem = None
            return value

    async def _answer(self, conn: Session, statement: LiteralString, params: dict[str, Any]) -> Any:
        """Run one statement within the query timeout. On timeout the socket is dropped rather
        than the query cancelled: a cancel request would wait on the silent server too."""

        async def fetch() -> Any:
            row = await (await conn.execute(statement, params)).fetchone()
            return None if row is None else row[0]

        running = asyncio.ensure_future(fetch())
        try:
            done, _ = await asyncio.wait({running}, timeout=self._query_timeout_s)
        finally:
            if not running.done():
                conn.pgconn.finish()
                running.cancel()
                with contextlib.suppress(BaseException):
                    await running
        if not done:
            raise TimeoutError(f"no answer within {self._query_timeout_s:g}s")
        return running.result()

    async def _connect(self) -> Session:
        async def setup(conn: Session) -> None:
            await conn.execute(_SESSION_SETTINGS)
            if self._replica:
                await conn.execute(_ANNOUNCE, {"space": self._space})

        return await open_session(self._conninfo, setup)

    async def _lost(self, exc: BaseException) -> None:
        reason = f"state database unreachable: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        if self._held or self._problem is None:
            log.error("lease.lost", held=sorted(self._held), error=reason)
        self._held.clear()
        self._confirmed = -math.inf
        self._problem = reason
        await self._disconnect()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        await close_session(conn)


def leases_for(
    url: str,
    *,
    instance: str,
    sources: Sequence[str],
    replica: bool = True,
    clock: Clock = SYSTEM_CLOCK,
) -> SoleReplica | PostgresLeases:
    """PostgreSQL advisory locks when the state store is PostgreSQL, else a sole replica.

    `replica=False` is for one-shot commands: they take free locks but are not counted.
    """
    if is_postgres(database_url(url)):
        return PostgresLeases(url, instance=instance, sources=sources, replica=replica, clock=clock)
    return SoleReplica(sources)
