"""The progress of a one-shot cycle on a terminal: one rich progress bar per phase of each source.

Each phase (reading the source, listing tasks, looking up tasks, applying) gets its own line
with done/total, rate, elapsed time and ETA; a finished phase stays on screen with its final
count, so the terminal ends with a record of where the time went. Off a terminal the CLI uses
the `Heartbeat`'s `cycle.progress` log lines instead.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from connector.progress import PHASE_LABELS, CycleProgress


class _RateColumn(ProgressColumn):
    """Items per second (rich's own columns speak of bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


class _CountColumn(MofNCompleteColumn):
    """`done/total`, or just `done` while the total is unknown."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text(f"{int(task.completed):,}", style="progress.download")
        return Text(f"{int(task.completed):,}/{int(task.total):,}", style="progress.download")


class ProgressDisplay:
    """A `ProgressListener` drawing the running cycles with rich on `console` (stderr)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            _CountColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            redirect_stdout=False,
            # Log lines (warnings) written meanwhile are printed above the bars.
            redirect_stderr=True,
        )
        self._current: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def started(self, cycle: CycleProgress) -> None:
        pass

    def changed(self, cycle: CycleProgress, new_phase: bool) -> None:
        if new_phase:
            self._close(cycle.source)
            label = f"{cycle.source}: {PHASE_LABELS.get(cycle.phase, cycle.phase)}"
            self._current[cycle.source] = self.progress.add_task(label, total=cycle.total)
        task = self._current.get(cycle.source)
        if task is not None:
            self.progress.update(task, completed=cycle.done, total=cycle.total)

    def finished(self, cycle: CycleProgress) -> None:
        self._close(cycle.source)

    def _close(self, source: str) -> None:
        task = self._current.pop(source, None)
        if task is None:
            return
        done = next(t.completed for t in self.progress.tasks if t.id == task)
        # A phase with an unknown total (the source's tickets) ends at what it counted.
        self.progress.update(task, total=done or 0, completed=done)
        self.progress.stop_task(task)
