"""Applying a plan: full batches, 422 isolation, and stopping cleanly when Fragment fails."""

from __future__ import annotations

import json

import httpx
import pytest

from connector.apply import apply_actions
from connector.fragment import FragmentClient
from connector.models import Action, ActionKind, Task


def action(n: int, kind: ActionKind = ActionKind.CREATE, title: str = "ok") -> Action:
    payload = {"uid": f"u{n}", "fields": {"title": title}}
    return Action(
        kind=kind, uid=f"u{n}", source="s", ticket_id=f"T-{n}", reason="r", payload=payload
    )


class ScriptedFragment:
    """Answers batches like Fragment: 422 naming items whose title is BAD (or no index at all)."""

    def __init__(self, *, name_items: bool = True, fail_status: int | None = None) -> None:
        self.name_items = name_items
        self.fail_status = fail_status
        self.batches: list[tuple[str, list[str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        self.batches.append((request.method, [i["uid"] for i in items]))
        if self.fail_status:
            return httpx.Response(self.fail_status, json={"detail": "down"})
        bad = [n for n, item in enumerate(items) if item["fields"]["title"] == "BAD"]
        if bad:
            loc = (
                (lambda n: ["body", "items", n, "fields", "title"])
                if self.name_items
                else (lambda n: ["body"])
            )
            detail = [{"loc": loc(n), "msg": "title refused", "type": "value_error"} for n in bad]
            return httpx.Response(422, json={"detail": detail})
        return httpx.Response(200, json={"items": [{**i, "status": "TODO"} for i in items]})


# The Fragment is scripted in the test's loop (MockTransport): on looptime the retries' waits
# (a Fragment down until the retry deadline) pass at once.
pytestmark = pytest.mark.looptime


def client(fragment: ScriptedFragment) -> FragmentClient:
    return FragmentClient(
        "http://f.test/api/v1",
        "t",
        transport=httpx.MockTransport(fragment),
        requests_per_minute=100_000,
        retry_deadline=1.0,
    )


async def test_batches_are_full_and_split_by_method() -> None:
    """Creates go by PUT and the rest by PATCH, batch_size items per request."""
    fragment = ScriptedFragment()
    actions = [action(n) for n in range(250)] + [
        action(n, ActionKind.CLOSE) for n in range(300, 420)
    ]
    returned: list[tuple[Action, Task | None]] = []
    async with client(fragment) as c:
        result = await apply_actions(c, actions, batch_size=100, on_applied=returned.extend)
    assert [(m, len(u)) for m, u in fragment.batches] == [
        ("PUT", 100),
        ("PUT", 100),
        ("PUT", 50),
        ("PATCH", 100),
        ("PATCH", 20),
    ]
    assert len(result.applied) == 370 and result.failures == []
    assert [a for a, _ in returned] == result.applied
    assert all(task is not None and task.uid == a.uid for a, task in returned)


async def test_422_naming_items_sends_the_rest_again() -> None:
    """Items named by a 422 are reported; the rest of the chunk is sent once more."""
    fragment = ScriptedFragment()
    actions = [action(n, title="BAD" if n in (3, 7) else "ok") for n in range(10)]
    async with client(fragment) as c:
        result = await apply_actions(c, actions, batch_size=100)
    assert [f.action.uid for f in result.failures] == ["u3", "u7"]
    assert "title refused" in result.failures[0].error
    assert len(result.applied) == 8
    assert len(fragment.batches) == 2 and len(fragment.batches[1][1]) == 8


async def test_422_without_positions_is_bisected() -> None:
    """A 422 that names no item is bisected down to the bad one."""
    fragment = ScriptedFragment(name_items=False)
    actions = [action(n, title="BAD" if n == 5 else "ok") for n in range(8)]
    async with client(fragment) as c:
        result = await apply_actions(c, actions, batch_size=100)
    assert [f.action.uid for f in result.failures] == ["u5"]
    assert sorted(a.uid for a in result.applied) == [f"u{n}" for n in range(8) if n != 5]


async def test_fragment_down_stops_and_reports_every_unsent_action() -> None:
    """A persistent 5xx stops the run: the chunk and every later one are reported as failed."""
    fragment = ScriptedFragment(fail_status=500)
    actions = [action(n) for n in range(150)]
    async with client(fragment) as c:
        result = await apply_actions(c, actions, batch_size=100)
    assert result.fatal is not None
    assert result.applied == []
    assert len(result.failures) == 150
    assert {m for m, _ in fragment.batches} == {"PUT"}
    assert {tuple(u) for _, u in fragment.batches} == {tuple(f"u{n}" for n in range(100))}


async def test_a_refusal_to_send_leaves_later_batches_unsent() -> None:
    """When `may_send` says no, the batch in flight finishes and the rest is reported as not
    sent."""
    fragment = ScriptedFragment()
    sent: list[int] = []
    actions = [action(n) for n in range(300)]

    async def may_send() -> bool:
        return len(sent) < 1

    async with client(fragment) as c:
        result = await apply_actions(
            c, actions, batch_size=100, may_send=may_send, progress=sent.append
        )
    assert len(fragment.batches) == 1
    assert len(result.applied) == 100
    assert len(result.failures) == 200
    assert "the cycle stopped" in result.failures[0].error


async def test_a_200_is_checked_item_by_item() -> None:
    """A 200 whose answer lacks an item, names it in `errors`, or shows it without what was
    written counts that action as failed; the rest are applied and handed on."""

    def answer(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        tasks = [{**i, "status": "TODO"} for i in items if i["uid"] != "u1"]  # u1 missing
        tasks[2]["fields"] = {"title": "something else"}  # u3 not as written
        errors = [{"uid": "u2", "msg": "quota exceeded"}, {"index": 4, "message": "locked"}]
        return httpx.Response(200, json={"items": tasks, "errors": errors})

    returned: list[tuple[Action, Task | None]] = []
    async with FragmentClient(
        "http://f.test/api/v1", "t", transport=httpx.MockTransport(answer), retry_deadline=1.0
    ) as c:
        result = await apply_actions(
            c, [action(n) for n in range(6)], batch_size=100, on_applied=returned.extend
        )
    assert [a.uid for a in result.applied] == ["u0", "u5"]
    assert [a.uid for a, _ in returned] == ["u0", "u5"]
    failures = {f.action.uid: f.error for f in result.failures}
    assert failures == {
        "u1": "not applied: Fragment's answer did not include the task",
        "u2": "not applied: quota exceeded",
        "u3": "not applied: Fragment answered field 'title' without the value written",
        "u4": "not applied: locked",
    }
    assert all(f.sent for f in result.failures)
