"""The task index in SQLite: remember, look up, forget, survive reopening."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.identity import Markers
from connector.models import Task, TaskStatus
from connector.state import StateStore
from connector.values import task_digest


def test_remember_and_lookup_across_reopen(tmp_path: Path) -> None:
    """What was remembered is found again after the store is reopened; upserts update."""
    url = f"sqlite:///{tmp_path / 'sub' / 'state.db'}"
    markers = Markers()
    done_at = datetime(2026, 1, 1, tzinfo=UTC)
    store = StateStore(url, instance="tests")
    store.remember(
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
    store.remember("bo", [(Task(uid="u1", status=TaskStatus.DONE, fields={}), "T-1")], markers)
    store.close()

    store = StateStore(url, instance="tests")
    found = store.lookup(["u1", "u2", "u3"])
    assert set(found) == {"u1", "u2"}
    assert found["u1"].status is TaskStatus.DONE and not found["u1"].closed_by_connector
    assert found["u2"].closed_by_connector and found["u2"].done_at == done_at
    task = found["u2"].as_task(markers)
    assert task.fields == {"fc_source": "bo", "fc_ticket_id": "T-2", "fc_closed_by": "connector"}
    store.forget(["u1"])
    assert set(store.lookup(["u1", "u2"])) == {"u2"}
    store.close()


def test_large_lookups_are_chunked(tmp_path: Path) -> None:
    """Thousands of uids are remembered and looked up in chunks (no SQL variable limit)."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", instance="tests")
    tasks = [(Task(uid=f"u{n}", status=TaskStatus.DONE, fields={}), f"T-{n}") for n in range(5000)]
    store.remember("bo", tasks, Markers())
    assert len(store.lookup(f"u{n}" for n in range(6000))) == 5000
    store.close()


def test_bad_url_is_a_config_error() -> None:
    """A state.url that is not a database URL is a configuration error."""
    with pytest.raises(ConfigError, match=r"state\.url"):
        StateStore("not a url", instance="tests")


def test_digests_and_tasks_give_the_open_tasks_as_fragment_showed_them(tmp_path: Path) -> None:
    """The mirror's digests cover its open tasks; `tasks` gives them back in full."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", instance="tests")
    due = datetime(2026, 1, 1, tzinfo=UTC)
    todo = Task(uid="u1", status=TaskStatus.TODO, fields={"title": "A", "n": 1.5}, due_at=due)
    started = Task(uid="u2", status=TaskStatus.STARTED, fields={"title": "B"})
    done = Task(uid="u3", status=TaskStatus.DONE, fields={"title": "C"})
    store.remember("bo", [(todo, "T-1"), (started, "T-2"), (done, "T-3")], Markers())
    store.remember("other", [(Task(uid="u4", status=TaskStatus.TODO, fields={}), "X")], Markers())
    assert store.digests("bo") == {"u1": task_digest(todo), "u2": task_digest(started)}
    found = store.tasks(["u1", "u3", "u9"])
    assert set(found) == {"u1", "u3"}
    assert found["u1"].fields == {"title": "A", "n": 1.5} and found["u1"].due_at == due
    assert store.mark_unseen("bo", {"u1"}) == 1
    assert set(store.digests("bo")) == {"u1"}
    assert "u2" not in store.tasks(["u2"])
    store.close()
