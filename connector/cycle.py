"""One reconciliation cycle: every source's snapshot and tasks, planned, guarded and applied.

For each source, in order: read the snapshot through its adapter; list the source's open tasks
in Fragment; resolve the tickets with no open task (the index, then `POST /tasks/query` for the
uids it does not know, so an operator's DONE task is never re-created); plan; guard; apply (unless
dry-run); remember what Fragment showed in the index. A source that fails gets no writes at all
and the others go on. The same code serves `reconcile`, the daemon and the demo.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from adapters.base import SourceAdapter
from connector.apply import apply_actions
from connector.config import Settings, SourceSection
from connector.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REFUSED,
    ConnectorError,
    FragmentAuthError,
    FragmentValidationError,
    classify,
    most_severe,
)
from connector.fragment import FragmentClient
from connector.guards import GuardPolicy, guard_plan
from connector.identity import Markers, instance_namespace, owned_ticket_id, task_uid
from connector.models import (
    OPEN_STATUSES,
    ActionKind,
    CycleReport,
    SourceReport,
    Task,
    TaskStatus,
)
from connector.plan import PlanPolicy, plan_source
from connector.snapshot import Snapshot, read_snapshot
from connector.state import StateStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CycleOptions:
    """How a cycle runs: for real or as a dry-run, for all sources or one."""

    dry_run: bool = False
    only_source: str | None = None
    allow_mass_close: bool = False


@dataclass
class _Known:
    """The tasks of one source known this cycle: uid -> (task, ticket id)."""

    tasks: dict[str, tuple[Task, str]] = field(default_factory=dict)

    def add(self, task: Task, ticket_id: str) -> None:
        self.tasks[task.uid] = (task, ticket_id)

    def as_mapping(self) -> dict[str, Task]:
        return {uid: task for uid, (task, _) in self.tasks.items()}


class Reconciler:
    """Runs cycles for the configured sources against one Fragment client and one state store."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: FragmentClient,
        store: StateStore,
        adapters: Mapping[str, SourceAdapter],
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.progress = progress or (lambda message: None)
        self.client = client
        self.store = store
        self.adapters = adapters
        self.namespace = instance_namespace(settings.connector.instance)
        self.markers: Markers = settings.connector.markers.to_markers()

    def _policy(self, source: SourceSection) -> PlanPolicy:
        return PlanPolicy(
            namespace=self.namespace,
            markers=self.markers,
            static_fields=source.task.fields,
            reopen=source.reopen,
        )

    async def run(self, options: CycleOptions) -> CycleReport:
        """One cycle over every selected source."""
        run_id = uuid.uuid4().hex[:12]
        started = datetime.now(UTC)
        before = self.client.stats.counts.copy()
        sources = self.settings.sources
        if options.only_source is not None:
            sources = [self.settings.source(options.only_source)]
        reports = []
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            for source in sources:
                reports.append(await self.reconcile_source(source, options))
        requests = self.client.stats.counts - before
        return CycleReport(
            run_id=run_id,
            dry_run=options.dry_run,
            sources=tuple(reports),
            started_at=started,
            finished_at=datetime.now(UTC),
            requests=dict(requests),
        )

    async def reconcile_source(self, source: SourceSection, options: CycleOptions) -> SourceReport:
        """Reconcile one source; every failure ends up in the report, none escapes."""
        began = time.monotonic()
        requests_before = self.client.stats.total
        try:
            report = await self._reconcile(source, options)
        except ConnectorError as exc:
            label = classify(exc)[1]
            log.error("cycle.source_failed", source=source.name, error=str(exc), outcome=label)
            report = SourceReport(name=source.name, ok=False, error=str(exc), error_label=label)
            if isinstance(exc, FragmentAuthError):
                raise
        counts = report_counts(report)
        log.info(
            "cycle.source",
            source=source.name,
            ok=report.ok,
            dry_run=options.dry_run,
            duration_s=round(time.monotonic() - began, 3),
            requests=self.client.stats.total - requests_before,
            tickets=report.tickets,
            open_tasks=report.open_tasks,
            invalid_records=len(report.invalid_records),
            failed=len(report.failures),
            **counts,
        )
        return report

    async def _reconcile(self, source: SourceSection, options: CycleOptions) -> SourceReport:
        adapter = self.adapters[source.name]
        name = source.name
        snapshot = await read_snapshot(
            name, adapter, progress=lambda n: self.progress(f"{name}: {n:,} tickets read")
        )
        known = _Known()
        listed = 0
        async for page in self.client.iter_tasks(
            statuses=OPEN_STATUSES, fields={self.markers.source: source.name}
        ):
            listed += len(page)
            self.progress(f"{name}: {listed:,} open tasks listed")
            for task in page:
                ticket_id = owned_ticket_id(
                    task, source=source.name, namespace=self.namespace, markers=self.markers
                )
                if ticket_id is not None:
                    known.add(task, ticket_id)
        open_before = len(known.tasks)
        looked_up = await self._resolve_unlisted(source.name, snapshot, known)

        plan = plan_source(
            source.name,
            snapshot.tickets,
            known.as_mapping(),
            self._policy(source),
            kept_ticket_ids=snapshot.kept_ticket_ids,
        )
        refusals = guard_plan(
            plan,
            snapshot_complete=snapshot.complete,
            open_tasks_before=open_before,
            policy=GuardPolicy(
                close_ratio=self.settings.guards.close_ratio,
                close_min=self.settings.guards.close_min,
                allow_mass_close=options.allow_mass_close,
            ),
        )
        for refusal in refusals[:1]:
            log.error(
                "guard.refused",
                source=source.name,
                guard=refusal.guard,
                refused=len(refusals),
                reason=refusal.reason,
            )
        report = SourceReport(
            name=source.name,
            ok=True,
            plan=plan,
            refusals=refusals,
            invalid_records=tuple(snapshot.invalid),
            tickets=len(snapshot.tickets),
            open_tasks=open_before,
        )
        if options.dry_run:
            return report

        seen = [*known.tasks.values(), *looked_up]
        planned = report.planned
        done = 0

        def applied(count: int) -> None:
            nonlocal done
            done += count
            self.progress(f"{name}: {done:,}/{len(planned):,} actions applied")

        result = await apply_actions(
            self.client, planned, batch_size=self.settings.fragment.batch_size, progress=applied
        )
        for action, returned in result.applied:
            if returned is not None:
                seen.append((returned, action.ticket_id))
        self.store.remember(source.name, seen, self.markers)
        if result.fatal is not None and isinstance(result.fatal, FragmentAuthError):
            raise result.fatal
        for failure in result.failures:
            log.warning(
                "apply.failed",
                source=source.name,
                kind=failure.action.kind.value,
                ticket_id=failure.action.ticket_id,
                error=failure.error,
            )
        return SourceReport(
            name=source.name,
            ok=result.fatal is None,
            error=str(result.fatal) if result.fatal else None,
            error_label=classify(result.fatal)[1] if result.fatal else None,
            plan=plan,
            refusals=refusals,
            failures=tuple(result.failures),
            invalid_records=tuple(snapshot.invalid),
            applied=True,
            tickets=len(snapshot.tickets),
            open_tasks=open_before,
        )

    async def _resolve_unlisted(
        self, source: str, snapshot: Snapshot, known: _Known
    ) -> list[tuple[Task, str]]:
        """Find the tasks of open tickets missing from the open listing: DONE, or not yet there.

        The index answers for tasks it saw DONE; Fragment is asked about every other uid, so a
        lost index costs requests, never a duplicate or a reopened operator decision.
        """
        wanted = {
            task_uid(self.namespace, source, t.id): t.id
            for t in snapshot.tickets
            if t.is_open and task_uid(self.namespace, source, t.id) not in known.tasks
        }
        if not wanted:
            return []
        entries = self.store.lookup(wanted)
        for entry in entries.values():
            if entry.status is TaskStatus.DONE and entry.source == source:
                known.add(entry.as_task(self.markers), entry.ticket_id)
        unknown = [uid for uid in wanted if uid not in known.tasks]
        if not unknown:
            return []
        try:
            found = await self.client.query_uids(unknown)
        except FragmentValidationError as exc:
            # POST /tasks/query is optional in the contract; without it a task an operator
            # closed may be re-created, which is logged so the operator knows.
            log.warning("fragment.query_unavailable", source=source, error=str(exc))
            return []
        looked_up = []
        for task in found:
            ticket_id = owned_ticket_id(
                task, source=source, namespace=self.namespace, markers=self.markers
            )
            if ticket_id is not None:
                known.add(task, ticket_id)
                looked_up.append((task, ticket_id))
        missing = [uid for uid in unknown if uid not in known.tasks and uid in entries]
        if missing:
            self.store.forget(missing)
        return looked_up


def report_counts(report: SourceReport) -> dict[str, int]:
    """Counts of one source's planned actions by kind, with unchanged and refused."""
    counts = {kind.value: 0 for kind in ActionKind}
    for action in report.planned:
        counts[action.kind.value] += 1
    counts["unchanged"] = report.plan.unchanged if report.plan else 0
    counts["refused"] = len(report.refusals)
    return counts


def source_exit_code(report: SourceReport, *, dry_run: bool) -> int:
    """Exit code for one source: 1 failed, 3 guard refused, 2 pending dry-run changes, else 0."""
    codes = [EXIT_OK]
    if not report.ok or report.failures:
        codes.append(EXIT_FAILURE)
    if report.refusals:
        codes.append(EXIT_REFUSED)
    if dry_run and report.planned:
        codes.append(EXIT_PENDING)
    return most_severe(codes)


def cycle_exit_code(report: CycleReport) -> int:
    """Exit code for a whole cycle: the most severe of its sources'."""
    return most_severe(source_exit_code(s, dry_run=report.dry_run) for s in report.sources)
