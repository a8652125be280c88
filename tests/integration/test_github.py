"""The github adapter against a fake GitHub REST API over real sockets, and in a real cycle."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from adapters.base import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterUnavailable,
    ChangeSet,
    InvalidRecord,
    Ticket,
)
from adapters.github import GitHubAdapter
from adapters.testing import AdapterConformance
from connector.models import CycleKind
from tests.conftest import Workspace
from tests.conftest import source_cycle as cycle
from tests.fakes.github import TOKEN, GitHubFake

REPOS = ["acme/app", "acme/ops"]


def options_for(fake: GitHubFake, **extra: Any) -> dict[str, Any]:
    """Options pointing at `fake`, small pages, and short retries (a test must stay fast)."""
    return {
        "repositories": REPOS,
        "token": TOKEN,
        "base_url": fake.url,
        "page_size": 20,
        "retry": {"attempts": 2, "deadline": 5},
        **extra,
    }


def make(fake: GitHubFake, **extra: Any) -> GitHubAdapter:
    """An adapter for `fake`."""
    return GitHubAdapter(GitHubAdapter.Config.model_validate(options_for(fake, **extra)))


@pytest.fixture
def fake() -> Iterator[GitHubFake]:
    """Two repositories of 60 issues and pull requests each, last changed an hour ago."""
    with GitHubFake() as server:
        server.advance(3600)
        yield server


@pytest.fixture
async def adapter(fake: GitHubFake) -> AsyncIterator[GitHubAdapter]:
    """An adapter for `fake` with both repositories."""
    instance = make(fake)
    yield instance
    await instance.aclose()


async def listing(adapter: GitHubAdapter) -> list[Ticket]:
    """The snapshot's tickets; fails on an invalid record."""
    items = [item async for item in adapter.list_open()]
    assert not [i for i in items if isinstance(i, InvalidRecord)]
    return [i for i in items if isinstance(i, Ticket)]


def by_id(changes: ChangeSet) -> dict[str, Ticket]:
    """The tickets of a change set by id."""
    return {t.id: t for t in changes.tickets}


class TestGitHubConformance(AdapterConformance):
    """The conformance kit, over two repositories mixing issues and pull requests."""

    adapter_class = GitHubAdapter

    @pytest.fixture
    def backoffice(self) -> Iterator[GitHubFake]:
        with GitHubFake() as server:
            yield server

    @pytest.fixture
    def options(self, backoffice: GitHubFake) -> dict[str, Any]:
        return options_for(backoffice)

    @pytest.fixture
    def bad_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {**options, "token": "ghp_notTheRightToken0000"}


async def test_listing_skips_pull_requests_and_follows_links(
    adapter: GitHubAdapter, fake: GitHubFake
) -> None:
    """Open issues of both repositories, no pull request, over Link-chained pages."""
    tickets = await listing(adapter)
    assert {t.id for t in tickets} == fake.open_ids()
    assert len(tickets) == len(fake.open_ids()) == 72
    assert not [t for t in tickets if "/pull/" in (t.url or "")]
    followed = fake.hits("/repositories/1224437532/issues")
    assert followed and "after=" in followed[0].query  # the Link URL, as GitHub wrote it
    ticket = next(t for t in tickets if t.id == "acme/app#1")
    assert ticket.url == "https://github.com/acme/app/issues/1"
    assert ticket.fields["labels"] == ["bug"]
    assert ticket.fields["assignees"] == ["octocat"]
    assert ticket.fields["milestone"] == "March close"
    assert ticket.fields["repository"] == "acme/app"


async def test_an_unchanged_listing_is_answered_by_304s(
    adapter: GitHubAdapter, fake: GitHubFake
) -> None:
    """A second listing sends If-None-Match; 304s reuse the kept pages and cost no quota."""
    first = await listing(adapter)
    spent = 5000 - fake.remaining
    pages = len(fake.log)
    second = await listing(adapter)
    again = fake.log[pages:]
    assert [h.status for h in again] == [304] * pages
    assert all(h.headers.get("if-none-match", "").startswith('W/"') for h in again)
    assert fake.remaining == 5000 - spent  # not one request counted
    assert adapter.transport.not_modified == pages
    assert second == first

    fake.change("acme/ops#58")  # on the last page of acme/ops (sorted by creation)
    third = {t.id: t for t in await listing(adapter)}
    statuses = [h.status for h in fake.log[2 * pages :]]
    assert statuses.count(200) == 1 and statuses.count(304) == pages - 1
    assert third["acme/ops#58"].title.endswith("(updated)")


async def test_changes_since_per_repository_see_closes_and_resume(fake: GitHubFake) -> None:
    """A poll reports edits and closes with state=all&since=; a new adapter resumes."""
    first = make(fake)
    start = await first.changes_since(None)
    assert start.tickets == () and start.cursor is not None
    assert set(json.loads(start.cursor)) == set(REPOS)
    fake.advance(300)
    fake.change("acme/app#1")
    fake.close("acme/ops#2", reason="not_planned")
    fake.change("acme/app#4")  # a pull request
    polled = await first.changes_since(start.cursor)
    await first.aclose()
    changes = by_id(polled)
    assert set(changes) == {"acme/app#1", "acme/ops#2"}
    assert changes["acme/ops#2"].is_open is False
    assert changes["acme/ops#2"].fields["state_reason"] == "not_planned"
    assert any("since=" in h.query and "state=all" in h.query for h in fake.log)

    fake.advance(3600)
    fake.change("acme/ops#3")
    resumed = make(fake)
    try:
        later = await resumed.changes_since(polled.cursor)
    finally:
        await resumed.aclose()
    # Each repository's newest changes come back within the overlap; nothing older does.
    assert set(by_id(later)) == {"acme/app#1", "acme/ops#2", "acme/ops#3"}


async def test_labels_filter_the_listing_and_losing_one_closes(fake: GitHubFake) -> None:
    """With labels [bug], only bug issues are listed; one losing the label is polled closed."""
    adapter = make(fake, labels=["bug"])
    try:
        tickets = await listing(adapter)
        assert tickets and all("bug" in t.fields["labels"] for t in tickets)
        start = await adapter.changes_since(None)
        fake.advance(300)
        fake.relabel("acme/app#1", ["ops"])
        fake.change("acme/app#3")
        changes = by_id(await adapter.changes_since(start.cursor))
    finally:
        await adapter.aclose()
    assert changes["acme/app#1"].is_open is False
    assert changes["acme/app#3"].is_open is True


async def test_bad_token_fails_check_with_github_message(fake: GitHubFake) -> None:
    """A wrong token makes check() raise AdapterAuthError quoting "Bad credentials"."""
    adapter = make(fake, token="ghp_wrongWrongWrong")
    try:
        with pytest.raises(AdapterAuthError, match="Bad credentials") as caught:
            await adapter.check()
    finally:
        await adapter.aclose()
    assert "ghp_wrongWrongWrong" not in str(caught.value)


async def test_unknown_repository_and_disabled_issues_fail_check(fake: GitHubFake) -> None:
    """check() names a repository the token cannot see, and one with issues disabled."""
    unknown = make(fake, repositories=["acme/app", "acme/nope"])
    try:
        with pytest.raises(AdapterConfigError, match="'acme/nope' is unknown"):
            await unknown.check()
    finally:
        await unknown.aclose()
    fake.has_issues["acme/ops"] = False
    disabled = make(fake)
    try:
        with pytest.raises(AdapterConfigError, match="issues disabled"):
            await disabled.check()
        with pytest.raises(AdapterConfigError, match="410"):
            await listing(disabled)
    finally:
        await disabled.aclose()


async def test_primary_rate_limit_waits_until_reset(
    adapter: GitHubAdapter, fake: GitHubFake
) -> None:
    """A 403 with x-ratelimit-remaining 0 is waited out until x-ratelimit-reset (1 s)."""
    fake.rate_limit_next(1)
    began = time.monotonic()
    tickets = await listing(adapter)
    assert time.monotonic() - began >= 1.0
    assert {t.id for t in tickets} == fake.open_ids()
    assert fake.log[0].status == 403


@pytest.mark.parametrize("status", [403, 429])
async def test_secondary_rate_limit_waits_retry_after(
    adapter: GitHubAdapter, fake: GitHubFake, status: int
) -> None:
    """A secondary rate limit (403 or 429) is retried after its Retry-After, not before."""
    fake.secondary_limit_next(1, status=status, retry_after="1")
    began = time.monotonic()
    tickets = await listing(adapter)
    assert time.monotonic() - began >= 1.0
    assert {t.id for t in tickets} == fake.open_ids()


async def test_secondary_rate_limit_without_retry_after_is_not_hammered(
    adapter: GitHubAdapter, fake: GitHubFake
) -> None:
    """Without Retry-After the wait is a minute: past the deadline, the request fails at once."""
    fake.secondary_limit_next(1, retry_after=None)
    began = time.monotonic()
    with pytest.raises(AdapterUnavailable, match="wait 60"):
        await listing(adapter)
    assert time.monotonic() - began < 1.0
    assert len(fake.log) == 1


async def test_cycles_keep_fragment_equal_to_the_open_issues(
    workspace: Workspace, fake: GitHubFake
) -> None:
    """A full cycle creates a task per open issue; a poll applies an edit and a close."""
    options = options_for(fake)
    workspace.write_config(sources=[{"name": "issues", "adapter": "github", "options": options}])
    adapter = GitHubAdapter(GitHubAdapter.Config.model_validate(options))
    try:
        report = await cycle(workspace, adapter)
        assert report.ok and report.plan is not None
        assert len(report.plan.actions) == len(fake.open_ids()) == 72
        await cycle(workspace, adapter, CycleKind.INCREMENTAL)
        fake.advance(300)
        fake.change("acme/app#1")
        fake.close("acme/ops#2")
        report = await cycle(workspace, adapter, CycleKind.INCREMENTAL)
        assert report.ok, report.error
        again = await cycle(workspace, adapter)  # the next full refresh agrees: nothing to do
        assert again.ok and again.plan is not None and again.plan.actions == ()
    finally:
        await adapter.aclose()
    tasks = {t["fields"]["fc_ticket_id"]: t for t in workspace.tasks().values()}
    assert tasks["acme/app#1"]["fields"]["title"].endswith("(updated)")
    assert tasks["acme/ops#2"]["status"] == "DONE"
    assert {i for i, t in tasks.items() if t["status"] != "DONE"} == fake.open_ids()
