"""Finding tasks by uid against both sandbox profiles: the documented query body, an answer that
ignored the filter noticed, and the fallbacks chosen by request cost."""

from __future__ import annotations

import uuid

import pytest

from connector.errors import FragmentFilterIgnored
from connector.fragment import FragmentClient, TaskFinder
from connector.sandbox import FailRule, Faults, SandboxServer
from tests.conftest import BOTH_PROFILES, TOKEN

SOURCE = {"fc_source": "bo"}


def _seed(sandbox: SandboxServer, count: int) -> list[str]:
    uids = [str(uuid.uuid4()) for _ in range(count)]
    sandbox.store.seed(
        [
            {"uid": uid, "status": "DONE", "fields": {"title": f"t{n}", **SOURCE}}
            for n, uid in enumerate(uids)
        ]
        + [{"uid": str(uuid.uuid4()), "fields": {"title": "foreign"}}]
    )
    return uids


def _client(sandbox: SandboxServer) -> FragmentClient:
    return FragmentClient(sandbox.base_url, TOKEN, requests_per_minute=1e5, burst=100)


@BOTH_PROFILES
async def test_query_body_is_the_documented_one(sandbox: SandboxServer) -> None:
    """The client nests the tree under `condition`; a strict server filters it, a lenient one
    answers every task, which the client reports as an ignored filter instead of "absent"."""
    uids = _seed(sandbox, 3)
    async with _client(sandbox) as client:
        if sandbox.config.lenient:
            with pytest.raises(FragmentFilterIgnored):
                await client.query_uids([uids[0], str(uuid.uuid4())])
        else:
            found = await client.query_uids([uids[0], str(uuid.uuid4())])
            assert [t.uid for t in found] == [uids[0]]
    [request] = sandbox.store.requests()
    assert request["route"] == "/tasks/query" and request["status"] == 200


@BOTH_PROFILES
@pytest.mark.parametrize(("looked_for", "fallback"), [(1, "/tasks/{uid}"), (30, "/tasks")])
async def test_finder_falls_back_by_request_cost(
    sandbox: SandboxServer, looked_for: int, fallback: str
) -> None:
    """An untrusted query (ignored, or refused with 422) is not asked again; the fallback is
    GET /tasks/{uid} for fewer uids than listing pages, else one listing of the source's tasks."""
    uids = _seed(sandbox, looked_for)
    missing = str(uuid.uuid4())
    if not sandbox.config.lenient:
        sandbox.store.set_faults(Faults(fail_next=(FailRule("POST", "/tasks/query", 422),)))
    async with _client(sandbox) as client:
        finder = TaskFinder(client)
        wanted = [*uids, missing]
        lookup = await finder.find(wanted, listing_fields=SOURCE, listing_pages=2)
        assert set(lookup.found) == set(uids)
        assert all(t.status.value == "DONE" for t in lookup.found.values())
        assert lookup.absent == {missing} and not lookup.unresolved
        assert finder.query_usable is False
        first = {r["route"] for r in sandbox.store.requests()}
        assert first == {"/tasks/query", fallback}
        assert lookup.methods == [{"/tasks/{uid}": "by_uid", "/tasks": "listing"}[fallback]]
        sandbox.store.clear_requests()
        again = await finder.find(uids[:1], listing_fields=SOURCE, listing_pages=2)
        assert set(again.found) == {uids[0]}
    assert "/tasks/query" not in {r["route"] for r in sandbox.store.requests()}
