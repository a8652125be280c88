"""The adapters' HTTP toolkit against a real local server: retries, deadlines, errors, paging.

A small Starlette app served by uvicorn on 127.0.0.1 in a thread plays the back-office; each test
scripts its answers by path and reads back the requests it received. `httpx.MockTransport` covers
the edge cases that need no socket, and the waits: those tests run on looptime's fast-forwarded
event loop (`Scripted`), so every wait (Retry-After, a rate-limit reset, backoff, the deadline) is
asserted exactly, as the loop time it asked for, and none is waited for real.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from looptime import LoopTimeProxy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from adapters.base import AdapterAuthError, AdapterConfigError, AdapterDataError, AdapterUnavailable
from adapters.http import (
    USER_AGENT,
    CursorField,
    LinkHeader,
    NextUrl,
    Offset,
    PageNumber,
    RetryPolicy,
    first_of,
    get_json,
    make_client,
    paginate,
    parse_link_header,
    ratelimit_reset_header,
    retry_after_header,
    send,
    server_time,
)
from adapters.partition import ResultsCapped
from tests.clock import FakeClock
from tests.fakes import serve_in_thread

API_KEY = "qk-9f8e7d6c5b4a39281706"
TOKEN = "tok-SECRET-0123456789abcdef"
PASSWORD = "hunter2-basic-pw"
FAST = RetryPolicy(attempts=3, deadline=2.0, wait_initial=0.01, wait_max=0.05, wait_jitter=0.0)

Handler = Callable[[Request, int], Response | Awaitable[Response]]


@dataclass(frozen=True)
class Hit:
    """One request the server received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Backoffice:
    """A scripted back-office on a real socket: routes by path, and the requests received."""

    url: str = ""
    routes: dict[str, Handler] = field(default_factory=dict)
    hits: dict[str, list[Hit]] = field(default_factory=lambda: defaultdict(list))

    def on(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    async def endpoint(self, request: Request) -> Response:
        path = request.url.path
        hits = self.hits[path]
        hits.append(
            Hit(
                path,
                dict(request.query_params),
                dict(request.headers),
                await request.body(),
            )
        )
        handler = self.routes.get(path)
        if handler is None:
            return PlainTextResponse("no such route", status_code=599)
        answer = handler(request, len(hits))
        return await answer if inspect.isawaitable(answer) else answer


@pytest.fixture(scope="module")
def _server() -> Iterator[Backoffice]:
    backoffice = Backoffice()
    app = Starlette(routes=[Route("/{path:path}", backoffice.endpoint, methods=["GET", "POST"])])
    served = serve_in_thread(app, name="test back-office")
    backoffice.url = served.url
    yield backoffice
    served.stop()


@pytest.fixture
def server(_server: Backoffice) -> Backoffice:
    """The module's back-office, with no routes and no requests recorded."""
    _server.routes.clear()
    _server.hits.clear()
    return _server


@dataclass
class Scripted:
    """A back-office in the test's own event loop (httpx.MockTransport), answering the n-th
    request with `answer(n)`: on looptime its requests' times are the loop's, exactly."""

    answer: Callable[[int], httpx.Response | Awaitable[httpx.Response]]
    sent: list[float] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(asyncio.get_running_loop().time())
        answer = self.answer(len(self.sent))
        return await answer if inspect.isawaitable(answer) else answer

    def client(self) -> httpx.AsyncClient:
        return make_client("http://bo.test", transport=httpx.MockTransport(self))


SERVER_DATE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
"""The back-office's clock in the answers of `Scripted` tests (their `Date` header)."""


def dated(status: int, headers: dict[str, str], **kw: Any) -> httpx.Response:
    """An answer dated SERVER_DATE."""
    return httpx.Response(
        status, headers={"Date": format_datetime(SERVER_DATE, usegmt=True), **headers}, **kw
    )


def json_page(items: Sequence[Any], **extra: Any) -> Callable[[Request, int], Response]:
    return lambda request, n: JSONResponse({"items": list(items), **extra})


def items(body: Any) -> Any:
    return body["items"]


async def collect(iterator: AsyncIterator[Any], into: list[Any] | None = None) -> list[Any]:
    """The records of a listing, appended to `into` as they come (to see them after an error)."""
    got = [] if into is None else into
    async for item in iterator:
        got.append(item)
    return got


# --- retries and deadlines ----------------------------------------------------------------------


@pytest.mark.looptime
async def test_429_with_retry_after_is_retried_after_the_delay() -> None:
    """A 429 with Retry-After: 1 is retried once, exactly one second later."""
    backoffice = Scripted(
        lambda n: (
            dated(429, {"Retry-After": "1"}, text="slow down")
            if n == 1
            else dated(200, {}, json={"ok": True})
        )
    )
    async with backoffice.client() as client:
        assert await get_json(client, "/rl") == {"ok": True}
    assert backoffice.sent == [0, 1.0]


@pytest.mark.looptime
async def test_retry_after_beyond_the_deadline_gives_up_at_once(looptime: LoopTimeProxy) -> None:
    """A Retry-After longer than the time left fails at once, without waiting any of it."""
    backoffice = Scripted(lambda n: dated(429, {"Retry-After": "30"}, text="later"))
    policy = RetryPolicy(deadline=2.0)
    async with backoffice.client() as client:
        with pytest.raises(AdapterUnavailable, match="429") as caught:
            await send(client, "GET", "/busy", policy=policy)
        assert looptime == 0
    assert "asks to wait 30.0 s" in str(caught.value)
    assert backoffice.sent == [0]


@pytest.mark.looptime
async def test_a_retry_after_date_is_honoured() -> None:
    """A Retry-After given as an HTTP date makes the client wait until that moment, in the
    back-office's clock (its Date header)."""
    retry = format_datetime(SERVER_DATE + timedelta(seconds=1), usegmt=True)
    backoffice = Scripted(
        lambda n: (
            dated(503, {"Retry-After": retry}, text="busy") if n == 1 else dated(200, {}, json=[1])
        )
    )
    async with backoffice.client() as client:
        assert await get_json(client, "/date", policy=RetryPolicy(deadline=5)) == [1]
    assert backoffice.sent == [0, 1.0]


@pytest.mark.looptime
async def test_github_rate_limit_reset_is_honoured() -> None:
    """A 403 with x-ratelimit-remaining 0 waits until x-ratelimit-reset (epoch seconds, in the
    back-office's clock), then succeeds."""
    reset = int(SERVER_DATE.timestamp()) + 1
    limited = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    backoffice = Scripted(
        lambda n: (
            dated(403, limited, json={"message": "API rate limit exceeded"})
            if n == 1
            else dated(200, {}, json={"ok": 1})
        )
    )
    policy = RetryPolicy(
        deadline=5, retry_after=first_of(retry_after_header, ratelimit_reset_header())
    )
    async with backoffice.client() as client:
        assert await get_json(client, "/gh", policy=policy) == {"ok": 1}
    assert backoffice.sent == [0, 1.0]


@pytest.mark.looptime
async def test_5xx_until_the_deadline_is_unavailable(looptime: LoopTimeProxy) -> None:
    """Persistent 500s are retried, backing off, until the next wait would pass the deadline,
    then raise AdapterUnavailable with the last answer."""
    backoffice = Scripted(lambda n: dated(500, {}, json={"error": "database on fire"}))
    policy = RetryPolicy(
        attempts=100, deadline=2.0, wait_initial=0.05, wait_max=0.3, wait_jitter=0.05
    )
    async with backoffice.client() as client:
        with pytest.raises(AdapterUnavailable) as caught:
            await send(client, "GET", "/down", policy=policy)
    assert len(backoffice.sent) >= 5
    assert looptime < 2.0  # no wait that would end past the deadline was begun
    # Exponential backoff from 0.05 s plus up to 0.05 s of jitter, at most 0.3 s (to the
    # microsecond the loop's clock keeps).
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(backoffice.sent)]
    assert all(
        min(0.3, 0.05 * 2**n) <= gap <= min(0.3, 0.05 * 2**n + 0.05) for n, gap in enumerate(gaps)
    )
    message = str(caught.value)
    attempts = f"({len(backoffice.sent)} attempts in {float(looptime):.1f} s)"
    assert message.startswith(
        f"GET http://bo.test/down answered 500 Internal Server Error {attempts}"
    )
    assert "database on fire" in message


async def test_attempts_bound_the_retries(server: Backoffice) -> None:
    """A policy of 3 attempts sends the request 3 times at most."""
    server.on("/flaky", lambda r, n: PlainTextResponse("bad gateway", 502))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterUnavailable, match=r"502 Bad Gateway .3 attempts"):
            await send(client, "GET", "/flaky", policy=FAST)
    assert len(server.hits["/flaky"]) == 3


@pytest.mark.looptime
async def test_the_deadline_bounds_a_slow_answer(looptime: LoopTimeProxy) -> None:
    """An answer slower than the deadline is abandoned when the deadline passes, exactly."""

    async def slow(n: int) -> httpx.Response:
        await asyncio.sleep(1.5)
        return dated(200, {}, json={})

    backoffice = Scripted(slow)
    async with backoffice.client() as client:
        with pytest.raises(AdapterUnavailable, match=r"no complete answer within the 0.5 s"):
            await send(client, "GET", "/slow", policy=RetryPolicy(deadline=0.5))
        assert looptime == 0.5
    assert backoffice.sent == [0]


async def test_a_refused_connection_is_retried_then_unavailable() -> None:
    """Network errors are retried, then raise AdapterUnavailable naming the error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with make_client(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(AdapterUnavailable, match=r"failed: ConnectError .3 attempts"):
            await send(client, "GET", "/x", policy=FAST)


# --- status translation -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_an_auth_error_at_once(
    server: Backoffice, status: int
) -> None:
    """401 and a plain 403 raise AdapterAuthError after a single attempt."""
    server.on("/me", lambda r, n: JSONResponse({"message": "Bad credentials"}, status))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterAuthError, match=f"{status} .*: Bad credentials"):
            await send(client, "GET", "/me")
    assert len(server.hits["/me"]) == 1


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"message": "Not Found", "documentation_url": "https://docs"}, "Not Found"),
        (404, {"error": "RecordNotFound", "description": "Not found"}, "RecordNotFound; Not found"),
        (400, {"errorMessages": ["Field 'x' does not exist"], "errors": {}}, "Field 'x' does"),
        (400, {"errorMessages": [], "errors": {"jql": "bad jql"}}, "jql: bad jql"),
        (422, {"detail": [{"loc": ["q"], "msg": "field required"}]}, "field required"),
        (409, {"status": "error", "message": "conflict!", "correlationId": "c"}, "conflict!"),
        (405, "method not allowed here", "method not allowed here"),
        (410, {"error": {"title": "Gone", "message": "use /v3"}}, "use /v3; Gone"),
        (418, {"weird": 1}, "418 I'm a Teapot: weird: 1"),
    ],
)
async def test_rejected_options_are_a_config_error_with_the_vendor_text(
    server: Backoffice, status: int, body: Any, expected: str
) -> None:
    """Other 4xx raise AdapterConfigError at once, quoting the vendor's own error text."""
    if isinstance(body, str):
        server.on("/q", lambda r, n: PlainTextResponse(body, status))
    else:
        server.on("/q", lambda r, n: JSONResponse(body, status))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterConfigError) as caught:
            await get_json(client, "/q")
    assert str(caught.value).startswith(f"GET {server.url}/q answered {status}")
    assert expected in str(caught.value)
    assert len(server.hits["/q"]) == 1


async def test_long_vendor_text_is_truncated(server: Backoffice) -> None:
    """The quoted vendor text is cut to about 200 characters."""
    server.on("/long", lambda r, n: JSONResponse({"message": "x" * 5000}, 404))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterConfigError) as caught:
            await get_json(client, "/long")
    assert 200 < len(str(caught.value)) < 300


async def test_an_html_answer_is_a_data_error(server: Backoffice) -> None:
    """A 200 that is not JSON raises AdapterDataError with its content type and first bytes."""
    server.on(
        "/html",
        lambda r, n: Response("<html><body>Login</body></html>", 200, media_type="text/html"),
    )
    async with make_client(server.url) as client:
        with pytest.raises(
            AdapterDataError, match=r"text/html.*not JSON: '<html><body>Login"
        ) as caught:
            await get_json(client, "/html")
    assert str(caught.value).startswith(f"GET {server.url}/html answered 200")


async def test_no_content_is_none(server: Backoffice) -> None:
    """A 204 decodes to None."""
    server.on("/nothing", lambda r, n: Response(status_code=204))
    async with make_client(server.url) as client:
        assert await get_json(client, "/nothing") is None


async def test_the_client_sends_json_accept_and_its_user_agent(server: Backoffice) -> None:
    """make_client sets Accept, the adapter User-Agent and params; URL queries are merged."""
    server.on("/h", lambda r, n: JSONResponse({}))
    async with make_client(server.url, params={"a": "1"}) as client:
        await get_json(client, "/h", params={"b": "2"})
        assert client.timeout.connect == 10.0
    async with make_client(server.url, user_agent="acme-sync/2", timeout=3) as client:
        await get_json(client, "/h")
        assert client.timeout.connect == 3
    async with make_client(server.url, params={"a": "1"}) as client:
        await get_json(client, "/h?b=2&c=3", params={"c": "4"})
    first, second, third = server.hits["/h"]
    assert third.query == {"a": "1", "b": "2", "c": "4"}  # the URL's query is kept, params win
    assert first.headers["accept"] == "application/json"
    assert first.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("fragment-connector-adapter/")
    assert first.query == {"a": "1", "b": "2"}
    assert second.headers["user-agent"] == "acme-sync/2"


async def test_transport_failures_that_retrying_cannot_fix_fail_at_once(
    server: Backoffice,
) -> None:
    """A redirect loop and an unsupported scheme are config errors, a garbled body a data error."""
    server.on("/loop", lambda r, n: Response(status_code=302, headers={"Location": "/loop"}))
    server.on("/gz", lambda r, n: Response(b"not gzip", 200, headers={"Content-Encoding": "gzip"}))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterConfigError, match="redirects in a loop"):
            await send(client, "GET", "/loop")
        with pytest.raises(AdapterDataError, match="cannot be decoded"):
            await send(client, "GET", "/gz")
    async with make_client("ftp://files.example") as client:
        with pytest.raises(AdapterConfigError, match="cannot be sent"):
            await send(client, "GET", "/x")
    assert len(server.hits["/gz"]) == 1


# --- no secrets in errors -----------------------------------------------------------------------


def echo_secrets(request: Request) -> str:
    """What a careless back-office does: echo the credentials it was sent in its error."""
    return (
        f"bad key {request.query_params.get('api_key')} with {request.headers.get('authorization')}"
    )


@pytest.mark.parametrize(
    ("path", "handler", "error"),
    [
        ("/e401", lambda r, n: JSONResponse({"message": echo_secrets(r)}, 401), AdapterAuthError),
        ("/e404", lambda r, n: PlainTextResponse(echo_secrets(r), 404), AdapterConfigError),
        ("/e500", lambda r, n: JSONResponse({"error": echo_secrets(r)}, 500), AdapterUnavailable),
        (
            "/e429",
            lambda r, n: PlainTextResponse(echo_secrets(r), 429, headers={"Retry-After": "99"}),
            AdapterUnavailable,
        ),
        (
            "/html",
            lambda r, n: Response(echo_secrets(r), 200, media_type="text/html"),
            AdapterDataError,
        ),
    ],
)
async def test_errors_never_carry_secrets(
    server: Backoffice,
    path: str,
    handler: Handler,
    error: type[Exception],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """API keys in the query, tokens in headers and URL passwords appear in no error or log."""
    server.on(path, handler)
    base = server.url.replace("http://", f"http://bot:{PASSWORD}@")
    async with make_client(
        base, params={"api_key": API_KEY}, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        with pytest.raises(error) as caught:
            await get_json(client, path, params={"token": API_KEY}, policy=FAST)
    assert server.hits[path][0].query["api_key"] == API_KEY  # the secrets were really sent
    text = f"{caught.value!s} {caught.value!r} {capsys.readouterr()} {caplog.text}"
    # Prefixes too: a secret cut in half by a truncation must not survive either.
    for secret in (API_KEY[:10], TOKEN[:10], PASSWORD[:10], "api_key="):
        assert secret not in text
    assert f"{path}" in str(caught.value)


async def test_basic_auth_credentials_are_scrubbed_from_vendor_text(server: Backoffice) -> None:
    """A password sent with httpx BasicAuth and echoed back is scrubbed from the message."""
    server.on("/basic", lambda r, n: PlainTextResponse(f"user bot:{PASSWORD} is locked", 403))
    async with make_client(server.url, auth=("bot", PASSWORD)) as client:
        with pytest.raises(AdapterAuthError) as caught:
            await send(client, "GET", "/basic")
    assert PASSWORD not in str(caught.value)
    assert "is locked" in str(caught.value)


async def test_network_errors_never_carry_secrets() -> None:
    """A refused connection's message has no query string and no userinfo."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with make_client(f"http://bot:{PASSWORD}@127.0.0.1:{port}", params={"key": API_KEY}) as c:
        with pytest.raises(AdapterUnavailable) as caught:
            await get_json(c, "/x", policy=FAST)
    assert PASSWORD not in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert f"GET http://127.0.0.1:{port}/x failed" in str(caught.value)


# --- pagination ---------------------------------------------------------------------------------

RECORDS = [{"id": n} for n in range(1, 8)]


def page_slice(start: int, size: int) -> list[dict[str, int]]:
    return RECORDS[start : start + size]


async def test_page_number_pages_until_a_short_page(server: Backoffice) -> None:
    """PageNumber asks page 1, 2, 3, 4 of size 2 and stops on the short last page, in order."""
    server.on(
        "/pn",
        lambda r, n: JSONResponse({"items": page_slice((int(r.query_params["page"]) - 1) * 2, 2)}),
    )
    async with make_client(server.url) as client:
        got = await collect(
            paginate(client, "/pn", PageNumber(size=2), records=items, params={"q": "open"})
        )
    assert got == RECORDS
    assert [h.query for h in server.hits["/pn"]] == [
        {"q": "open", "page": str(p), "per_page": "2"} for p in (1, 2, 3, 4)
    ]


async def test_page_number_without_size_stops_on_an_empty_page(server: Backoffice) -> None:
    """PageNumber without a size reads until a page comes back empty."""
    server.on(
        "/pe",
        lambda r, n: JSONResponse({"items": page_slice(int(r.query_params["p"]) * 3, 3)}),
    )
    paginator = PageNumber(param="p", start=0, size_param=None, size=None)
    async with make_client(server.url) as client:
        assert await collect(paginate(client, "/pe", paginator, records=items)) == RECORDS
    assert [h.query for h in server.hits["/pe"]] == [{"p": str(p)} for p in range(4)]


async def test_offset_pages_until_a_short_page(server: Backoffice) -> None:
    """Offset asks offsets 0, 3, 6 and stops on the short page."""
    server.on(
        "/off",
        lambda r, n: JSONResponse(
            page_slice(int(r.query_params["start"]), int(r.query_params["max"]))
        ),
    )
    paginator = Offset(offset_param="start", limit_param="max", limit=3)
    async with make_client(server.url) as client:
        got = await collect(paginate(client, "/off", paginator, records=lambda body: body))
    assert got == RECORDS
    assert [h.query["start"] for h in server.hits["/off"]] == ["0", "3", "6"]


def zendesk_cursor(request: Request, n: int) -> Response:
    after = int(request.query_params.get("page[after]", "0"))
    chunk = page_slice(after, 3)
    more = after + 3 < len(RECORDS)
    meta = {"has_more": more, "after_cursor": str(after + 3) if more else None}
    return JSONResponse({"tickets": chunk, "meta": meta})


async def test_cursor_field_follows_the_body_cursor(server: Backoffice) -> None:
    """CursorField sends the body's next cursor back until has_more is false."""
    server.on("/cur", zendesk_cursor)
    paginator = CursorField(
        lambda b: b["meta"]["after_cursor"] if b["meta"]["has_more"] else None,
        param="page[after]",
    )
    async with make_client(server.url) as client:
        got = await collect(
            paginate(client, "/cur", paginator, records=lambda b: b["tickets"], params={"s": "1"})
        )
    assert got == RECORDS
    assert [h.query for h in server.hits["/cur"]] == [
        {"s": "1"},
        {"s": "1", "page[after]": "3"},
        {"s": "1", "page[after]": "6"},
    ]


async def test_cursor_field_can_send_the_cursor_in_a_post_body() -> None:
    """With where="body", the cursor goes into the JSON body of each POST (HubSpot, Jira)."""
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        after = int(json.loads(request.content).get("after", 0))
        nxt = {"next": {"after": after + 3}} if after + 3 < len(RECORDS) else {}
        return httpx.Response(200, json={"results": page_slice(after, 3), "paging": nxt})

    paginator = CursorField(
        lambda b: b["paging"].get("next", {}).get("after"), param="after", where="body"
    )
    async with make_client("http://hub.test", transport=httpx.MockTransport(handler)) as client:
        got = await collect(
            paginate(
                client,
                "/search",
                paginator,
                records=lambda b: b["results"],
                method="POST",
                body={"limit": 3},
            )
        )
    assert got == RECORDS
    assert bodies == [b'{"limit":3}', b'{"limit":3,"after":"3"}', b'{"limit":3,"after":"6"}']


async def test_link_header_follows_rel_next(server: Backoffice) -> None:
    """LinkHeader follows rel="next" among several links, keeping the client's own params."""

    def handler(request: Request, n: int) -> Response:
        page = int(request.query_params.get("page", "1"))
        base = f"{server.url}/gh?per_page=3"
        links = [f'<{base}&page=1>; rel="first"']
        if page * 3 < len(RECORDS):
            links.append(f'<{base}&page={page + 1}>; rel="next last"')
        response = JSONResponse(page_slice((page - 1) * 3, 3))
        response.headers.append("Link", ", ".join(links))
        response.headers.append("Link", '</gh?page=99>; title="a, b; c"; rel=prev')
        return response

    server.on("/gh", handler)
    # The client's own params (an API key) must not replace the next URL's query (httpx 0.28).
    async with make_client(server.url, params={"key": "k"}) as client:
        got = await collect(
            paginate(client, "/gh", LinkHeader(), records=lambda b: b, params={"per_page": 3})
        )
    assert got == RECORDS
    assert [h.query for h in server.hits["/gh"]] == [
        {"key": "k", "per_page": "3"},
        {"key": "k", "per_page": "3", "page": "2"},
        {"key": "k", "per_page": "3", "page": "3"},
    ]


async def test_next_url_follows_the_body_url(server: Backoffice) -> None:
    """NextUrl follows a full or relative next-page URL from the body until it is null."""

    def handler(request: Request, n: int) -> Response:
        page = int(request.query_params.get("page", "1"))
        nxt = None
        if page == 1:
            nxt = f"{server.url}/zd/search.json?page=2&query=x"
        elif page == 2:
            nxt = "search.json?page=3&query=x"  # relative, resolved against the page's URL
        return JSONResponse({"results": page_slice((page - 1) * 3, 3), "next_page": nxt})

    server.on("/zd/search.json", handler)
    async with make_client(server.url, params={"key": "k"}) as client:
        got = await collect(
            paginate(
                client,
                "/zd/search.json",
                NextUrl(lambda b: b["next_page"]),
                records=lambda b: b["results"],
                params={"query": "x"},
            )
        )
    assert got == RECORDS
    assert [h.query for h in server.hits["/zd/search.json"]] == [
        {"key": "k", "query": "x"},
        {"key": "k", "page": "2", "query": "x"},
        {"key": "k", "page": "3", "query": "x"},
    ]


async def test_a_repeated_cursor_is_a_pagination_loop(server: Backoffice) -> None:
    """A cursor the server already gave raises AdapterDataError instead of looping."""
    server.on(
        "/loop",
        lambda r, n: JSONResponse({"items": [{"id": n}], "next": "A" if n < 3 else "B"}),
    )
    async with make_client(server.url) as client:
        with pytest.raises(AdapterDataError, match=r"pagination loop: .*cursor 'A'"):
            await collect(
                paginate(client, "/loop", CursorField(lambda b: b["next"]), records=items)
            )
    assert len(server.hits["/loop"]) == 2


async def test_a_repeated_next_url_is_a_pagination_loop(server: Backoffice) -> None:
    """A next-page URL pointing back at the first page raises AdapterDataError."""
    server.on(
        "/nu",
        lambda r, n: JSONResponse(
            {"items": [{"id": n}], "next": f"{server.url}/nu?page=2" if n == 1 else "/nu?q=1"}
        ),
    )
    async with make_client(server.url) as client:
        with pytest.raises(AdapterDataError, match="pagination loop"):
            await collect(
                paginate(
                    client, "/nu", NextUrl(lambda b: b["next"]), records=items, params={"q": 1}
                )
            )
    assert len(server.hits["/nu"]) == 2


async def test_a_link_header_pointing_back_is_a_pagination_loop(server: Backoffice) -> None:
    """A Link rel="next" pointing at a page already read raises AdapterDataError."""

    def handler(request: Request, n: int) -> Response:
        page = int(request.query_params.get("page", "1"))
        target = page + 1 if page < 3 else 2
        return JSONResponse([{"id": page}], headers={"Link": f'</lh?page={target}>; rel="next"'})

    server.on("/lh", handler)
    async with make_client(server.url) as client:
        got: list[Any] = []
        with pytest.raises(AdapterDataError, match=r"pagination loop: page 4 .* repeated"):
            await collect(paginate(client, "/lh", LinkHeader(), records=lambda b: b), got)
    assert got == [{"id": 1}, {"id": 2}, {"id": 3}]


async def test_a_server_ignoring_the_page_parameter_is_a_pagination_loop(
    server: Backoffice,
) -> None:
    """Pages whose records repeat the previous page's raise AdapterDataError, not 100k pages."""
    server.on("/same", json_page([{"id": 1}, {"id": 2}]))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterDataError, match="repeated the records of page 1"):
            await collect(paginate(client, "/same", PageNumber(size=2), records=items))
    assert len(server.hits["/same"]) == 2


async def test_a_failing_page_propagates_instead_of_a_short_listing(server: Backoffice) -> None:
    """A 500 on page 2 outlasting the retries raises AdapterUnavailable after page 1's records."""
    server.on(
        "/p2",
        lambda r, n: (
            JSONResponse({"items": [{"id": 1}, {"id": 2}]})
            if r.query_params["page"] == "1"
            else JSONResponse({"error": "boom"}, 500)
        ),
    )
    got: list[Any] = []
    async with make_client(server.url) as client:
        with pytest.raises(AdapterUnavailable, match="500"):
            await collect(
                paginate(client, "/p2", PageNumber(size=2), records=items, policy=FAST), got
            )
    assert got == [{"id": 1}, {"id": 2}]
    assert len(server.hits["/p2"]) == 1 + FAST.attempts


async def test_records_that_are_not_a_list_are_a_data_error(server: Backoffice) -> None:
    """A `records` selector giving an object, or failing on the body, raises AdapterDataError."""
    server.on("/obj", lambda r, n: JSONResponse({"items": {"id": 1}}))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterDataError, match="are a dict, not a list"):
            await collect(paginate(client, "/obj", PageNumber(), records=items))
        with pytest.raises(AdapterDataError, match=r"cannot read the records .*KeyError"):
            await collect(paginate(client, "/obj", PageNumber(), records=lambda b: b["tickets"]))


async def test_more_pages_than_max_pages_is_a_data_error(server: Backoffice) -> None:
    """Going past max_pages raises AdapterDataError rather than stopping short."""
    server.on("/many", lambda r, n: JSONResponse({"items": [{"id": n}]}))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterDataError, match="more than max_pages=3"):
            await collect(paginate(client, "/many", PageNumber(size=1), records=items, max_pages=3))
    assert len(server.hits["/many"]) == 3


async def test_a_next_url_on_another_origin_is_refused(server: Backoffice) -> None:
    """A next-page URL on another host is not followed, so credentials stay with their origin."""
    server.on("/away", json_page([{"id": 1}], next="https://evil.example/steal?page=2"))
    async with make_client(server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        with pytest.raises(AdapterDataError, match=r"leaves http://127.0.0.1") as caught:
            await collect(paginate(client, "/away", NextUrl(lambda b: b["next"]), records=items))
    assert TOKEN not in str(caught.value)


async def test_an_unusable_next_url_is_a_data_error(server: Backoffice) -> None:
    """A next-page URL that is not a URL, or not text, raises AdapterDataError."""
    server.on("/bad", json_page([{"id": 1}], next="http://[::1"))
    server.on("/num", json_page([{"id": 1}], next=2))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterDataError, match="not a usable URL"):
            await collect(paginate(client, "/bad", NextUrl(lambda b: b["next"]), records=items))
        with pytest.raises(AdapterDataError, match="URL is not text: got int"):
            await collect(paginate(client, "/num", NextUrl(lambda b: b["next"]), records=items))


async def test_a_cursor_of_the_wrong_type_is_a_data_error(server: Backoffice) -> None:
    """A next cursor that is neither text nor an integer raises AdapterDataError."""
    server.on("/cw", json_page([{"id": 1}], next={"after": 2}))
    async with make_client(server.url) as client:
        with pytest.raises(AdapterDataError, match="neither text nor an integer: got dict"):
            await collect(paginate(client, "/cw", CursorField(lambda b: b["next"]), records=items))


# --- rate-limit readers and the Link parser (no socket) -----------------------------------------


def response(headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(429, headers=headers)


def test_retry_after_header_reads_seconds_and_dates() -> None:
    """Retry-After is read as delta-seconds or an HTTP date; garbage and negatives are None."""
    assert retry_after_header(response({"Retry-After": "7"})) == 7.0
    assert retry_after_header(response({"Retry-After": "1.5"})) == 1.5
    date = format_datetime(SERVER_DATE + timedelta(seconds=30), usegmt=True)
    server_date = format_datetime(SERVER_DATE, usegmt=True)
    assert retry_after_header(response({"Retry-After": date, "Date": server_date})) == 30.0
    for bad in ("soon", "-3", "nan", ""):
        assert retry_after_header(response({"Retry-After": bad})) is None
    assert retry_after_header(response({})) is None


def test_ratelimit_reset_header_reads_epochs_delays_and_timestamps() -> None:
    """The reset reader needs remaining 0 and reads epoch seconds, small delays or ISO dates,
    measured from the back-office's clock (its Date)."""
    read = ratelimit_reset_header()
    date = {"Date": format_datetime(SERVER_DATE, usegmt=True)}
    soon = int(SERVER_DATE.timestamp()) + 20
    assert read(response({"x-ratelimit-remaining": "1", "x-ratelimit-reset": str(soon)})) is None
    assert read(response({"x-ratelimit-reset": str(soon)})) is None
    exhausted = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(soon), **date}
    assert read(response(exhausted)) == 20
    assert read(response({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "41"})) == 41
    zendesk = ratelimit_reset_header("ratelimit-reset", remaining=None)
    assert zendesk(response({"ratelimit-reset": "12"})) == 12
    iso = (SERVER_DATE + timedelta(seconds=60)).isoformat()
    assert zendesk(response({"ratelimit-reset": iso, **date})) == 60
    assert zendesk(response({"ratelimit-reset": "whenever"})) is None


def test_first_of_returns_the_first_delay_found() -> None:
    """first_of tries each reader in turn and returns the first delay that is not None."""
    read = first_of(retry_after_header, lambda r: 5.0, lambda r: 9.0)
    assert read(response({"Retry-After": "2"})) == 2.0
    assert read(response({})) == 5.0
    assert first_of()(response({})) is None


def test_parse_link_header_handles_rfc_8288_details() -> None:
    """Several links, quoted values with commas and semicolons, and multi-valued rel are read."""
    header = (
        '<https://api.github.com/r/1/issues?page=2>; rel="next", '
        '<https://api.github.com/r/1/issues?page=5>; REL="last"; title="a, b; c", '
        '<https://x.example/a,b>;rel=prev , <https://x.example/q>; rel="next last"; x'
    )
    assert parse_link_header(header) == [
        ("https://api.github.com/r/1/issues?page=2", {"rel": "next"}),
        ("https://api.github.com/r/1/issues?page=5", {"rel": "last", "title": "a, b; c"}),
        ("https://x.example/a,b", {"rel": "prev"}),
        ("https://x.example/q", {"rel": "next last", "x": ""}),
    ]
    assert parse_link_header("") == []
    assert parse_link_header("garbage; rel=next") == []


def test_a_policy_needs_attempts_and_a_deadline() -> None:
    """A RetryPolicy without a positive deadline or at least one attempt is refused."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)


async def test_total_catches_offset_drift(server: Backoffice) -> None:
    """With `total`, a record closed while an offset listing is paged fails the listing."""
    records = [{"id": n} for n in range(10)]

    def listing(request: Any, n: int) -> JSONResponse:
        offset = int(request.query_params["offset"])
        limit = int(request.query_params["limit"])
        page = records[offset : offset + limit]
        body = {"data": page, "total": len(records)}
        if offset == 0:
            del records[0]  # closed after page 1 was served: every later offset shifts by one
        return JSONResponse(body)

    server.on("/drift", listing)
    async with make_client(server.url) as client:
        with pytest.raises(AdapterDataError, match="changed while it was paged"):
            async for _ in paginate(
                client,
                "/drift",
                Offset(limit=4),
                records=lambda b: b["data"],
                total=lambda b: b["total"],
            ):
                pass


# --- bounded paginators (capped searches) -------------------------------------------------------


def capped_search(total: int, size: int) -> Callable[[Request, int], Response]:
    """A search of `total` results, `size` a page, with the count in every answer."""

    def answer(request: Request, n: int) -> Response:
        page = int(request.query_params["page"])
        results = [{"id": i} for i in range((page - 1) * size, min(page * size, total))]
        return JSONResponse({"total": total, "results": results})

    return answer


def results(body: Any) -> Any:
    return body["results"]


async def test_page_number_stops_at_the_total_without_asking_an_empty_page(
    server: Backoffice,
) -> None:
    """With `total`, a listing of 60 in pages of 30 asks exactly 2 pages (no empty third)."""
    server.on("/s", capped_search(60, 30))
    pages = PageNumber(size_param=None, size=30, max_pages=10, total=lambda b: b["total"])
    async with make_client(server.url) as client:
        got = await collect(paginate(client, "/s", pages, records=results))
    assert [r["id"] for r in got] == list(range(60))
    assert [h.query["page"] for h in server.hits["/s"]] == ["1", "2"]


async def test_a_total_over_the_page_cap_is_results_capped_on_the_first_page(
    server: Backoffice,
) -> None:
    """301 results, 10 pages of 30: ResultsCapped after one request, and no record yielded."""
    server.on("/s", capped_search(301, 30))
    pages = PageNumber(size_param=None, size=30, max_pages=10, total=lambda b: b["total"])
    got: list[Any] = []
    async with make_client(server.url) as client:
        with pytest.raises(ResultsCapped, match="holds 301 results, more than the 300") as caught:
            await collect(paginate(client, "/s", pages, records=results), got)
    assert (caught.value.total, caught.value.cap) == (301, 300)
    assert got == []
    assert len(server.hits["/s"]) == 1


async def test_a_full_page_at_the_page_cap_is_results_capped(server: Backoffice) -> None:
    """Without a total, a full 10th page means more may follow: capped, never a page 11."""
    server.on("/s", capped_search(1000, 30))
    pages = PageNumber(size_param=None, size=30, max_pages=10)
    async with make_client(server.url) as client:
        with pytest.raises(ResultsCapped, match="reached its cap of 300 results"):
            await collect(paginate(client, "/s", pages, records=results))
    assert len(server.hits["/s"]) == 10


async def test_a_page_short_of_the_total_is_a_data_error(server: Backoffice) -> None:
    """A vendor that silently stops before the total it announced: the listing fails."""

    def short(request: Request, n: int) -> Response:
        page = int(request.query_params["page"])
        ids = range((page - 1) * 30, min(page * 30, 45))  # 45 served, 90 announced
        return JSONResponse({"total": 90, "results": [{"id": i} for i in ids]})

    server.on("/s", short)
    pages = PageNumber(size_param=None, size=30, total=lambda b: b["total"])
    async with make_client(server.url) as client:
        with pytest.raises(AdapterDataError, match="page 2 held 15 of 30 results while the total"):
            await collect(paginate(client, "/s", pages, records=results))


async def test_offset_max_results_caps_the_listing(server: Backoffice) -> None:
    """Offset with max_results=100 (limit 40): a total of 150 is capped at once."""

    def answer(request: Request, n: int) -> Response:
        offset, limit = int(request.query_params["offset"]), int(request.query_params["limit"])
        ids = range(offset, min(offset + limit, 150))
        return JSONResponse({"count": 150, "results": [{"id": i} for i in ids]})

    server.on("/o", answer)
    async with make_client(server.url) as client:
        with pytest.raises(ResultsCapped, match="holds 150 results, more than the 100"):
            await collect(
                paginate(
                    client,
                    "/o",
                    Offset(limit=40, max_results=100, total=lambda b: b["count"]),
                    records=results,
                )
            )
        with pytest.raises(ResultsCapped, match="reached its cap of 100 results"):
            await collect(
                paginate(client, "/o", Offset(limit=40, max_results=100), records=results)
            )


def test_bounds_need_a_page_size() -> None:
    """max_pages and total count pages of `size`: without it they cannot be honoured."""
    with pytest.raises(ValueError, match="need the page size"):
        PageNumber(size=None, max_pages=10)
    with pytest.raises(ValueError, match="at least one page"):
        Offset(limit=50, max_results=10)


async def test_a_listing_closed_early_stops_requesting(server: Backoffice) -> None:
    """`paginate` is an async generator: aclose() after the first record sends no more pages."""
    server.on("/s", capped_search(90, 30))
    async with make_client(server.url) as client:
        pages = paginate(client, "/s", PageNumber(size_param=None, size=30), records=results)
        assert (await anext(pages))["id"] == 0
        await pages.aclose()  # typed as an AsyncGenerator: no `type: ignore` needed
    assert len(server.hits["/s"]) == 1


# --- the server's clock -------------------------------------------------------------------------


async def test_server_time_reads_the_applications_date_when_uvicorn_adds_its_own(
    server: Backoffice,
) -> None:
    """uvicorn (date_header on, as here) sends its own Date, then the application's: the
    application's clock wins, instead of the local clock as before."""
    fake_now = datetime(2020, 2, 29, 12, 0, 5, tzinfo=UTC)
    server.on(
        "/clock",
        lambda r, n: JSONResponse({}, headers={"Date": format_datetime(fake_now, usegmt=True)}),
    )
    async with make_client(server.url) as client:
        response = await send(client, "GET", "/clock")
    assert len(response.headers.get_list("date")) == 2
    assert server_time(response) == fake_now


def test_server_time_falls_back_on_the_local_clock_without_a_usable_date() -> None:
    """No Date, or none that parses: the local clock (the injected one, by default the real)."""
    clock = FakeClock()
    before = datetime.now(UTC)
    for headers in ({}, {"Date": "yesterday-ish"}):
        assert server_time(httpx.Response(200, headers=headers), clock=clock) == clock.now()
        assert before <= server_time(httpx.Response(200, headers=headers)) <= datetime.now(UTC)
    dated = httpx.Response(
        200, headers=[("Date", "garbage"), ("Date", "Sat, 29 Feb 2020 12:00:05 GMT")]
    )
    assert server_time(dated) == datetime(2020, 2, 29, 12, 0, 5, tzinfo=UTC)
