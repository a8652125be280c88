"""The `rest` adapter against a fake JSON back-office over real sockets.

Every pagination style and auth style, the incremental request (query, body, placeholder, sync
token), the conformance kit per pagination style, and a real cycle against the sandbox Fragment
in which a page failing mid-listing closes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from adapters.base import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterDataError,
    AdapterUnavailable,
    InvalidRecord,
    Ticket,
)
from adapters.rest import RestAdapter
from adapters.testing import AdapterConformance
from connector.config import load_settings
from connector.cycle import CycleOptions, Reconciler
from connector.fragment.client import FragmentClient
from connector.models import CycleReport
from connector.state import StateStore
from tests.conftest import TOKEN, Workspace
from tests.fakes.rest_backoffice import API_KEY, PASSWORD, AuthStyle, RestBackoffice
from tests.fakes.rest_backoffice import TOKEN as REST_TOKEN

# style -> (path prefix on the fake, pagination options, record selector)
STYLES: dict[str, tuple[str, dict[str, Any], str]] = {
    "page_number": ("page", {"type": "page_number", "size": 25}, "data"),
    "offset": ("offset", {"type": "offset", "limit": 25}, "items"),
    "cursor": (
        "cursor",
        {"type": "cursor", "cursor": "meta.next_cursor", "has_more": "meta.has_more"},
        "data",
    ),
    "link_header": ("link", {"type": "link_header"}, "@"),
    "next_url": ("next", {"type": "next_url", "next_url": "next"}, "results"),
    "none": ("single", {"type": "none"}, "data"),
}
MAPPING: dict[str, Any] = {
    "id": "id",
    "title": "subject",
    "url": "html_url",
    "updated_at": "updated_at",
    "assignee_email": "assignee.email",
    "is_open": "status != 'closed'",
    "fields": {"priority": "priority", "amount": "amount"},
}
FAST_RETRY = {
    "attempts": 3,
    "deadline": 5,
    "wait_initial": 0.01,
    "wait_max": 0.05,
    "wait_jitter": 0,
}
SECRETS = (REST_TOKEN, PASSWORD, API_KEY)


def rest_options(
    fake: RestBackoffice, style: str = "page_number", **overrides: Any
) -> dict[str, Any]:
    """Options for the `rest` adapter reading `fake` in one pagination style."""
    prefix, pagination, records = STYLES[style]
    options: dict[str, Any] = {
        "base_url": fake.url,
        "auth": fake.credentials(),
        "request": {"path": f"{prefix}/tickets"},
        "records": records,
        "pagination": pagination,
        "mapping": MAPPING,
        "incremental": {"request": {"path": f"{prefix}/changes"}},
        "retry": FAST_RETRY,
    }
    options.update(overrides)
    return options


def make(options: dict[str, Any]) -> RestAdapter:
    """An adapter from raw options, validated as the core does."""
    return RestAdapter(RestAdapter.Config.model_validate(options))


async def listing(options: dict[str, Any]) -> list[Ticket | InvalidRecord]:
    """Everything one listing yields."""
    adapter = make(options)
    try:
        return [item async for item in adapter.list_open()]
    finally:
        await adapter.aclose()


def open_ids(items: list[Ticket | InvalidRecord]) -> list[str]:
    return [t.id for t in items if isinstance(t, Ticket) and t.is_open]


@pytest.fixture
def fake() -> Iterator[RestBackoffice]:
    """A fake back-office with 120 tickets (103 open) and bearer auth."""
    with RestBackoffice() as server:
        yield server


# --- the conformance kit, once per pagination style (and each auth style once) ----------------


class _RestKit(AdapterConformance):
    adapter_class = RestAdapter
    style: ClassVar[str]
    auth: ClassVar[AuthStyle]

    @pytest.fixture
    def backoffice(self) -> Iterator[RestBackoffice]:
        with RestBackoffice(auth=self.auth) as server:
            yield server

    @pytest.fixture
    def options(self, backoffice: RestBackoffice) -> dict[str, Any]:
        return rest_options(backoffice, self.style)

    @pytest.fixture
    def bad_options(self, backoffice: RestBackoffice) -> dict[str, Any]:
        return rest_options(backoffice, self.style, auth=backoffice.credentials(wrong=True))


class TestPageNumberBearerKit(_RestKit):
    style, auth = "page_number", "bearer"


class TestOffsetBasicKit(_RestKit):
    style, auth = "offset", "basic"


class TestCursorApiKeyHeaderKit(_RestKit):
    style, auth = "cursor", "api_key_header"


class TestLinkHeaderApiKeyQueryKit(_RestKit):
    style, auth = "link_header", "api_key_query"


class TestNextUrlBearerKit(_RestKit):
    style, auth = "next_url", "bearer"


# --- pagination ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", list(STYLES))
async def test_each_pagination_style_lists_every_open_ticket(
    fake: RestBackoffice, style: str
) -> None:
    """Each pagination style yields every open ticket once, one request per page."""
    items = await listing(rest_options(fake, style))
    ids = open_ids(items)
    assert sorted(ids) == sorted(fake.open_ids())
    assert len(ids) == len(set(ids))
    pages = 1 if style == "none" else math.ceil(len(fake.open_ids()) / 25)
    assert fake.listing_requests() == pages
    ticket = next(t for t in items if isinstance(t, Ticket) and t.id == "3")
    assert ticket.title == "Invoice dispute #3"
    assert ticket.url == "https://backoffice.example/tickets/3"
    assert ticket.fields == {"priority": "high", "amount": 30}
    assert ticket.assignee_email == "agent3@backoffice.example"
    assert ticket.updated_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def test_page_parameters_follow_the_options(fake: RestBackoffice) -> None:
    """Page number, page size and the request's own params are sent on every page."""
    options = rest_options(
        fake,
        request={"path": "page/tickets", "params": {"status": "all"}},
        pagination={"type": "page_number", "param": "page", "start": 1, "size": 20},
    )
    items = await listing(options)
    assert len(items) == 120  # status=all: closed tickets come too, and map as closed
    assert sum(1 for t in items if isinstance(t, Ticket) and not t.is_open) == 17
    seen = fake.seen("tickets")
    assert [r.params["page"] for r in seen] == ["1", "2", "3", "4", "5", "6", "7"]
    assert {r.params["per_page"] for r in seen} == {"20"}
    assert {r.params["status"] for r in seen} == {"all"}


async def test_cursor_goes_in_a_post_body(fake: RestBackoffice) -> None:
    """A POST search with the cursor in its JSON body pages through every open ticket."""
    options = rest_options(
        fake,
        "cursor",
        request={"method": "POST", "path": "cursor/tickets", "body": {"limit": 25}},
        pagination={
            "type": "cursor",
            "cursor": "meta.next_cursor",
            "param": "cursor",
            "in": "body",
        },
    )
    assert sorted(open_ids(await listing(options))) == sorted(fake.open_ids())
    seen = fake.seen("tickets")
    assert {r.method for r in seen} == {"POST"}
    assert "cursor" not in seen[0].body
    assert all(r.body["cursor"] and r.body["limit"] == 25 for r in seen[1:])
    assert all("cursor" not in r.params for r in seen)


async def test_a_repeated_cursor_is_a_pagination_loop(fake: RestBackoffice) -> None:
    """A server that keeps answering the same cursor fails the listing instead of looping."""
    fake.repeat_cursor = True
    with pytest.raises(AdapterDataError, match="pagination loop"):
        await listing(rest_options(fake, "cursor"))


async def test_records_that_are_not_a_list_fail_the_listing(fake: RestBackoffice) -> None:
    """A `records` expression that selects no list is a data error, not an empty listing."""
    with pytest.raises(AdapterDataError, match="not a list"):
        await listing(rest_options(fake, records="total"))


async def test_a_slow_answer_times_out(fake: RestBackoffice) -> None:
    """An answer slower than `timeout` fails the listing as unavailable."""
    fake.delay = 0.5
    options = rest_options(fake, timeout=0.1, retry={**FAST_RETRY, "attempts": 1})
    with pytest.raises(AdapterUnavailable, match=r"GET \S*/page/tickets"):
        await listing(options)


# --- auth ---------------------------------------------------------------------------------------


AUTH_STYLES: list[AuthStyle] = ["none", "bearer", "basic", "api_key_header", "api_key_query"]


@pytest.mark.parametrize("auth", AUTH_STYLES)
async def test_each_auth_style_is_sent_on_every_request(auth: AuthStyle) -> None:
    """Each auth style reaches the server on every page, next-page URLs included."""
    with RestBackoffice(auth=auth) as fake:
        options = rest_options(fake, "next_url")
        adapter = make(options)
        try:
            await adapter.check()
            ids = open_ids([item async for item in adapter.list_open()])
        finally:
            await adapter.aclose()
        assert sorted(ids) == sorted(fake.open_ids())
        seen = fake.seen("tickets")
        # check() asked for the first page only
        assert len(seen) == 1 + math.ceil(len(fake.open_ids()) / 25)
        for request in seen:
            if auth == "bearer":
                assert request.headers["authorization"] == f"Bearer {REST_TOKEN}"
            elif auth == "basic":
                assert request.headers["authorization"].startswith("Basic ")
            elif auth == "api_key_header":
                assert request.headers["x-api-key"] == API_KEY
            elif auth == "api_key_query":
                assert request.params["api_key"] == API_KEY
            else:
                assert not request.headers and "api_key" not in request.params


@pytest.mark.parametrize("auth", AUTH_STYLES[1:])
async def test_wrong_credentials_are_an_auth_error_without_the_secret(auth: AuthStyle) -> None:
    """Wrong credentials raise AdapterAuthError from check and list_open, naming no secret."""
    with RestBackoffice(auth=auth) as fake:
        options = rest_options(fake, auth=fake.credentials(wrong=True))
        adapter = make(options)
        try:
            with pytest.raises(AdapterAuthError) as checked:
                await adapter.check()
        finally:
            await adapter.aclose()
        with pytest.raises(AdapterAuthError) as listed:
            await listing(options)
        for error in (checked.value, listed.value):
            assert "401" in str(error)
            assert not any(secret in f"{error} {error!r}" for secret in SECRETS)


async def test_a_server_error_echoing_the_url_does_not_leak_the_api_key() -> None:
    """A 500 whose body echoes the URL with the API key is reported with the key redacted."""
    with RestBackoffice(auth="api_key_query") as fake:
        fake.fail_page(1)
        with pytest.raises(AdapterUnavailable) as raised:
            await listing(rest_options(fake))
    message = str(raised.value)
    assert "500" in message
    assert API_KEY not in message


def test_options_repr_holds_no_secret(fake: RestBackoffice) -> None:
    """The validated options show every credential masked."""
    for auth in AUTH_STYLES:
        options = {**rest_options(fake), "auth": RestBackoffice(auth=auth).credentials()}
        shown = repr(RestAdapter.Config.model_validate(options))
        assert not any(secret in shown for secret in SECRETS)


# --- check --------------------------------------------------------------------------------------


async def test_check_sends_the_configured_request(fake: RestBackoffice) -> None:
    """A configured `check` request is the only request check() makes."""
    adapter = make(rest_options(fake, check={"path": "me"}))
    try:
        await adapter.check()
    finally:
        await adapter.aclose()
    assert [r.path for r in fake.requests] == ["/me"]


async def test_check_reports_a_mapping_that_does_not_fit(fake: RestBackoffice) -> None:
    """check() fails with AdapterConfigError when the first record cannot become a ticket."""
    adapter = make(rest_options(fake, mapping={**MAPPING, "title": "summary"}))
    try:
        with pytest.raises(AdapterConfigError, match="`title` is missing"):
            await adapter.check()
    finally:
        await adapter.aclose()


def test_invalid_options_are_refused(fake: RestBackoffice) -> None:
    """Unknown keys, bad JMESPath, credentials in base_url and a cursor-less incremental fail."""
    base = rest_options(fake)
    broken = [
        {**base, "paginate": {"type": "none"}},
        {**base, "records": "data[?"},
        {**base, "pagination": {"type": "cursor", "cursor": "meta.next("}},
        {**base, "base_url": "https://user:pw@backoffice.example/api"},
        {**base, "mapping": {"id": "id", "title": "subject"}},  # incremental: no updated_at
        {**base, "incremental": {"since_param": None}},
        {**base, "auth": {"type": "api_key", "key": "k", "in": "cookie"}},
    ]
    for options in broken:
        with pytest.raises(ValidationError):
            RestAdapter.Config.model_validate(options)


# --- incremental --------------------------------------------------------------------------------


async def test_first_poll_starts_from_the_data_clock(fake: RestBackoffice) -> None:
    """changes_since(None) returns nothing and a cursor at the newest updated_at listed."""
    adapter = make(rest_options(fake))
    try:
        changes = await adapter.changes_since(None)
    finally:
        await adapter.aclose()
    assert changes.tickets == ()
    assert changes.cursor == "since:2026-03-02T09:00:00+00:00"


async def test_incremental_sends_since_in_the_query_with_the_overlap(fake: RestBackoffice) -> None:
    """The poll sends updated_since = cursor - overlap and returns changes and closes."""
    options = rest_options(fake, incremental={"request": {"path": "page/changes"}, "overlap": 120})
    fake.advance(3600)
    fake.change("1")
    fake.close("2")
    adapter = make(options)
    try:
        changes = await adapter.changes_since("since:2026-03-02T09:30:00+00:00")
    finally:
        await adapter.aclose()
    assert {t.id: t.is_open for t in changes.tickets} == {"1": True, "2": False}
    assert [r.params["updated_since"] for r in fake.seen("changes")] == ["2026-03-02T09:28:00Z"]
    assert changes.cursor == "since:2026-03-02T10:00:00+00:00"


async def test_incremental_since_goes_in_a_post_body_as_epoch_ms(fake: RestBackoffice) -> None:
    """With `in: body` and epoch_ms, the since value is a number in the POST body."""
    options = rest_options(
        fake,
        incremental={
            "request": {"method": "POST", "path": "single/changes", "body": {"team": "billing"}},
            "pagination": {"type": "none"},
            "in": "body",
            "format": "epoch_ms",
            "overlap": 0,
        },
    )
    fake.advance(60)
    fake.change("4")
    adapter = make(options)
    try:
        changes = await adapter.changes_since("since:2026-03-02T09:00:30+00:00")
    finally:
        await adapter.aclose()
    assert [t.id for t in changes.tickets] == ["4"]
    (request,) = fake.seen("changes")
    expected = int(datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC).timestamp() * 1000)
    assert request.body == {"team": "billing", "updated_since": expected}
    assert "updated_since" not in request.params


async def test_incremental_placeholder_takes_the_since_value(fake: RestBackoffice) -> None:
    """A `{since}` placeholder in the incremental params receives the since value."""
    options = rest_options(
        fake,
        incremental={
            "request": {"path": "single/changes", "params": {"updated_since": "{since}"}},
            "pagination": {"type": "none"},
            "since_param": None,
            "format": "epoch_s",
            "overlap": 0,
        },
    )
    fake.advance(10)
    fake.change("8")
    adapter = make(options)
    try:
        changes = await adapter.changes_since("since:2026-03-02T09:00:05+00:00")
    finally:
        await adapter.aclose()
    assert [t.id for t in changes.tickets] == ["8"]
    since = int(datetime(2026, 3, 2, 9, 0, 5, tzinfo=UTC).timestamp())
    assert fake.seen("changes")[0].params == {"updated_since": str(since)}


async def test_incremental_follows_the_sync_token_of_the_response(fake: RestBackoffice) -> None:
    """With `cursor`, the poll after a since-based one sends only the API's own sync token."""
    options = rest_options(
        fake,
        incremental={
            "request": {"path": "page/changes"},
            "cursor": "sync_token",
            "cursor_param": "sync_token",
        },
    )
    adapter = make(options)
    try:
        start = await adapter.changes_since(None)
        fake.advance(5)
        fake.change("9")
        first = await adapter.changes_since(start.cursor)
        assert first.cursor is not None and first.cursor.startswith("token:")
        assert "9" in {t.id for t in first.tickets}
        fake.advance(3600)
        fake.close("11")
        second = await adapter.changes_since(first.cursor)
    finally:
        await adapter.aclose()
    # The fake's token is inclusive: ticket 9, changed in the token's second, comes again.
    assert {t.id: t.is_open for t in second.tickets} == {"9": True, "11": False}
    last = fake.seen("changes")[-1]
    assert "updated_since" not in last.params
    assert last.params["sync_token"] == first.cursor.removeprefix("token:")


async def test_a_page_failing_mid_poll_fails_the_poll(fake: RestBackoffice) -> None:
    """A 500 on the second page of changes raises instead of returning part of them."""
    fake.fail_page(2)
    adapter = make(rest_options(fake))
    try:
        with pytest.raises(AdapterUnavailable, match="500"):
            await adapter.changes_since("since:2026-03-01T00:00:00+00:00")
    finally:
        await adapter.aclose()


async def test_polling_without_incremental_options_is_a_config_error(fake: RestBackoffice) -> None:
    """changes_since without `incremental` options says what to configure."""
    adapter = make(rest_options(fake, incremental=None))
    try:
        with pytest.raises(AdapterConfigError, match="`incremental`"):
            await adapter.changes_since(None)
    finally:
        await adapter.aclose()


async def test_a_foreign_cursor_is_a_data_error(fake: RestBackoffice) -> None:
    """A cursor this adapter did not write is refused."""
    adapter = make(rest_options(fake))
    try:
        with pytest.raises(AdapterDataError, match="not a rest adapter cursor"):
            await adapter.changes_since("12345|2026")
    finally:
        await adapter.aclose()


# --- a real cycle: a page failing mid-listing closes nothing --------------------------------------


async def run_cycle(ws: Workspace, adapter: RestAdapter) -> CycleReport:
    """One full cycle against the sandbox, with `adapter` as the `backoffice` source."""
    settings = load_settings(ws.config_path)
    store = StateStore(settings.state.url, instance=settings.connector.instance)
    client = FragmentClient(
        ws.sandbox.base_url, TOKEN, requests_per_minute=100_000, burst=100, retry_deadline=20
    )
    try:
        reconciler = Reconciler(
            settings, client=client, store=store, adapters={"backoffice": adapter}
        )
        return await reconciler.run(CycleOptions())
    finally:
        await client.aclose()
        store.close()


async def test_a_500_mid_pagination_fails_the_source_and_closes_nothing(
    workspace: Workspace, fake: RestBackoffice
) -> None:
    """A page answering 500 after the retries fails the source: no task is closed."""
    options = rest_options(fake)
    # Mass-close guards out of the way: only the failed-listing rule may stand between a
    # short listing and the closing of every task past page 1.
    workspace.write_config(
        sources=[{"name": "backoffice", "adapter": "rest", "options": options}],
        guards={"close_ratio": 1.0, "close_min": 100_000},
    )
    adapter = make(options)
    try:
        report = await run_cycle(workspace, adapter)
        (source,) = report.sources
        assert source.ok, source.error
        opened = {t["fields"]["fc_ticket_id"] for t in workspace.tasks().values()}
        assert opened == fake.open_ids()

        fake.close("1")  # a real close goes through, so closing works at all
        report = await run_cycle(workspace, adapter)
        done = {
            t["fields"]["fc_ticket_id"] for t in workspace.tasks().values() if t["status"] == "DONE"
        }
        assert done == {"1"}

        fake.close("2")
        fake.fail_page(2)
        writes_before = len(workspace.writes())
        report = await run_cycle(workspace, adapter)
    finally:
        await adapter.aclose()
    (source,) = report.sources
    assert not source.ok
    assert source.error is not None and "500" in source.error
    assert len(workspace.writes()) == writes_before
    still_open = {
        t["fields"]["fc_ticket_id"] for t in workspace.tasks().values() if t["status"] != "DONE"
    }
    assert still_open == fake.open_ids() | {"2"}
