"""One request budget per Fragment account, shared by every process that uses its token.

Fragment limits requests per account (60 a minute), not per process: three replicas pacing
themselves at 60 a minute each send 180. Processes that share a PostgreSQL state store therefore
take their request slots from one row of that database, keyed by the account (a keyed hash of
the base URL and the token; the token itself is never stored):

    tat = greatest(tat, now()) + 60 / requests_per_minute

`tat` is the theoretical arrival time of the next request (GCRA): each request reserves the slot
`tat` names, in the database's clock, then sleeps until it. Slots are spaced evenly, however many
replicas and one-shot runs share the account, and whichever of them starts, stops or dies: a dead
process leaves at most the slots it had reserved unused, and a new one queues behind the others.
`fragment.burst` does not apply across processes (a burst after an idle spell is what would
overrun a 60-second window).

A busy process can wake up after its slot (its event loop planning, the machine loaded), and a
late request crowds the next ones. So a request more than half a spacing late gives its slot up
and takes a new one, and the spacing is 60 / (requests_per_minute - 1/2) seconds: the slots of
any 60 seconds plus that half spacing number at most `requests_per_minute`, so no 60-second
window at Fragment, wherever it starts, receives more (0.8% below the limit at 60 a minute).

Chosen over shares by live replica count (`rate / replicas` each), which overrun while a
replica's count is stale (a replica starting or dying), waste the share of a replica with nothing
to do, and cannot count one-shot runs. One round trip per request: a millisecond next to the
second each slot is apart.

If the database cannot be reached, requests are paced by this process alone (its local token
bucket) and it is logged: such a process holds no source lock either, so it does not write.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import LiteralString

import psycopg
import structlog

from connector.clock import SYSTEM_CLOCK, Clock
from connector.fragment import Pacer, TokenBucket
from connector.state import Session, close_session, database_url, is_postgres, open_session

log = structlog.get_logger(__name__)

QUERY_TIMEOUT_S = 5.0
RETRY_CONNECT_S = 30.0
MAX_RETAKES = 3  # slots a request may give up for waking up late

_CREATE: LiteralString = (
    "SELECT pg_advisory_xact_lock(hashtext('fragment-connector/request-budget'));"
    " CREATE TABLE IF NOT EXISTS fc_request_budget"
    " (account text PRIMARY KEY, tat timestamptz NOT NULL)"
)
# Seconds from now until the reserved slot (0 when the account was idle).
_RESERVE: LiteralString = (
    "INSERT INTO fc_request_budget AS b (account, tat)"
    " VALUES (%(account)s, clock_timestamp() + make_interval(secs => %(spacing)s))"
    " ON CONFLICT (account) DO UPDATE"
    " SET tat = greatest(b.tat, clock_timestamp()) + make_interval(secs => %(spacing)s)"
    " RETURNING greatest(0, extract(epoch FROM b.tat - clock_timestamp()) - %(spacing)s)::float8"
)


def account_key(base_url: str, token: str) -> str:
    """Which budget a token draws from: a keyed hash, so the database never learns the token."""
    digest = hashlib.blake2b(
        f"{base_url.rstrip('/')}\n{token}".encode(),
        key=b"fragment-connector/request-budget",
        digest_size=16,
    )
    return digest.hexdigest()


class SharedBudget:
    """The account's request slots, reserved one at a time in PostgreSQL; a `Pacer`."""

    def __init__(
        self,
        url: str,
        *,
        account: str,
        requests_per_minute: float,
        local: TokenBucket,
        query_timeout_s: float = QUERY_TIMEOUT_S,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be > 0")
        parsed = database_url(url).set(drivername="postgresql")
        self._conninfo = parsed.render_as_string(hide_password=False)
        self._account = account
        # Half a request of margin per minute covers a send up to half a spacing late.
        self._spacing = 60.0 / max(requests_per_minute - 0.5, requests_per_minute / 2)
        self._local = local
        self._query_timeout_s = query_timeout_s
        self._clock = clock
        self._conn: Session | None = None
        self._guard = asyncio.Lock()  # one statement at a time on the connection
        self._unreachable_until = 0.0
        self.waited = 0.0
        self.late = 0  # slots given up because this process woke up too late for them

    async def acquire(self) -> None:
        """Wait for this request's slot in the account's budget."""
        for _ in range(MAX_RETAKES):
            wait = await self._reserve()
            if wait is None:
                await self._local.acquire()
                return
            if wait <= 0:
                return  # the slot is now
            # Sleep from when the database answered (the slot is at most that late), and judge
            # the wake-up: a process busy elsewhere can wake up well after its slot.
            due = self._clock.monotonic() + wait
            self.waited += wait
            await self._clock.sleep(wait)
            if self._clock.monotonic() - due <= self._spacing / 2:
                return
            self.late += 1
        # Late again and again (a starved machine): send rather than wait without end.

    async def aclose(self) -> None:
        """Close the connection."""
        async with self._guard:
            await self._disconnect()

    async def _reserve(self) -> float | None:
        if self._clock.monotonic() < self._unreachable_until:
            return None
        async with self._guard:
            try:
                async with asyncio.timeout(self._query_timeout_s):
                    if self._conn is None:
                        self._conn = await self._connect()
                    params = {"account": self._account, "spacing": self._spacing}
                    row = await (await self._conn.execute(_RESERVE, params)).fetchone()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else repr(exc)
                log.warning(
                    "budget.unreachable",
                    error=first,
                    action=f"paced by this process alone for {RETRY_CONNECT_S:g}s",
                )
                self._unreachable_until = self._clock.monotonic() + RETRY_CONNECT_S
                await self._disconnect()
                return None
        return 0.0 if row is None else float(row[0])

    async def _connect(self) -> Session:
        async def setup(conn: Session) -> None:
            # A reservation need not wait for the disk: a crash of PostgreSQL forgets at most
            # the last few slots taken (a handful of requests booked twice, once); a WAL flush
            # per request would make every request wait for a loaded disk.
            await conn.execute("SET synchronous_commit = off")
            async with conn.transaction():
                await conn.execute(_CREATE)

        return await open_session(self._conninfo, setup)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        await close_session(conn)


def pacer_for(
    state_url: str,
    *,
    base_url: str,
    token: str,
    requests_per_minute: float,
    burst: int,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[Pacer, SharedBudget | None]:
    """The account's shared budget when the state store is PostgreSQL, else a local bucket.

    Returns the pacer and, when shared, the budget to close.
    """
    local = TokenBucket(requests_per_minute, burst=burst, clock=clock)
    if not is_postgres(database_url(state_url)):
        return local, None
    budget = SharedBudget(
        state_url,
        account=account_key(base_url, token),
        requests_per_minute=requests_per_minute,
        local=local,
        clock=clock,
    )
    return budget, budget
