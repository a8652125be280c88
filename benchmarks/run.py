"""Requests, time and memory per cycle against backlog size: the connector vs a naive client.

    python benchmarks/run.py [--sizes 1000 10000 100000] [--churn-cycles 3] [--naive-max 10000]

For each backlog size, against the sandbox on loopback (rate limit lifted, every request
counted): an initial sync, a no-op cycle, then `--churn-cycles` cycles of 1% churn (a third of
it tickets closed, a third opened, a third edited; plus 0.1% of tasks edited or started by
operators in Fragment). The connector runs in a child process (its peak RSS and CPU time are its
own); the naive client (benchmarks/naive.py) replays the same data in this process. Prints a
table and writes benchmarks/out/requests.png. Loopback timings are relative: compare the two
clients, and the sizes, within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.naive import run_cycle as naive_cycle  # noqa: E402
from connector.identity import instance_namespace, task_uid  # noqa: E402
from connector.sandbox import SandboxConfig, SandboxServer  # noqa: E402

TOKEN = "bench-token"
SOURCE = "backoffice"
INSTANCE = "bench"
BUDGET = 300  # requests in a 5-minute cycle at Fragment's 60/min
OVERLAP_S = 1.0
FULL_LISTING_CYCLES = 12  # 5-minute cycles per full listing (fragment.full_listing_every: 1h)


@dataclass
class Row:
    size: int
    phase: str
    reads: int
    writes: int
    minimum: int
    wall_s: float
    cpu_s: float
    plan_s: float
    rss_mb: float
    naive: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.reads + self.writes


class Backoffice:
    """The tickets file and its churn."""

    def __init__(self, path: Path, size: int, seed: int) -> None:
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
        with self.path.open("w") as out:
            for ticket in self.tickets.values():
                out.write(json.dumps(ticket) + "\n")

    def churn(self, ratio: float) -> dict[str, int]:
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
        return {"closed": third, "edited": third, "opened": third}


def operators_act(sandbox: SandboxServer, backoffice: Backoffice, ratio: float) -> int:
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
    return count


def write_config(workdir: Path, base_url: str, tickets: Path) -> Path:
    config = {
        "connector": {"instance": INSTANCE},
        "fragment": {
            "base_url": base_url,
            "token": TOKEN,
            "requests_per_minute": 1e9,
            "burst": 1000,
            # Time is compressed here: cycles seconds apart stand for cycles minutes apart, so
            # the re-read window shrinks with them (2 min of a 5-min cycle in production).
            "listing_overlap": f"{OVERLAP_S}s",
        },
        "guards": {"close_ratio": 0.5},
        "state": {"url": f"sqlite:///{workdir / 'state.db'}"},
        "sources": [{"name": SOURCE, "adapter": "file", "options": {"path": str(tickets)}}],
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def minimum(actions: dict[str, int]) -> int:
    """Fewest requests for a cycle's changes: one read, full batches of each write method."""
    return (
        1
        + math.ceil(actions.get("create", 0) / 100)
        + math.ceil(
            (actions.get("update", 0) + actions.get("close", 0) + actions.get("reopen", 0)) / 100
        )
    )


def bench_size(size: int, churn_cycles: int, naive_max: int, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state.db").unlink(missing_ok=True)
    config = SandboxConfig(token=TOKEN, test_mode=True, requests_per_minute=None)
    with SandboxServer(config) as sandbox:
        backoffice = Backoffice(workdir / "tickets.jsonl", size, seed=size)
        backoffice.save()
        cfg = write_config(workdir, sandbox.base_url, backoffice.path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
        child = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "connector_child.py"), str(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=workdir,
        )
        assert child.stdin and child.stdout
        phases = ["initial", "no-op"] + [f"churn {n + 1}" for n in range(churn_cycles)]
        phases.append("full list")  # the periodic full listing, amortised over full_listing_every
        for phase in phases:
            if phase.startswith("churn"):
                backoffice.churn(0.01)
                operators_act(sandbox, backoffice, 0.001)
            time.sleep(OVERLAP_S * 1.5)  # the next cycle starts after the re-read window
            sandbox.store.clear_requests()
            child.stdin.write("cycle-full\n" if phase == "full list" else "cycle\n")
            child.stdin.flush()
            result = json.loads(child.stdout.readline())
            counts = {
                r["method"] + " " + r["route"]: r["count"] for r in sandbox.store.request_counts()
            }
            writes = sum(n for k, n in counts.items() if k.split()[0] in ("PUT", "PATCH"))
            reads = sum(counts.values()) - writes
            actions = result.get("kinds", {})
            rows.append(
                Row(
                    size,
                    phase,
                    reads,
                    writes,
                    minimum(actions) if actions else 0,
                    result["wall_s"],
                    result["cpu_s"],
                    result["plan_s"],
                    result["rss_mb"],
                    extra={
                        "actions": result["actions"],
                        "failed": result["failed"],
                        "ok": result["ok"],
                    },
                )
            )
            print(
                f"  {size:>7} {phase:<9} rss {result['rss_mb']:5.0f} MB "
                f"reads {reads:>5} writes {writes:>4} "
                f"wall {result['wall_s']:6.2f}s plan {result['plan_s']:5.2f}s",
                file=sys.stderr,
            )
        child.stdin.write("quit\n")
        child.stdin.close()
        child.wait()
        if size <= naive_max:
            sandbox.store.reset()
            naive_rows = naive_run(sandbox, size, churn_cycles, phases)
            for row, naive in zip(rows, naive_rows, strict=True):
                row.naive = naive
    return rows


def naive_run(sandbox: SandboxServer, size: int, churn_cycles: int, phases: list[str]) -> list[int]:
    """The naive client over the same sequence of back-office states."""
    backoffice = Backoffice(Path("/dev/null"), size, seed=size)
    backoffice.save = lambda: None  # type: ignore[method-assign]
    counts = []
    for phase in phases:
        if phase.startswith("churn"):
            backoffice.churn(0.01)
            operators_act(sandbox, backoffice, 0.001)
        counts.append(
            naive_cycle(
                sandbox.base_url,
                TOKEN,
                list(backoffice.tickets.values()),
                source=SOURCE,
                instance=INSTANCE,
            )
        )
    return counts


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'tickets':>8} {'cycle':<9} {'reads':>6} {'writes':>6} {'total':>6} {'minimum':>7} "
        f"{'naive':>7} {'naive/ours':>10} {'wall s':>7} {'cpu s':>6} {'plan s':>6} "
        f"{'peak RSS MB':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        naive = f"{r.naive:>7}" if r.naive is not None else f"{'-':>7}"
        ratio = f"{r.naive / max(r.total, 1):>10.0f}" if r.naive is not None else f"{'-':>10}"
        print(
            f"{r.size:>8} {r.phase:<9} {r.reads:>6} {r.writes:>6} {r.total:>6} {r.minimum:>7} "
            f"{naive} {ratio} {r.wall_s:>7.2f} {r.cpu_s:>6.2f} {r.plan_s:>6.2f} {r.rss_mb:>11.0f}"
        )


def chart(rows: list[Row], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.size for r in rows})
    steady = {
        s: [r for r in rows if r.size == s and r.phase.startswith("churn")][1:] for s in sizes
    }

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot(
        sizes, [mean([r.total for r in steady[s]]) for s in sizes], "o-", label="fragment-connector"
    )
    full = {s: next(r.total for r in rows if r.size == s and r.phase == "full list") for s in sizes}
    left.plot(
        sizes,
        [mean([r.total for r in steady[s]]) + full[s] / FULL_LISTING_CYCLES for s in sizes],
        "o--",
        label="connector, hourly full listing amortised",
    )
    naive = [
        (s, mean([r.naive for r in steady[s] if r.naive is not None]))
        for s in sizes
        if any(r.naive is not None for r in steady[s])
    ]
    if naive:
        left.plot([s for s, _ in naive], [v for _, v in naive], "s-", label="naive client")
    left.plot(
        sizes,
        [mean([r.minimum for r in steady[s]]) for s in sizes],
        "k:",
        label="theoretical minimum",
    )
    left.axhline(BUDGET, color="red", linestyle="--", label="5-minute budget (300)")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="open tickets",
        ylabel="requests per 1%-churn cycle",
        title="Requests per cycle",
    )
    left.set_ylim(top=left.get_ylim()[1] * 30)  # an empty decade on top for the legend
    left.legend(loc="upper right", fontsize="small")
    right.plot(
        sizes, [mean([r.wall_s for r in steady[s]]) for s in sizes], "o-", label="churn cycle"
    )
    right.plot(
        sizes,
        [mean([r.wall_s for r in rows if r.size == s and r.phase == "no-op"]) for s in sizes],
        "^-",
        label="no-op cycle",
    )
    right.set(
        xscale="log",
        xlabel="open tickets",
        ylabel="seconds (loopback)",
        title="Wall time per cycle",
    )
    right.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--churn-cycles", type=int, default=3)
    parser.add_argument(
        "--naive-max", type=int, default=10000, help="largest size the naive client runs"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "out" / "work")
    args = parser.parse_args()
    if args.churn_cycles < 2:
        parser.error("--churn-cycles must be at least 2: steady state starts at the second")
    rows: list[Row] = []
    began = time.monotonic()
    for size in args.sizes:
        rows += bench_size(size, args.churn_cycles, args.naive_max, args.workdir / str(size))
    print_table(rows)
    chart(rows, ROOT / "benchmarks" / "out" / "requests.png")
    print()
    for size in args.sizes:
        # The first churn cycle still re-reads what the initial sync wrote; steady state after.
        churn = [r.total for r in rows if r.size == size and r.phase.startswith("churn")][1:]
        full = next(r.total for r in rows if r.size == size and r.phase == "full list")
        steady = sum(churn) / len(churn)
        amortised = steady + full / FULL_LISTING_CYCLES
        print(
            f"{size:>8} tickets: steady 1%-churn cycle {steady:.0f} requests, full listing {full} "
            f"every {FULL_LISTING_CYCLES} cycles -> {amortised:.0f} requests per cycle amortised "
            f"(budget {BUDGET})"
        )
    print(f"\nchart: benchmarks/out/requests.png; total {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
