"""The `github` adapter: open issues of one or several GitHub repositories, and their changes.

A snapshot lists `GET /repos/{owner}/{repo}/issues?state=open` for each repository, following
the `Link: rel="next"` URLs as given (GitHub moves to `/repositories/{id}/issues` and opaque
cursors) and skipping pull requests, which the issues API lists too. Every GET is conditional:
the adapter keeps each URL's ETag and body, sends `If-None-Match`, and a 304 (which GitHub does
not count against the rate limit) reuses the kept body, so an unchanged listing costs nothing.
Incremental polls ask `state=all&since=` per repository, from GitHub's clock at that
repository's previous poll minus `incremental_overlap`; the cursor holds one time per
repository. Deleted and transferred issues vanish without a trace: the full refresh closes
their tasks. Ticket ids are `owner/name#number`. Auth is a token (`Authorization: Bearer`); a
403 or 429 is a rate limit when `x-ratelimit-remaining` is 0 (waited until
`x-ratelimit-reset`), when it carries `Retry-After`, or when GitHub says "secondary rate limit"
(at least a minute then, as GitHub asks).

Write-back (an operator's DONE in Fragment): `GET /repos/{repo}/issues/{n}` first (a closed issue
is left alone, so closing twice changes nothing and adds no second comment), then the note as a
comment (`POST .../issues/{n}/comments`, `{"body": ...}`) and the close (`PATCH .../issues/{n}`,
`{"state": "closed", "state_reason": "completed"}`). The token then needs Issues: write.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

import httpx
from pydantic import Field, SecretStr, field_validator

from adapters.base import (
    AdapterConfigError,
    AdapterDataError,
    ChangeSet,
    Duration,
    InvalidRecord,
    Ticket,
    WriteBackAction,
    WriteBackOutcome,
    WriteBackRejected,
    WriteBackRequest,
)
from adapters.http import (
    HttpOptions,
    LinkHeader,
    RetryOptions,
    first_of,
    make_client,
    paginate,
    ratelimit_reset_header,
    retry_after_header,
    send,
    server_time,
)
from adapters.mapping import RecordMapper, TicketMapping
from adapters.writes import json_object, write_request
from connector.values import parse_timestamp

API_VERSION: Final = "2022-11-28"
SECONDARY_WAIT: Final = 60.0
"""GitHub: without retry-after, wait at least a minute after a secondary rate limit."""
CACHE_BYTES: Final = 64 * 1024 * 1024
"""Page bodies kept for conditional requests, at most (a 100-issue page is ~0.5 MB)."""
_SECONDARY_HINTS: Final = ("secondary rate limit", "abuse detection")
_HOP: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class GitHubRetry(RetryOptions):
    """RetryOptions with room for the minute a secondary rate limit asks."""

    deadline: Duration = Field(
        timedelta(seconds=90),
        gt=timedelta(0),
        description="Time for one request with its retries and waits (room for the minute a "
        "secondary rate limit asks); a longer wait fails the request at once, and the next "
        "cycle tries again.",
    )


class GitHubOptions(HttpOptions):
    """Options of a `github` source."""

    repositories: list[str] = Field(
        min_length=1, description="Repositories as `owner/name`; ticket ids are `owner/name#N`."
    )
    token: SecretStr = Field(
        description="A fine-grained token with Issues: read (or a classic token with `repo`)."
    )
    base_url: str = Field(
        "https://api.github.com",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="The REST API root; GitHub Enterprise Server: https://HOST/api/v3.",
    )
    labels: list[str] = Field(
        default_factory=list,
        description="Only issues carrying every one of these labels; an issue that loses one "
        "is closed.",
    )
    page_size: int = Field(100, ge=1, le=100, description="Issues per page (GitHub's max 100).")
    incremental_overlap: Duration = Field(
        timedelta(minutes=1),
        description="How far each poll reaches back before the previous one.",
    )
    retry: GitHubRetry = GitHubRetry()

    @field_validator("repositories")
    @classmethod
    def _valid_repositories(cls, value: list[str]) -> list[str]:
        names = [name.strip().lower() for name in value]
        for name in names:
            owner, slash, repo = name.partition("/")
            allowed = all(c.isalnum() or c in "-_." for c in owner + repo)
            if not (slash and owner and repo and allowed):
                raise ValueError(f"{name!r} is not `owner/name`")
        if len(set(names)) != len(names):
            raise ValueError("a repository is listed twice")
        # Lower-cased: GitHub names are case-insensitive, and ticket ids must not change with
        # the case someone types.
        return names

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, value: list[str]) -> list[str]:
        if any("," in label or not label.strip() for label in value):
            raise ValueError("labels are non-empty and hold no comma (GitHub's list separator)")
        return value


def ticket_mapping(repository: str) -> TicketMapping:
    """How an issue of `repository` becomes a ticket."""
    return TicketMapping(
        id=repository + "#{number}",
        title="title",
        url="html_url",
        updated_at="updated_at",
        is_open="state == 'open'",
        fields={
            "repository": f"'{repository}'",
            "number": "number",
            "state": "state",
            "state_reason": "state_reason",
            "labels": "labels[].name",
            "assignees": "assignees[].login",
            "author": "user.login",
            "milestone": "milestone.title",
        },
    )


@dataclass(frozen=True, slots=True)
class _Cached:
    etag: str
    headers: list[tuple[str, str]]
    body: bytes


class ConditionalTransport(httpx.AsyncBaseTransport):
    """Sends GETs with `If-None-Match` and turns a 304 into the kept 200 answer.

    Everything above (retries, pagination, Link headers) then sees a plain 200, while GitHub
    counts nothing against the rate limit. Only the answers `cacheable` accepts are kept, the
    least recently used dropped past `max_bytes` of bodies.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        cacheable: Callable[[httpx.Request], bool] = lambda request: True,
        max_bytes: int = CACHE_BYTES,
    ) -> None:
        self.inner = inner
        self.cacheable = cacheable
        self.max_bytes = max_bytes
        self.cache: OrderedDict[str, _Cached] = OrderedDict()
        self.size = 0
        self.not_modified = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`, conditionally when a copy of its answer is kept."""
        if request.method != "GET" or not self.cacheable(request):
            return await self.inner.handle_async_request(request)
        key = str(request.url)
        cached = self.cache.get(key)
        if cached is not None and "if-none-match" not in request.headers:
            request.headers["If-None-Match"] = cached.etag
        response = await self.inner.handle_async_request(request)
        if response.status_code == 304 and cached is not None:
            await response.aclose()
            self.cache.move_to_end(key)
            self.not_modified += 1
            # The 304's own headers are current (rate limit, date); the rest are the kept ones.
            fresh = [(n, v) for n, v in response.headers.multi_items() if n.lower() not in _HOP]
            names = {n.lower() for n, _ in fresh}
            headers = [(n, v) for n, v in cached.headers if n.lower() not in names] + fresh
            return httpx.Response(200, headers=headers, content=cached.body, request=request)
        etag = response.headers.get("etag")
        if response.status_code != 200 or not etag:
            return response
        body = await response.aread()
        await response.aclose()
        headers = [(n, v) for n, v in response.headers.multi_items() if n.lower() not in _HOP]
        self._keep(key, _Cached(etag, headers, body))
        return httpx.Response(200, headers=headers, content=body, request=request)

    def _keep(self, key: str, entry: _Cached) -> None:
        old = self.cache.pop(key, None)
        if old is not None:
            self.size -= len(old.body)
        if len(entry.body) > self.max_bytes:
            return
        self.cache[key] = entry
        self.size += len(entry.body)
        while self.size > self.max_bytes:
            _, dropped = self.cache.popitem(last=False)
            self.size -= len(dropped.body)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


def _secondary_limit(response: httpx.Response) -> float | None:
    # GitHub's secondary limits may come without any header to read: the message says it.
    text = response.content[:2000].decode("utf-8", "replace").lower()
    return SECONDARY_WAIT if any(hint in text for hint in _SECONDARY_HINTS) else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_cursor(cursor: str) -> dict[str, datetime]:
    try:
        data = json.loads(cursor)
        stamps = {str(repo): parse_timestamp(value) for repo, value in data.items()}
    except (ValueError, AttributeError):
        raise AdapterDataError(f"not a github adapter cursor: {cursor[:40]!r}") from None
    return {repo: stamp for repo, stamp in stamps.items() if stamp is not None}


class GitHubAdapter:
    """Open issues (not pull requests) of GitHub repositories."""

    name: ClassVar[str] = "github"
    Config: ClassVar[type[GitHubOptions]] = GitHubOptions

    def __init__(self, config: GitHubOptions, /) -> None:
        self.options = config
        self.mappers = {repo: RecordMapper(ticket_mapping(repo)) for repo in config.repositories}
        self.labels = set(config.labels)
        self.policy = config.retry_policy(
            first_of(retry_after_header, ratelimit_reset_header(), _secondary_limit)
        )
        self.transport = ConditionalTransport(
            httpx.AsyncHTTPTransport(retries=0),
            # A `since=` URL changes with every poll: keeping its answer would only cost memory.
            cacheable=lambda request: "since" not in request.url.params,
        )
        self.client = make_client(
            config.base_url.rstrip("/") + "/",
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {config.token.get_secret_value()}",
                "X-GitHub-Api-Version": API_VERSION,
            },
            timeout=config.timeout.total_seconds(),
            transport=self.transport,
        )

    async def check(self) -> None:
        """The token works and can read every repository (unknown ones: AdapterConfigError)."""
        for repo in self.options.repositories:
            try:
                response = await send(self.client, "GET", f"repos/{repo}", policy=self.policy)
            except AdapterConfigError as exc:
                raise AdapterConfigError(
                    f"repository {repo!r} is unknown or the token cannot see it: {exc}"
                ) from None
            try:
                has_issues = response.json().get("has_issues")
            except (ValueError, AttributeError):
                raise AdapterDataError(f"GET repos/{repo} did not answer a repository") from None
            if has_issues is False:
                raise AdapterConfigError(f"repository {repo!r} has issues disabled")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    def _issues(self, repo: str, params: dict[str, Any]) -> AsyncIterator[Any]:
        return paginate(
            self.client,
            f"repos/{repo}/issues",
            LinkHeader(),
            records=lambda body: body,
            params={"per_page": self.options.page_size, **params},
            policy=self.policy,
        )

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Every open issue of every repository, pull requests left out."""
        params: dict[str, Any] = {"state": "open", "sort": "created", "direction": "asc"}
        if self.options.labels:
            params["labels"] = ",".join(self.options.labels)
        for repo in self.options.repositories:
            position = 0
            async for record in self._issues(repo, params):
                position += 1
                if isinstance(record, dict) and "pull_request" in record:
                    continue
                yield self.mappers[repo].map(record, f"{repo} item {position}")

    async def _now(self) -> datetime:
        # /rate_limit costs no quota; its Date header is GitHub's clock.
        response = await send(self.client, "GET", "rate_limit", policy=self.policy)
        return server_time(response)

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Issues of any state updated since the cursor, per repository; None starts from now.

        The cursor is a JSON object: repository -> GitHub's clock when it was last polled. Each
        poll reads the clock first (`/rate_limit`, free) and polls from the previous time minus
        `incremental_overlap`; a repository new to the cursor starts from now.
        """
        now = await self._now()
        seen = _parse_cursor(cursor) if cursor is not None else {}
        tickets: list[Ticket] = []
        for repo in self.options.repositories:
            if repo not in seen:
                continue
            since = seen[repo] - self.options.incremental_overlap
            params = {"state": "all", "since": _iso(since), "sort": "updated", "direction": "asc"}
            async for record in self._issues(repo, params):
                if isinstance(record, dict) and "pull_request" in record:
                    continue
                ticket = self.mappers[repo].map(record, f"change in {repo}")
                # An unreadable issue is reported by the next full refresh.
                if isinstance(ticket, Ticket):
                    tickets.append(self._in_scope(ticket, record))
        state = {repo: _iso(now) for repo in self.options.repositories}
        return ChangeSet(tickets=tuple(tickets), cursor=json.dumps(state, sort_keys=True))

    def _in_scope(self, ticket: Ticket, record: dict[str, Any]) -> Ticket:
        """The ticket, closed when it lacks one of the configured labels."""
        if not self.labels or not ticket.is_open:
            return ticket
        labels = record.get("labels") or ()
        names = {label.get("name") for label in labels if isinstance(label, dict)}
        return ticket if self.labels <= names else dataclasses.replace(ticket, is_open=False)

    def _issue_path(self, ticket_id: str) -> str:
        repo, _, number = ticket_id.rpartition("#")
        known = {r.lower(): r for r in self.options.repositories}
        if repo.lower() not in known or not number.isdigit():
            raise WriteBackRejected(
                f"not an issue of the configured repositories: {ticket_id[:80]!r}"
            )
        return f"repos/{known[repo.lower()]}/issues/{number}"

    async def write_back(self, request: WriteBackRequest) -> WriteBackOutcome:
        """Close the issue as completed with an optional comment, or only comment."""
        path = self._issue_path(request.ticket_id)
        response = await write_request(self.client, "GET", path, policy=self.policy)
        if json_object(response).get("state") == "closed":
            return WriteBackOutcome.ALREADY_CLOSED
        if request.note:
            await write_request(
                self.client,
                "POST",
                f"{path}/comments",
                policy=self.policy,
                json={"body": request.note},
            )
        if request.action is WriteBackAction.COMMENT:
            return WriteBackOutcome.COMMENTED
        await write_request(
            self.client,
            "PATCH",
            path,
            policy=self.policy,
            json={"state": "closed", "state_reason": "completed"},
        )
        return WriteBackOutcome.CLOSED
