"""The connector side of the benchmark, in its own process so its memory and CPU are its own.

Reads one command per line on stdin (`cycle`, `cycle-full` or `quit`), runs one full
reconciliation cycle with the same `Reconciler` the daemon uses (one process, state kept across
cycles, as in production), and prints one JSON line per cycle: wall time, CPU time, plan time,
requests by kind. Plan time is the pure planning: `check_sync` (the mirror's digests against the
tickets) and `plan_source`. This process's clock moves 5 minutes ahead before each cycle
(time-machine), so the drift check and full-listing periods fall as in a daemon with a 5-minute
schedule; Fragment's clock (the sandbox's, which anchors the watermark) stays real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import time_machine

from connector import plan as plan_module
from connector.config import load_settings
from connector.cycle import CycleOptions, report_counts
from connector.fragment import RequestStats
from connector.logging import configure_logging
from connector.runtime import open_runtime

CYCLE = timedelta(minutes=5)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(config: Path) -> None:
    configure_logging("WARNING")  # stdout carries the results; logs go to stderr
    settings = load_settings(config)
    planning = 0.0

    def timed(original):  # type: ignore[no-untyped-def]
        def run(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal planning
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                planning += time.perf_counter() - began

        return run

    import connector.cycle as cycle_module

    cycle_module.plan_source = timed(plan_module.plan_source)
    cycle_module.check_sync = timed(plan_module.check_sync)
    clock = time_machine.travel(datetime.now(UTC), tick=True)
    traveller = clock.start()
    async with open_runtime(settings) as reconciler:
        for line in sys.stdin:
            command = line.strip()
            if command not in ("cycle", "cycle-full"):
                break
            traveller.shift(CYCLE)
            # `cycle-full`: as when `fragment.full_listing_every` has passed
            options = full_listing(reconciler) if command == "cycle-full" else CycleOptions()
            planning = 0.0
            before = reconciler.client.stats.counts.copy()
            cpu, wall = cpu_seconds(), time.perf_counter()
            report = await reconciler.run(options)
            wall = time.perf_counter() - wall
            cpu = cpu_seconds() - cpu
            counts = reconciler.client.stats.counts - before
            reads = RequestStats.reads_in(counts)
            source = report.sources[0]
            print(
                json.dumps(
                    {
                        "ok": source.ok,
                        "error": source.error,
                        "wall_s": wall,
                        "cpu_s": cpu,
                        "plan_s": planning,
                        "reads": reads,
                        "writes": sum(counts.values()) - reads,
                        "actions": len(source.planned),
                        "kinds": report_counts(source),
                        "failed": len(source.failures),
                        "listing": getattr(source, "listing", ""),
                        "rss_mb": peak_rss_mb(),
                    }
                ),
                flush=True,
            )
            # The daemon drops a cycle's report when the cycle ends; held here, the initial
            # sync's 100k planned creates would count in the next cycle's peak memory.
            del report, source


def full_listing(reconciler: Any) -> CycleOptions:
    """Options for a cycle that lists every open task."""
    if "full_listing" in {f.name for f in dataclasses.fields(CycleOptions)}:
        return CycleOptions(full_listing=True)
    # Code from before `reconcile --full` (run.py --code): a lost watermark lists in full.
    reconciler.store.set_cursor("fragment:backoffice", None)
    return CycleOptions()


def peak_rss_mb() -> float:
    """This process's own peak RSS so far (VmHWM). Not `ru_maxrss`: Linux carries the parent's
    peak into a spawned child's, which made it report the benchmark's own size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
