"""Requests, CPU and memory per cycle: the connector against two baselines and the minimum.

    python benchmarks/run.py [--sizes 20000 100000] [--churn 0.01] [--cycles 13]
                             [--baseline-cycles 3] [--naive-max 10000] [--code LABEL=DIR ...]
    python benchmarks/run.py --sizes 1000000 --churn 0.001 --cycles 4 --baseline-cycles 0

For each backlog size, against the sandbox on loopback (rate limit lifted, every request
counted by the sandbox):

1. the first import, through the real CLI process (`reconcile --output json` under
   `/usr/bin/time -v`: its CPU and its process peak RSS);
2. the daemon path in one long-lived process (benchmarks/connector_child.py, the daemon's
   `Reconciler`), its clock moved 5 minutes ahead before each cycle: a cycle that reads the
   import back, then `--cycles` cycles of churn (a third of it tickets closed, a third opened,
   a third edited; plus a tenth of it as operators' edits in Fragment). The first is left out
   of the figures (the read-back wrote nothing, so it has no writes to read back); the next 12
   are one hour, so they hold one drift check (`fragment.drift_check_every`: 1 h);
3. one cycle of churn with the daily full listing (`fragment.full_listing_every`: 1 d = 288
   cycles), amortised over its period;
4. the baselines over the same sequence of back-office states: the list-and-diff batched client
   (benchmarks/batched.py, what a careful first integration does) and, up to `--naive-max`, the
   naive one (benchmarks/naive.py).

Each row prints two theoretical minimums: a full listing (every open task read, pages of 100)
and a delta (one read), each plus the cycle's writes in full batches of 100 per method.
`--code before=DIR after=.` runs the connector's phases from each source tree (e.g. an export
of an older commit) for a before/after in one run. Loopback timings are relative: compare within
one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.batched import run_cycle as batched_cycle  # noqa: E402
from benchmarks.naive import run_cycle as naive_cycle  # noqa: E402
from connector.identity import instance_namespace, task_uid  # noqa: E402
from connector.sandbox import SandboxConfig, SandboxServer  # noqa: E402

TOKEN = "bench-token"
SOURCE = "backoffice"
INSTANCE = "bench"
BUDGET = 300  # requests in a 5-minute cycle at Fragment's 60/min
PAGE = 100
# Fragment's clock (the sandbox's) is not moved: cycles seconds apart stand for cycles minutes
# apart, so the re-read window shrinks with them (2 min of a 5-min cycle in production). The
# watermark comes from the `Date` header (whole seconds), hence the gap before each cycle.
OVERLAP_S = 1.0
GAP_S = 2.5
MEASURED = ("/usr/bin/time", "-v")  # the CLI's own CPU time and process peak RSS
JSON = ("--output", "json")
CYCLES_PER_FULL_LISTING = 288  # fragment.full_listing_every: 1 d of 5-minute cycles


@dataclass
class Row:
    phase: str
    routes: dict[str, int]
    kinds: dict[str, int]
    open_tasks: int
    wall_s: float
    cpu_s: float
    rss_mb: float
    rss_label: str
    listing: str = ""
    batched: int | None = None
    naive: int | None = None

    @property
    def writes(self) -> int:
        return sum(n for k, n in self.routes.items() if k.split()[0] in ("PUT", "PATCH"))

    @property
    def total(self) -> int:
        return sum(self.routes.values())

    @property
    def reads(self) -> int:
        return self.total - self.writes

    @property
    def write_minimum(self) -> int:
        k = self.kinds
        patches = k.get("update", 0) + k.get("close", 0) + k.get("reopen", 0)
        return math.ceil(k.get("create", 0) / PAGE) + math.ceil(patches / PAGE)

    @property
    def min_delta(self) -> int:
        return 1 + self.write_minimum

    @property
    def min_full(self) -> int:
        return max(1, math.ceil(self.open_tasks / PAGE)) + self.write_minimum


class Backoffice:
    """The tickets file and its churn."""

    def __init__(self, path: Path | None, size: int, seed: int) -> None:
        self.path = path
        self.rng = random.Random(seed)
        self.next_id = size
        self.tickets = {f"T-{n}": self.ticket(n) for n in range(size)}

    def ticket(self, n: int) -> dict[str, Any]:
        return {
            "id": f"T-{n}",
            "title": f"Review case {n} for customer {n * 7 % 10007}",
            "url": f"https://backoffice.example/cases/{n}",
            "amount": n % 997,
            "country": ("FR", "DE", "ES", "IT")[n % 4],
            "priority": "high" if n % 10 == 0 else "normal",
        }

    def save(self) -> None:
        if self.path is None:
            return
        with self.path.open("w") as out:
            for ticket in self.tickets.values():
                out.write(json.dumps(ticket) + "\n")

    def churn(self, ratio: float) -> None:
        """Close, open and edit a third of `ratio` of the tickets each."""
        third = max(1, round(len(self.tickets) * ratio / 3))
        ids = self.rng.sample(sorted(self.tickets), 2 * third)
        for ticket_id in ids[:third]:
            del self.tickets[ticket_id]
        for ticket_id in ids[third:]:
            self.tickets[ticket_id]["title"] += " (updated)"
        for _ in range(third):
            self.tickets[f"T-{self.next_id}"] = self.ticket(self.next_id)
            self.next_id += 1
        self.save()


def operators_act(sandbox: SandboxServer, backoffice: Backoffice, ratio: float) -> None:
    """Operators start some tasks and retitle others in Fragment."""
    namespace = instance_namespace(INSTANCE)
    count = max(1, round(len(backoffice.tickets) * ratio))
    for n, ticket_id in enumerate(backoffice.rng.sample(sorted(backoffice.tickets), count)):
        uid = task_uid(namespace, SOURCE, ticket_id)
        if sandbox.store.task(uid) is None:
            continue
        if n % 2:
            sandbox.store.operator_edit(uid, status="STARTED")
        else:
            sandbox.store.operator_edit(uid, fields={"title": "renamed by an operator"})


def write_config(workdir: Path, base_url: str, tickets: Path) -> Path:
    config = {
        "connector": {"instance": INSTANCE},
        "fragment": {
            "base_url": base_url,
            "token": TOKEN,
            "requests_per_minute": 1e9,
            "burst": 1000,
            "listing_overlap": f"{OVERLAP_S}s",
        },
        "guards": {"close_ratio": 0.5},
        "state": {"url": f"sqlite:///{workdir / 'state.db'}"},
        "sources": [{"name": SOURCE, "adapter": "file", "options": {"path": str(tickets)}}],
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def routes(sandbox: SandboxServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in sandbox.store.request_counts():
        key = f"{r['method']} {r['route']}"
        counts[key] = counts.get(key, 0) + r["count"]
    return counts


def env(code: Path) -> dict[str, str]:
    """The environment of a connector process running the code in `code`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    return {**kept, "PYTHONPATH": str(code)}


def first_import(sandbox: SandboxServer, cfg: Path, workdir: Path, code: Path) -> Row:
    """The first import through the real CLI process, measured by `/usr/bin/time -v`."""
    sandbox.store.clear_requests()
    began = time.monotonic()
    done = subprocess.run(
        [*MEASURED, sys.executable, "-m", "connector", "reconcile", *("--config", str(cfg)), *JSON],
        cwd=workdir,
        env=env(code),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - began

    def measure(label: str) -> float:
        found = re.search(rf"{label}: ([\d.]+)", done.stderr)
        return float(found.group(1)) if found else float("nan")

    if done.returncode != 0:
        raise SystemExit(f"reconcile exited {done.returncode}:\n{done.stderr[-3000:]}")
    source = json.loads(done.stdout)["sources"][0]
    return Row(
        "first import",
        routes(sandbox),
        source.get("counts", {}),
        0,
        wall,
        measure(r"User time \(seconds\)") + measure(r"System time \(seconds\)"),
        measure(r"Maximum resident set size \(kbytes\)") / 1024,
        "CLI process peak",
        source.get("listing", ""),
    )


def daemon_cycles(
    sandbox: SandboxServer,
    backoffice: Backoffice,
    cfg: Path,
    workdir: Path,
    phases: list[str],
    churn: float,
    code: Path,
) -> list[Row]:
    """The daemon path: one process, its clock 5 minutes ahead before each cycle."""
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "connector_child.py"), str(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env(code),
        cwd=workdir,
    )
    assert child.stdin and child.stdout
    rows = []
    for phase in phases:
        open_tasks = len(backoffice.tickets)
        if phase != "read-back":
            backoffice.churn(churn)
            operators_act(sandbox, backoffice, churn / 10)
        time.sleep(GAP_S)  # the next cycle starts after the re-read window
        sandbox.store.clear_requests()
        child.stdin.write("cycle-full\n" if phase == "full listing" else "cycle\n")
        child.stdin.flush()
        result = json.loads(child.stdout.readline())
        if not result["ok"] or result["failed"]:
            raise SystemExit(f"cycle {phase} failed: {result}")
        row = Row(
            phase,
            routes(sandbox),
            result["kinds"],
            open_tasks,
            result["wall_s"],
            result["cpu_s"],
            result["rss_mb"],
            "daemon process peak so far",
            result["listing"],
        )
        rows.append(row)
        print(
            f"  {open_tasks:>8} {phase:<13} {row.total:>6} requests "
            f"({', '.join(f'{k} {n}' for k, n in sorted(row.routes.items()))}) "
            f"cpu {row.cpu_s:.1f}s rss {row.rss_mb:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
    child.stdin.write("quit\n")
    child.stdin.close()
    child.wait()
    return rows


def baseline(
    sandbox: SandboxServer,
    size: int,
    churn: float,
    phases: list[str],
    cycle: Callable[..., int],
) -> list[int]:
    """A baseline client over the same sequence of back-office states."""
    sandbox.store.reset()
    backoffice = Backoffice(None, size, seed=size)
    counts = []
    for phase in phases:
        if phase not in ("first import", "read-back"):
            backoffice.churn(churn)
            operators_act(sandbox, backoffice, churn / 10)
        counts.append(
            cycle(
                sandbox.base_url,
                TOKEN,
                list(backoffice.tickets.values()),
                source=SOURCE,
                instance=INSTANCE,
            )
        )
    return counts


def bench_code(args: argparse.Namespace, size: int, label: str, code: Path) -> list[Row]:
    """The connector's phases at one size, run from the source tree `code`."""
    workdir = args.workdir / f"{size}-{label}"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state.db").unlink(missing_ok=True)
    config = SandboxConfig(token=TOKEN, test_mode=True, requests_per_minute=None)
    with SandboxServer(config) as sandbox:
        backoffice = Backoffice(workdir / "tickets.jsonl", size, seed=size)
        backoffice.save()
        cfg = write_config(workdir, sandbox.base_url, backoffice.path)  # type: ignore[arg-type]
        rows = [first_import(sandbox, cfg, workdir, code)]
        print(f"  {size:>8} {label}: first import {rows[0].total} requests", file=sys.stderr)
        phases = ["read-back"] + [f"churn {n + 1}" for n in range(args.cycles)] + ["full listing"]
        rows += daemon_cycles(sandbox, backoffice, cfg, workdir, phases, args.churn, code)
    return rows


def bench_baselines(args: argparse.Namespace, size: int) -> dict[str, list[int]]:
    """Each baseline's requests over the first phases (import, read-back, churn cycles)."""
    compared = ["first import", "read-back"] + [f"churn {n + 1}" for n in range(args.cycles)]
    compared = compared[: 2 + args.baseline_cycles]
    clients = [("batched", batched_cycle)] if args.baseline_cycles else []
    if args.baseline_cycles and size <= args.naive_max:
        clients.append(("naive", naive_cycle))
    config = SandboxConfig(token=TOKEN, test_mode=True, requests_per_minute=None)
    with SandboxServer(config) as sandbox:
        return {name: baseline(sandbox, size, args.churn, compared, c) for name, c in clients}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def print_size(size: int, churn: float, label: str, rows: list[Row]) -> dict[str, float]:
    head = (
        f"{'cycle':<13} {'listing':<12} {'reads':>6} {'writes':>6} {'total':>6} "
        f"{'min full':>8} {'min delta':>9} {'batched':>7} {'naive':>7} {'cpu s':>6} "
        f"{'wall s':>6} {'peak RSS MB':>11}  where the requests go"
    )
    print(f"\n## {size:,} open tickets, {churn:.1%} churn per cycle, code: {label}\n")
    print(head)
    print("-" * len(head))
    for r in rows:
        where = ", ".join(f"{k} {n}" for k, n in sorted(r.routes.items()))
        print(
            f"{r.phase:<13} {r.listing[:12]:<12} {r.reads:>6} {r.writes:>6} {r.total:>6} "
            f"{r.min_full:>8} {r.min_delta:>9} "
            f"{'-' if r.batched is None else r.batched:>7} "
            f"{'-' if r.naive is None else r.naive:>7} "
            f"{r.cpu_s:>6.1f} {r.wall_s:>6.1f} {r.rss_mb:>11.0f}  {where}"
        )
    print("(peak RSS: the first import's is the CLI process's; the others the daemon's so far)")
    # The first churn cycle follows the read-back, which wrote nothing: not a steady cycle.
    hour = [r for r in rows if r.phase.startswith("churn")][1:]
    full = next(r for r in rows if r.phase == "full listing")
    hour_mean = mean([r.total for r in hour])
    steady = sorted(r.total for r in hour)[len(hour) // 2]
    amortised = hour_mean + (full.total - hour_mean) / CYCLES_PER_FULL_LISTING
    # The batched client keeps no state: every churn cycle it ran counts.
    batched = [r.batched for r in rows if r.phase.startswith("churn") and r.batched is not None]
    imported = rows[0]
    return {
        "first import": imported.total,
        "first import / minimum": imported.total / imported.min_delta,
        "first import CPU s": imported.cpu_s,
        "first import peak RSS MB": imported.rss_mb,
        "read-back": rows[1].total,
        "steady (median of the hour's cycles)": steady,
        "hour mean (12 cycles hold one count check)": hour_mean,
        "full listing cycle": full.total,
        "amortised per cycle (hour mean + full listing over 288 cycles)": amortised,
        "steady minimum (delta)": mean([r.min_delta for r in hour]),
        "batched per cycle": mean([float(b) for b in batched]),
        "batched / amortised": mean([float(b) for b in batched]) / amortised,
        "CPU per steady cycle s": mean([r.cpu_s for r in hour]),
        "CPU full-listing cycle s": full.cpu_s,
        "daemon peak RSS MB": max(r.rss_mb for r in rows[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--churn", type=float, default=0.01, help="share of tickets per cycle")
    parser.add_argument(
        "--cycles", type=int, default=13, help="churn cycles (the first left out; 12 = one hour)"
    )
    parser.add_argument(
        "--baseline-cycles", type=int, default=3, help="churn cycles the baselines replay (0: none)"
    )
    parser.add_argument("--naive-max", type=int, default=10_000, help="largest size for naive")
    parser.add_argument(
        "--code", nargs="+", default=[f"this={ROOT}"], help="LABEL=DIR: source trees to run"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "work")
    args = parser.parse_args()
    if args.cycles < 2:
        parser.error("--cycles must be at least 2: the first is left out of the figures")
    trees = [(label, Path(path).resolve()) for label, path in (c.split("=", 1) for c in args.code)]
    began = time.monotonic()
    for size in args.sizes:
        runs = {label: bench_code(args, size, label, code) for label, code in trees}
        counts = bench_baselines(args, size)
        figures = {}
        for label, rows in runs.items():
            for name, values in counts.items():
                for row, value in zip(rows, values, strict=False):  # the first phases only
                    setattr(row, name, value)
            figures[label] = print_size(size, args.churn, label, rows)
        print(f"\n## {size:,} open tickets: " + " | ".join(label for label, _ in trees) + "\n")
        for key in figures[trees[0][0]]:
            side_by_side = " ".join(f"{figures[label][key]:>10.2f}" for label, _ in trees)
            print(f"{key:<64} {side_by_side}")
    print(f"\ntotal {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
