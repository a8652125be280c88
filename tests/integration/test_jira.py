"""The jira adapter against a fake Jira Cloud site over real sockets, and in a real cycle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.base import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterDataError,
    ChangeSet,
    InvalidRecord,
    Ticket,
)
from adapters.jira import JiraAdapter
from adapters.testing import AdapterConformance
from connector.models import CycleKind
from tests.conftest import Workspace
from tests.conftest import source_cycle as cycle
from tests.fakes.jira import EMAIL, TEAM_FIELD, TOKEN, JiraFake

SEARCH = "/rest/api/3/search/jql"


def options_for(fake: JiraFake, **extra: Any) -> dict[str, Any]:
    """Options pointing at `fake`, with short retries (a test must stay fast)."""
    return {
        "base_url": fake.url,
        "email": EMAIL,
        "api_token": TOKEN,
        "retry": {"attempts": 2, "deadline": 5},
        **extra,
    }


def make(fake: JiraFake, **extra: Any) -> JiraAdapter:
    """An adapter for `fake`."""
    return JiraAdapter(JiraAdapter.Config.model_validate(options_for(fake, **extra)))


@pytest.fixture
def fake() -> Iterator[JiraFake]:
    """A fake site of 130 issues last changed an hour ago."""
    with JiraFake() as server:
        server.advance(3600)
        yield server


@pytest.fixture
async def adapter(fake: JiraFake) -> AsyncIterator[JiraAdapter]:
    """An adapter for `fake` with the default options."""
    instance = make(fake)
    yield instance
    await instance.aclose()


async def listing(adapter: JiraAdapter) -> list[Ticket]:
    """The snapshot's tickets; fails on an invalid record."""
    items = [item async for item in adapter.list_open()]
    assert not [i for i in items if isinstance(i, InvalidRecord)]
    return [i for i in items if isinstance(i, Ticket)]


def by_id(changes: ChangeSet) -> dict[str, Ticket]:
    """The tickets of a change set by id."""
    return {t.id: t for t in changes.tickets}


class TestJiraConformance(AdapterConformance):
    """The conformance kit, over a site that pages 50 issues at a time."""

    adapter_class = JiraAdapter

    @pytest.fixture
    def backoffice(self) -> Iterator[JiraFake]:
        with JiraFake() as server:
            yield server

    @pytest.fixture
    def options(self, backoffice: JiraFake) -> dict[str, Any]:
        return options_for(backoffice)

    @pytest.fixture
    def bad_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {**options, "api_token": "not-the-jira-token"}


async def test_listing_follows_next_page_tokens_past_short_pages(
    adapter: JiraAdapter, fake: JiraFake
) -> None:
    """Pages shorter than maxResults do not end the listing; a page without a token does."""
    tickets = await listing(adapter)
    assert {t.id for t in tickets} == fake.open_ids()
    # 78 open issues, 100 asked for a page, the site gives 50: two pages.
    assert [h.status for h in fake.hits(SEARCH)] == [200, 200]
    assert len(fake.hits("/rest/api/3/search")) == 0  # the removed endpoint is never called


async def test_a_page_saying_more_without_a_token_fails_the_listing(
    adapter: JiraAdapter, fake: JiraFake
) -> None:
    """isLast false without nextPageToken raises instead of returning half a snapshot."""
    fake.drop_token_on_page = 1
    with pytest.raises(AdapterDataError, match="isLast: false"):
        await listing(adapter)


async def test_issues_carry_browse_urls_and_typed_fields(fake: JiraFake) -> None:
    """An issue has its browse URL, key, status, labels, assignee and mapped custom field."""
    adapter = make(fake, fields={"team": f"{TEAM_FIELD}.value", "raw_team": TEAM_FIELD})
    try:
        tickets = {t.id: t for t in await listing(adapter)}
    finally:
        await adapter.aclose()
    issue = fake.issues[10001]
    ticket = tickets["10001"]
    assert ticket.title == issue.summary
    assert ticket.url == f"{fake.url}/browse/{issue.key}"
    assert ticket.fields["key"] == "OPS-1"
    assert ticket.fields["status"] == "In Progress"
    assert ticket.fields["status_category"] == "indeterminate"
    assert ticket.fields["labels"] == ["payments"]
    assert ticket.fields["team"] == "kyc"
    assert ticket.fields["raw_team"] == {"value": "kyc", "id": "10100"}
    assert ticket.updated_at == issue.updated  # "+0100" offsets parsed to the same instant
    assert ticket.assignee_email is None  # hidden by the assignee's privacy settings
    assert tickets["10006"].assignee_email == "ada@acme.example"
    assert tickets["10012"].due_at == datetime(2026, 3, 20, tzinfo=UTC)


async def test_scope_limits_the_listing_and_an_unknown_project_fails_check(
    fake: JiraFake,
) -> None:
    """`scope` narrows the listing; a scope naming no project makes check() a config error."""
    adapter = make(fake, scope="project = ENG")
    try:
        await adapter.check()
        tickets = await listing(adapter)
    finally:
        await adapter.aclose()
    assert tickets and all(t.fields["project"] == "ENG" for t in tickets)
    wrong = make(fake, scope="project = NOPE")
    try:
        with pytest.raises(AdapterConfigError, match="does not exist for the field 'project'"):
            await wrong.check()
    finally:
        await wrong.aclose()


async def test_changes_resume_from_the_stored_cursor(fake: JiraFake) -> None:
    """A poll sees edits and closes after the cursor; a new adapter resumes from its cursor."""
    first = make(fake)
    start = await first.changes_since(None)
    assert start.cursor is not None and start.tickets == ()
    fake.advance(300)
    fake.change("10001")
    fake.close("10002")
    polled = await first.changes_since(start.cursor)
    await first.aclose()
    assert by_id(polled)["10001"].is_open is True
    assert by_id(polled)["10002"].is_open is False

    fake.advance(3600)
    fake.change("10003")
    resumed = make(fake)
    try:
        later = await resumed.changes_since(polled.cursor)
        again = await resumed.changes_since(later.cursor)
    finally:
        await resumed.aclose()
    assert "10003" in by_id(later)
    # The cursor moved to 10003's change: the next poll reaches back only the overlap.
    assert set(by_id(again)) == {"10003"}


async def test_polls_use_epoch_millis_whatever_the_account_time_zone() -> None:
    """A change is seen in Los Angeles as in Warsaw: the cursor is epoch ms, not local text."""
    with JiraFake(time_zone="America/Los_Angeles") as fake:
        fake.advance(3600)
        adapter = make(fake)
        try:
            start = await adapter.changes_since(None)
            fake.advance(600)
            fake.change("10006")
            changes = await adapter.changes_since(start.cursor)
        finally:
            await adapter.aclose()
    assert set(by_id(changes)) == {"10006"}


async def test_a_custom_open_jql_decides_openness_in_polls(fake: JiraFake) -> None:
    """With jql `status = "To Do"`, an issue moved to In Review is reported closed."""
    adapter = make(fake, jql='status = "To Do"')
    try:
        open_before = {t.id for t in await listing(adapter)}
        start = await adapter.changes_since(None)
        fake.advance(300)
        fake.transition("10005", "In Review")  # still category In Progress
        fake.change("10010")  # To Do
        changes = by_id(await adapter.changes_since(start.cursor))
    finally:
        await adapter.aclose()
    assert "10005" in open_before
    assert changes["10005"].is_open is False
    assert changes["10010"].is_open is True


async def test_bad_token_fails_check_with_jira_message(fake: JiraFake) -> None:
    """A wrong API token makes check() raise AdapterAuthError with Jira's 401 text."""
    adapter = make(fake, api_token="wrong-token-1111")
    try:
        with pytest.raises(AdapterAuthError, match=r"401.*Client must be authenticated"):
            await adapter.check()
    finally:
        await adapter.aclose()


async def test_429_is_retried_after_retry_after(adapter: JiraAdapter, fake: JiraFake) -> None:
    """A 429 from search is waited out for its Retry-After, and the listing completes."""
    fake.rate_limit_next(1)
    began = time.monotonic()
    tickets = await listing(adapter)
    assert time.monotonic() - began >= 1.0
    assert {t.id for t in tickets} == fake.open_ids()
    assert [h.status for h in fake.hits(SEARCH)] == [429, 200, 200]


def test_jql_with_order_by_is_refused() -> None:
    """ORDER BY in `jql` or `scope` is an options error: the adapter orders the search."""
    base = {"base_url": "https://acme.atlassian.net", "email": EMAIL, "api_token": TOKEN}
    with pytest.raises(ValueError, match="ORDER BY"):
        JiraAdapter.Config.model_validate({**base, "jql": "project = OPS ORDER BY key"})


async def test_cycles_keep_fragment_equal_to_the_open_issues(
    workspace: Workspace, fake: JiraFake
) -> None:
    """A full cycle creates a task per open issue; a poll applies an edit and a close."""
    options = options_for(fake)
    workspace.write_config(sources=[{"name": "ops", "adapter": "jira", "options": options}])
    adapter = JiraAdapter(JiraAdapter.Config.model_validate(options))
    try:
        report = await cycle(workspace, adapter)
        assert report.ok and report.plan is not None
        assert len(report.plan.actions) == len(fake.open_ids()) == 78
        await cycle(workspace, adapter, CycleKind.INCREMENTAL)
        fake.advance(300)
        fake.change("10001")
        fake.close("10002")
        report = await cycle(workspace, adapter, CycleKind.INCREMENTAL)
        assert report.ok, report.error
    finally:
        await adapter.aclose()
    tasks = {t["fields"]["fc_ticket_id"]: t for t in workspace.tasks().values()}
    assert tasks["10001"]["fields"]["title"].endswith("(updated)")
    assert tasks["10001"]["fields"]["url"] == f"{fake.url}/browse/OPS-1"
    assert tasks["10002"]["status"] == "DONE"
    assert {i for i, t in tasks.items() if t["status"] != "DONE"} == fake.open_ids()
