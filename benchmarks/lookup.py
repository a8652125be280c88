"""Request cost of finding the tasks that already exist, against a strict and a lenient sandbox.

    python benchmarks/lookup.py [--tickets 2000] [--done 0.1] [--new 0.01]

Before a create the connector makes sure no task holds the uid (a PUT would replace an
operator's DONE task). Three cases, each through the real `reconcile` command:

- first import into an empty Fragment: the minimum is one read and ceil(tickets / 100) PUTs;
- state loss: the tickets synced, a share of their tasks closed by operators, the state file
  deleted, then a run (it must write nothing: no task re-created, no DONE reopened);
- new tickets in a warm cycle: the share `--new` of new tickets, looked up before their create
  (the documented query on a strict server; on a lenient one, which ignores the query's filter,
  the fallback chosen by cost).

Prints, per case and sandbox profile, the reads and writes sent and the minimum.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.identity import instance_namespace, task_uid  # noqa: E402
from connector.sandbox import SandboxConfig, SandboxServer  # noqa: E402

TOKEN = "bench-token"
SOURCE = "backoffice"
INSTANCE = "bench"


def tickets(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"T-{n}", "title": f"Case {n}", "amount": n % 97} for n in range(start, count)]


def reconcile(workdir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "connector", "reconcile", "--output", "json"),
            *("--config", str(workdir / "config.yaml")),
        ],
        cwd=workdir,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if not result.stdout:
        raise RuntimeError(result.stderr)
    report: dict[str, Any] = json.loads(result.stdout)
    if report["exit_code"] != 0:
        raise RuntimeError(f"reconcile exited {report['exit_code']}: {result.stdout[:500]}")
    return report


def counted(sandbox: SandboxServer) -> tuple[int, int, str]:
    counts: dict[str, int] = {}
    for entry in sandbox.store.request_counts():
        key = f"{entry['method']} {entry['route']}"
        counts[key] = counts.get(key, 0) + entry["count"]
    writes = sum(n for key, n in counts.items() if key.split()[0] in ("PUT", "PATCH"))
    detail = ", ".join(f"{n} {key}" for key, n in sorted(counts.items()))
    return sum(counts.values()) - writes, writes, detail


def run_profile(profile: str, size: int, done: float, new: float) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    config = SandboxConfig(token=TOKEN, test_mode=True, requests_per_minute=None, profile=profile)
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(config) as sandbox:
        workdir = Path(tmp)
        path = workdir / "tickets.json"
        settings = {
            "connector": {"instance": INSTANCE},
            "fragment": {
                "base_url": sandbox.base_url,
                "token": TOKEN,
                "requests_per_minute": 1e9,
                # Cycles seconds apart stand for cycles minutes apart (as in run.py).
                "listing_overlap": "1s",
            },
            "state": {"url": f"sqlite:///{workdir / 'state.db'}"},
            "sources": [{"name": SOURCE, "adapter": "file", "options": {"path": str(path)}}],
        }
        (workdir / "config.yaml").write_text(yaml.safe_dump(settings))

        path.write_text(json.dumps(tickets(size)))
        sandbox.store.clear_requests()
        reconcile(workdir)
        rows.append(("first import", profile, *counted(sandbox), 1 + math.ceil(size / 100)))

        namespace = instance_namespace(INSTANCE)
        closed = int(size * done)
        time.sleep(1.5)  # operators act later than the listing overlap
        for n in range(closed):
            sandbox.store.operator_edit(task_uid(namespace, SOURCE, f"T-{n}"), status="DONE")
        (workdir / "state.db").unlink()
        sandbox.store.clear_requests()
        report = reconcile(workdir)
        assert report["counts"]["create"] == 0 and report["counts"]["reopen"] == 0, report
        rows.append(("state loss", profile, *counted(sandbox), math.ceil(size / 100)))

        added = max(1, int(size * new))
        path.write_text(json.dumps(tickets(size + added)))
        time.sleep(1.5)  # past the listing overlap
        sandbox.store.clear_requests()
        report = reconcile(workdir)
        assert report["counts"]["create"] == added, report
        rows.append(("new tickets", profile, *counted(sandbox), 2 + math.ceil(added / 100)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--done", type=float, default=0.1, help="share closed by operators")
    parser.add_argument("--new", type=float, default=0.01, help="share of new tickets")
    args = parser.parse_args()
    rows = [
        row
        for profile in ("strict", "lenient")
        for row in run_profile(profile, args.tickets, args.done, args.new)
    ]
    print(f"{args.tickets} tickets, {args.done:.0%} DONE by operators, {args.new:.0%} new")
    print(f"{'case':<13} {'profile':<8} {'reads':>5} {'writes':>6} {'min':>4}  requests")
    for case, profile, reads, writes, detail, least in rows:
        print(f"{case:<13} {profile:<8} {reads:>5} {writes:>6} {least:>4}  {detail}")


if __name__ == "__main__":
    main()
