"""Progress figures, the heartbeat's steady interval (injected clock and sleep) and the store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connector.config import Settings
from connector.models import CycleKind
from connector.progress import DEFAULT_INTERVAL_S, Heartbeat, ProgressBoard, ProgressSnapshot
from connector.state import StateStore
from tests.clock import WALL, FakeClock


class StoppingClock(FakeClock):
    """Raises Done on its fourth sleep: the heartbeat's loop has no end of its own."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if len(self.slept) > 3:
            raise Done


class Done(Exception):
    pass


def test_phase_figures_give_rate_and_eta() -> None:
    """done/total, items per second in the phase and the seconds left at that rate."""
    clock = FakeClock()
    board = ProgressBoard(clock=clock)
    with board.cycle("bo", CycleKind.FULL, "run1") as progress:
        progress.start_phase("apply", total=5000)
        clock.advance(50)
        progress.advance(100)
        snap = board.snapshot("bo")
        assert snap is not None
        assert (snap.phase, snap.done, snap.total) == ("apply", 100, 5000)
        assert snap.rate == 2.0
        assert snap.eta_s == 2450.0
        assert snap.describe() == "applying 100/5,000 (2.0/s, ETA 40m50s)"
        progress.start_phase("read")  # a new phase starts from zero, total unknown
        snap = board.snapshot("bo")
        assert snap is not None and (snap.done, snap.total, snap.rate, snap.eta_s) == (
            0,
            None,
            None,
            None,
        )
    assert board.running() == []


async def test_heartbeat_logs_every_interval_and_the_default_is_under_15s() -> None:
    """The heartbeat sleeps exactly its interval between beats (10 s by default, and the
    config's default agrees), and every beat logs one `cycle.progress` line per running cycle."""
    assert DEFAULT_INTERVAL_S == Settings().connector.progress_interval.total_seconds() == 10
    assert DEFAULT_INTERVAL_S <= 15
    clock = StoppingClock()
    board = ProgressBoard(clock=clock)
    heartbeat = Heartbeat(board, clock=clock)
    with capture_logs() as logs, board.cycle("bo", CycleKind.FULL, "run1") as progress:
        progress.start_phase("apply", total=300)
        progress.advance(100)
        with pytest.raises(Done):
            await heartbeat.run()
    assert clock.slept == [DEFAULT_INTERVAL_S] * 4
    lines = [line for line in logs if line["event"] == "cycle.progress"]
    # one when the cycle started, one at the phase's start, then one per beat
    assert len(lines) == 2 + 3
    last = lines[-1]
    assert last["phase"] == "apply" and last["done"] == 100 and last["total"] == 300
    assert last["rate_per_s"] == 3.33  # 100 actions in the 30 s since the phase began
    assert last["eta_s"] == 60.0


def test_the_store_keeps_the_running_cycle_until_it_ends(tmp_path: Path) -> None:
    """set_progress / running_cycles / clear_progress: the accessor every replica's status uses;
    a finished cycle does not clear a newer one's figures."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", instance="t")
    try:
        snapshot = ProgressSnapshot(
            source="bo",
            kind=CycleKind.FULL,
            run_id="r1",
            phase="apply",
            done=10,
            total=50,
            rate=2.0,
            eta_s=20.0,
            started_at=WALL,
            updated_at=WALL + timedelta(seconds=5),
            replica="host:1",
        )
        store.set_progress(snapshot)
        store.set_progress(snapshot)  # rewritten in place, one row per source
        assert store.running_cycles() == [snapshot]
        assert snapshot.to_json()["version"] == 1
        assert snapshot.to_json()["started_at"] == "2026-01-02T03:04:05+00:00"
        store.clear_progress("bo", "an-older-run")
        assert store.running_cycles() == [snapshot]
        store.clear_progress("bo", "r1")
        assert store.running_cycles() == []
    finally:
        store.close()
