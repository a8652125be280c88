"""The sandbox Fragment API over a real socket: fragment-api.md, its knobs, its admin API."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.sandbox import FailRule, Faults, SandboxConfig, SandboxServer

TOKEN = "sandbox-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "fragment-connector-tests/1"}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

MakeServer = Callable[..., SandboxServer]


@pytest.fixture
def make_server() -> Iterator[MakeServer]:
    """Start sandboxes (test mode, no rate limit unless overridden) and stop them afterwards."""
    servers: list[SandboxServer] = []

    def make(**overrides: Any) -> SandboxServer:
        settings: dict[str, Any] = {"test_mode": True, "requests_per_minute": None, **overrides}
        server = SandboxServer(SandboxConfig(**settings)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: MakeServer) -> SandboxServer:
    """A test-mode sandbox without rate limit."""
    return make_server()


@pytest.fixture
def api(server: SandboxServer) -> Iterator[httpx.Client]:
    """An authenticated client of the sandbox's /api/v1."""
    with client_for(server) as client:
        yield client


def client_for(server: SandboxServer, **kwargs: Any) -> httpx.Client:
    """A keep-alive client of `server`'s /api/v1 with the right token and a User-Agent."""
    return httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=10, **kwargs)


def new_task(title: str = "A task", **extra: Any) -> dict[str, Any]:
    """A PUT item with a fresh uid."""
    fields = {"title": title, **extra.pop("fields", {})}
    return {"uid": str(uuid.uuid4()), "fields": fields, **extra}


def put(api: httpx.Client, *items: dict[str, Any]) -> list[dict[str, Any]]:
    """PUT /tasks/batch, asserting success; the tasks returned."""
    response = api.put("/tasks/batch", json={"items": list(items)})
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()["items"]
    return tasks


def list_all(api: httpx.Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a GET /tasks listing, following next_cursor."""
    items: list[dict[str, Any]] = []
    page = api.get("/tasks", params=params).json()
    items += page["items"]
    while page["meta"]["next_cursor"] is not None:
        page = api.get("/tasks", params={**params, "cursor": page["meta"]["next_cursor"]}).json()
        items += page["items"]
    return items


# --- transport, auth, errors -------------------------------------------------------------------


def test_account_me_answers_with_the_sandbox_account(api: httpx.Client) -> None:
    """GET /accounts/me returns the sandbox account when the token is right."""
    response = api.get("/accounts/me")
    assert response.status_code == 200
    assert response.json() == {"id": "acc_sandbox", "name": "Sandbox account"}


def test_every_answer_carries_one_date_of_the_second_it_was_sent(api: httpx.Client) -> None:
    """The connector anchors its listing watermark on `Date`: the sandbox's is the answer's own
    second (uvicorn's, renewed once a second from its loop, could lag it), and there is one."""
    for path in ("/tasks", "/account/me", "/no-such-path"):
        before = int(time.time())
        response = api.get(path)
        after = time.time()
        [date] = response.headers.get_list("date")
        assert before <= parsedate_to_datetime(date).timestamp() <= after, (path, date)


def test_missing_or_wrong_token_is_401_without_echoing_it(server: SandboxServer) -> None:
    """A request without a token, with a wrong one or another scheme gets 401 and no echo."""
    ua = {"User-Agent": "tests/1"}
    for headers in ({}, {"Authorization": "Bearer wrong-secret-123"}, {"Authorization": TOKEN}):
        response = httpx.get(server.base_url + "/accounts/me", headers={**ua, **headers})
        assert response.status_code == 401
        assert "detail" in response.json()
        assert "wrong-secret-123" not in response.text
    assert not any("wrong-secret-123" in repr(entry) for entry in server.store.requests())


def test_missing_user_agent_is_403(api: httpx.Client) -> None:
    """A request without a User-Agent header is refused with 403."""
    request = api.build_request("GET", "/accounts/me")
    del request.headers["User-Agent"]
    response = api.send(request)
    assert response.status_code == 403
    assert response.json() == {"detail": "User-Agent required"}


def test_non_json_body_is_400(api: httpx.Client) -> None:
    """A write whose body is not JSON gets 400 with a detail."""
    response = api.put(
        "/tasks/batch", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)


def test_unknown_path_is_404_and_wrong_method_405(api: httpx.Client) -> None:
    """Unknown paths get 404 and known paths with another method 405, both as JSON."""
    assert api.get("/nothing/here").status_code == 404
    response = api.delete("/tasks/batch")
    assert response.status_code == 405
    assert "detail" in response.json()


# --- validation --------------------------------------------------------------------------------


def test_invalid_items_are_422_with_their_loc_and_nothing_is_applied(
    api: httpx.Client, server: SandboxServer
) -> None:
    """Every bad item of a batch is reported with its index in loc, and no item is written."""
    items = [
        new_task("fine"),
        {"uid": str(uuid.uuid4()), "fields": {"url": "https://x"}},
        {"uid": "not-a-uuid", "fields": {"title": "t"}},
        new_task("bad status", status="CLOSED"),
        new_task("bad due", due_at="2025-09-11T12:00:00"),
        new_task("x" * 1001),
        {"uid": str(uuid.uuid4()), "fields": "title"},
        new_task("extra", colour="red"),
    ]
    response = api.put("/tasks/batch", json={"items": items})
    assert response.status_code == 422
    detail = response.json()["detail"]
    locs = [tuple(error["loc"]) for error in detail]
    assert locs == [
        ("body", "items", 1, "fields", "title"),
        ("body", "items", 2, "uid"),
        ("body", "items", 3, "status"),
        ("body", "items", 4, "due_at"),
        ("body", "items", 5, "fields", "title"),
        ("body", "items", 6, "fields"),
        ("body", "items", 7, "colour"),
    ]
    assert detail[0]["type"] == "missing"
    assert all(error["msg"] for error in detail)
    assert server.store.all_tasks() == []


def test_batch_over_the_cap_is_422(make_server: MakeServer) -> None:
    """A batch with more items than max_batch_size is refused whole."""
    server = make_server(max_batch_size=3)
    with client_for(server) as api:
        response = api.put("/tasks/batch", json={"items": [new_task() for _ in range(4)]})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "items"]
        assert len(put(api, *[new_task() for _ in range(3)])) == 3


def test_body_of_the_wrong_shape_is_422(api: httpx.Client) -> None:
    """A batch body that is not {"items": [...]} gets 422."""
    bodies: list[object] = [[], {"items": {}}, {"tasks": []}]
    for body in bodies:
        assert api.put("/tasks/batch", json=body).status_code == 422


# --- task semantics ----------------------------------------------------------------------------


def test_task_json_has_the_documented_shape(api: httpx.Client, server: SandboxServer) -> None:
    """Tasks carry status, fields, ISO timestamps with ms and Z, extra read-only keys, no email."""
    item = new_task("Shape", assignee_email="ops@example.com", fields={"amount": 12, "tags": ["a"]})
    [task] = put(api, item)
    assert task["uid"] == item["uid"]
    assert task["status"] == "TODO"
    assert task["fields"] == {"title": "Shape", "amount": 12, "tags": ["a"]}
    assert task["archived"] is False
    for key in ("due_at", "created_at", "updated_at"):
        assert ISO_MS.match(task[key]), task[key]
    assert task["due_at"] == task["created_at"]
    assert task["started_at"] is None
    assert task["done_at"] is None
    assert task["external_status"] is None
    assert task["account_id"] == "sandbox"
    assert "assignee_email" not in task
    assert server.store.task(item["uid"])["assignee_email"] == "ops@example.com"  # type: ignore[index]
    assert api.get(f"/tasks/{item['uid']}").json() == task


def test_put_replaces_the_whole_task(api: httpx.Client, server: SandboxServer) -> None:
    """PUT resets omitted properties (status back to TODO), replaces fields, keeps created_at."""
    item = new_task("Original", fields={"team": "kyc"})
    [created] = put(api, item)
    time.sleep(0.005)
    [same] = put(api, item)
    assert same["updated_at"] == created["updated_at"]  # nothing changed, nothing bumped
    server.store.operator_edit(item["uid"], status="STARTED", fields={"note": "operator"})
    time.sleep(0.005)
    [replaced] = put(api, {"uid": item["uid"], "fields": {"title": "Replaced"}})
    assert replaced["status"] == "TODO"
    assert replaced["started_at"] is None
    assert replaced["fields"] == {"title": "Replaced"}
    assert replaced["created_at"] == created["created_at"]
    assert replaced["due_at"] == created["created_at"]
    assert replaced["updated_at"] > created["updated_at"]


def test_patch_merges_fields_and_null_removes_a_key(api: httpx.Client) -> None:
    """PATCH sets the properties sent, merges fields key by key and removes null-valued keys."""
    item = new_task("Patch me", fields={"keep": 1, "drop": 2})
    [created] = put(api, item)
    time.sleep(0.005)
    response = api.patch(
        "/tasks/batch",
        json={
            "items": [{"uid": item["uid"], "status": "DONE", "fields": {"drop": None, "new": "x"}}]
        },
    )
    assert response.status_code == 200, response.text
    [done] = response.json()["items"]
    assert done["fields"] == {"title": "Patch me", "keep": 1, "new": "x"}
    assert done["status"] == "DONE"
    assert ISO_MS.match(done["done_at"])
    assert done["updated_at"] > created["updated_at"]
    reopened = api.patch(f"/tasks/{item['uid']}", json={"status": "TODO"}).json()
    assert reopened["status"] == "TODO"
    assert reopened["done_at"] is None
    assert reopened["fields"] == done["fields"]


def test_patch_of_an_unknown_uid_is_422_task_not_found(api: httpx.Client) -> None:
    """A PATCH batch naming an unknown uid is refused whole, with that item's loc."""
    [known] = put(api, new_task())
    items = [{"uid": known["uid"], "status": "DONE"}, {"uid": str(uuid.uuid4()), "status": "DONE"}]
    response = api.patch("/tasks/batch", json={"items": items})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "items", 1, "uid"], "msg": "task not found", "type": "not_found"}
    ]
    assert api.get(f"/tasks/{known['uid']}").json()["status"] == "TODO"


def test_single_task_forms_and_comments(api: httpx.Client) -> None:
    """POST /tasks, GET/PUT/PATCH /tasks/{uid}, POST /tasks/batch and comments work."""
    created = api.post("/tasks", json={"fields": {"title": "Single"}})
    assert created.status_code == 200
    uid = created.json()["uid"]
    assert uuid.UUID(uid)
    assert api.get(f"/tasks/{uuid.uuid4()}").status_code == 404
    assert api.patch(f"/tasks/{uuid.uuid4()}", json={"status": "DONE"}).status_code == 404
    replaced = api.put(f"/tasks/{uid}", json={"fields": {"title": "Put"}, "status": "STARTED"})
    assert replaced.json()["status"] == "STARTED"
    assert ISO_MS.match(replaced.json()["started_at"])
    patched = api.patch(f"/tasks/{uid}", json={"fields": {"title": "Patched"}})
    assert patched.json()["fields"] == {"title": "Patched"}
    batch = api.post(
        "/tasks/batch",
        json={"items": [{"fields": {"title": "b"}}, {"uid": uid, "fields": {"title": "dup"}}]},
    )
    assert batch.status_code == 422
    assert batch.json()["detail"][0]["loc"] == ["body", "items", 1, "uid"]
    comment = api.post(f"/tasks/{uid}/comments", json={"content": "Closed by the connector"})
    assert comment.status_code == 200
    assert comment.json()["content"] == "Closed by the connector"
    assert api.post(f"/tasks/{uid}/comments", json={"text": "x"}).status_code == 422


# --- listings ----------------------------------------------------------------------------------


def test_listing_pages_through_filters_in_creation_order(api: httpx.Client) -> None:
    """GET /tasks filters by status and custom field across pages, in created_at order."""
    items = [
        new_task(
            f"T{n}",
            status=("TODO", "STARTED", "DONE")[n % 3],
            fields={"team": "kyc" if n % 2 else "ops", "n": n},
        )
        for n in range(250)
    ]
    for start in range(0, 250, 100):
        put(api, *items[start : start + 100])
    expected = [i["uid"] for i in items if i["status"] != "DONE" and i["fields"]["team"] == "kyc"]

    first = api.get(
        "/tasks", params={"status": ["TODO", "STARTED"], "fields.team": "kyc", "limit": 30}
    ).json()
    assert first["meta"]["total_count"] == len(expected)
    assert first["meta"]["limit"] == 30
    assert first["meta"]["prev_cursor"] is None
    listed = list_all(api, {"status": ["TODO", "STARTED"], "fields.team": "kyc", "limit": 30})
    assert [t["uid"] for t in listed] == expected

    numbers = list_all(api, {"fields.n": "7"})
    assert [t["fields"]["n"] for t in numbers] == [7]
    default_page = api.get("/tasks").json()
    assert len(default_page["items"]) == 50
    assert default_page["meta"]["next_cursor"] is not None


def test_updated_at_after_and_order_by_updated_at(api: httpx.Client, server: SandboxServer) -> None:
    """updated_at_after keeps tasks updated at or after it; order_by sorts by updated_at."""
    items = [new_task(f"T{n}") for n in range(5)]
    put(api, *items)
    time.sleep(0.01)
    touched = [items[3]["uid"], items[1]["uid"]]
    edits = []
    for uid in touched:
        edits.append(server.store.operator_edit(uid, fields={"seen": True}))
        time.sleep(0.005)  # distinct updated_at values, so the order is by time, not creation
    since = edits[0]["updated_at"]
    listed = list_all(api, {"updated_at_after": since, "order_by": "updated_at"})
    assert [t["uid"] for t in listed] == touched
    assert api.get("/tasks", params={"updated_at_after": "yesterday"}).status_code == 422


def test_limit_over_the_maximum_is_422(make_server: MakeServer) -> None:
    """A limit above max_page_size (or not a positive integer) is refused with 422."""
    server = make_server(max_page_size=20)
    with client_for(server) as api:
        assert api.get("/tasks", params={"limit": 21}).status_code == 422
        assert api.get("/tasks", params={"limit": 0}).status_code == 422
        assert api.get("/tasks", params={"limit": "many"}).status_code == 422
        assert api.get("/tasks", params={"limit": 20}).status_code == 200
        response = api.post("/tasks/query", json={"limit": 21})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "limit"]


def test_unknown_cursor_is_400(api: httpx.Client) -> None:
    """A cursor the sandbox never issued gets 400 invalid or expired cursor."""
    response = api.get("/tasks", params={"cursor": "deadbeef.100"})
    assert response.status_code == 400
    assert response.json() == {"detail": "invalid or expired cursor"}


def test_later_pages_show_current_state_and_skip_deleted_tasks(
    api: httpx.Client, server: SandboxServer
) -> None:
    """Pages after the first re-read each task from the store and skip tasks that disappeared."""
    items = [new_task(f"T{n}") for n in range(4)]
    put(api, *items)
    first = api.get("/tasks", params={"limit": 2}).json()
    server.store.operator_edit(items[2]["uid"], status="DONE")
    second = api.get("/tasks", params={"limit": 2, "cursor": first["meta"]["next_cursor"]}).json()
    assert [t["status"] for t in second["items"]] == ["DONE", "TODO"]
    assert second["meta"]["next_cursor"] is None
    assert second["meta"]["prev_cursor"] is not None
    server.store.reset()
    assert api.get("/tasks", params={"cursor": first["meta"]["next_cursor"]}).status_code == 400


def test_query_by_uid_in_returns_exactly_those_tasks(api: httpx.Client) -> None:
    """POST /tasks/query with uid `in` returns the known tasks among those uids."""
    items = [new_task(f"T{n}") for n in range(10)]
    put(api, *items)
    wanted = [items[7]["uid"], items[2]["uid"], str(uuid.uuid4())]
    body = {
        "condition": {
            "combinator": "and",
            "conditions": [{"field": "uid", "operator": "in", "value": wanted}],
        },
        "limit": 100,
    }
    response = api.post("/tasks/query", json=body)
    assert response.status_code == 200, response.text
    assert [t["uid"] for t in response.json()["items"]] == [items[2]["uid"], items[7]["uid"]]
    assert response.json()["meta"]["next_cursor"] is None


def test_query_conditions_sorts_and_pages(api: httpx.Client) -> None:
    """Query conditions combine with and/or, sort descending and page with a cursor."""
    items = [new_task(f"T{n}", fields={"amount": n}) for n in range(12)]
    put(api, *items)
    body: dict[str, Any] = {
        "condition": {
            "combinator": "or",
            "conditions": [
                {"field": "fields.amount", "operator": ">=", "value": 9},
                {"field": "fields.amount", "operator": "<", "value": 2},
            ],
        },
        "sorts": [{"field": "fields.amount", "direction": "descending"}],
        "limit": 3,
    }
    page = api.post("/tasks/query", json=body).json()
    assert [t["fields"]["amount"] for t in page["items"]] == [11, 10, 9]
    following = api.post(
        "/tasks/query", json={"cursor": page["meta"]["next_cursor"], "limit": 3}
    ).json()
    assert [t["fields"]["amount"] for t in following["items"]] == [1, 0]
    bad = {"condition": {"conditions": [{"field": "status", "operator": "like", "value": "x"}]}}
    response = api.post("/tasks/query", json=bad)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "condition", "conditions", 0, "operator"]


def test_strict_profile_refuses_undocumented_keys(api: httpx.Client) -> None:
    """The default (strict) sandbox answers 422 to a query tree outside `condition`, to unknown
    keys in a write, and to listing parameters it does not know: a client sending them is caught."""
    [task] = put(api, new_task())
    top_level = {
        "combinator": "and",
        "conditions": [{"field": "uid", "operator": "in", "value": [task["uid"]]}],
    }
    response = api.post("/tasks/query", json=top_level)
    assert response.status_code == 422
    assert {tuple(d["loc"]) for d in response.json()["detail"]} == {
        ("body", "combinator"),
        ("body", "conditions"),
    }
    assert api.get("/tasks", params={"colour": "red"}).status_code == 422
    write = {"items": [{**new_task(), "priority": "high"}]}
    assert api.put("/tasks/batch", json=write).status_code == 422
    sort = {"sorts": [{"field": "created_at", "order": "desc"}]}
    assert api.post("/tasks/query", json=sort).status_code == 422


def test_lenient_profile_ignores_what_it_does_not_know(make_server: MakeServer) -> None:
    """A lenient sandbox, like a FastAPI service with default models, ignores unknown keys and
    undocumented filters: the old top-level query tree and a `uid in` condition answer every
    task; `status` and `fields.<key>` filters are ignored; only `==` under `condition` filters."""
    server = make_server(profile="lenient")
    with client_for(server) as api:
        items = put(api, *(new_task(f"T{n}", fields={"k": str(n)}) for n in range(5)))
        server.store.operator_edit(items[0]["uid"], status="DONE")
        uids = [items[1]["uid"]]
        top_level = {
            "combinator": "and",
            "conditions": [{"field": "uid", "operator": "in", "value": uids}],
        }
        assert len(api.post("/tasks/query", json=top_level).json()["items"]) == 5
        nested_in = {"condition": top_level, "limit": 10}
        assert len(api.post("/tasks/query", json=nested_in).json()["items"]) == 5
        equal = {
            "condition": {
                "combinator": "and",
                "conditions": [{"field": "uid", "operator": "==", "value": uids[0]}],
            }
        }
        assert [t["uid"] for t in api.post("/tasks/query", json=equal).json()["items"]] == uids
        listed = api.get("/tasks", params={"status": "TODO", "fields.k": "3", "colour": "x"})
        assert listed.status_code == 200
        assert len(listed.json()["items"]) == 5
        assert api.get("/tasks", params={"limit": 2}).json()["meta"]["limit"] == 2
        write = {"items": [{**new_task("extra"), "priority": "high"}]}
        assert api.put("/tasks/batch", json=write).status_code == 200


def test_listing_ten_thousand_tasks_is_complete(api: httpx.Client, server: SandboxServer) -> None:
    """Paging through 10k tasks with a status filter returns each matching task exactly once."""
    server.store.seed(
        {
            "uid": str(uuid.uuid4()),
            "status": "DONE" if n % 4 == 0 else "TODO",
            "fields": {"title": f"T{n}"},
        }
        for n in range(10_000)
    )
    listed = list_all(api, {"status": "TODO", "limit": 100})
    assert len(listed) == 7_500
    assert len({t["uid"] for t in listed}) == 7_500
    assert all(t["status"] == "TODO" for t in listed)


def test_visibility_delay_hides_new_tasks_from_listings_only(make_server: MakeServer) -> None:
    """Tasks younger than visibility_delay_s are missing from listings but readable by uid."""
    server = make_server(visibility_delay_s=0.4)
    with client_for(server) as api:
        [task] = put(api, new_task())
        condition = {"field": "uid", "operator": "==", "value": task["uid"]}
        query = {"condition": {"combinator": "and", "conditions": [condition]}}
        assert api.get("/tasks").json()["items"] == []
        assert api.post("/tasks/query", json=query).json()["items"] == []
        assert api.get(f"/tasks/{task['uid']}").status_code == 200
        time.sleep(0.5)
        assert [t["uid"] for t in api.get("/tasks").json()["items"]] == [task["uid"]]
        assert len(api.post("/tasks/query", json=query).json()["items"]) == 1


# --- rate limit and faults ---------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(make_server: MakeServer) -> None:
    """Past the burst, requests get 429 with an integer Retry-After; admin is never limited."""
    server = make_server(requests_per_minute=60.0, rate_burst=3)
    with client_for(server) as api:
        statuses = [api.get("/accounts/me").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        response = api.get("/accounts/me")
        assert response.status_code == 429
        assert response.json() == {"detail": "rate limit exceeded"}
        assert int(response.headers["Retry-After"]) >= 1
    for _ in range(5):
        assert httpx.get(server.admin_url + "/stats").status_code == 200


def test_config_can_be_changed_through_the_admin_api(make_server: MakeServer) -> None:
    """PUT /_sandbox/config changes the tunables at run time and rejects unknown keys."""
    server = make_server()
    response = httpx.put(
        server.admin_url + "/config", json={"requests_per_minute": 60, "rate_burst": 1}
    )
    assert response.json()["rate_burst"] == 1
    with client_for(server) as api:
        assert [api.get("/accounts/me").status_code for _ in range(2)] == [200, 429]
    assert httpx.put(server.admin_url + "/config", json={"token": "x"}).status_code == 422
    assert httpx.put(server.admin_url + "/config", json={"rate_burst": 0}).status_code == 422


def test_fault_429_carries_the_configured_retry_after(
    api: httpx.Client, server: SandboxServer
) -> None:
    """With p_429 = 1 every API request gets 429 with Retry-After = retry_after_s."""
    response = httpx.put(server.admin_url + "/faults", json={"p_429": 1.0, "retry_after_s": 7})
    assert response.status_code == 200
    response = api.get("/accounts/me")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"


def test_fault_5xx_gives_500_502_or_503(api: httpx.Client, server: SandboxServer) -> None:
    """With p_5xx = 1 requests get 500, 502 or 503, and 503 carries Retry-After."""
    server.store.set_faults(Faults(p_5xx=1.0))
    responses = [api.get("/accounts/me") for _ in range(30)]
    assert {r.status_code for r in responses} == {500, 502, 503}
    assert all("Retry-After" in r.headers for r in responses if r.status_code == 503)


def test_fault_drop_is_a_transport_error_and_applies_nothing(
    api: httpx.Client, server: SandboxServer
) -> None:
    """A dropped connection makes httpx raise a transport error and the write is not applied."""
    server.store.set_faults(Faults(p_drop=1.0))
    item = new_task()
    with pytest.raises(httpx.TransportError):
        api.put("/tasks/batch", json={"items": [item]})
    server.store.set_faults(Faults())
    assert api.get(f"/tasks/{item['uid']}").status_code == 404
    assert server.store.requests()[-2]["status"] == "drop"


def test_fault_lost_response_applies_the_write(api: httpx.Client, server: SandboxServer) -> None:
    """A lost response applies the write, yet the client gets a transport error."""
    server.store.set_faults(Faults(p_lost_response=1.0))
    assert api.get("/accounts/me").status_code == 200  # reads are not affected
    item = new_task()
    with pytest.raises(httpx.TransportError):
        api.put("/tasks/batch", json={"items": [item]})
    assert server.store.task(item["uid"]) is not None


def test_fault_latency_delays_responses(api: httpx.Client, server: SandboxServer) -> None:
    """latency_s delays each API request by at least that long."""
    server.store.set_faults(Faults(latency_s=0.2))
    started = time.monotonic()
    assert api.get("/accounts/me").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_fail_next_rules_are_consumed_in_order(api: httpx.Client, server: SandboxServer) -> None:
    """fail_next answers the matching requests with 500, then drops one after applying it."""
    [task] = put(api, new_task())
    rules = [
        {"method": "PATCH", "path": "/tasks/batch", "status": 500, "count": 2},
        {"method": "PATCH", "path": "/tasks/batch", "status": "lost"},
        {"method": "GET", "path": "/tasks/{uid}", "status": "drop"},
    ]
    assert httpx.put(server.admin_url + "/faults", json={"fail_next": rules}).status_code == 200
    body = {"items": [{"uid": task["uid"], "status": "DONE"}]}
    assert api.get("/accounts/me").status_code == 200
    assert [api.patch("/tasks/batch", json=body).status_code for _ in range(2)] == [500, 500]
    with pytest.raises(httpx.TransportError):
        api.patch("/tasks/batch", json=body)
    with pytest.raises(httpx.TransportError):
        api.get(f"/tasks/{task['uid']}")
    assert api.get(f"/tasks/{task['uid']}").json()["status"] == "DONE"
    assert api.patch("/tasks/batch", json=body).status_code == 200
    assert httpx.get(server.admin_url + "/faults").json()["fail_next"] == []
    statuses = [(r["method"], r["status"]) for r in server.store.requests()]
    assert statuses[-6:] == [
        ("PATCH", 500),
        ("PATCH", 500),
        ("PATCH", "lost"),
        ("GET", "drop"),
        ("GET", 200),
        ("PATCH", 200),
    ]


def test_invalid_faults_are_422(server: SandboxServer) -> None:
    """Malformed fault knobs are refused by the admin API."""
    for body in ({"p_429": 2}, {"fail_next": [{"status": "explode"}]}, {"unknown": 1}):
        assert httpx.put(server.admin_url + "/faults", json=body).status_code == 422


def test_overlapping_writers_are_counted_per_source(
    api: httpx.Client, server: SandboxServer
) -> None:
    """Two writes for the same fc_source in flight at once show as max_concurrent_writers 2."""
    put(api, new_task(fields={"fc_source": "alpha"}))
    [beta] = put(api, new_task(fields={"fc_source": "beta"}))
    server.store.set_faults(Faults(latency_s=0.3))

    def write(item: dict[str, Any]) -> int:
        with client_for(server) as client:
            return client.put("/tasks/batch", json={"items": [item]}).status_code

    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(write, [new_task(fields={"fc_source": "alpha"}) for _ in range(2)]))
    assert codes == [200, 200]
    api.patch("/tasks/batch", json={"items": [{"uid": beta["uid"], "status": "DONE"}]})
    stats = httpx.get(server.admin_url + "/stats").json()
    assert stats["max_concurrent_writers"] == {"alpha": 2, "beta": 1}
    assert stats["writers_in_flight"] == {}


# --- request log and admin ---------------------------------------------------------------------


def test_request_log_records_requests_without_the_token(
    api: httpx.Client, server: SandboxServer
) -> None:
    """The log has method, path, query, status, items, user agent, auth validity; no token."""
    put(api, new_task(), new_task())
    api.get("/tasks", params={"status": "TODO"})
    log = httpx.get(server.admin_url + "/requests").json()
    first, second = log["items"]
    assert first["method"] == "PUT"
    assert first["path"] == "/tasks/batch"
    assert first["status"] == 200
    assert first["items"] == 2
    assert first["user_agent"] == HEADERS["User-Agent"]
    assert first["auth_ok"] is True
    assert ISO_MS.match(first["at"])
    assert second["query"] == "status=TODO"
    assert second["items"] is None
    assert {"method": "PUT", "route": "/tasks/batch", "status": 200, "count": 1} in log["counts"]
    assert TOKEN not in repr(log)
    assert httpx.delete(server.admin_url + "/requests").status_code == 200
    assert server.store.requests() == []


def test_admin_seeds_edits_dumps_and_resets(server: SandboxServer) -> None:
    """The admin API seeds raw tasks, applies operator edits, dumps everything and resets."""
    admin = server.admin_url
    uid = str(uuid.uuid4())
    seeded = httpx.post(
        admin + "/tasks",
        json={
            "items": [
                {
                    "uid": uid,
                    "status": "DONE",
                    "archived": True,
                    "assignee_email": "a@b.c",
                    "fields": {"title": "Foreign"},
                    "created_at": "2025-01-01T00:00:00Z",
                }
            ]
        },
    )
    assert seeded.status_code == 200
    [task] = seeded.json()["items"]
    assert task["created_at"] == "2025-01-01T00:00:00.000Z"
    assert task["done_at"] == task["updated_at"] == task["created_at"]
    edited = httpx.post(
        admin + f"/tasks/{uid}/operator", json={"status": "STARTED", "fields": {"x": 1}}
    )
    assert edited.status_code == 200
    assert edited.json()["status"] == "STARTED"
    assert edited.json()["updated_at"] > task["updated_at"]
    assert httpx.post(admin + f"/tasks/{uuid.uuid4()}/operator", json={}).status_code == 404
    [dumped] = httpx.get(admin + "/tasks").json()["items"]
    assert dumped["assignee_email"] == "a@b.c"
    assert dumped["archived"] is True
    assert dumped["fields"] == {"title": "Foreign", "x": 1}
    assert httpx.post(admin + "/reset").status_code == 200
    assert httpx.get(admin + "/tasks").json()["items"] == []
    assert httpx.get(admin + "/stats").json()["tasks"] == 0


def test_admin_is_refused_outside_test_mode(make_server: MakeServer) -> None:
    """Without test mode the admin API is 404 and faults cannot be set."""
    server = make_server(test_mode=False)
    assert httpx.get(server.admin_url + "/stats").status_code == 404
    assert httpx.post(server.admin_url + "/reset").status_code == 404
    with pytest.raises(RuntimeError):
        server.store.set_faults(Faults(p_drop=1.0))
    with client_for(server) as api:
        assert api.get("/accounts/me").status_code == 200


# --- persistence and lifecycle -----------------------------------------------------------------


def test_tasks_persist_across_restarts(make_server: MakeServer, tmp_path: Path) -> None:
    """With data_path set, tasks written before a stop are served again by a new sandbox."""
    data = tmp_path / "sandbox" / "tasks.json"
    first = make_server(data_path=data)
    with client_for(first) as api:
        [task] = put(api, new_task("Kept", assignee_email="x@y.z", fields={"n": 1.5}))
        api.patch("/tasks/batch", json={"items": [{"uid": task["uid"], "status": "STARTED"}]})
        api.post(f"/tasks/{task['uid']}/comments", json={"content": "hello"})
        before = api.get(f"/tasks/{task['uid']}").json()
    first.stop()
    assert data.exists()
    assert not [p for p in data.parent.iterdir() if p.name.endswith(".tmp")]
    second = make_server(data_path=data)
    with client_for(second) as api:
        assert api.get(f"/tasks/{task['uid']}").json() == before
    [stored] = second.store.all_tasks()
    assert stored["assignee_email"] == "x@y.z"
    assert [c["content"] for c in stored["comments"]] == ["hello"]


def test_server_restarts_on_the_same_port(make_server: MakeServer) -> None:
    """A stopped SandboxServer starts again on its port with its store intact."""
    server = make_server()
    with client_for(server) as api:
        put(api, new_task())
    port = server.port
    server.stop()
    server.start()
    assert server.port == port
    with client_for(server) as api:
        assert api.get("/tasks").json()["meta"]["total_count"] == 1
    assert server.base_url == f"http://127.0.0.1:{port}/api/v1"
    assert server.admin_url == f"http://127.0.0.1:{port}/_sandbox"


def test_fail_rule_objects_can_be_set_in_process(api: httpx.Client, server: SandboxServer) -> None:
    """Faults with FailRule objects set through the store apply like the admin API's."""
    server.store.set_faults(Faults(fail_next=(FailRule("*", "/accounts/me", 503),)))
    response = api.get("/accounts/me")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert api.get("/accounts/me").status_code == 200
