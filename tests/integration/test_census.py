"""The index's census (connector.state.census) on SQLite and on this machine's PostgreSQL: the
connector's own writes keep it whole, a row lost behind its back voids it for good."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.identity import Markers
from connector.models import Task, TaskStatus
from connector.state import StateStore
from tests.integration.test_postgres_state import execute

START = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def tasks(first: int, last: int) -> list[tuple[Task, str]]:
    """Tasks u{first}..u{last - 1} of ticket T-{n}."""
    return [
        (Task(uid=f"u{n}", status=TaskStatus.TODO, fields={}), f"T-{n}") for n in range(first, last)
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("postgres_state_url")
    return url


@pytest.fixture
async def store(state_url: str) -> AsyncIterator[StateStore]:
    store = await StateStore.open(state_url, instance="census-tests")
    try:
        yield store
    finally:
        await store.aclose()


async def test_the_connectors_own_writes_keep_the_census_whole(store: StateStore) -> None:
    index = store.index
    await index.remember("bo", tasks(0, 1200), Markers())
    assert await index.census("bo") is None  # rows, but no proof that they are all
    await index.certify("bo", START)
    census = await index.census("bo")
    assert census is not None and census.intact
    assert (census.complete, census.rows, census.found) == (START, 1200, 1200)

    await index.remember("bo", tasks(1000, 1300), Markers())  # 200 known again, 100 new
    await index.expect("bo", [("u1299", "T-1299"), ("n1", "N-1"), ("n2", "N-2")])
    entries = await index.lookup(["u1299", "n1", "n2"])
    assert entries["u1299"].status is TaskStatus.TODO  # it had its row: left as it was
    assert entries["n1"].status is None and entries["n2"].ticket_id == "N-2"  # state unknown
    await index.forget(["u0", "u1", "n1", "never-known"])
    await index.remember(
        "other", [(Task(uid="o1", status=TaskStatus.TODO, fields={}), "O-1")], Markers()
    )
    await index.advance_census("bo", START + timedelta(minutes=5))

    census = await index.census("bo")
    assert census is not None and census.intact
    assert census.rows == census.found == 1200 + 100 + 2 - 3
    assert census.complete == START + timedelta(minutes=5)


async def test_a_row_lost_behind_the_connectors_back_voids_the_census_for_good(
    store: StateStore, state_url: str
) -> None:
    index = store.index
    await index.remember("bo", tasks(0, 10), Markers())
    await index.certify("bo", START)
    execute(
        state_url, "DELETE FROM fc_task_index WHERE uid = 'u3'"
    )  # a partial restore, a hand edit

    census = await index.census("bo")
    assert census is not None and not census.intact
    assert (census.rows, census.found) == (10, 9)
    # Learning the task again does not make the census whole: other rows may be lost too.
    await index.remember("bo", tasks(3, 4), Markers())
    census = await index.census("bo")
    assert census is not None and not census.intact
    await index.drop_census("bo")
    assert await index.census("bo") is None
