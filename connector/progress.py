"""The running cycles' progress: each phase's done/total, rate and ETA, for whoever shows it.

A cycle goes through four phases per source: `read` (the source's tickets), `list` (the source's
tasks in Fragment), `lookup` (`POST /tasks/query` for the uids the index does not know) and
`apply` (the batches). A `CycleProgress` counts them; a `ProgressBoard` holds the cycles running
in this process and tells its listeners when one starts, moves or ends: the CLI's rich display on
a terminal, and the `Heartbeat`, which at a steady interval logs one `cycle.progress` line per
running cycle and writes its `ProgressSnapshot` to the state store, where every replica's
`status` (and anything else reading the store) finds it. Nothing here does I/O itself: the clock
and the sleep are injected, the store and the log are the heartbeat's sinks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from connector.clock import SYSTEM_CLOCK, Clock
from connector.models import CycleKind, JSONValue

# The logger of the `cycle.progress` lines; `configure_logging` keeps it at INFO at least, so a
# long run off a terminal is never silent.
PROGRESS_LOGGER = "connector.progress"
log = structlog.get_logger(PROGRESS_LOGGER)

PHASES = ("read", "list", "lookup", "apply")
PHASE_LABELS = {
    "starting": "starting",
    "read": "reading the source",
    "list": "listing tasks",
    "lookup": "looking up tasks",
    "apply": "applying",
}
DEFAULT_INTERVAL_S = 10.0
PROGRESS_VERSION = 1


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """Where one running cycle of one source is: the shape stored, served and logged.

    `done`/`total` count the current phase's items (tickets read, tasks listed, uids looked up,
    actions sent); `total` is None while unknown (a source's size is known once it is read).
    `rate` is items per second in this phase, `eta_s` the seconds left at that rate (None
    without a total or a rate). `to_json()` is the documented document (docs/output.md).
    """

    source: str
    kind: CycleKind
    run_id: str
    phase: str
    done: int
    total: int | None
    rate: float | None
    eta_s: float | None
    started_at: datetime
    updated_at: datetime
    replica: str | None = None

    def to_json(self) -> dict[str, JSONValue]:
        """The versioned JSON document (timestamps in ISO 8601, UTC)."""
        return {
            "version": PROGRESS_VERSION,
            "source": self.source,
            "kind": self.kind.value,
            "run_id": self.run_id,
            "replica": self.replica,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "rate": self.rate,
            "eta_s": self.eta_s,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ProgressSnapshot:
        """The snapshot back from `to_json()`'s document."""
        return cls(
            source=str(document["source"]),
            kind=CycleKind(document["kind"]),
            run_id=str(document["run_id"]),
            replica=document.get("replica"),
            phase=str(document["phase"]),
            done=int(document["done"]),
            total=None if document.get("total") is None else int(document["total"]),
            rate=None if document.get("rate") is None else float(document["rate"]),
            eta_s=None if document.get("eta_s") is None else float(document["eta_s"]),
            started_at=datetime.fromisoformat(document["started_at"]),
            updated_at=datetime.fromisoformat(document["updated_at"]),
        )

    def describe(self) -> str:
        """One line for people: `applying 300/5,000 actions (1.6/s, ETA 49m45s)`."""
        label = PHASE_LABELS.get(self.phase, self.phase)
        count = f"{self.done:,}" if self.total is None else f"{self.done:,}/{self.total:,}"
        extras = []
        if self.rate is not None:
            extras.append(f"{self.rate:,.1f}/s")
        if self.eta_s is not None:
            extras.append(f"ETA {_duration(self.eta_s)}")
        tail = f" ({', '.join(extras)})" if extras else ""
        return f"{label} {count}{tail}"


class CycleProgress:
    """The counters of one running cycle of one source; moved by the cycle, read by listeners."""

    def __init__(
        self,
        source: str,
        kind: CycleKind,
        run_id: str,
        *,
        replica: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_change: Callable[[CycleProgress, bool], None] | None = None,
    ) -> None:
        self.source = source
        self.kind = kind
        self.run_id = run_id
        self.replica = replica
        self._clock = clock
        self._on_change = on_change
        self.started_at = clock.now()
        self.phase = "starting"
        self.done = 0
        self.total: int | None = None
        self._phase_began = clock.monotonic()

    def start_phase(self, phase: str, total: int | None = None) -> None:
        """Begin a phase (one of PHASES) with its total, when known."""
        self.phase, self.total, self.done = phase, total, 0
        self._phase_began = self._clock.monotonic()
        self._notify(new_phase=True)

    def advance(self, count: int = 1) -> None:
        """`count` more items of the current phase are done."""
        self.done += count
        self._notify(new_phase=False)

    def reach(self, done: int) -> None:
        """The current phase has done `done` items in all."""
        self.done = done
        self._notify(new_phase=False)

    def _notify(self, *, new_phase: bool) -> None:
        if self._on_change is not None:
            self._on_change(self, new_phase)

    def snapshot(self) -> ProgressSnapshot:
        """The figures now."""
        elapsed = self._clock.monotonic() - self._phase_began
        rate = self.done / elapsed if elapsed > 0 and self.done > 0 else None
        eta = None
        if rate and self.total is not None:
            eta = round(max(0, self.total - self.done) / rate, 1)
        return ProgressSnapshot(
            source=self.source,
            kind=self.kind,
            run_id=self.run_id,
            replica=self.replica,
            phase=self.phase,
            done=self.done,
            total=self.total,
            rate=None if rate is None else round(rate, 2),
            eta_s=eta,
            started_at=self.started_at,
            updated_at=self._clock.now(),
        )


class ProgressListener(Protocol):
    """Told about the running cycles (all calls on the event loop's thread)."""

    def started(self, cycle: CycleProgress) -> None:
        """A cycle began."""

    def changed(self, cycle: CycleProgress, new_phase: bool) -> None:
        """A cycle moved (`new_phase`: it began a phase)."""

    def finished(self, cycle: CycleProgress) -> None:
        """A cycle ended (whatever its outcome)."""


class ProgressBoard:
    """The cycles running in this process, and the listeners that show them."""

    def __init__(
        self,
        listeners: tuple[ProgressListener, ...] = (),
        *,
        replica: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.listeners = list(listeners)
        self.replica = replica
        self._clock = clock
        self._running: dict[str, CycleProgress] = {}

    def add(self, listener: ProgressListener) -> None:
        """Tell this listener too from now on."""
        self.listeners.append(listener)

    @contextlib.contextmanager
    def cycle(self, source: str, kind: CycleKind, run_id: str) -> Iterator[CycleProgress]:
        """Track one cycle of one source while the block runs."""
        progress = CycleProgress(
            source,
            kind,
            run_id,
            replica=self.replica,
            clock=self._clock,
            on_change=self._changed,
        )
        self._running[source] = progress
        for listener in self.listeners:
            listener.started(progress)
        try:
            yield progress
        finally:
            if self._running.get(source) is progress:
                del self._running[source]
            for listener in self.listeners:
                listener.finished(progress)

    def _changed(self, progress: CycleProgress, new_phase: bool) -> None:
        for listener in self.listeners:
            listener.changed(progress, new_phase)

    def running(self) -> list[CycleProgress]:
        """The cycles running now."""
        return list(self._running.values())

    def snapshot(self, source: str) -> ProgressSnapshot | None:
        """The figures of the source's running cycle, if one runs."""
        progress = self._running.get(source)
        return None if progress is None else progress.snapshot()


class ProgressStore(Protocol):
    """Where the heartbeat keeps the running cycles' progress (the state store)."""

    def set_progress(self, snapshot: ProgressSnapshot) -> None:
        """Store the source's running cycle's figures."""

    def clear_progress(self, source: str, run_id: str) -> None:
        """The source's cycle `run_id` ended."""


class Heartbeat:
    """Every `interval` seconds, one `cycle.progress` line per running cycle (when `log` is
    set) and its figures written to `store` (when set); also at each phase's start and end."""

    def __init__(
        self,
        board: ProgressBoard,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        log_lines: bool = True,
        store: ProgressStore | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.board = board
        self.interval = interval
        self.log_lines = log_lines
        self.store = store
        self._clock = clock
        board.add(self)

    # --- listener ---------------------------------------------------------------------------

    def started(self, cycle: CycleProgress) -> None:
        self._emit(cycle)

    def changed(self, cycle: CycleProgress, new_phase: bool) -> None:
        if new_phase:
            self._emit(cycle)

    def finished(self, cycle: CycleProgress) -> None:
        if self.store is not None:
            try:
                self.store.clear_progress(cycle.source, cycle.run_id)
            except Exception as exc:  # progress is a courtesy; never fail a cycle for it
                log.warning("progress.not_stored", source=cycle.source, error=str(exc))

    # --- the beat ---------------------------------------------------------------------------

    def beat(self) -> None:
        """One line (and one stored snapshot) per running cycle, now."""
        for cycle in self.board.running():
            self._emit(cycle)

    def _emit(self, cycle: CycleProgress) -> None:
        snapshot = cycle.snapshot()
        if self.log_lines:
            log.info(
                "cycle.progress",
                source=snapshot.source,
                kind=snapshot.kind,
                run_id=snapshot.run_id,
                phase=snapshot.phase,
                done=snapshot.done,
                total=snapshot.total,
                rate_per_s=snapshot.rate,
                eta_s=snapshot.eta_s,
                elapsed_s=round((snapshot.updated_at - snapshot.started_at).total_seconds(), 1),
            )
        if self.store is not None:
            try:
                self.store.set_progress(snapshot)
            except Exception as exc:  # progress is a courtesy; never fail a cycle for it
                log.warning("progress.not_stored", source=snapshot.source, error=str(exc))

    async def run(self) -> None:
        """Beat every `interval` seconds until cancelled."""
        while True:
            await self._clock.sleep(self.interval)
            self.beat()

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        """The heartbeat as a background task for the duration of the block."""
        task = asyncio.create_task(self.run(), name="progress-heartbeat")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
