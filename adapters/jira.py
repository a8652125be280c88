"""The `jira` adapter: open Jira Cloud issues, and those changed since a cursor.

Both go through the enhanced JQL search (`POST /rest/api/3/search/jql`; the old `/search` is
gone), paged with `nextPageToken` until a page has none: a short page proves nothing, and a page
that says `isLast: false` without a token fails the listing. "Open" is the configured `jql`
(default `statusCategory != Done`), within an optional `scope` (e.g. `project = OPS`).
Incremental polls ask `scope AND updated >= <epoch ms>`, from Jira's clock (`serverInfo`) at
the previous poll minus `incremental_overlap`: a number in JQL is epoch milliseconds, immune to
the trap of a quoted date read in the API user's profile time zone, and JQL compares at minute
precision, so the overlap is at least a minute.
Whether a changed issue is still open is asked of Jira with the same `jql`, so a custom
definition of open holds in polls too. Deleted issues simply vanish from search: the full
refresh closes their tasks. Auth is email + API token (HTTP Basic); 429s are waited out as
`Retry-After` (or `X-RateLimit-Reset` when none is left) says.

Write-back (an operator's DONE in Fragment): `GET /rest/api/3/issue/{id}?fields=status` first
(an issue already in the Done category is left alone), then the note as a comment (`POST
.../issue/{id}/comment`, the body in Atlassian Document Format), then the transition: `GET
.../issue/{id}/transitions` lists those available from the issue's status, and the one named
`done_transition` (by its name or its target status's name), or else the first whose target
status is in the Done category, is made with `POST .../issue/{id}/transitions`. None available,
or Jira refusing it (400, 409), is a rejected write-back. The account needs Transition Issues
and Add Comments.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

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
    CursorField,
    HttpOptions,
    first_of,
    get_json,
    make_client,
    paginate,
    ratelimit_reset_header,
    retry_after_header,
    send,
)
from adapters.mapping import RecordMapper, TicketMapping, compile_spec
from adapters.writes import json_object, write_request
from connector.values import parse_timestamp

SEARCH: Final = "rest/api/3/search/jql"
BUILTIN_FIELDS: Final = (
    "summary",
    "status",
    "priority",
    "assignee",
    "reporter",
    "labels",
    "issuetype",
    "project",
    "updated",
    "duedate",
)
# Jira returns at most 5,000 issues a page when only ids are asked for.
ID_PAGE_SIZE: Final = 1000
_ORDER_BY: Final = re.compile(r"\border\s+by\b", re.IGNORECASE)


def _jql_clause(value: str) -> str:
    if _ORDER_BY.search(value):
        raise ValueError("must not hold ORDER BY: the adapter orders the search itself")
    return value.strip()


class JiraOptions(HttpOptions):
    """Options of a `jira` source."""

    base_url: str = Field(
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="The site, e.g. https://acme.atlassian.net (browse links are built on it).",
    )
    email: str = Field(min_length=3, description="The Atlassian account the API token belongs to.")
    api_token: SecretStr = Field(description="An API token (id.atlassian.com > Security).")
    jql: str = Field(
        "statusCategory != Done",
        min_length=1,
        description="JQL that an open issue matches (no ORDER BY).",
    )
    scope: str | None = Field(
        None,
        description="JQL selecting this source's issues, e.g. `project = OPS` (no ORDER BY); "
        "incremental polls are limited to it. Unset: every issue the account can see.",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Task field name -> Jira field id, optionally with a path into its value, "
        "e.g. {team: customfield_10010.value, points: customfield_10016}.",
    )
    page_size: int = Field(100, ge=1, le=5000, description="Issues asked for per page.")
    done_transition: str | None = Field(
        None,
        min_length=1,
        description="Write-back: the transition that closes an issue, by its name or its target "
        "status's name; default: the first one leading to a status of the Done category.",
    )
    incremental_overlap: Duration = Field(
        timedelta(minutes=2),
        description="How far each poll reaches back before the previous one (JQL compares at "
        "minute precision, search lags a little: keep it over a minute).",
    )

    @field_validator("jql")
    @classmethod
    def _valid_jql(cls, value: str) -> str:
        return _jql_clause(value)

    @field_validator("scope")
    @classmethod
    def _valid_scope(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else _jql_clause(value)

    @field_validator("fields")
    @classmethod
    def _valid_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not re.match(r"^[A-Za-z0-9_]+(\.|$)", path):
                raise ValueError(f"{name}: {path!r} must start with a Jira field id")
            compile_spec(_field_spec(path))
        return value


def _field_spec(path: str) -> str:
    field_id, dot, rest = path.partition(".")
    return f'fields."{field_id}"' + (dot + rest if dot else "")


def ticket_mapping(site: str, extra: dict[str, str]) -> TicketMapping:
    """How a Jira issue becomes a ticket (open; polls decide openness separately)."""
    fields = {
        "key": "key",
        "status": "fields.status.name",
        "status_category": "fields.status.statusCategory.key",
        "priority": "fields.priority.name",
        "assignee": "fields.assignee.displayName",
        "reporter": "fields.reporter.displayName",
        "labels": "fields.labels",
        "issue_type": "fields.issuetype.name",
        "project": "fields.project.key",
    }
    fields.update({name: _field_spec(path) for name, path in extra.items()})
    return TicketMapping(
        # The id survives a move to another project; the key does not.
        id="id",
        title="fields.summary || key",
        # An issue's `self` may name the OAuth gateway, not the site people browse.
        url=site + "/browse/{key}",
        updated_at="fields.updated",
        due_at="fields.duedate",
        assignee_email="fields.assignee.emailAddress",
        fields=fields,
    )


def _next_token(body: Any) -> str | None:
    token = body.get("nextPageToken")
    if token:
        return str(token)
    if body.get("isLast") is False:
        raise AdapterDataError("a search page says isLast: false but gives no nextPageToken")
    return None


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class JiraAdapter:
    """Open Jira Cloud issues, as the configured JQL defines open."""

    name: ClassVar[str] = "jira"
    Config: ClassVar[type[JiraOptions]] = JiraOptions

    def __init__(self, config: JiraOptions, /) -> None:
        self.options = config
        site = config.base_url.rstrip("/")
        self.mapper = RecordMapper(ticket_mapping(site, config.fields))
        wanted = [*BUILTIN_FIELDS, *(p.partition(".")[0] for p in config.fields.values())]
        self.fields = list(dict.fromkeys(wanted))
        self.policy = config.retry_policy(first_of(retry_after_header, ratelimit_reset_header()))
        self.client = make_client(
            site + "/",
            auth=(config.email, config.api_token.get_secret_value()),
            timeout=config.timeout.total_seconds(),
        )

    def _where(self, *clauses: str | None) -> str:
        """The configured scope AND each clause, each in parentheses."""
        return " AND ".join(f"({c})" for c in (self.options.scope, *clauses) if c)

    def _search(self, jql: str, fields: list[str], page_size: int) -> AsyncIterator[Any]:
        return paginate(
            self.client,
            SEARCH,
            CursorField(_next_token, param="nextPageToken", where="body"),
            records=lambda body: body["issues"],
            method="POST",
            body={"jql": jql, "fields": fields, "maxResults": page_size},
            policy=self.policy,
        )

    async def check(self) -> None:
        """The token works and the JQL is accepted (an unknown project is a config error)."""
        await get_json(self.client, "rest/api/3/myself", policy=self.policy)
        body = {"jql": self._where(self.options.jql), "fields": ["id"], "maxResults": 1}
        await send(self.client, "POST", SEARCH, policy=self.policy, json=body)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Every issue matching scope AND jql, in key order."""
        jql = self._where(self.options.jql) + " ORDER BY key ASC"
        position = 0
        async for issue in self._search(jql, self.fields, self.options.page_size):
            position += 1
            yield self.mapper.map(issue, f"issue {position}")

    async def _open_ids(self, since: str) -> set[str]:
        """Ids of the issues updated `since` that are open (by the configured jql)."""
        jql = self._where(self.options.jql, since)
        found: set[str] = set()
        async for issue in self._search(jql, ["id"], ID_PAGE_SIZE):
            if isinstance(issue, dict) and issue.get("id") is not None:
                found.add(str(issue["id"]))
        return found

    async def _server_time(self) -> int:
        """Jira's clock, in epoch ms."""
        info = await get_json(self.client, "rest/api/3/serverInfo", policy=self.policy)
        now = parse_timestamp(info.get("serverTime") if isinstance(info, dict) else None)
        if now is None:
            raise AdapterDataError("GET rest/api/3/serverInfo gave no readable serverTime")
        return _epoch_ms(now)

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Issues updated since the cursor (Jira's clock, epoch ms); None starts from now.

        Each poll reads Jira's clock first and returns it as the next cursor: the cursor moves
        on even when nothing changed, and the overlap covers what search had not yet indexed.
        """
        now = await self._server_time()
        if cursor is None:
            return ChangeSet(tickets=(), cursor=str(now))
        try:
            previous = int(cursor)
        except ValueError:
            raise AdapterDataError(f"not a jira adapter cursor: {cursor[:40]!r}") from None
        overlap = int(self.options.incremental_overlap.total_seconds() * 1000)
        since = f"updated >= {previous - overlap}"
        changed: list[Ticket] = []
        async for issue in self._search(
            self._where(since) + " ORDER BY updated ASC", self.fields, self.options.page_size
        ):
            ticket = self.mapper.map(issue, "changed issue")
            # An unreadable issue is reported by the next full refresh.
            if isinstance(ticket, Ticket):
                changed.append(ticket)
        # Asked after the changes: an issue closed in between is reported as it is now.
        still_open = await self._open_ids(since) if changed else set()
        return ChangeSet(tickets=tuple(_with_openness(changed, still_open)), cursor=str(now))

    async def write_back(self, request: WriteBackRequest) -> WriteBackOutcome:
        """Transition the issue to Done with an optional comment, or only comment."""
        if not request.ticket_id.isdigit():
            raise WriteBackRejected(f"not a Jira issue id: {request.ticket_id[:40]!r}")
        issue = f"rest/api/3/issue/{request.ticket_id}"
        response = await write_request(
            self.client, "GET", issue, policy=self.policy, params={"fields": "status"}
        )
        status = json_object(response, "fields").get("status")
        if _category(status) == "done":
            return WriteBackOutcome.ALREADY_CLOSED
        transition = None
        if request.action is WriteBackAction.CLOSE:
            response = await write_request(
                self.client, "GET", f"{issue}/transitions", policy=self.policy
            )
            transition = _pick_transition(
                json_object(response).get("transitions"), self.options.done_transition
            )
            if transition is None:
                name = status.get("name") if isinstance(status, dict) else None
                wanted = self.options.done_transition or "any into the Done category"
                raise WriteBackRejected(
                    f"Jira issue {request.ticket_id} in status {name!r} has no transition "
                    f"{wanted!r}: set `done_transition`"
                )
        if request.note:
            await write_request(
                self.client,
                "POST",
                f"{issue}/comment",
                policy=self.policy,
                json={"body": _adf(request.note)},
            )
        if transition is None:
            return WriteBackOutcome.COMMENTED
        try:
            await write_request(
                self.client,
                "POST",
                f"{issue}/transitions",
                policy=self.policy,
                json={"transition": {"id": transition}},
            )
        except AdapterConfigError as exc:
            # Jira answers 400 for a transition that is not (or no longer) valid for the issue.
            if exc.status == 400:
                raise WriteBackRejected(str(exc)) from None
            raise
        return WriteBackOutcome.CLOSED


def _with_openness(tickets: Iterable[Ticket], open_ids: set[str]) -> list[Ticket]:
    return [dataclasses.replace(t, is_open=t.id in open_ids) for t in tickets]


def _adf(text: str) -> dict[str, Any]:
    """A plain-text note as an Atlassian Document Format document (API v3 comment bodies)."""
    paragraphs = [
        {"type": "paragraph", "content": [{"type": "text", "text": line}]}
        if line
        else {"type": "paragraph", "content": []}
        for line in text.split("\n")
    ]
    return {"type": "doc", "version": 1, "content": paragraphs}


def _category(status: Any) -> str:
    category = status.get("statusCategory") if isinstance(status, dict) else None
    return str(category.get("key", "")) if isinstance(category, dict) else ""


def _pick_transition(transitions: Any, wanted: str | None) -> str | None:
    """The id of the transition to make: `wanted` by name, or the first into a Done status."""
    for transition in transitions if isinstance(transitions, list) else []:
        if not isinstance(transition, dict) or "id" not in transition:
            continue
        target = transition.get("to")
        if not isinstance(target, dict):
            target = {}
        if wanted is not None:
            names = {str(transition.get("name", "")).lower(), str(target.get("name", "")).lower()}
            if wanted.lower() in names:
                return str(transition["id"])
        elif _category(target) == "done":
            return str(transition["id"])
    return None
