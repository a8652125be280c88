"""The Fragment client's own logic (retries, error mapping, paging defences, pacing).

These use httpx.MockTransport to script exact answers; the behaviour against a real server is
covered over sockets in tests/integration. They run on looptime's fast-forwarded event loop: every
wait (stamina's retries, the token bucket) is asserted as the loop time it asked for, exactly, and
none is waited for real.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import httpx
import pytest
from looptime import LoopTimeProxy

from connector.errors import (
    FragmentAuthError,
    FragmentNetworkError,
    FragmentProtocolError,
    FragmentServerError,
    FragmentValidationError,
)
from connector.fragment import FragmentClient, TokenBucket
from connector.fragment.client import USER_AGENT, retry_after_seconds

Handler = Callable[[httpx.Request], httpx.Response]

pytestmark = pytest.mark.looptime


def client(handler: Handler, **kw: float) -> FragmentClient:
    options = {"requests_per_minute": 100_000.0, "retry_deadline": 5.0, **kw}
    return FragmentClient(
        "http://fragment.test/api/v1", "tok-123", transport=httpx.MockTransport(handler), **options
    )  # type: ignore[arg-type]


def task(uid: str, status: str = "TODO") -> dict[str, object]:
    fields = {"title": uid, "fc_source": "s"}
    return {"uid": uid, "status": status, "fields": fields, "unknown_key": {"ignored": True}}


async def test_headers_and_account() -> None:
    """Every request carries the bearer token and our User-Agent."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "acc"})

    async with client(handler) as c:
        assert await c.me() == {"id": "acc"}
    assert seen[0].headers["Authorization"] == "Bearer tok-123"
    assert seen[0].headers["User-Agent"] == USER_AGENT
    assert seen[0].url.path == "/api/v1/accounts/me"


async def test_429_is_retried_after_retry_after(looptime: LoopTimeProxy) -> None:
    """A 429 with Retry-After is retried once that delay has passed, and not before."""
    sent: list[float] = []
    answers = iter(
        [httpx.Response(429, headers={"Retry-After": "0.3"}), httpx.Response(200, json={"id": 1})]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(asyncio.get_running_loop().time())
        return next(answers)

    async with client(handler) as c:
        await c.me()
        assert sent == [0, 0.3]
        assert looptime == 0.3
        assert c.stats.retries == 1
        assert c.stats.counts == {"GET /accounts/me 429": 1, "GET /accounts/me 200": 1}


async def test_retry_after_is_clamped_to_the_deadline(looptime: LoopTimeProxy) -> None:
    """A Retry-After longer than the deadline does not make the client wait past it: a retry the
    server has said it will refuse is not waited for at all; one within it is waited for."""
    async with client(
        lambda r: httpx.Response(503, headers={"Retry-After": "30"}), retry_deadline=0.5
    ) as c:
        with pytest.raises(FragmentServerError, match=r"503.*asked for 30s.*not retried"):
            await c.me()
        assert looptime == 0
        assert c.stats.counts == {"GET /accounts/me 503": 1}
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(asyncio.get_running_loop().time())
        return httpx.Response(503, headers={"Retry-After": "0.4"})

    async with client(handler, retry_deadline=0.5) as c:
        with pytest.raises(FragmentServerError, match="503"):
            await c.me()
    # 0.4 s asked and waited; then 0.4 s asked with 0.1 s left: refused at once.
    assert sent == [0, 0.4]
    assert looptime == 0.4


async def test_5xx_until_deadline_is_a_server_error() -> None:
    """Persistent 500s end in FragmentServerError after several attempts, backing off, retried
    only while the deadline is ahead."""
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(asyncio.get_running_loop().time())
        return httpx.Response(500, json={"detail": "boom"})

    async with client(handler, retry_deadline=1.0) as c:
        with pytest.raises(FragmentServerError, match="boom"):
            await c.me()
    assert len(calls) >= 2
    assert all(t < 1.0 for t in calls[:-1]) and calls[-1] >= 1.0  # the last began past it
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # stamina's exponential backoff from 0.5 s, plus up to 1 s of jitter
    assert all(0.5 * 2**n <= gap <= 0.5 * 2**n + 1.0 for n, gap in enumerate(gaps))


async def test_network_errors_are_retried_then_typed() -> None:
    """A connection error is retried, and becomes FragmentNetworkError if it persists."""
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ReadError("reset", request=request)
        return httpx.Response(200, json={"id": 2})

    async with client(handler) as c:
        assert await c.me() == {"id": 2}

    def always(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client(always, retry_deadline=0.5) as c:
        with pytest.raises(FragmentNetworkError, match="ConnectError"):
            await c.me()


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_are_not_retried(status: int) -> None:
    """401/403 fail at once with FragmentAuthError and never echo the token."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json={"detail": "invalid token"})

    async with client(handler) as c:
        with pytest.raises(FragmentAuthError) as caught:
            await c.me()
    assert len(calls) == 1
    assert "tok-123" not in str(caught.value)


async def test_422_names_the_bad_items() -> None:
    """A batch 422 is parsed into per-item messages by index."""
    detail = [
        {"loc": ["body", "items", 3, "fields", "title"], "msg": "field required", "type": "missing"}
    ]
    async with client(lambda r: httpx.Response(422, json={"detail": detail})) as c:
        with pytest.raises(FragmentValidationError) as caught:
            await c.put_batch([{"uid": "x"}])
    assert caught.value.item_errors == {3: "fields.title: field required"}


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>Bad gateway</html>"),
        httpx.Response(200, text='{"items": [{"uid": "a"'),
        httpx.Response(200, json={"things": []}),
        httpx.Response(200, json={"items": [{"uid": "a", "status": "WEIRD", "fields": {}}]}),
    ],
)
async def test_invalid_answers_are_protocol_errors(response: httpx.Response) -> None:
    """HTML, truncated JSON and unexpected shapes raise FragmentProtocolError."""
    async with client(lambda r: response) as c:
        with pytest.raises(FragmentProtocolError):
            await c.put_batch([{"uid": "a"}])


async def test_listing_follows_cursors_and_deduplicates() -> None:
    """Pages are followed to the end; a task repeated across pages is yielded once."""
    pages = {
        None: {"items": [task("a"), task("b")], "meta": {"next_cursor": "c1"}},
        "c1": {"items": [task("b"), task("c", "DONE")], "meta": {"next_cursor": None}},
    }
    seen_params = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_params.append(request.url.params)
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    async with client(handler) as c:
        uids = [t.uid async for page in c.iter_tasks(fields={"fc_source": "s"}) for t in page]
    assert uids == ["a", "b", "c"]
    assert seen_params[0]["limit"] == "100"
    assert seen_params[0]["fields.fc_source"] == "s"


async def test_listing_filters_again_on_the_client() -> None:
    """A server that ignores the status filter still yields only the asked statuses."""
    from connector.models import OPEN_STATUSES

    body = {"items": [task("a"), task("b", "DONE")], "meta": {"next_cursor": None}}
    async with client(lambda r: httpx.Response(200, json=body)) as c:
        uids = [t.uid async for page in c.iter_tasks(statuses=OPEN_STATUSES) for t in page]
    assert uids == ["a"]


async def test_repeated_cursor_stops_the_listing() -> None:
    """A server that returns the same cursor again is caught instead of looping forever."""
    body = {"items": [task("a")], "meta": {"next_cursor": "same"}}
    async with client(lambda r: httpx.Response(200, json=body)) as c:
        with pytest.raises(FragmentProtocolError, match="cursor"):
            async for _ in c.iter_tasks():
                pass


async def test_expired_cursor_restarts_from_the_first_page() -> None:
    """A 400 on a cursor restarts the listing from the first page."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        calls.append(cursor)
        if cursor == "old" and calls.count("old") == 1:
            return httpx.Response(400, json={"detail": "invalid or expired cursor"})
        if cursor is None:
            return httpx.Response(200, json={"items": [task("a")], "meta": {"next_cursor": "old"}})
        return httpx.Response(200, json={"items": [task("b")], "meta": {"next_cursor": None}})

    async with client(handler) as c:
        uids = [t.uid async for page in c.iter_tasks() for t in page]
    assert uids == ["a", "b"]
    assert calls == [None, "old", None, "old"]


async def test_rejected_filter_falls_back_to_a_plain_listing() -> None:
    """A 422 on the first page drops the optional filters and filters on the client instead."""

    def handler(request: httpx.Request) -> httpx.Response:
        if "status" in request.url.params:
            return httpx.Response(422, json={"detail": "unknown parameter status"})
        return httpx.Response(200, json={"items": [task("a"), task("b", "DONE")], "meta": {}})

    from connector.models import OPEN_STATUSES

    async with client(handler) as c:
        uids = [t.uid async for page in c.iter_tasks(statuses=OPEN_STATUSES) for t in page]
    assert uids == ["a"]


def test_retry_after_parsing() -> None:
    """Retry-After accepts seconds or an HTTP date, and is capped at 60 s."""
    now = 1445412480.0
    assert retry_after_seconds("2", now=now) == 2
    assert retry_after_seconds("999", now=now) == 60
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=now) == 10
    assert retry_after_seconds("soon", now=now) is None
    assert retry_after_seconds(None, now=now) is None


async def test_token_bucket_paces_requests(looptime: LoopTimeProxy) -> None:
    """Past the burst, requests wait for tokens at the configured rate."""
    bucket = TokenBucket(600, burst=1)  # one request per 0.1 s
    sent = []
    for _ in range(5):
        await bucket.acquire()
        sent.append(float(looptime))
    assert sent == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert bucket.waited == pytest.approx(0.4)


async def test_listing_pages_carry_fragments_date() -> None:
    """Each page tells when Fragment answered it (its Date header); an empty first page is still
    yielded so that an idle delta listing learns the time too; a bad Date reads as none."""
    from datetime import UTC, datetime

    dates = iter(["Sun, 06 Dec 2026 01:02:03 GMT", "not a date"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [], "meta": {}}, headers={"Date": next(dates)})

    async with client(handler) as c:
        pages = [page async for page in c.iter_tasks()]
        assert [(list(p), p.server_date) for p in pages] == [
            ([], datetime(2026, 12, 6, 1, 2, 3, tzinfo=UTC))
        ]
        assert [p.server_date async for p in c.iter_tasks()] == [None]


async def test_count_is_the_total_count_of_a_one_item_listing() -> None:
    """`meta.total_count` of `limit=1` with the filters; a missing or odd count is no count."""
    from connector.models import OPEN_STATUSES

    seen: list[httpx.QueryParams] = []
    metas = iter([{"total_count": 42}, {}, {"total_count": "42"}, {"total_count": True}])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params)
        return httpx.Response(200, json={"items": [task("a")], "meta": next(metas)})

    async with client(handler) as c:
        counts = [
            await c.count_tasks(statuses=OPEN_STATUSES, fields={"fc_source": "s"}) for _ in range(4)
        ]
    assert counts == [42, None, None, None]
    assert seen[0]["limit"] == "1" and seen[0].get_list("status") == ["TODO", "STARTED"]
    assert seen[0]["fields.fc_source"] == "s"
