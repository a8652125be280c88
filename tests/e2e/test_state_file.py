"""Issue 15, item 13: the SQLite state store is a cache, also when its file is damaged or gone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connector.errors import StateError
from connector.state import RunRecord, StateStore
from tests.conftest import Workspace, make_tickets


def _kept(workspace: Workspace) -> list[str]:
    return sorted(p.name for p in workspace.root.glob("state.db.corrupt-*"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_state_file_is_moved_aside_and_rebuilt(workspace: Workspace, damage: str) -> None:
    """The run warns, keeps the damaged file under a new name, and rebuilds from Fragment."""
    workspace.write_tickets(make_tickets(400))
    assert workspace.reconcile().returncode == 0
    state = workspace.state_path
    if damage == "garbage":
        broken = b"this is not a database " * 400
    else:  # cut in the middle of a page, as a crash on a full disk would
        broken = state.read_bytes()[: state.stat().st_size // 2 + 1000]
    state.write_bytes(broken)

    result = workspace.reconcile()
    assert result.returncode == 0, result.stdout + result.stderr
    (kept,) = _kept(workspace)
    assert "state.corrupt_file_moved_aside" in result.stderr and kept in result.stderr
    assert (workspace.root / kept).read_bytes() == broken
    # Rebuilt from Fragment: no task created again, and the next run is a plain one.
    assert len(workspace.tasks()) == 400
    again = workspace.reconcile()
    assert again.returncode == 0 and _kept(workspace) == [kept]
    assert "corrupt" not in again.stderr


async def test_a_state_file_deleted_during_the_run_is_named_as_such(workspace: Workspace) -> None:
    """Not SQLite's "attempt to write a readonly database": a message about the state store."""
    store = await StateStore.open(f"sqlite:///{workspace.state_path}", instance="tests")
    try:
        workspace.state_path.unlink()
        now = datetime.now(UTC)
        record = RunRecord("r1", "backoffice", "full", now, now, "ok", {}, 0, None, None)
        with pytest.raises(StateError) as raised:
            await store.runs.record(record)
    finally:
        await store.aclose()
    message = str(raised.value)
    assert "was deleted or moved during the run" in message, message
    assert str(workspace.state_path) in message
    assert "readonly" not in message
