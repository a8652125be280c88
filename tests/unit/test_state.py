"""The task index in SQLite: remember, look up, forget, survive reopening."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.identity import Markers
from connector.models import Task, TaskStatus
from connector.state import SCHEMA_VERSION, StateStore, StoredWatermark
from connector.values import task_digest


async def test_remember_and_lookup_across_reopen(tmp_path: Path) -> None:
    """What was remembered is found again after the store is reopened; upserts update."""
    url = f"sqlite:///{tmp_path / 'sub' / 'state.db'}"
    markers = Markers()
    done_at = datetime(2026, 1, 1, tzinfo=UTC)
    store = await StateStore.open(url, instance="tests")
    await store.index.remember(
        "bo",
        [
            (Task(uid="u1", status=TaskStatus.TODO, fields={}), "T-1"),
            (
                Task(
                    uid="u2",
                    status=TaskStatus.DONE,
                    fields={"fc_closed_by": "connector"},
                    done_at=done_at,
                ),
                "T-2",
            ),
        ],
        markers,
    )
    await store.index.remember(
        "bo", [(Task(uid="u1", status=TaskStatus.DONE, fields={}), "T-1")], markers
    )
    await store.aclose()

    store = await StateStore.open(url, instance="tests")
    found = await store.index.lookup(["u1", "u2", "u3"])
    assert set(found) == {"u1", "u2"}
    assert found["u1"].status is TaskStatus.DONE and not found["u1"].closed_by_connector
    assert found["u2"].closed_by_connector and found["u2"].done_at == done_at
    task = found["u2"].as_task(markers)
    assert task.fields == {"fc_source": "bo", "fc_ticket_id": "T-2", "fc_closed_by": "connector"}
    await store.index.forget(["u1"])
    assert set(await store.index.lookup(["u1", "u2"])) == {"u2"}
    await store.aclose()


async def test_large_lookups_are_chunked(tmp_path: Path) -> None:
    """Thousands of uids are remembered and looked up in chunks (no SQL variable limit)."""
    store = await StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", instance="tests")
    tasks = [(Task(uid=f"u{n}", status=TaskStatus.DONE, fields={}), f"T-{n}") for n in range(5000)]
    await store.index.remember("bo", tasks, Markers())
    assert len(await store.index.lookup(f"u{n}" for n in range(6000))) == 5000
    await store.aclose()


async def test_bad_url_is_a_config_error() -> None:
    """A state.url that is not a database URL is a configuration error."""
    with pytest.raises(ConfigError, match=r"state\.url"):
        await StateStore.open("not a url", instance="tests")


async def test_digests_and_tasks_give_the_open_tasks_as_fragment_showed_them(
    tmp_path: Path,
) -> None:
    """The mirror's digests cover its open tasks; `tasks` gives them back in full."""
    store = await StateStore.open(f"sqlite:///{tmp_path / 'state.db'}", instance="tests")
    due = datetime(2026, 1, 1, tzinfo=UTC)
    todo = Task(uid="u1", status=TaskStatus.TODO, fields={"title": "A", "n": 1.5}, due_at=due)
    started = Task(uid="u2", status=TaskStatus.STARTED, fields={"title": "B"})
    done = Task(uid="u3", status=TaskStatus.DONE, fields={"title": "C"})
    await store.index.remember("bo", [(todo, "T-1"), (started, "T-2"), (done, "T-3")], Markers())
    await store.index.remember(
        "other", [(Task(uid="u4", status=TaskStatus.TODO, fields={}), "X")], Markers()
    )
    assert await store.index.digests("bo") == {"u1": task_digest(todo), "u2": task_digest(started)}
    found = await store.index.tasks(["u1", "u3", "u9"])
    assert set(found) == {"u1", "u3"}
    assert found["u1"].fields == {"title": "A", "n": 1.5} and found["u1"].due_at == due
    assert await store.index.mark_unseen("bo", {"u1"}) == 1
    assert set(await store.index.digests("bo")) == {"u1"}
    assert "u2" not in await store.index.tasks(["u2"])
    await store.aclose()


async def test_a_store_call_waiting_on_the_database_leaves_the_loop_free(tmp_path: Path) -> None:
    """While a write waits for the file's lock (a slow disk, another process), the event loop
    that also runs the lease heartbeat and /healthz keeps turning: this coroutine runs, and
    it is the one that lets the write through."""
    path = tmp_path / "state.db"
    store = await StateStore.open(f"sqlite:///{path}", instance="tests")
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held by another connection
    try:
        write = asyncio.create_task(store.cursors.set("bo", "c-1"))
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not write.done()  # it waits for the lock, and this loop turned meanwhile
        holder.commit()
        await write
        assert await store.cursors.get("bo") == "c-1"
    finally:
        holder.close()
        await store.aclose()


async def test_an_older_store_keeps_its_index_and_its_watermark_moves(tmp_path: Path) -> None:
    """A store written before fc_watermarks (the watermark as the `fragment:{source}` cursor)
    opens with its task index and cursors intact; the watermark moves to its own table once."""
    path = tmp_path / "state.db"
    url = f"sqlite:///{path}"
    store = await StateStore.open(url, instance="tests")
    await store.index.remember(
        "bo", [(Task(uid="u1", status=TaskStatus.TODO, fields={}), "T-1")], Markers()
    )
    await store.aclose()
    seen = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    full = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    old = json.dumps({"seen": seen.isoformat(), "full_at": full.isoformat(), "checked_at": None})
    with sqlite3.connect(path) as conn:  # the older release's shape and rows
        conn.execute("DROP TABLE fc_watermarks")
        conn.execute("INSERT INTO fc_cursors VALUES ('fragment:bo', ?, 'then')", (old,))
        conn.execute("INSERT INTO fc_cursors VALUES ('bo', 'adapter-cursor', 'then')")

    store = await StateStore.open(url, instance="tests")
    try:
        assert await store.watermarks.get("bo") == StoredWatermark(seen, full, None)
        assert await store.watermarks.get("other") == StoredWatermark()
        assert await store.cursors.get("bo") == "adapter-cursor"
        assert set(await store.index.lookup(["u1"])) == {"u1"}  # no rebuild: no re-listing
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        names = [row[0] for row in conn.execute("SELECT source FROM fc_cursors")]
        schema = conn.execute("SELECT value FROM fc_meta WHERE key = 'schema'").fetchone()
    assert names == ["bo"]  # the fake cursor is gone
    assert schema == (SCHEMA_VERSION,)
