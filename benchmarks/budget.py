"""Which request budget holds one account's rate while replicas start and die: measured.

    python benchmarks/budget.py [--rate 60] [--scale 1.0]

Two designs, the same scenario, the same sandbox (which logs every request):

- `shared row`: the connector's `SharedBudget` (connector/budget.py), one GCRA row in
  PostgreSQL that every process reserves its slots from;
- `live count`: each replica paces itself at rate / live replicas, the count taken as leases.py
  takes it (shared "presence" advisory locks in `pg_locks`), again every 5 s (the leases'
  heartbeat). Its best case: requests evenly spaced, no burst. A one-shot run reads the count
  but is not counted (leases.py does not count one-shot runs).

Every replica wants more than the whole rate (a backlog to list), so only the budget limits it.
Scenario (seconds, times `--scale`): replicas A and B start at 0; C starts at 40; a one-shot
run D runs from 70 to 110; A dies at 100 (its connection closed, as on SIGKILL); E starts at
130; the run ends at 180. Prints, for each design, the requests the sandbox received, the most
in any 60-second window (the limit is `--rate`), and how many 60-second windows exceed it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.budget import SharedBudget
from connector.fragment import TokenBucket
from connector.leases import _ANNOUNCE, _REPLICAS
from connector.sandbox import SandboxConfig, SandboxServer
from connector.sandbox.wire import parse_instant

TOKEN = "budget-token"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
RECOUNT_S = 5.0  # leases.py's heartbeat (not compressed by --scale: a real interval)
WINDOW_S = 60.0
# (start, stop, name, counted as a replica); None: until the end
SCENARIO: list[tuple[float, float | None, str, bool]] = [
    (0, 100, "A", True),
    (0, None, "B", True),
    (40, None, "C", True),
    (70, 110, "D (one-shot)", False),
    (130, None, "E", True),
]
END_S = 180.0

Pacer = Callable[[], Awaitable[None]]


async def shared_row(rate: float, account: str) -> tuple[Pacer, Callable[[], Awaitable[None]]]:
    """A process's pacer in the shared-row design, and how it dies."""
    budget = SharedBudget(
        POSTGRES, account=account, requests_per_minute=rate, local=TokenBucket(rate, burst=5)
    )
    return budget.acquire, budget.aclose


async def live_count(
    rate: float, space: int, counted: bool
) -> tuple[Pacer, Callable[[], Awaitable[None]]]:
    """A process's pacer in the live-count design, and how it dies."""
    conn = await psycopg.AsyncConnection.connect(POSTGRES, autocommit=True)
    if counted:
        await conn.execute(_ANNOUNCE, {"space": space})

    async def count() -> int:
        row = await (await conn.execute(_REPLICAS, {"space": space})).fetchone()
        return max(1, int(row[0]) if row else 1)

    state = {"replicas": await count(), "counted_at": asyncio.get_running_loop().time()}
    state["next"] = state["counted_at"]

    async def acquire() -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - state["counted_at"] >= RECOUNT_S:
            state["replicas"], state["counted_at"] = await count(), loop.time()
        wait = state["next"] - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        state["next"] = max(state["next"], loop.time()) + 60.0 * state["replicas"] / rate

    return acquire, conn.close


async def process(
    http: httpx.AsyncClient, pacer: Pacer, stop: asyncio.Event, sent: list[str]
) -> None:
    while not stop.is_set():
        await pacer()
        if stop.is_set():
            return
        await http.get("tasks", params={"limit": 1})
        sent.append("")


async def run(design: str, rate: float, scale: float, sandbox: SandboxServer) -> dict[str, Any]:
    sandbox.store.reset()
    account, space = f"bench-{uuid.uuid4().hex}", uuid.uuid4().int % 2**31
    sent: list[str] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=sandbox.base_url + "/", headers=headers) as http:

        async def one(start: float, stop_at: float | None, counted: bool) -> None:
            await asyncio.sleep(start * scale)
            # A compressed minute (`scale`) holds the same `rate` requests.
            if design == "shared row":
                pacer, close = await shared_row(rate / scale, account)
            else:
                pacer, close = await live_count(rate / scale, space, counted)
            stop = asyncio.Event()
            task = asyncio.create_task(process(http, pacer, stop, sent))
            await asyncio.sleep(((stop_at if stop_at is not None else END_S) - start) * scale)
            task.cancel()  # dies as on SIGKILL: whatever it was waiting for is dropped
            await asyncio.gather(task, return_exceptions=True)
            await close()

        await asyncio.gather(*(one(s, e, c) for s, e, _, c in SCENARIO))
    times = sorted(
        (parse_instant(r["at"]) or 0) / 1000
        for r in sandbox.store.requests()
        if r["route"] == "/tasks"
    )
    return {"design": design, "requests": len(times), **windows(times, rate, WINDOW_S * scale)}


def windows(times: list[float], rate: float, width: float) -> dict[str, Any]:
    """The most requests in any window of `width` seconds, and how many windows (each starting
    at a request) hold more than `rate`."""
    most, over, j = 0, 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + width:
            j += 1
        most = max(most, j - i)
        over += j - i > rate
    return {"max_in_60s": most, "windows_over_limit": over}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=60.0, help="requests per minute")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="time compression: 0.1 runs the scenario 10x faster, windows of 6 s (debugging)",
    )
    args = parser.parse_args()
    print(
        f"rate limit {args.rate:g}/min; scenario: "
        + "; ".join(
            f"{name} {s:g}-{'end' if e is None else f'{e:g}'}s" for s, e, name, _ in SCENARIO
        )
    )
    config = SandboxConfig(token=TOKEN, test_mode=True, requests_per_minute=None)
    with SandboxServer(config) as sandbox:
        for design in ("shared row", "live count"):
            result = await run(design, args.rate, args.scale, sandbox)
            print(
                f"{result['design']:<11} requests {result['requests']:>5}  "
                f"max in any 60 s window {result['max_in_60s']:>4}  "
                f"windows over {args.rate:g}: {result['windows_over_limit']}",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
