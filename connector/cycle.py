"""One reconciliation cycle: every source's snapshot and tasks, planned, guarded and applied.

A full cycle, for each source in turn: read the snapshot through its adapter; list the source's
open tasks in Fragment; resolve the tickets with no open task (the index, then
`POST /tasks/query` for the uids it does not know unless its census proves them absent, so an
operator's DONE task is never re-created); plan; guard; apply (unless dry-run); remember what
Fragment showed in the index.
An incremental cycle asks the adapter for the tickets changed since its cursor, fetches just
their tasks by uid, and plans without closing by absence; its cursor is stored only once its
changes were applied. A source that fails gets no writes and the others go on. The same code
serves `reconcile`, the daemon and the demo.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from adapters.base import SourceAdapter, SupportsChanges, SupportsWriteBack, can_write_back
from connector.apply import apply_actions
from connector.clock import SYSTEM_CLOCK, Clock
from connector.config import Settings, SourceSection
from connector.errors import (
    EXIT_FAILURE,
    EXIT_PENDING,
    GENERIC_ERROR,
    ConfigError,
    ConnectorError,
    FragmentAuthError,
    LeaseLostError,
    Outcome,
    SourceError,
    SourceHeldElsewhere,
    classify,
    most_severe,
    outcome_exit_code,
)
from connector.fragment import FragmentClient, TaskFinder, TaskPage
from connector.guards import GUARD_MASS_WRITE_BACK, GuardPolicy, guard_plan, guard_write_backs
from connector.identity import (
    Markers,
    closed_by_connector,
    instance_namespace,
    owned_ticket_id,
    task_uid,
)
from connector.leases import Leases
from connector.mirror import Mirror, MirrorWriter, Watermark
from connector.models import (
    OPEN_STATUSES,
    Action,
    ActionKind,
    CycleKind,
    CycleReport,
    ExplainedTask,
    Explanation,
    Fields,
    IndexView,
    InvalidRecord,
    SourceReport,
    Task,
    TaskStatus,
    Ticket,
    WriteBackOutcome,
)
from connector.plan import PlanPolicy, check_sync, plan_source, written_keys
from connector.progress import CycleProgress, ProgressBoard
from connector.source import read_changes, read_snapshot
from connector.state import Census, StateStore
from connector.writeback import FAILED as WRITE_BACK_FAILED
from connector.writeback import find_write_backs, perform_write_backs

log = structlog.get_logger(__name__)

# Which listing of Fragment a cycle planned from (shown with the plan).
LISTING_EVERY_STATUS = "full, every status"  # the index knew nothing of the source
LISTING_FULL = "full"  # every open task
LISTING_CHANGES = "changes since the last listing"  # deletions: seen by the count check
LISTING_BY_UID = "tickets' tasks by uid"  # an incremental poll


async def _always() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class CycleOptions:
    """How a cycle runs: for real or as a dry-run, for all sources or one."""

    dry_run: bool = False
    only_source: str | None = None
    allow_mass_close: bool = False
    allow_mass_write_back: bool = False
    # List every open task in Fragment, whatever the watermark says (a hard refresh).
    full_listing: bool = False
    # Awaited before every batch: False once this replica can no longer prove it owns the
    # source (another may have taken over), which stops the writes.
    may_write: Callable[[], Awaitable[bool]] = _always


@dataclass
class _Known:
    """The source's tasks known this cycle: in full (uid -> task), or, for the open tasks that
    already hold what their tickets want, by ticket id alone (`synced`, from the digests)."""

    tasks: dict[str, Task] = field(default_factory=dict)
    synced: set[str] = field(default_factory=set)
    # Ticket id -> desired fields, of the tickets `check_sync` found out of sync (not recomputed).
    desired: Mapping[str, Fields] = field(default_factory=dict)

    def add(self, task: Task) -> None:
        self.tasks[task.uid] = task


@dataclass
class _Inputs:
    """What a cycle planned from: tickets, the tasks known for them, and what was unreadable."""

    tickets: Sequence[Ticket]
    uids: Mapping[str, str]  # ticket id -> task uid, computed once, as the source was read
    known: _Known
    invalid: Sequence[InvalidRecord] = ()
    complete: bool = True
    open_before: int = 0
    next_cursor: str | None = None
    watermark: Watermark | None = None
    misses: Mapping[str, int] = field(default_factory=dict)
    # Tickets whose task could be neither found nor proven absent: left alone this cycle.
    unresolved: set[str] = field(default_factory=set)
    listing: str = ""


class Started:
    """When a listing started, in Fragment's clock: the `Date` of its first answer (RFC 9110
    asks it of every server with a clock); without one, this machine's clock as the listing
    began, whose skew the overlap must then cover."""

    def __init__(self, local: datetime) -> None:
        self._local = local
        self._server: datetime | None = None
        self._seen = False

    def see(self, page: TaskPage) -> None:
        """Take in a page of the listing (the first one tells)."""
        if not self._seen:
            self._seen = True
            self._server = page.server_date

    def at(self) -> datetime:
        """The listing's start."""
        return self._server or self._local


class Reconciler:
    """Runs cycles for the configured sources against one Fragment client and one state store."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: FragmentClient,
        store: StateStore,
        adapters: Mapping[str, SourceAdapter],
        board: ProgressBoard | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.client = client
        self.store = store
        self.adapters = adapters
        # Where the running cycles' progress goes (a terminal display, log lines, the store).
        self.board = board or ProgressBoard(clock=clock)
        self.should_stop = should_stop
        self.namespace = instance_namespace(settings.connector.instance)
        self.markers: Markers = settings.connector.markers.to_markers()
        self.finder = TaskFinder(client)
        self._said_no_census: set[str] = set()  # sources whose missing census was logged

    def _policy(self, source: SourceSection) -> PlanPolicy:
        return PlanPolicy(
            namespace=self.namespace,
            markers=self.markers,
            static_fields=source.task.fields,
            reopen=source.reopen,
            close_after_misses=self.settings.guards.close_after_misses,
        )

    def _owned(self, source: str, task: Task, uids: Mapping[str, str] | None = None) -> str | None:
        return owned_ticket_id(
            task, source=source, namespace=self.namespace, markers=self.markers, uids=uids
        )

    async def _census(self, source: str, *, dry_run: bool) -> Census | None:
        """The source's index census, if it has one that holds; a void one is said and dropped."""
        census = await self.store.index.census(source)
        if census is None and source not in self._said_no_census:
            # A store of an older release: the look-ups go on as they were, at a cost.
            self._said_no_census.add(source)
            log.info(
                "state.no_census",
                source=source,
                cost="each cycle with a new ticket asks Fragment about its uid",
                action="`reconcile --full` lists every status once and proves the index complete",
            )
        if census is None or census.intact:
            return census
        log.warning(
            "state.census_void",
            source=source,
            rows_written=census.rows,
            rows_found=census.found,
            why="the task index lost or gained rows outside the connector (a partial restore?)",
            action="new tickets are looked up in Fragment; `reconcile --full` lists every "
            "status and proves the index complete again",
        )
        if not dry_run:
            await self.store.index.drop_census(source)
        return None

    async def run(self, options: CycleOptions, leases: Leases | None = None) -> CycleReport:
        """One full cycle over every selected source (those `leases` grants, when given)."""
        run_id = uuid.uuid4().hex[:12]
        started = self.clock.now()
        before = self.client.stats.counts.copy()
        sources = self.settings.sources
        if options.only_source is not None:
            sources = [self.settings.source(options.only_source)]
        reports = []
        orphaned: dict[str, int] = {}
        with structlog.contextvars.bound_contextvars(run_id=run_id):
            if options.only_source is None:
                orphaned = await self.orphaned_sources()
            for source in sources:
                reports.append(await self._one_shot(source, options, leases))
        return CycleReport(
            run_id=run_id,
            dry_run=options.dry_run,
            sources=tuple(reports),
            started_at=started,
            finished_at=self.clock.now(),
            requests=dict(self.client.stats.counts - before),
            orphaned=orphaned,
        )

    async def _one_shot(
        self, source: SourceSection, options: CycleOptions, leases: Leases | None
    ) -> SourceReport:
        if leases is None:
            return await self.reconcile_source(source, options)
        name = source.name
        if not await leases.acquire(name):
            busy = SourceHeldElsewhere(
                f"source {name!r} is worked by a running daemon (it holds the source's lock) "
                "or the state database is unreachable: skipped; --dry-run shows its plan"
            )
            log.error("cycle.source_skipped", source=name, error=str(busy))
            return SourceReport(name=name, ok=False, error=str(busy), error_label=classify(busy)[1])
        holding = dataclasses.replace(options, may_write=functools.partial(leases.confirm, name))
        return await self.reconcile_source(source, holding)

    async def explain(self, source: SourceSection, ticket_id: str) -> Explanation:
        """Why a ticket's task is as it is, and what the next full cycle would do with it."""
        name = source.name
        uid = task_uid(self.namespace, name, ticket_id)
        snapshot = await read_snapshot(name, self.adapters[name], self.namespace)
        ticket = next((t for t in snapshot.tickets if t.id == ticket_id), None)
        invalid = [r for r in snapshot.invalid if r.ticket_id == ticket_id]
        task = await self.client.get_task(uid)
        owned = task is not None and self._owned(name, task) == ticket_id
        entry = (await self.store.index.lookup([uid])).get(uid)
        misses = (await self.store.index.misses(name)).get(uid, 0)
        plan = plan_source(
            name,
            [ticket] if ticket else [],
            {uid: task} if task is not None and owned else {},
            self._policy(source),
            kept_ticket_ids={ticket_id} if invalid else (),
            misses={uid: misses} if misses else None,
        )
        action = plan.actions[0] if plan.actions else None
        if action is not None and action.kind is ActionKind.CLOSE and not snapshot.complete:
            decision = "nothing: the snapshot is incomplete this cycle, so no task is closed"
        elif action is not None:
            decision = f"{action.kind.value}: {action.reason}"
            if action.kind is ActionKind.CLOSE:
                decision += " (subject to the mass-close guard of the whole cycle)"
        elif task is not None and not owned:
            decision = (
                "nothing: a task with this uid exists but does not carry this source's markers"
            )
        elif task is not None and not task.is_open and ticket and ticket.is_open:
            decision = "nothing: an operator closed the task; their decision stands"
        elif uid in plan.misses:
            decision = (
                f"nothing yet: missing from {plan.misses[uid]} snapshot(s), closes after "
                f"{self.settings.guards.close_after_misses}"
            )
        elif task is None and invalid:
            decision = "nothing: the record is unreadable (see above), so it is skipped"
        elif task is None and ticket is not None:
            decision = "nothing: the ticket is closed in the back-office and has no task"
        elif task is None:
            decision = (
                "nothing: the back-office does not list this ticket and Fragment has no task "
                "for it (an unknown id, or a ticket solved before it ever got a task)"
            )
        elif not task.is_open:
            decision = "nothing: the ticket is not open and its task is already DONE"
        else:
            decision = "nothing: the task already matches the ticket"
        return Explanation(
            source=name,
            ticket_id=ticket_id,
            uid=uid,
            ticket=ticket,
            invalid_records=tuple(invalid),
            snapshot_complete=snapshot.complete,
            task=None
            if task is None
            else ExplainedTask(
                status=task.status,
                fields=task.fields,
                updated_at=task.updated_at,
                owned=owned,
                closed_by=task.fields.get(self.markers.closed_by),
            ),
            index=None
            if entry is None
            else IndexView(
                status=entry.status,
                closed_by_connector=entry.closed_by_connector,
                misses=misses,
            ),
            next_cycle=decision,
            write_back=self._explain_write_back(source, ticket, task if owned else None),
            changes=action.changes if action else {},
        )

    def _explain_write_back(
        self, source: SourceSection, ticket: Ticket | None, task: Task | None
    ) -> str:
        """What write-back the next full cycle would make for this ticket, and why (not)."""
        config = source.write_back
        if not config.enabled:
            return "off for this source (sources[].write_back.on_done: none)"
        if task is not None and (stamp := task.fields.get(self.markers.written_back)):
            return f"done: written back to the back-office at {stamp}"
        found = find_write_backs(
            source.name,
            [ticket] if ticket is not None else [],
            {task.uid: task} if task is not None else {},
            uid_of=lambda ticket_id: task_uid(self.namespace, source.name, ticket_id),
            owned=lambda t: self._owned(source.name, t),
            markers=self.markers,
            config=config,
        )
        if found:
            return (
                f"{config.on_done}: {found[0].reason} (subject to guards.write_back_max "
                "of the whole cycle)"
            )
        if task is None or task.is_open:
            return "nothing: the task is not DONE"
        if closed_by_connector(task, self.markers):
            return "nothing: the connector closed the task (the ticket was closed or absent)"
        return "nothing: the ticket is not open in the back-office"

    async def orphaned_sources(self) -> dict[str, int]:
        """Sources the index holds open tasks of but the config no longer names; warned about.

        Their tasks are left exactly as they are: removing a source from the config must never
        read as "all its tickets were solved".
        """
        configured = {s.name for s in self.settings.sources}
        orphaned = {
            n: c for n, c in (await self.store.index.sources()).items() if n not in configured and c
        }
        for name, count in orphaned.items():
            log.warning(
                "source.orphaned",
                source=name,
                open_tasks=count,
                action="left as they are; add the source back, or close them in Fragment",
            )
        return orphaned

    async def reconcile_source(
        self, source: SourceSection, options: CycleOptions, *, kind: CycleKind = CycleKind.FULL
    ) -> SourceReport:
        """One cycle (full or incremental) of one source; failures end up in the report.

        Only a refused Fragment token escapes: no other source can succeed either.
        """
        began = self.clock.monotonic()
        requests_before = self.client.stats.total
        run_id = structlog.contextvars.get_contextvars().get("run_id") or uuid.uuid4().hex[:12]
        with self.board.cycle(source.name, kind, str(run_id)) as progress:
            report = await self._reconcile_source(source, options, kind, progress)
        report = dataclasses.replace(
            report,
            kind=kind,
            duration_s=round(self.clock.monotonic() - began, 3),
            requests=self.client.stats.total - requests_before,
        )
        counts = report_counts(report)
        log.info(
            "cycle.source",
            source=source.name,
            kind=kind,
            ok=report.ok and not report.failures,
            outcome=source_outcome(report),
            dry_run=options.dry_run,
            duration_s=report.duration_s,
            requests=report.requests,
            tickets=report.tickets,
            open_tasks=report.open_tasks,
            invalid_records=len(report.invalid_records),
            **counts,
        )
        return report

    async def _reconcile_source(
        self, source: SourceSection, options: CycleOptions, kind: CycleKind, progress: CycleProgress
    ) -> SourceReport:
        try:
            if kind is CycleKind.FULL:
                inputs = await self._full_inputs(source, options, progress)
            else:
                inputs = await self._incremental_inputs(source, progress)
            report = await self._plan_and_apply(source, inputs, options, progress, kind=kind)
            settled = not report.failures and not report.unresolved
            if kind is CycleKind.INCREMENTAL and report.applied and report.ok and settled:
                # Only now: a crash before this line makes the next poll apply them again,
                # which is harmless; the other order could lose them.
                await self.store.cursors.set(source.name, inputs.next_cursor)
            if inputs.watermark is not None and report.ok:
                await self.store.watermarks.set(source.name, inputs.watermark.stored())
            plan = report.plan
            # Miss counts move only on complete snapshots: absence from a partial one proves
            # nothing.
            counted = kind is CycleKind.FULL and report.applied and inputs.complete
            if counted and plan is not None and (plan.misses or inputs.misses):
                await self.store.index.set_misses(source.name, plan.misses)
            if kind is CycleKind.FULL and source.write_back.enabled and report.ok:
                # After the cycle's own bookkeeping: a failed write-back must not undo it.
                report = await self._write_back(source, inputs, report, options)
        except ConnectorError as exc:
            label = classify(exc)[1]
            log.error(
                "cycle.source_failed", source=source.name, kind=kind, error=str(exc), outcome=label
            )
            report = SourceReport(name=source.name, ok=False, error=str(exc), error_label=label)
            if isinstance(exc, FragmentAuthError):
                raise
        except Exception as exc:
            # A bug, or a record no check foresaw: this source fails, the others still run.
            log.exception("cycle.source_crashed", source=source.name, kind=kind)
            error = f"internal error: {exc!r}"
            report = SourceReport(
                name=source.name, ok=False, error=error, error_label=classify(exc)[1]
            )
        return report

    async def _full_inputs(
        self, source: SourceSection, options: CycleOptions, progress: CycleProgress
    ) -> _Inputs:
        name = source.name
        dry_run = options.dry_run
        progress.start_phase("read")
        snapshot = await read_snapshot(
            name, self.adapters[name], self.namespace, progress=progress.reach
        )
        progress.start_phase("list")
        known = _Known()
        watermark = Watermark.of(await self.store.watermarks.get(name))
        # A source the index knows nothing of (a first import, a lost state) is listed in every
        # status: one listing is then both the mirror and the look-up of every DONE task, so no
        # uid needs asking about (an empty Fragment costs one request). So is a full listing
        # asked for (`--full`) while the index has no census: it certifies one.
        cold = await self.store.index.count_known(name) == 0
        census = None if cold else await self._census(name, dry_run=dry_run)
        every_status = cold or (options.full_listing and census is None)
        full = (
            every_status
            or options.full_listing
            or watermark.full_listing_due(self.settings, now=self.clock.now())
        )
        listing = (
            LISTING_EVERY_STATUS if every_status else LISTING_FULL if full else LISTING_CHANGES
        )
        everything = every_status  # whether the listing shows every task of the source, any status
        # Whether the index, with this cycle's listing, holds every task of the source: then a
        # uid it has no row for needs no look-up (connector.state.census).
        proven = False

        async def new_mirror(full_listing: bool) -> Mirror:
            # A dry-run reads exactly what the real run would, and writes no local state.
            return await Mirror.load(
                self.store.index,
                name,
                self.markers,
                lambda t: self._owned(name, t, snapshot.uids),
                full_listing=full_listing,
                read_only=dry_run,
            )

        mirror = await new_mirror(full)
        started = Started(self.clock.now())

        async def list_in_full(mirror: Mirror) -> None:
            # A full listing of the open tasks: the truth, and the mirror's repair.
            async for page in self._pages(
                name, progress, statuses=() if every_status else OPEN_STATUSES
            ):
                started.see(page)
                await mirror.read(page)
                if every_status:
                    known.tasks.update(
                        (t.uid, t)
                        for t in page
                        if not t.is_open and self._owned(name, t, snapshot.uids)
                    )
            unseen = await mirror.done()
            log.info(
                "fragment.full_listing",
                source=name,
                listing=listing,
                open=len(mirror.open),
                unseen=unseen,
            )

        checked = False
        if full:
            await list_in_full(mirror)
            if every_status and not dry_run:
                await self.store.index.certify(name, started.at())
        else:
            # Only what changed in Fragment since the last listing began (any status): right
            # after a large write, most of the backlog read back, which the digests make cheap.
            # From the census's instant when it is older (a full listing of open tasks moved
            # the watermark past it), so that the census chains on.
            assert watermark.seen is not None  # full_listing_due() is true without one
            since = watermark.seen if census is None else min(watermark.seen, census.complete)
            since -= self.settings.fragment.listing_overlap
            done: dict[str, Task] = {}
            async for page in self._pages(name, progress, statuses=(), updated_at_after=since):
                started.see(page)
                await mirror.read(page)
                done.update(
                    (t.uid, t)
                    for t in page
                    if not t.is_open and self._owned(name, t, snapshot.uids)
                )
                # A task older than the filter proves the server ignored `updated_at_after`
                # [assumed]: the answer then holds every task of the source, in every status.
                everything = everything or any(
                    t.updated_at is not None and t.updated_at < since for t in page
                )
            await mirror.done()
            known.tasks.update(done)
            proven = census is not None
            if proven and not dry_run:
                await self.store.index.advance_census(name, started.at())
            if everything:
                log.info("fragment.listing_filter_ignored", source=name, filter="updated_at_after")
            elif watermark.drift_check_due(self.settings, now=self.clock.now()):
                # What `updated_at_after` cannot show (a task deleted in Fragment, an edit
                # missed) shows in the count: one request, and a full listing only if it differs.
                # A server that ignores a filter counts more, so it can cause a listing, never
                # skip one.
                checked = True
                shown = await self.client.count_tasks(
                    statuses=OPEN_STATUSES, fields={self.markers.source: name}
                )
                if shown != len(mirror.open):
                    log.info("fragment.drift", source=name, fragment=shown, mirror=len(mirror.open))
                    full, listing = True, LISTING_FULL
                    mirror = await new_mirror(True)
                    await list_in_full(mirror)
        watermark = watermark.after_listing(
            started.at(), now=self.clock.now(), full=full, checked=checked
        )
        check = check_sync(
            name,
            snapshot.tickets,
            mirror.open,
            self._policy(source),
            await self.store.index.due_written(name) if mirror.open else (),
            uids=snapshot.uids,
        )
        known.synced, known.desired = check.synced, check.desired
        known.tasks.update(await mirror.tasks(check.unsynced))
        open_before = len(mirror.open)
        del mirror, check  # the digests are not needed past this point
        unresolved = await self._resolve(
            name,
            [t for t in snapshot.tickets if t.is_open],
            snapshot.uids,
            known,
            progress,
            dry_run=dry_run,
            listed_everything=everything,
            census=proven,
        )
        misses = (
            await self.store.index.misses(name)
            if self.settings.guards.close_after_misses > 1
            else {}
        )
        return _Inputs(
            tickets=snapshot.tickets,
            uids=snapshot.uids,
            known=known,
            invalid=snapshot.invalid,
            complete=snapshot.complete,
            open_before=open_before,
            watermark=None if dry_run else watermark,
            misses=misses,
            unresolved=unresolved,
            listing=listing,
        )

    async def _pages(
        self,
        source: str,
        progress: CycleProgress,
        *,
        statuses: Sequence[TaskStatus],
        updated_at_after: datetime | None = None,
    ) -> AsyncIterator[TaskPage]:
        """The source's tasks in Fragment, page by page."""
        async for page in self.client.iter_tasks(
            statuses=statuses,
            fields={self.markers.source: source},
            updated_at_after=updated_at_after,
        ):
            yield page
            progress.advance(len(page))

    async def _incremental_inputs(self, source: SourceSection, progress: CycleProgress) -> _Inputs:
        name = source.name
        adapter = self.adapters[name]
        if not isinstance(adapter, SupportsChanges):
            raise SourceError(f"adapter {source.adapter!r} cannot poll for changes")
        progress.start_phase("read")
        changes = await read_changes(
            name,
            adapter,
            self.namespace,
            await self.store.cursors.get(name),
            progress=progress.reach,
        )
        known = _Known()
        unresolved = await self._resolve(name, changes.tickets, changes.uids, known, progress)
        return _Inputs(
            tickets=changes.tickets,
            uids=changes.uids,
            known=known,
            invalid=changes.invalid,
            open_before=await self.store.index.count_open(name),
            next_cursor=changes.cursor,
            unresolved=unresolved,
            listing=LISTING_BY_UID,
        )

    async def _resolve(
        self,
        source: str,
        tickets: Sequence[Ticket],
        uids: Mapping[str, str],
        known: _Known,
        progress: CycleProgress,
        *,
        dry_run: bool = False,
        listed_everything: bool = False,
        census: bool = False,
    ) -> set[str]:
        """Find the tasks of tickets missing from `known`: DONE, not yet listed, or absent.

        The index answers for tasks it saw DONE; Fragment is asked about every other uid (see
        `connector.fragment.lookup`), so a lost index costs requests, never a duplicate or a
        reopened operator decision. After a listing of the source's tasks in every status
        (`listed_everything`) there is nothing left to ask: a task it did not show does not
        exist; under the index's census (`census`), a uid the index has no row for was never in
        Fragment either. Returns the ids of the tickets whose task could not be
        proven absent nor found as the source's: they must get no create this cycle (a PUT would
        replace whatever holds the uid), and are reported as unresolved.
        """
        wanted = {
            uid: t.id
            for t in tickets
            if t.id not in known.synced and (uid := uids[t.id]) not in known.tasks
        }
        if not wanted or listed_everything:
            return set()
        entries = await self.store.index.lookup(wanted)
        done = [
            e.uid for e in entries.values() if e.status is TaskStatus.DONE and e.source == source
        ]
        # In full where the mirror has them: the write-back marker is among their fields.
        full = await self.store.index.tasks(done) if done else {}
        for uid in done:
            known.add(full.get(uid) or entries[uid].as_task(self.markers))
        unknown = [uid for uid in wanted if uid not in known.tasks]
        if census:
            unknown = [uid for uid in unknown if uid in entries]
        if not unknown:
            return set()
        progress.start_phase("lookup", total=len(unknown))
        page = self.settings.fragment.page_size
        lookup = await self.finder.find(
            unknown,
            listing_fields={self.markers.source: source},
            # The listing holds at least the tasks the index knows and those looked for.
            listing_pages=-(-(await self.store.index.count_known(source) + len(unknown)) // page),
            progress=progress.advance,
        )
        resolved = []
        unresolved = {wanted[uid] for uid in lookup.unresolved}
        for uid, task in lookup.found.items():
            ticket_id = self._owned(source, task, uids)
            if ticket_id is None:
                # A task holds the uid but not this source's markers (edited by hand?): never
                # PUT over it.
                unresolved.add(wanted[uid])
                continue
            known.add(task)
            resolved.append((task, ticket_id))
        if unresolved:
            log.warning(
                "fragment.presence_unknown",
                source=source,
                tickets=len(unresolved),
                action="no create this cycle; looked up again next cycle",
            )
        if dry_run:
            return unresolved
        await self.store.index.remember(source, resolved, self.markers)
        gone = [uid for uid in lookup.absent if uid in entries]
        if gone:
            await self.store.index.forget(gone)
        return unresolved

    async def _plan_and_apply(
        self,
        source: SourceSection,
        inputs: _Inputs,
        options: CycleOptions,
        progress: CycleProgress,
        *,
        kind: CycleKind,
    ) -> SourceReport:
        name = source.name
        unresolved = inputs.unresolved
        kept = {r.ticket_id for r in inputs.invalid if r.ticket_id is not None} | unresolved
        known_open = [uid for uid, task in inputs.known.tasks.items() if task.is_open]
        plan = plan_source(
            name,
            [t for t in inputs.tickets if t.id not in unresolved] if unresolved else inputs.tickets,
            inputs.known.tasks,
            self._policy(source),
            managed=await self.store.index.managed(known_open),
            kept_ticket_ids=kept,
            close_absent=kind is CycleKind.FULL,
            misses=inputs.misses,
            synced=inputs.known.synced,
            uids=inputs.uids,
            desired=inputs.known.desired,
        )
        refusals = guard_plan(
            plan,
            snapshot_complete=inputs.complete,
            open_tasks_before=inputs.open_before,
            policy=GuardPolicy(
                close_ratio=self.settings.guards.close_ratio,
                close_min=self.settings.guards.close_min,
                allow_mass_close=options.allow_mass_close,
                allow_empty=source.allow_empty,
            ),
            snapshot_empty=kind is CycleKind.FULL and not inputs.tickets and not inputs.invalid,
        )
        if refusals:
            log.error(
                "guard.refused",
                source=name,
                guard=refusals[0].guard,
                refused=len(refusals),
                reason=refusals[0].reason,
            )
        report = SourceReport(
            name=name,
            ok=True,
            plan=plan,
            refusals=refusals,
            invalid_records=tuple(inputs.invalid),
            tickets=len(inputs.tickets),
            open_tasks=inputs.open_before,
            unresolved=tuple(sorted(unresolved)),
            listing=inputs.listing,
        )
        if options.dry_run:
            return report

        planned = report.planned
        progress.start_phase("apply", total=len(planned))
        lease_lost = False

        async def may_send() -> bool:
            nonlocal lease_lost
            if self.should_stop():
                return False
            lease_lost = not await options.may_write()
            return not lease_lost

        # Written ahead, so that a create whose answer is lost is never taken for absent.
        await self.store.index.expect(
            name, ((a.uid, a.ticket_id) for a in planned if a.kind is ActionKind.CREATE)
        )
        async with MirrorWriter(self.store.index, name, self.markers) as mirror:

            async def remember(pairs: list[tuple[Action, Task | None]]) -> None:
                await mirror.add(
                    ((task, action.ticket_id) for action, task in pairs if task is not None),
                    {
                        action.uid: written_keys(action.payload)
                        for action, task in pairs
                        if task is not None and action.kind is not ActionKind.CLOSE
                    },
                )

            result = await apply_actions(
                self.client,
                planned,
                batch_size=self.settings.fragment.batch_size,
                may_send=may_send,
                progress=progress.advance,
                on_applied=remember,
            )
        if isinstance(result.fatal, FragmentAuthError):
            raise result.fatal
        unsent = [f for f in result.failures if not f.sent]
        # A create never sent leaves no task to look for: its row written ahead goes, so that a
        # stopped first import is not looked up uid by uid next cycle.
        if never_sent := [f.action.uid for f in unsent if f.action.kind is ActionKind.CREATE]:
            await self.store.index.forget(never_sent)
        for failure in (f for f in result.failures if f.sent):
            log.warning(
                "apply.failed",
                source=name,
                kind=failure.action.kind.value,
                ticket_id=failure.action.ticket_id,
                error=failure.error,
            )
        if unsent:  # one line, not one per action: a stop can leave thousands unsent
            log.warning("apply.not_sent", source=name, actions=len(unsent), error=unsent[0].error)
        fatal: ConnectorError | None = result.fatal
        if fatal is None and lease_lost:
            fatal = LeaseLostError(
                f"lost the lock of source {name!r} (state database unreachable): stopped "
                "writing; whichever replica holds it next applies the rest"
            )
            log.error("cycle.lease_lost", source=name, unsent=len(unsent))
        return dataclasses.replace(
            report,
            ok=fatal is None,
            error=str(fatal) if fatal else None,
            error_label=classify(fatal)[1] if fatal else None,
            failures=tuple(result.failures),
            applied=True,
        )

    # --- write-back (connector/writeback.py): an operator's DONE told to the back-office -------

    async def _write_back(
        self, source: SourceSection, inputs: _Inputs, report: SourceReport, options: CycleOptions
    ) -> SourceReport:
        """The write-backs of a full cycle: found, guarded, then made (or listed, in a dry-run)."""
        name = source.name
        adapter = self.adapters[name]
        planned = find_write_backs(
            name,
            inputs.tickets,
            inputs.known.tasks,
            uid_of=inputs.uids.__getitem__,
            owned=lambda task: self._owned(name, task, inputs.uids),
            markers=self.markers,
            config=source.write_back,
        )
        if not planned:
            return report
        if not isinstance(adapter, SupportsWriteBack) or not can_write_back(adapter):
            raise ConfigError(f"adapter {source.adapter!r} of source {name!r} cannot write back")
        refusal = guard_write_backs(
            planned,
            limit=self.settings.guards.write_back_max,
            allow=options.allow_mass_write_back,
        )
        if refusal is not None:
            log.error("guard.refused", source=name, guard=GUARD_MASS_WRITE_BACK, reason=refusal)
            held = tuple(
                dataclasses.replace(w, outcome=WriteBackOutcome.REFUSED, error=refusal)
                for w in planned
            )
            return dataclasses.replace(report, write_backs=held)
        if options.dry_run:
            return dataclasses.replace(report, write_backs=tuple(planned))

        async def may_write() -> bool:
            return not self.should_stop() and await options.may_write()

        async def current(uids: Sequence[str]) -> Mapping[str, Task]:
            page = self.settings.fragment.page_size
            lookup = await self.finder.find(
                uids,
                listing_fields={self.markers.source: name},
                listing_pages=-(-(await self.store.index.count_known(name) + len(uids)) // page),
            )
            return lookup.found

        async with MirrorWriter(self.store.index, name, self.markers) as mirror:
            made = await perform_write_backs(
                planned,
                adapter=adapter,
                client=self.client,
                current=current,
                markers=self.markers,
                owned=lambda task: self._owned(name, task, inputs.uids),
                now=self.clock.now,
                may_write=may_write,
                on_marked=lambda task, ticket_id: mirror.add([(task, ticket_id)]),
            )
        return dataclasses.replace(report, write_backs=made)


def write_back_counts(report: SourceReport) -> dict[str, int]:
    """A source's write-backs by outcome (none when the source does not write back)."""
    counts: dict[str, int] = {}
    for write_back in report.write_backs:
        counts[write_back.outcome.value] = counts.get(write_back.outcome.value, 0) + 1
    return counts


def planned_counts(report: SourceReport) -> dict[str, int]:
    """Counts of one source's planned actions by kind, with unchanged and refused."""
    counts = {kind.value: 0 for kind in ActionKind}
    for action in report.planned:
        counts[action.kind.value] += 1
    counts["unchanged"] = report.plan.unchanged if report.plan else 0
    counts["refused"] = len(report.refusals)
    return counts


def report_counts(report: SourceReport) -> dict[str, int]:
    """What one source's cycle did: actions by kind (those applied, once applied; those planned
    in a dry-run), unchanged, refused, and `failed` (planned, not applied: refused by Fragment or
    never sent because the cycle stopped)."""
    counts = planned_counts(report)
    for failure in report.failures:
        counts[failure.action.kind.value] -= 1
    counts["failed"] = len(report.failures)
    return counts


def source_exit_code(report: SourceReport, *, dry_run: bool) -> int:
    """Exit code for one source: its outcome's (errors.outcome_exit_code), or worse: 1 for
    records skipped (a ticket that got no task: cron and CI must hear of it), 2 for pending
    dry-run changes and write-backs."""
    codes = [outcome_exit_code(source_outcome(report))]
    if report.invalid_records:
        codes.append(EXIT_FAILURE)
    if dry_run and report.planned:
        codes.append(EXIT_PENDING)
    if any(w.outcome is WriteBackOutcome.PLANNED for w in report.write_backs):
        codes.append(EXIT_PENDING)
    return most_severe(codes)


def source_outcome(report: SourceReport) -> str:
    """One label for how a source's cycle ended: its error's label, or an `Outcome`."""
    if not report.ok:
        return report.error_label or GENERIC_ERROR
    if report.failures or report.unresolved:
        return Outcome.PARTIAL
    outcomes = {w.outcome for w in report.write_backs}
    if outcomes & WRITE_BACK_FAILED or any(
        w.error for w in report.write_backs if w.outcome is not WriteBackOutcome.REFUSED
    ):
        return Outcome.PARTIAL
    if report.refusals or WriteBackOutcome.REFUSED in outcomes:
        return Outcome.REFUSED
    return Outcome.OK


def cycle_exit_code(report: CycleReport) -> int:
    """Exit code for a whole cycle: the most severe of its sources'."""
    return most_severe(source_exit_code(s, dry_run=report.dry_run) for s in report.sources)
