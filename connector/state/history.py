"""What `status` and the status page read: past runs, last plans, the running cycles' progress."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from connector.progress import ProgressSnapshot
from connector.redaction import REDACTOR
from connector.state.database import Database
from connector.state.schema import plans, progress, runs

HISTORY_PER_SOURCE = 50


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One past cycle of one source."""

    run_id: str
    source: str
    kind: str
    started_at: datetime
    finished_at: datetime
    outcome: str
    counts: dict[str, int]
    requests: int
    error: str | None
    replica: str | None = None  # host:pid of the daemon that ran it (None: a one-shot command)


class RunHistory:
    """The last runs of each source (`fc_runs`) and the last plan of each kind (`fc_plans`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, record: RunRecord) -> None:
        """Add a run to the history, keeping the last HISTORY_PER_SOURCE of each source."""
        row = {
            "run_id": record.run_id,
            "source": record.source,
            "kind": record.kind,
            "started_at": record.started_at.isoformat(),
            "finished_at": record.finished_at.isoformat(),
            "outcome": record.outcome,
            "counts": json.dumps(record.counts, sort_keys=True),
            "requests": record.requests,
            # Errors quote servers, and servers echo credentials: the store keeps them scrubbed.
            "error": REDACTOR.scrub(record.error) if record.error else None,
            "replica": record.replica,
        }
        async with self._db.write("write the run history") as conn:
            await conn.execute(sa.insert(runs), [row])
            old = await conn.execute(
                sa.select(runs.c.id)
                .where(runs.c.source == record.source)
                .order_by(runs.c.id.desc())
                .offset(HISTORY_PER_SOURCE)
            )
            ids = [r.id for r in old]
            if ids:
                await conn.execute(sa.delete(runs).where(runs.c.id.in_(ids)))

    async def recent(self, limit: int = 20, *, source: str | None = None) -> list[RunRecord]:
        """The most recent runs, newest first."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if source is not None:
            query = query.where(runs.c.source == source)
        async with self._db.read("read the run history") as conn:
            rows = list(await conn.execute(query))
        return [
            RunRecord(
                run_id=r.run_id,
                source=r.source,
                kind=r.kind,
                started_at=datetime.fromisoformat(r.started_at),
                finished_at=datetime.fromisoformat(r.finished_at),
                outcome=r.outcome,
                counts=json.loads(r.counts),
                requests=r.requests,
                error=r.error,
                replica=r.replica,
            )
            for r in rows
        ]

    async def set_last_plan(
        self, source: str, kind: str, *, run_id: str, recorded_at: datetime, document: Any
    ) -> None:
        """Store the plan of a source's latest cycle of that kind (replacing the previous one)."""
        row = {
            "source": source,
            "kind": kind,
            "run_id": run_id,
            "recorded_at": recorded_at.isoformat(),
            "document": json.dumps(document, sort_keys=True),
        }
        async with self._db.write(f"write the last plan of {source!r}") as conn:
            await conn.execute(
                sa.delete(plans).where(plans.c.source == source, plans.c.kind == kind)
            )
            await conn.execute(sa.insert(plans), [row])

    async def last_plans(self) -> dict[tuple[str, str], Any]:
        """The stored last plans: (source, kind) -> the document given to `set_last_plan`."""
        async with self._db.read("read the last plans") as conn:
            rows = list(await conn.execute(sa.select(plans)))
        found: dict[tuple[str, str], Any] = {}
        for row in rows:
            try:
                found[(row.source, row.kind)] = json.loads(row.document)
            except ValueError:
                continue  # a row this release cannot read: not worth failing the page over
        return found


class ProgressTable:
    """The running cycle of each source as its process last reported it (`fc_progress`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_progress(self, snapshot: ProgressSnapshot) -> None:
        """Store the figures of a source's running cycle (replacing the previous ones)."""
        row = {
            "source": snapshot.source,
            "run_id": snapshot.run_id,
            "updated_at": snapshot.updated_at.isoformat(),
            "document": json.dumps(snapshot.to_json(), sort_keys=True),
        }
        async with self._db.write(f"write the progress of {snapshot.source!r}") as conn:
            await conn.execute(sa.delete(progress).where(progress.c.source == snapshot.source))
            await conn.execute(sa.insert(progress), [row])

    async def clear_progress(self, source: str, run_id: str) -> None:
        """The source's cycle `run_id` ended: drop its figures (not a newer cycle's)."""
        async with self._db.write(f"write the progress of {source!r}") as conn:
            await conn.execute(
                sa.delete(progress).where(progress.c.source == source, progress.c.run_id == run_id)
            )

    async def running_cycles(self) -> list[ProgressSnapshot]:
        """The cycles running now, by source, as their processes last reported them.

        A snapshot's `updated_at` tells how fresh it is: the heartbeat rewrites it every
        `connector.progress_interval`, so one much older belongs to a process that stopped.
        """
        async with self._db.read("read the progress of the running cycles") as conn:
            rows = list(await conn.execute(sa.select(progress).order_by(progress.c.source)))
        found = []
        for row in rows:
            try:
                found.append(ProgressSnapshot.from_json(json.loads(row.document)))
            except (ValueError, KeyError, TypeError):
                continue  # a row written by another release: not worth failing `status` over
        return found
