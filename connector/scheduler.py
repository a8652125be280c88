"""The daemon: cycles on a schedule, health and metrics over HTTP, a clean stop on SIGTERM.

APScheduler 3's `AsyncIOScheduler` runs, per source, a full cycle at start and then every
`schedule.full_refresh` (plus jitter), and, where the adapter can poll for changes, an incremental
cycle every `schedule.incremental`. A per-source lock keeps two cycles of one source from ever
running at once: an overdue full tick is coalesced by the scheduler (and logged), an incremental
tick that finds the source busy is skipped. With several replicas on one PostgreSQL state store,
a cycle also needs the source's advisory lock (`connector.leases`): a replica that does not hold it
skips the tick, and stops writing as soon as it can no longer prove it does. Each cycle's report
feeds the metrics, the readiness and the run history. On SIGTERM/SIGINT the scheduler stops
firing, a running cycle finishes the batch it is sending (bounded by `schedule.grace_period`) and
the process exits 0; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from adapters.base import SupportsChanges
from connector.clock import SYSTEM_CLOCK, Clock
from connector.config import Settings
from connector.cycle import CycleOptions, Reconciler, source_outcome
from connector.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    GENERIC_ERROR,
    FragmentAuthError,
    FragmentError,
    outcome_label,
)
from connector.guards import GUARD_MASS_WRITE_BACK
from connector.leases import Leases, leases_for
from connector.metrics import Metrics
from connector.models import CycleKind, JSONValue, SourceReport, WriteBackOutcome
from connector.progress import Heartbeat, ProgressBoard
from connector.runtime import open_runtime
from connector.server import HttpServer
from connector.status import record_cycle, status_document

log = structlog.get_logger(__name__)

READY_FACTOR = 3


@dataclass
class SourceHealth:
    """What the daemon knows of one source's recent cycles."""

    last_full_success: float | None = None
    last_error: str | None = None
    last_error_type: str | None = None
    consecutive_failures: int = 0


class Daemon:
    """Schedules the cycles of every source and reports on them."""

    def __init__(
        self,
        settings: Settings,
        reconciler: Reconciler,
        metrics: Metrics,
        leases: Leases,
        *,
        replica: str,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.reconciler = reconciler
        self.metrics = metrics
        self.leases = leases
        self.replica = replica
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.health = {s.name: SourceHealth() for s in settings.sources}
        self.locks = {s.name: asyncio.Lock() for s in settings.sources}
        self.stopping = False
        self._busy = 0
        self.idle = asyncio.Event()
        self.idle.set()

    # --- scheduling -------------------------------------------------------------------------

    def schedule(self) -> None:
        """Add the full (and incremental) job of every source; full ones fire at once."""
        plan = self.settings.schedule
        full = plan.full_refresh.total_seconds()
        jitter = plan.jitter.total_seconds() if plan.jitter else None
        now = self.clock.now()
        for source in self.settings.sources:
            self.scheduler.add_job(
                self.full_cycle,
                IntervalTrigger(seconds=full, jitter=jitter),
                args=[source.name],
                id=f"full:{source.name}",
                next_run_time=now,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(full)),
            )
            adapter = self.reconciler.adapters[source.name]
            if plan.incremental is None:
                continue
            if not isinstance(adapter, SupportsChanges) or not getattr(
                adapter, "polls_changes", True
            ):
                log.info("daemon.no_incremental", source=source.name, adapter=source.adapter)
                continue
            every = plan.incremental.total_seconds()
            self.scheduler.add_job(
                self.incremental_cycle,
                IntervalTrigger(seconds=every),
                args=[source.name],
                id=f"incremental:{source.name}",
                next_run_time=now + timedelta(seconds=every),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(every)),
            )

    async def full_cycle(self, name: str) -> None:
        """The job of a full refresh; waits for a running incremental cycle of the source."""
        await self._cycle(name, CycleKind.FULL)

    async def incremental_cycle(self, name: str) -> None:
        """The job of an incremental poll; skipped while another cycle of the source runs."""
        if self.locks[name].locked():
            log.info("cycle.skipped", source=name, kind=CycleKind.INCREMENTAL, reason="source busy")
            return
        await self._cycle(name, CycleKind.INCREMENTAL)

    async def _cycle(self, name: str, kind: CycleKind) -> None:
        if self.stopping:
            return
        source = self.settings.source(name)
        async with self.locks[name]:
            if self.stopping or not await self.leases.acquire(name):
                return
            self._busy += 1
            self.idle.clear()
            run_id = uuid.uuid4().hex[:12]
            started = self.clock.now()
            options = CycleOptions(may_write=functools.partial(self.leases.confirm, name))
            try:
                with structlog.contextvars.bound_contextvars(run_id=run_id, replica=self.replica):
                    report = await self.reconciler.reconcile_source(source, options, kind=kind)
            except Exception as exc:  # never let one cycle take the daemon down
                # A refused token escapes reconcile_source on purpose; anything else is a bug.
                if not isinstance(exc, FragmentError):
                    log.exception("cycle.crashed", source=name, kind=kind)
                label = outcome_label(exc)
                report = SourceReport(
                    name=name, ok=False, error=str(exc), error_label=label, kind=kind
                )
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self.idle.set()
            self.observe(report, run_id=run_id, started=started)
            await self.leases.settle(name)

    # --- reporting --------------------------------------------------------------------------

    def observe(self, report: SourceReport, *, run_id: str, started: datetime) -> None:
        """Feed one cycle's report into metrics, health and the run history."""
        name, kind = report.name, report.kind
        outcome = source_outcome(report)
        m = self.metrics
        m.cycles.labels(name, kind, outcome).inc()
        m.cycle_duration.labels(name, kind).observe(report.duration_s)
        failed = {f.action.uid for f in report.failures}
        if report.applied:
            for action in report.planned:
                if action.uid not in failed:
                    m.tasks.labels(name, action.kind.value).inc()
        if report.failures:
            m.action_failures.labels(name).inc(len(report.failures))
        if report.refusals:
            m.guard_trips.labels(name, report.refusals[0].guard).inc()
        if report.invalid_records:
            m.invalid_records.labels(name).inc(len(report.invalid_records))
        for write_back in report.write_backs:
            m.write_backs.labels(name, write_back.outcome.value).inc()
        if any(w.outcome is WriteBackOutcome.REFUSED for w in report.write_backs):
            m.guard_trips.labels(name, GUARD_MASS_WRITE_BACK).inc()
        health = self.health[name]
        if report.ok:
            now = self.clock.now().timestamp()
            m.last_success.labels(name, kind).set(now)
            health.consecutive_failures = 0
            if kind is CycleKind.FULL:
                health.last_full_success = now
        else:
            health.consecutive_failures += 1
            health.last_error = report.error
            health.last_error_type = report.error_label or GENERIC_ERROR
        try:
            record_cycle(
                self.reconciler.store,
                report,
                run_id=run_id,
                started=started,
                finished=self.clock.now(),
                replica=self.replica,
            )
        except Exception:
            log.exception("daemon.history_not_written", source=name)

    def alive(self) -> tuple[bool, str]:
        """The process answers and the scheduler runs."""
        if self.scheduler.running:
            return True, "scheduler running"
        return False, "scheduler stopped"

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Ready when every source this replica holds had a successful full cycle within
        3 x its interval (a replica holding none is a ready standby, if it can reach the
        database that would hand it sources)."""
        limit = READY_FACTOR * self.settings.schedule.full_refresh.total_seconds()
        now = self.clock.now().timestamp()
        reasons: dict[str, str] = {}
        held = self.leases.held()
        for name, health in self.health.items():
            if name not in held:
                continue
            if health.last_full_success is None:
                reason = "no successful full cycle yet"
                running = self.reconciler.board.snapshot(name)
                if running is not None:
                    reason += f"; {running.kind} cycle running: {running.describe()}"
            elif now - health.last_full_success > limit:
                age = int(now - health.last_full_success)
                reason = f"last successful full cycle {age}s ago (limit {int(limit)}s)"
            else:
                continue
            # A stable label, never the error's text: /readyz listens on every interface, and
            # the text (scrubbed) is in the logs and `status`.
            if health.last_error_type:
                reason += f"; last error: {health.last_error_type}"
            reasons[name] = reason
        if self.leases.problem() is not None:
            reasons["leases"] = "state database unreachable"
        if self.stopping:
            reasons["daemon"] = "stopping"
        return not reasons, reasons

    def holdings(self) -> dict[str, str]:
        """Each source: `held` by this replica, or `standby` (another replica works it)."""
        held = self.leases.held()
        return {name: "held" if name in held else "standby" for name in self.health}

    def progress(self) -> dict[str, dict[str, JSONValue]]:
        """The cycles running on this replica, by source."""
        return {c.source: c.snapshot().to_json() for c in self.reconciler.board.running()}

    def metrics_text(self) -> bytes:
        """The Prometheus exposition."""
        held = self.leases.held()
        for name in self.health:
            self.metrics.source_held.labels(name).set(1 if name in held else 0)
        return self.metrics.exposition()

    # --- lifecycle --------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop firing jobs and give a running cycle the grace period to finish its batch."""
        self.stopping = True
        if self.scheduler.running:
            self.scheduler.pause()
        grace = self.settings.schedule.grace_period.total_seconds()
        try:
            await asyncio.wait_for(self.idle.wait(), timeout=grace)
        except TimeoutError:
            log.warning("daemon.grace_period_over", grace_s=grace)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)


class _DaemonProbe:
    """Adapts a Daemon to the server's Probe protocol."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def alive(self) -> tuple[bool, str]:
        return self.daemon.alive()

    def readiness(self) -> tuple[bool, dict[str, str]]:
        return self.daemon.readiness()

    def holdings(self) -> dict[str, str]:
        return self.daemon.holdings()

    def progress(self) -> dict[str, dict[str, JSONValue]]:
        return self.daemon.progress()

    def metrics(self) -> bytes:
        return self.daemon.metrics_text()

    def status(self) -> dict[str, JSONValue]:
        daemon = self.daemon
        return status_document(
            daemon.settings,
            daemon.reconciler.store,
            holdings=daemon.holdings(),
            replica=daemon.replica,
            now=daemon.clock.now(),
        )


@contextlib.asynccontextmanager
async def daemon_running(
    settings: Settings, stop: asyncio.Event, *, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[tuple[Daemon, int]]:
    """A started daemon and the port of its HTTP endpoint; drained and closed on exit.

    `stop` is what cycles check between batches; setting it is how a stop begins. `clock` times
    everything but APScheduler's own triggers, which read the machine's clock.
    """
    metrics = Metrics()
    replica = f"{socket.gethostname()}:{os.getpid()}"
    board = ProgressBoard(replica=replica, clock=clock)
    async with open_runtime(
        settings, listener=metrics, should_stop=stop.is_set, board=board, clock=clock
    ) as reconciler:
        try:
            await reconciler.client.me()
        except FragmentAuthError:
            raise  # no cycle can ever succeed: exit 1 with the reason
        except FragmentError as exc:
            log.warning("daemon.fragment_unreachable_at_start", error=str(exc))
        names = [s.name for s in settings.sources]
        leases = leases_for(
            settings.state.url, instance=settings.connector.instance, sources=names, clock=clock
        )
        await leases.start()
        heartbeat = Heartbeat(
            board,
            interval=settings.connector.progress_interval.total_seconds(),
            store=reconciler.store,
            clock=clock,
        )
        beating = asyncio.create_task(heartbeat.run(), name="progress-heartbeat")
        daemon = Daemon(settings, reconciler, metrics, leases, replica=replica, clock=clock)
        server = HttpServer(
            _DaemonProbe(daemon),
            host=settings.server.host,
            port=settings.server.port,
            base_path=settings.server.base_path,
        )
        serving = asyncio.create_task(server.serve(), name="http")
        daemon.schedule()
        daemon.scheduler.start()
        log.info(
            "daemon.started",
            sources=names,
            replica=replica,
            coordination=type(leases).__name__,
            port=server.port,
            full_refresh_s=settings.schedule.full_refresh.total_seconds(),
        )
        try:
            yield daemon, server.port
        finally:
            stop.set()
            await daemon.drain()
            await leases.close()
            server.stop()
            await serving
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating


async def run_daemon(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0 after a clean drain)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("daemon.second_signal", signal=sig.name, action="exiting now")
            os._exit(EXIT_FAILURE)
        log.info("daemon.stopping", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    async with daemon_running(settings, stop):
        await stop.wait()
    log.info("daemon.stopped")
    return EXIT_OK
