"""A dedicated PostgreSQL session beside the store's pool: the leases' and the shared budget's.

Both keep one connection of their own (advisory locks live in a session; a budget reservation
must not queue behind the pool), opened with the store's connect arguments and closed without
letting a dead server hold up a shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from connector.state.database import POSTGRES_CONNECT_ARGS

Session = psycopg.AsyncConnection[Any]


async def open_session(conninfo: str, setup: Callable[[Session], Awaitable[None]]) -> Session:
    """An autocommit session with `setup` run on it; closed again if `setup` fails."""
    conn: Session = await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, **POSTGRES_CONNECT_ARGS
    )
    try:
        await setup(conn)
    except BaseException:
        with contextlib.suppress(Exception):
            await conn.close()
        raise
    return conn


async def close_session(conn: Session | None) -> None:
    """Close `conn` within a second, whatever state the server or the network is in."""
    if conn is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await conn.close()
