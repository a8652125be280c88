"""Peak RSS of the real `reconcile` process: a one-shot initial sync of N tickets.

    python benchmarks/cli_memory.py [--size 100000] [--code DIR ...]

The sandbox runs in its own process (rate limit lifted) and `reconcile --output json` in
another, started by `/usr/bin/time -v` so that the peak measured is the CLI process's own (a
child forked from a large parent would carry the parent's peak). `--code` runs the CLI from
other source trees (e.g. an export of main) for a before/after in one run; each gets a fresh
sandbox and state.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
CLI_ARGS = ("--config", "config.yaml", "--output", "json")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def one_run(code: Path, size: int, work: Path) -> dict[str, float | int | str]:
    work.mkdir(parents=True)
    tickets = [
        {"id": f"T-{n}", "title": f"Ticket number {n}", "url": f"https://bo.example/t/{n}"}
        for n in range(size)
    ]
    (work / "tickets.json").write_text(json.dumps(tickets))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    env["FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"] = TOKEN
    config = {
        "connector": {"instance": "bench"},
        "fragment": {
            "base_url": f"http://127.0.0.1:{port}/api/v1",
            "requests_per_minute": 1_000_000,
            "burst": 1000,
        },
        "state": {"url": f"sqlite:///{work / 'state.db'}"},
        "sources": [{"name": "backoffice", "adapter": "file", "options": {"path": "tickets.json"}}],
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    sandbox = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from connector.sandbox import SandboxConfig, serve;"
            f"serve(SandboxConfig(token={TOKEN!r}, requests_per_minute=None),"
            f" host='127.0.0.1', port={port})",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        began = time.monotonic()
        run_env = {**env, "PYTHONPATH": str(code)}
        result = subprocess.run(
            [*("/usr/bin/time", "-v", sys.executable, "-m", "connector", "reconcile"), *CLI_ARGS],
            cwd=work,
            env=run_env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - began
    finally:
        sandbox.terminate()
        sandbox.wait()
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    sources = report.get("sources", [{}])
    requests = report.get("requests", {})  # {total, reads, writes}, or by endpoint (older)
    return {
        "code": str(code),
        "exit": result.returncode,
        "peak_rss_mb": round(int(peak.group(1)) / 1024, 1) if peak else -1,
        "wall_s": round(wall, 1),
        "requests": requests.get("total", sum(requests.values())),
        "created": sources[0].get("counts", {}).get("create", -1) if sources else -1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--code", type=Path, nargs="+", default=[ROOT])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n, code in enumerate(args.code):
            print(json.dumps(one_run(code.resolve(), args.size, Path(tmp) / str(n))), flush=True)


if __name__ == "__main__":
    main()
