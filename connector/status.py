"""What the status page and `GET /api/status` show, read from the state store alone.

The daemon records each cycle's plan beside its run history (`plan_document`, stored by
`StateStore.set_last_plan`); `status_document` builds the versioned document from the store and
the config, so every replica sharing a store shows the same picture (only "held here" depends on
which replica answers). Everything in it passed through the redactor: ticket text is hostile, and
an adapter's error may quote a credential.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from connector.config import Settings
from connector.cycle import report_counts, source_outcome, write_back_counts
from connector.guards import GUARD_MASS_CLOSE
from connector.models import Action, CycleKind, JSONValue, SourceReport
from connector.progress import ProgressSnapshot
from connector.redaction import REDACTOR, Redactor, secrets_in
from connector.state import RunRecord, StateStore

STATUS_VERSION = 1
# A first import plans one action per ticket: the page keeps the first ones of each cycle, the
# counts keep the rest (a store row of 100k actions would cost every page load).
PLAN_ACTIONS_KEPT = 500
INVALID_KEPT = 5
CHART_RUNS = 30
HISTORY_READ = 200  # runs read to find each source's last ones and the last minute's requests

CHANGES = "changes"  # the key of a source's last plan that had actions or refusals (beside kinds)


# --- recording (the daemon, after each cycle) -------------------------------------------------


def _link(value: JSONValue) -> str | None:
    """A ticket url fit for a link: http(s) only (a `javascript:` url is text, not a link)."""
    if not isinstance(value, str):
        return None
    return value if urlsplit(value).scheme in ("http", "https") else None


def _action(action: Action, state: str) -> dict[str, JSONValue]:
    fields = action.payload.get("fields")
    url = fields.get("url") if isinstance(fields, dict) else None
    return {
        "kind": action.kind.value,
        "state": state,
        "ticket_id": action.ticket_id,
        "uid": action.uid,
        "title": action.title,
        "reason": action.reason,
        "url": _link(url),
        "changes": {key: [old, new] for key, (old, new) in action.changes.items()},
    }


def apply_command(source: str, guard: str) -> str | None:
    """The command that applies what `guard` refused, or None when no flag can (fix the source)."""
    if guard != GUARD_MASS_CLOSE:
        return None
    return f"fragment-connector reconcile --source {shlex.quote(source)} --allow-mass-close"


def record_cycle(
    store: StateStore,
    report: SourceReport,
    *,
    run_id: str,
    started: datetime,
    finished: datetime,
    replica: str | None,
) -> None:
    """Write one source's cycle to the run history, and its plan for the status page."""
    store.record_run(
        RunRecord(
            run_id=run_id,
            source=report.name,
            kind=report.kind,
            started_at=started,
            finished_at=finished,
            outcome=source_outcome(report),
            counts=run_counts(report),
            requests=report.requests,
            error=report.error,
            replica=replica,
        )
    )
    document = plan_document(report, run_id=run_id, recorded_at=finished)
    store.set_last_plan(
        report.name, report.kind, run_id=run_id, recorded_at=finished, document=document
    )
    if document["actions"] or document["refusal"]:
        # Most cycles change nothing: the page also keeps the last one that did.
        store.set_last_plan(
            report.name, CHANGES, run_id=run_id, recorded_at=finished, document=document
        )


def run_counts(report: SourceReport) -> dict[str, int]:
    """What a run record keeps: the cycle's counts, and its write-backs by outcome."""
    counts = report_counts(report)
    counts.update({f"write_back_{k}": v for k, v in write_back_counts(report).items()})
    return counts


def plan_document(
    report: SourceReport, *, run_id: str, recorded_at: datetime, dry_run: bool = False
) -> dict[str, JSONValue]:
    """One source's cycle as the status page shows it: actions with reasons and what became of
    them, refusals with the command that would apply them, skipped records."""
    refused = {r.action.uid: r for r in report.refusals}
    failed = {f.action.uid: f for f in report.failures}
    actions = report.plan.actions if report.plan else ()
    kept: list[JSONValue] = []
    counts: dict[str, int] = {}
    for action in actions:
        counts[action.kind.value] = counts.get(action.kind.value, 0) + 1
        if len(kept) >= PLAN_ACTIONS_KEPT:
            continue
        if action.uid in refused:
            row = _action(action, "refused")
            row["note"] = refused[action.uid].reason
        elif action.uid in failed:
            row = _action(action, "failed")
            row["note"] = failed[action.uid].error
        else:
            row = _action(action, "applied" if report.applied and not dry_run else "planned")
        kept.append(row)
    refusal: dict[str, JSONValue] | None = None
    if report.refusals:
        first = report.refusals[0]
        refusal = {
            "guard": first.guard,
            "count": len(report.refusals),
            "reason": first.reason,
            "command": apply_command(report.name, first.guard),
        }
    return {
        "run_id": run_id,
        "kind": report.kind.value,
        "recorded_at": recorded_at.isoformat(),
        "ok": report.ok,
        "error": report.error,
        "tickets": report.tickets,
        "open_tasks": report.open_tasks,
        "unchanged": report.plan.unchanged if report.plan else 0,
        "counts": dict(counts),  # a copy typed as JSON (a dict's value type is invariant)
        "actions": kept,
        "actions_not_kept": max(0, len(actions) - len(kept)),
        "refusal": refusal,
        "invalid_records": {
            "count": len(report.invalid_records),
            "first": [
                {"position": r.position, "ticket_id": r.ticket_id, "reason": r.reason}
                for r in report.invalid_records[:INVALID_KEPT]
            ],
        },
    }


# --- `status`: the recent runs, the running cycles and the cursors ---------------------------


@dataclass(frozen=True, slots=True)
class RunningCycle:
    """A cycle some process is running, as it last reported it."""

    progress: ProgressSnapshot
    age_s: float  # since its figures were written
    elapsed_s: float  # since the cycle began
    stale: bool  # no news for 3 progress intervals: its process has probably stopped


@dataclass(frozen=True, slots=True)
class RunsOverview:
    """What `status` shows: every replica's running cycles, the recent runs, each configured
    source's incremental cursor; `missing_store` names a SQLite file not created yet."""

    running: tuple[RunningCycle, ...] = ()
    runs: tuple[RunRecord, ...] = ()
    cursors: Mapping[str, str | None] = field(default_factory=dict)
    missing_store: str | None = None


def runs_overview(
    settings: Settings, store: StateStore, *, limit: int, now: datetime
) -> RunsOverview:
    """The overview `status` shows, read from the state store."""
    stale_after = 3 * settings.connector.progress_interval.total_seconds()
    running = []
    for snapshot in store.running_cycles():
        age = (now - snapshot.updated_at).total_seconds()
        running.append(
            RunningCycle(
                progress=snapshot,
                age_s=age,
                elapsed_s=(now - snapshot.started_at).total_seconds(),
                stale=age > stale_after,
            )
        )
    return RunsOverview(
        running=tuple(running),
        runs=tuple(store.recent_runs(limit)),
        cursors={s.name: store.get_cursor(s.name) for s in settings.sources},
    )


# --- reading (any replica, per request) --------------------------------------------------------


def redactor_for(settings: Settings) -> Redactor:
    """The redactor the page's text goes through: the one redactor's secrets (every source's
    typed secrets, learnt at start) plus every secret this config holds as written."""
    found = [*REDACTOR.secrets, *secrets_in(settings)]
    for source in settings.sources:
        found.extend(secrets_in(source.options))
    return Redactor(found)


def _run(record: RunRecord | None) -> dict[str, JSONValue] | None:
    if record is None:
        return None
    return {
        "run_id": record.run_id,
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat(),
        "duration_s": round((record.finished_at - record.started_at).total_seconds(), 3),
        "outcome": record.outcome,
        "requests": record.requests,
        "counts": dict(record.counts),
        "replica": record.replica,
        "error": record.error,
    }


def requests_last_minute(runs: Iterable[RunRecord], now: datetime) -> int:
    """Requests sent in the minute before `now`, each run's spread evenly over its duration."""
    since = now - timedelta(minutes=1)
    total = 0.0
    for run in runs:
        start, end = run.started_at, run.finished_at
        if end <= since or start >= now:
            continue
        span = (end - start).total_seconds()
        if span <= 0:
            total += run.requests
            continue
        inside = (min(end, now) - max(start, since)).total_seconds()
        total += run.requests * inside / span
    return round(total)


def _holding(
    name: str,
    holdings: Mapping[str, str],
    last: RunRecord | None,
    *,
    replica: str,
    now: datetime,
    settings: Settings,
) -> tuple[str, str | None]:
    """`here`, `other` (with the replica that last ran it) or `none`."""
    if holdings.get(name) == "held":
        return "here", replica
    recent = 3 * settings.schedule.full_refresh
    if (
        last is not None
        and last.replica
        and last.replica != replica
        and now - last.finished_at < recent
    ):
        return "other", last.replica
    return "none", None


def _next(last: RunRecord | None, every: timedelta | None, now: datetime) -> str | None:
    if every is None:
        return None
    if last is None:
        return now.isoformat()
    due = last.started_at + every
    return max(due, now).isoformat()


def status_document(
    settings: Settings,
    store: StateStore,
    *,
    holdings: Mapping[str, str],
    replica: str,
    now: datetime,
) -> dict[str, JSONValue]:
    """The versioned status document (docs/output.md) as of `now`, secrets masked."""
    history = store.recent_runs(HISTORY_READ)
    plans = store.last_plans()
    fresh_after = max(3 * settings.connector.progress_interval, timedelta(seconds=30))
    running = {p.source: p for p in store.running_cycles() if now - p.updated_at < fresh_after}
    sources: list[JSONValue] = []
    for source in settings.sources:
        name = source.name
        mine = [r for r in history if r.source == name]
        full = next((r for r in mine if r.kind == CycleKind.FULL), None)
        incremental = next((r for r in mine if r.kind == CycleKind.INCREMENTAL), None)
        failed = next((r for r in mine if r.error), None)
        held, held_by = _holding(
            name, holdings, mine[0] if mine else None, replica=replica, now=now, settings=settings
        )
        full_plan = plans.get((name, CycleKind.FULL))
        latest = max(
            (p for p in (full_plan, plans.get((name, CycleKind.INCREMENTAL))) if p is not None),
            key=lambda p: str(p.get("recorded_at", "")),
            default=None,
        )
        changes = plans.get((name, CHANGES))
        if latest is not None and changes is not None and changes["run_id"] == latest["run_id"]:
            changes = None  # the last plan is that one
        progress = running.get(name)
        sources.append(
            {
                "name": name,
                "adapter": source.adapter,
                "held": held,
                "held_by": held_by,
                "last_full": _run(full),
                "last_incremental": _run(incremental),
                "next_full_at": _next(full, settings.schedule.full_refresh, now),
                "next_incremental_at": _next(incremental, settings.schedule.incremental, now)
                if incremental is not None or settings.schedule.incremental is not None
                else None,
                "running": None
                if progress is None
                else {**progress.to_json(), "describe": progress.describe()},
                "refusal": full_plan.get("refusal") if full_plan else None,
                "invalid_records": (latest or {}).get("invalid_records", {"count": 0, "first": []}),
                "last_error": None
                if failed is None
                else {
                    "at": failed.finished_at.isoformat(),
                    "kind": failed.kind,
                    "error": failed.error,
                },
                "plan": latest,
                "last_changes": changes,
            }
        )
    chart: list[JSONValue] = [
        {
            "source": r.source,
            "kind": r.kind,
            "finished_at": r.finished_at.isoformat(),
            "requests": r.requests,
        }
        for r in reversed(history[:CHART_RUNS])
    ]
    document: dict[str, JSONValue] = {
        "version": STATUS_VERSION,
        "generated_at": now.isoformat(),
        "instance": settings.connector.instance,
        "replica": replica,
        "budget": {
            "requests_last_minute": requests_last_minute(history, now),
            "limit_per_minute": settings.fragment.requests_per_minute,
            "per_cycle": chart,
        },
        "sources": sources,
    }
    masked: dict[str, JSONValue] = redactor_for(settings).mask(document)
    return masked
