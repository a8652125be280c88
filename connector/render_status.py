"""`status` for people (one line per running cycle, past run and cursor) and for programs.

`connector.status.runs_overview` reads the `RunsOverview` from the state store; this module only
draws it. The JSON document is version 1 of docs/output.md (fields are only ever added). Source
names, replicas, errors and cursors come from the store, which other processes wrote: every text
line goes through `visible`.
"""

from __future__ import annotations

import json
from typing import IO

from connector.models import JSONValue
from connector.printable import visible
from connector.state import RunRecord
from connector.status import RunningCycle, RunsOverview

STATUS_CLI_VERSION = 1


def _running_json(cycle: RunningCycle) -> dict[str, JSONValue]:
    return {**cycle.progress.to_json(), "stale": cycle.stale}


def _run_json(run: RunRecord) -> dict[str, JSONValue]:
    return {
        "run_id": run.run_id,
        "source": run.source,
        "kind": run.kind,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "outcome": run.outcome,
        "counts": dict(run.counts),
        "requests": run.requests,
        "error": run.error,
        "replica": run.replica,
    }


def status_json(overview: RunsOverview) -> dict[str, JSONValue]:
    """The overview as the documented JSON document."""
    return {
        "version": STATUS_CLI_VERSION,
        "running": [_running_json(c) for c in overview.running],
        "runs": [_run_json(r) for r in overview.runs],
        "cursors": dict(overview.cursors),
    }


def write_status_json(overview: RunsOverview, out: IO[str]) -> None:
    """Print the JSON document, one line."""
    out.write(json.dumps(status_json(overview)) + "\n")


def _running_line(cycle: RunningCycle) -> str:
    progress = cycle.progress
    by = f" by {progress.replica}" if progress.replica else ""
    stale = (
        f"  (no news for {cycle.age_s:.0f}s: its process may have stopped)" if cycle.stale else ""
    )
    return (
        f"running {progress.source:<16} {progress.kind:<11} {progress.describe()}, "
        f"{cycle.elapsed_s:.0f}s so far{by}{stale}"
    )


def _run_line(run: RunRecord) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in run.counts.items() if v and k != "unchanged")
    took = (run.finished_at - run.started_at).total_seconds()
    line = (
        f"{run.started_at:%Y-%m-%d %H:%M:%S} {run.source:<16} {run.kind:<11} {run.outcome:<22} "
        f"{took:6.1f}s {run.requests:4d} req  {counts or 'no changes'}"
    )
    by = f"  by {run.replica}" if run.replica else ""
    return line + by + (f"  error: {run.error}" if run.error else "")


def status_lines(overview: RunsOverview) -> list[str]:
    """The overview for a person (control characters shown)."""
    if overview.missing_store is not None:
        return [visible(f"no state store at {overview.missing_store} yet: no run recorded")]
    lines = [_running_line(c) for c in overview.running]
    if not overview.runs:
        lines.append("no runs recorded yet (the daemon records them: `fragment-connector run`)")
    lines += [_run_line(r) for r in overview.runs]
    lines += [f"cursor {name}: {c}" for name, c in overview.cursors.items() if c is not None]
    return [visible(line) for line in lines]


def write_status_text(overview: RunsOverview, out: IO[str]) -> None:
    """Print the overview for a person."""
    out.writelines(line + "\n" for line in status_lines(overview))
