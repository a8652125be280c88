"""Does a full listing longer than `schedule.full_refresh` starve the other sources? Measured.

    python benchmarks/starve.py [--big 20000] [--rate 120] [--seconds 150]

Two sources share one account's budget in one daemon (`fragment-connector run`, a process of its
own): `big` (`--big` tickets) and `small` (20 tickets). Both are imported first (one-shot
`reconcile`, rate lifted); then the daemon runs at `--rate` requests a minute with
`schedule.full_refresh: 20s` and `fragment.full_listing_every: 1s`, so that every cycle of `big`
lists all its open tasks: ceil(big / 100) requests, far longer than 20 s at that rate (a 100k
backlog at 60 a minute is the same ratio, 1,000 requests against a 5-minute period). Prints, per
source, the cycles the daemon finished, their durations and requests, and the longest time
between two of `small`'s cycle ends, against its 20 s period.
"""

from __future__ import annotations

import argparse
import itertools
import json
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

from connector.sandbox import SandboxConfig, SandboxServer  # noqa: E402

TOKEN = "starve-token"
PERIOD_S = 20


def config(work: Path, base_url: str, rate: float) -> dict[str, Any]:
    return {
        "connector": {"instance": "starve"},
        "fragment": {
            "base_url": base_url,
            "token": TOKEN,
            "requests_per_minute": rate,
            "full_listing_every": "1s",
        },
        "schedule": {"full_refresh": f"{PERIOD_S}s", "jitter": None},
        "state": {"url": f"sqlite:///{work / 'state.db'}"},
        "server": {"port": 0},
        "sources": [
            {"name": name, "adapter": "file", "options": {"path": str(work / f"{name}.jsonl")}}
            for name in ("big", "small")
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=120.0)
    parser.add_argument("--seconds", type=float, default=150.0)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    sandbox_config = SandboxConfig(token=TOKEN, test_mode=True, requests_per_minute=None)
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(sandbox_config) as sandbox:
        work = Path(tmp)
        for name, size in (("big", args.big), ("small", 20)):
            with (work / f"{name}.jsonl").open("w") as out:
                for n in range(size):
                    out.write(json.dumps({"id": f"{name}-{n}", "title": f"{name} {n}"}) + "\n")
        cfg = work / "config.yaml"
        cfg.write_text(yaml.safe_dump(config(work, sandbox.base_url, 1e9)))
        cli = [sys.executable, "-m", "connector", "--config", str(cfg)]
        subprocess.run([*cli, "reconcile"], env=env, check=True, capture_output=True)
        cfg.write_text(yaml.safe_dump(config(work, sandbox.base_url, args.rate)))
        began = time.monotonic()
        daemon = subprocess.Popen(
            [*cli, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(args.seconds)
        daemon.terminate()
        _, logs = daemon.communicate(timeout=120)
    cycles: dict[str, list[dict[str, Any]]] = {"big": [], "small": []}
    for line in logs.splitlines():
        if '"cycle.source"' in line:
            event = json.loads(line)
            event["at"] = time.mktime(time.strptime(event["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
            cycles[event["source"]].append(event)
    print(
        f"big: {args.big} tickets ({-(-args.big // 100)} listing pages), small: 20 tickets; "
        f"{args.rate:g} requests/min shared; full_refresh {PERIOD_S}s; "
        f"{args.seconds:g}s of daemon"
    )
    for name, events in cycles.items():
        durations = ", ".join(f"{e['duration_s']:.0f}s/{e['requests']}" for e in events)
        print(f"{name:<6} {len(events)} cycles (duration/requests): {durations}")
    ends = [e["at"] for e in cycles["small"]]
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    if gaps:
        print(f"small: longest time between two cycle ends {max(gaps):.0f}s (period {PERIOD_S}s)")
    print(f"(measured over {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
