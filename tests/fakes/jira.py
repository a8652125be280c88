"""A fake Jira Cloud site: the endpoints the `jira` adapter uses, as Jira Cloud answers them.

    GET  /rest/api/3/myself             the account behind the credentials
    GET  /rest/api/3/serverInfo         `serverTime` in the account's time zone
    GET|POST /rest/api/3/search/jql     jql, fields, maxResults, nextPageToken
    GET|POST /rest/api/3/search         410 Gone (removed by Atlassian in 2025)
    GET  /rest/api/3/issue/{id}         ?fields=status (write-back's read)
    GET|POST /rest/api/3/issue/{id}/transitions   the transitions from the issue's status; make one
    POST /rest/api/3/issue/{id}/comment `{"body": <ADF document>}`, 201

Write-back, after REST v3 "Get transitions", "Transition issue" and "Add comment": transitions
are `{"transitions": [{"id", "name", "to": {"id", "name", "statusCategory": {...}}}]}`, one into
each other status (`workflow_without_done` drops those into the Done category); a transition is
`{"transition": {"id"}}` answered 204, an id not valid from the issue's status 400 with
`errorMessages`, a conflicting update 409 (`reject_writes`); a comment body must be an ADF
document (`{"type": "doc", "version": 1, ...}`) or 400; an unknown issue is 404 "Issue does not
exist or you do not have permission to see it.".

Follows developer.atlassian.com (REST v3 "Search for issues using JQL (enhanced search)",
"Rate limiting", the JQL reference for dates and fields) and the recordings in
shared/fixtures/vendor-recordings/jira: `{"issues": [...], "nextPageToken": ..., "isLast": ...}`
with no `total`, no `startAt`, and no `nextPageToken` key at all on the last page; only `id`
returned when `fields` is not given; pages capped below `maxResults` when many fields are asked
for (`page_cap`), up to 5,000 for ids only; `updated` as `2026-03-02T10:00:00.000+0100` in the
account's time zone; `statusCategory.key` new/indeterminate/done. Its JQL understands the
clauses the adapter and its tests send (`AND OR NOT`, parentheses, `= != > >= < <= in, not in,
is, is not` on project, status, statusCategory, resolution, labels, assignee, issuetype,
priority, key, id, updated, created; `ORDER BY`); a date given as a number is epoch ms, a quoted
`"yyyy-MM-dd HH:mm"` is read in the account's time zone (the trap) and dates compare at minute
precision; an unbounded query, an unknown field or an unknown value is a 400 with Jira's
`errorMessages`. Basic auth (email:API token), 401 `Client must be authenticated...` otherwise;
429 with `Retry-After`, `X-RateLimit-*` and `RateLimit-Reason`.

Not modelled: eventual consistency of search (and `reconcileIssues`), the 7-day expiry of page
tokens, `expand`, changelogs, permissions per project, text search (`~`), JQL functions other
than `currentUser()`, the points-based quotas, OAuth (gateway URLs in `self`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes import FakeServer, decode_token, encode_token

EMAIL = "ops-bot@acme.example"
TOKEN = "jira-api-token-4e7c2a9b"
ACCOUNT_ID = "712020:0c1a7e55-kit"
PROJECTS = {"OPS": ("10000", "Operations"), "ENG": ("10001", "Engineering")}
# name -> (status id, category key, category name, category id)
STATUSES = {
    "To Do": ("10000", "new", "To Do", 2),
    "In Progress": ("3", "indeterminate", "In Progress", 4),
    "In Review": ("10002", "indeterminate", "In Progress", 4),
    "Done": ("10001", "done", "Done", 3),
    "Won't Do": ("10003", "done", "Done", 3),
}
CYCLE = ("To Do", "In Progress", "In Review", "Done", "Won't Do")
PEOPLE = {
    "712020:ada": ("Ada Lovelace", "ada@acme.example"),
    "712020:alan": ("Alan Turing", None),  # email hidden by the user's privacy settings
}
TEAM_FIELD = "customfield_10010"


class JqlError(ValueError):
    """A JQL query Jira would refuse with 400."""


@dataclass
class Issue:
    """One issue, as the fake stores it."""

    id: int
    project: str
    number: int
    summary: str
    status: str
    created: datetime
    updated: datetime
    labels: list[str] = field(default_factory=list)
    assignee: str | None = None
    priority: str = "Medium"
    issuetype: str = "Task"
    duedate: str | None = None
    team: str | None = None

    @property
    def key(self) -> str:
        """e.g. OPS-12."""
        return f"{self.project}-{self.number}"

    @property
    def category(self) -> str:
        """The status category key."""
        return STATUSES[self.status][1]


class JiraFake(FakeServer):
    """A Jira site with `issues` issues in two projects, and the kit's controls."""

    listing_paths = ("/rest/api/3/search/jql",)

    def __init__(
        self,
        issues: int = 130,
        *,
        email: str = EMAIL,
        token: str = TOKEN,
        time_zone: str = "Europe/Warsaw",
        page_cap: int = 50,
    ) -> None:
        super().__init__()
        self.email = email
        self.token = token
        self.zone = ZoneInfo(time_zone)
        self.page_cap = page_cap
        self.drop_token_on_page: int | None = None
        self.workflow_without_done = False
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.issues: dict[int, Issue] = {}
        numbers = dict.fromkeys(PROJECTS, 0)
        for n in range(1, issues + 1):
            project = "ENG" if n % 7 == 0 else "OPS"
            numbers[project] += 1
            self.issues[10000 + n] = Issue(
                id=10000 + n,
                project=project,
                number=numbers[project],
                summary=f"Reconcile settlement batch {n}",
                status=CYCLE[n % len(CYCLE)],
                created=self.clock.now,
                updated=self.clock.now,
                labels=["payments"] if n % 2 else [],
                assignee=("712020:ada", "712020:alan", None)[n % 3],
                priority=("High", "Medium", "Low")[n % 3],
                duedate="2026-03-20" if n % 4 == 0 else None,
                team="kyc" if n % 2 else None,
            )

    # --- the kit's controls ------------------------------------------------------------------

    def open_ids(self) -> set[str]:
        """Ids of the issues whose status category is not Done."""
        with self.lock:
            return {str(i.id) for i in self.issues.values() if i.category != "done"}

    def change(self, ticket_id: str) -> None:
        """Edit an issue's summary now."""
        with self.lock:
            issue = self.issues[int(ticket_id)]
            issue.summary += " (updated)"
            issue.updated = self.clock.now

    def close(self, ticket_id: str) -> None:
        """Move an issue to Done now."""
        self.transition(ticket_id, "Done")

    def transition(self, ticket_id: str, status: str) -> None:
        """Give an issue a status now."""
        with self.lock:
            issue = self.issues[int(ticket_id)]
            issue.status = status
            issue.updated = self.clock.now

    # --- rendering -------------------------------------------------------------------------------

    def _time(self, moment: datetime) -> str:
        # As Jira writes it: the account's offset, without a colon.
        local = moment.astimezone(self.zone)
        millis = f"{local.microsecond // 1000:03d}"
        return local.strftime("%Y-%m-%dT%H:%M:%S.") + millis + local.strftime("%z")

    def _person(self, account_id: str | None) -> dict[str, Any] | None:
        if account_id is None:
            return None
        name, mail = PEOPLE[account_id]
        person: dict[str, Any] = {
            "self": f"{self.url}/rest/api/3/user?accountId={account_id}",
            "accountId": account_id,
            "displayName": name,
            "active": True,
            "timeZone": "Europe/Warsaw",
            "accountType": "atlassian",
        }
        if mail is not None:
            person["emailAddress"] = mail
        return person

    def _fields(self, issue: Issue) -> dict[str, Any]:
        status_id, cat_key, cat_name, cat_id = STATUSES[issue.status]
        project_id, project_name = PROJECTS[issue.project]
        return {
            "summary": issue.summary,
            "status": {
                "self": f"{self.url}/rest/api/3/status/{status_id}",
                "description": "",
                "name": issue.status,
                "id": status_id,
                "statusCategory": {
                    "self": f"{self.url}/rest/api/3/statuscategory/{cat_id}",
                    "id": cat_id,
                    "key": cat_key,
                    "colorName": {"new": "blue-gray", "done": "green"}.get(cat_key, "yellow"),
                    "name": cat_name,
                },
            },
            "priority": {"name": issue.priority, "id": "3"},
            "assignee": self._person(issue.assignee),
            "reporter": self._person("712020:ada"),
            "labels": list(issue.labels),
            "issuetype": {"id": "10003", "name": issue.issuetype, "subtask": False},
            "project": {"id": project_id, "key": issue.project, "name": project_name},
            "created": self._time(issue.created),
            "updated": self._time(issue.updated),
            "duedate": issue.duedate,
            "resolution": {"name": "Done"} if issue.category == "done" else None,
            "description": None,
            TEAM_FIELD: None if issue.team is None else {"value": issue.team, "id": "10100"},
        }

    def _render(self, issue: Issue, fields: list[str]) -> dict[str, Any]:
        if not fields:
            return {"id": str(issue.id)}  # `fields` defaults to the id only
        everything = self._fields(issue)
        if "*all" in fields or "*navigable" in fields:
            chosen = everything
        else:
            chosen = {f: everything[f] for f in fields if f in everything}
        return {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog",
            "id": str(issue.id),
            "self": f"{self.url}/rest/api/3/issue/{issue.id}",
            "key": issue.key,
            "fields": chosen,
        }

    # --- HTTP plumbing -------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {
            "date": self.clock.http_date(),
            "x-ratelimit-limit": "350",
            "x-ratelimit-remaining": "349",
            "x-ratelimit-reset": str(self.clock.epoch + 6),
            "x-arequestid": "fake",
        }

    def _json(self, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status, headers=self._headers())

    def _errors(self, status: int, *messages: str) -> JSONResponse:
        return self._json({"errorMessages": list(messages), "errors": {}}, status)

    def _refuse(self, request: Request) -> Response | None:
        if self.take_rate_limit():
            reset = (self.clock.now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%MZ")
            headers = {
                "date": self.clock.http_date(),
                "retry-after": "1",
                "x-ratelimit-limit": "350",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": reset,
                "ratelimit-reason": "jira-burst-based",
            }
            return JSONResponse({"errorMessages": ["Rate limit exceeded."]}, 429, headers=headers)
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            credentials = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            credentials = ""
        if scheme.lower() == "basic" and credentials == f"{self.email}:{self.token}":
            return None
        return PlainTextResponse(
            "Client must be authenticated to access this resource.",
            401,
            headers={
                "date": self.clock.http_date(),
                "www-authenticate": 'Basic realm="protected-by-api-token"',
                "x-seraph-loginreason": "AUTHENTICATED_FAILED",
            },
        )

    # --- endpoints -------------------------------------------------------------------------------

    async def myself(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        return self._json(
            {
                "self": f"{self.url}/rest/api/3/user?accountId={ACCOUNT_ID}",
                "accountId": ACCOUNT_ID,
                "accountType": "atlassian",
                "emailAddress": self.email,
                "displayName": "Ops Bot",
                "active": True,
                "timeZone": str(self.zone),
                "locale": "en_US",
            }
        )

    async def server_info(self, request: Request) -> Response:
        return self._json(
            {
                "baseUrl": self.url,
                "version": "1001.0.0-SNAPSHOT",
                "versionNumbers": [1001, 0, 0],
                "deploymentType": "Cloud",
                "buildNumber": 100283,
                "serverTime": self._time(self.clock.now),
                "serverTitle": "Jira",
            }
        )

    async def legacy_search(self, request: Request) -> Response:
        return self._errors(
            410,
            "The requested API has been removed. Please migrate to the /rest/api/3/search/jql "
            "API. A full migration guideline is available at "
            "https://developer.atlassian.com/changelog/#CHANGE-2046",
        )

    async def search(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if request.method == "POST":
            body = await request.json()
            jql, token = body.get("jql", ""), body.get("nextPageToken")
            fields = list(body.get("fields") or [])
            wanted = body.get("maxResults", 50)
        else:
            params = request.query_params
            jql, token = params.get("jql", ""), params.get("nextPageToken")
            fields = [f for v in params.getlist("fields") for f in v.split(",") if f]
            wanted = int(params.get("maxResults", "50"))
        page, after = 1, None
        if token is not None:
            state = decode_token(token)
            if state is None or state.get("q") != jql:
                return self._errors(400, "The provided next page token is invalid or expired.")
            page, after = state["page"], tuple(state["after"])
        if page in self.failing_pages:
            return self._errors(503, "Service unavailable, please retry.")
        try:
            query = JqlQuery.parse(jql, self)
        except JqlError as exc:
            return self._errors(400, str(exc))
        ids_only = set(fields) <= {"id", "key"}
        size = max(1, min(int(wanted), 5000 if ids_only else self.page_cap))
        with self.lock:
            found = sorted(
                ((query.sort_key(i), i) for i in self.issues.values() if query.matches(i)),
                key=lambda pair: pair[0],
            )
            if after is not None:
                found = [pair for pair in found if pair[0] > after]
            chunk = [self._render(i, fields) for _, i in found[:size]]
        answer: dict[str, Any] = {"issues": chunk}
        more = len(found) > size
        if more and page != self.drop_token_on_page:
            last = list(found[size - 1][0])
            answer["nextPageToken"] = encode_token({"q": jql, "after": last, "page": page + 1})
        answer["isLast"] = not more
        return self._json(answer)

    def _issue(self, request: Request) -> Issue | None:
        key = request.path_params["id"]
        with self.lock:
            issue = self.issues.get(int(key)) if key.isdigit() else None
        return None if issue is None or key in self.gone else issue

    def _no_issue(self) -> JSONResponse:
        return self._errors(404, "Issue does not exist or you do not have permission to see it.")

    def _status(self, name: str) -> dict[str, Any]:
        status_id, key, category, category_id = STATUSES[name]
        return {
            "id": status_id,
            "name": name,
            "statusCategory": {"id": category_id, "key": key, "name": category},
        }

    def _transitions(self, issue: Issue) -> list[dict[str, Any]]:
        return [
            {"id": str(11 + 10 * n), "name": f"Move to {name}", "to": self._status(name)}
            for n, name in enumerate(CYCLE)
            if name != issue.status
            and not (self.workflow_without_done and STATUSES[name][1] == "done")
        ]

    async def issue(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        issue = self._issue(request)
        if issue is None:
            return self._no_issue()
        with self.lock:
            fields = {"status": self._status(issue.status), "summary": issue.summary}
            return self._json({"id": str(issue.id), "key": issue.key, "fields": fields})

    async def transitions(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        issue = self._issue(request)
        if issue is None:
            return self._no_issue()
        if request.method == "GET":
            with self.lock:
                return self._json(
                    {"expand": "transitions", "transitions": self._transitions(issue)}
                )
        try:
            wanted = str((await request.json())["transition"]["id"])
        except (ValueError, KeyError, TypeError):
            return self._errors(400, "No transition specified.")
        if self.reject_writes:
            return self._errors(409, "The issue could not be updated: a conflicting update.")
        with self.lock:
            target = next((t for t in self._transitions(issue) if t["id"] == wanted), None)
            if target is None:
                return self._errors(400, f"Transition id '{wanted}' is not valid for this issue.")
            issue.status = target["to"]["name"]
            issue.updated = self.clock.now
        await self.record_write(str(issue.id), f"status:{target['to']['name']}")
        return Response(status_code=204, headers=self._headers())

    async def comment(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        issue = self._issue(request)
        if issue is None:
            return self._no_issue()
        try:
            body = (await request.json())["body"]
            assert isinstance(body, dict) and body.get("type") == "doc" and body.get("version") == 1
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._errors(400, "Comment body is not valid!")
        with self.lock:
            issue.updated = self.clock.now
            kept = self.comments.setdefault(str(issue.id), [])
            kept.append(body)
            answer = {"id": str(10000 + len(kept)), "body": body}
        await self.record_write(str(issue.id), "comment")
        return self._json(answer, 201)

    def routes(self) -> list[BaseRoute]:
        """The site's API."""
        return [
            Route("/rest/api/3/myself", self.myself),
            Route("/rest/api/3/issue/{id}", self.issue),
            Route("/rest/api/3/issue/{id}/transitions", self.transitions, methods=["GET", "POST"]),
            Route("/rest/api/3/issue/{id}/comment", self.comment, methods=["POST"]),
            Route("/rest/api/3/serverInfo", self.server_info),
            Route("/rest/api/3/search/jql", self.search, methods=["GET", "POST"]),
            Route("/rest/api/3/search", self.legacy_search, methods=["GET", "POST"]),
        ]


# --- a small JQL ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|(?P<op>!=|>=|<=|=|>|<|~|\(|\)|,)'
    r'|(?P<word>[^\s"\'(),=!<>~]+))'
)
_DATE = re.compile(r"^(\d{4})[-/](\d\d)[-/](\d\d)(?:\s+(\d\d):(\d\d))?$")
_RELATIVE = re.compile(r"^([-+]?\d+)([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_ORDERABLE = ("updated", "created", "key", "id")
_CATEGORY_NAMES = ("to do", "in progress", "done", "new", "indeterminate", "2", "3", "4")

Predicate = Callable[[Issue], bool]


@dataclass(frozen=True)
class _Tok:
    kind: str  # str | op | word
    text: str

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words


class JqlQuery:
    """A parsed JQL query: a predicate over issues and a sort order."""

    def __init__(self, predicate: Predicate, order: list[tuple[str, bool]]) -> None:
        self.predicate = predicate
        self.order = order

    @classmethod
    def parse(cls, text: str, site: JiraFake) -> JqlQuery:
        """Parse `text` for `site` (whose projects, statuses and time zone it refers to)."""
        return _Parser(text, site).query()

    def matches(self, issue: Issue) -> bool:
        """Whether the issue is selected."""
        return self.predicate(issue)

    def sort_key(self, issue: Issue) -> tuple[int, ...]:
        """A total order: the ORDER BY fields (descending ones negated), then the id."""
        key: list[int] = []
        for name, ascending in self.order:
            if name == "key":
                parts = [sorted(PROJECTS).index(issue.project), issue.number]
            elif name == "id":
                parts = [issue.id]
            else:
                parts = [int(getattr(issue, name).timestamp() * 1000)]
            key.extend(p if ascending else -p for p in parts)
        return (*key, issue.id)


class _Parser:
    def __init__(self, text: str, site: JiraFake) -> None:
        self.site = site
        self.tokens: list[_Tok] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                if text[position:].strip():
                    raise JqlError(f"Error in the JQL Query: unexpected {text[position]!r}.")
                break
            kind = match.lastgroup or "word"
            self.tokens.append(_Tok(kind, match.group(kind)))
            position = match.end()
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Tok:
        token = self.peek()
        if token is None:
            raise JqlError("Error in the JQL Query: the query ended unexpectedly.")
        self.i += 1
        return token

    def query(self) -> JqlQuery:
        predicate: Predicate | None = None
        token = self.peek()
        if token is not None and not token.is_word("order"):
            predicate = self.or_expr()
        order: list[tuple[str, bool]] = [("key", True)]
        token = self.peek()
        if token is not None and token.is_word("order"):
            self.take()
            if not self.take().is_word("by"):
                raise JqlError("Error in the JQL Query: expecting 'by' after 'order'.")
            order = []
            while True:
                name = self.take().text.lower()
                if name not in _ORDERABLE:
                    raise JqlError(f"Not able to sort using field '{name}'.")
                ascending = True
                nxt = self.peek()
                if nxt is not None and nxt.is_word("asc", "desc"):
                    ascending = self.take().text.lower() == "asc"
                order.append((name, ascending))
                nxt = self.peek()
                if nxt is None or nxt.text != ",":
                    break
                self.take()
        extra = self.peek()
        if extra is not None:
            raise JqlError(f"Error in the JQL Query: unexpected '{extra.text}'.")
        if predicate is None:
            raise JqlError(
                "Unbounded JQL queries are not allowed here. "
                "Please add a search restriction to your query."
            )
        return JqlQuery(predicate, order)

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while (token := self.peek()) is not None and token.is_word("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else lambda i: any(p(i) for p in parts)

    def and_expr(self) -> Predicate:
        parts = [self.not_expr()]
        while (token := self.peek()) is not None and token.is_word("and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else lambda i: all(p(i) for p in parts)

    def not_expr(self) -> Predicate:
        token = self.peek()
        if token is not None and token.is_word("not"):
            self.take()
            inner = self.not_expr()
            return lambda i: not inner(i)
        if token is not None and token.text == "(":
            self.take()
            inner = self.or_expr()
            if self.take().text != ")":
                raise JqlError("Error in the JQL Query: expecting ')'.")
            return inner
        return self.clause()

    def values(self) -> list[str | None]:
        token = self.take()
        if token.text == "(":
            items: list[str | None] = []
            while True:
                items.append(self.value(self.take()))
                closing = self.take()
                if closing.text == ")":
                    return items
                if closing.text != ",":
                    raise JqlError("Error in the JQL Query: expecting ',' or ')'.")
        return [self.value(token)]

    def value(self, token: _Tok) -> str | None:
        if token.kind == "str":
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        if token.is_word("empty", "null"):
            return None
        if token.text.lower() == "currentuser":
            if self.take().text != "(" or self.take().text != ")":
                raise JqlError("Error in the JQL Query: expecting '()'.")
            return ACCOUNT_ID
        return token.text

    def clause(self) -> Predicate:
        name = self.take().text.lower()
        operator = self.take()
        if operator.is_word("is", "in", "not"):
            words = [operator.text.lower()]
            nxt = self.peek()
            if words[0] in ("is", "not") and nxt is not None and nxt.is_word("not", "in"):
                words.append(self.take().text.lower())
            op = " ".join(words)
        else:
            op = operator.text
        if op not in ("=", "!=", ">", ">=", "<", "<=", "in", "not in", "is", "is not"):
            raise JqlError(f"Error in the JQL Query: the operator '{op}' is not supported here.")
        values = self.values()
        if name in ("updated", "created"):
            return self.date_clause(name, op, values)
        if op in (">", ">=", "<", "<="):
            raise JqlError(f"The operator '{op}' is not supported by the '{name}' field.")
        getter = self.getter(name, values)
        wanted = {None if v is None else v.lower() for v in values}
        negated = op in ("!=", "not in", "is not")
        return lambda issue: bool(getter(issue) & wanted) != negated

    def getter(self, name: str, values: list[str | None]) -> Callable[[Issue], set[str | None]]:
        known: dict[str, set[str]] = {
            "project": {k.lower() for k in PROJECTS}
            | {p[0] for p in PROJECTS.values()}
            | {p[1].lower() for p in PROJECTS.values()},
            "status": {s.lower() for s in STATUSES},
            "statuscategory": {*_CATEGORY_NAMES},
        }
        for value in values:
            if name in known and value is not None and value.lower() not in known[name]:
                raise JqlError(f"The value '{value}' does not exist for the field '{name}'.")

        def category(issue: Issue) -> set[str | None]:
            _, key, label, number = STATUSES[issue.status]
            return {key, label.lower(), str(number)}

        getters: dict[str, Callable[[Issue], set[str | None]]] = {
            "project": lambda i: {
                i.project.lower(),
                PROJECTS[i.project][0],
                PROJECTS[i.project][1].lower(),
            },
            "status": lambda i: {i.status.lower()},
            "statuscategory": category,
            "resolution": lambda i: {"done"} if i.category == "done" else {"unresolved", None},
            "labels": lambda i: {label.lower() for label in i.labels} or {None},
            "assignee": lambda i: {i.assignee.lower() if i.assignee else None},
            "issuetype": lambda i: {i.issuetype.lower()},
            "priority": lambda i: {i.priority.lower()},
            "key": lambda i: {i.key.lower()},
            "id": lambda i: {str(i.id)},
        }
        if name not in getters:
            raise JqlError(
                f"Field '{name}' does not exist or you do not have permission to view it."
            )
        return getters[name]

    def date_clause(self, name: str, op: str, values: list[str | None]) -> Predicate:
        if op not in ("=", "!=", ">", ">=", "<", "<=") or len(values) != 1 or values[0] is None:
            raise JqlError(f"The operator '{op}' is not supported by the '{name}' field.")
        bound = _minute(self.moment(values[0]))

        def test(issue: Issue) -> bool:
            have = _minute(getattr(issue, name))
            return {
                "=": have == bound,
                "!=": have != bound,
                ">": have > bound,
                ">=": have >= bound,
                "<": have < bound,
                "<=": have <= bound,
            }[op]

        return test

    def moment(self, text: str) -> datetime:
        if re.fullmatch(r"\d{9,}", text):
            return datetime.fromtimestamp(int(text) / 1000, UTC)  # a number: epoch ms
        relative = _RELATIVE.match(text)
        if relative:
            seconds = int(relative.group(1)) * _UNITS[relative.group(2)]
            return self.site.clock.now + timedelta(seconds=seconds)
        match = _DATE.match(text.strip())
        if match is None:
            raise JqlError(
                f"Date value '{text}' for field 'updated' is invalid. Valid formats include: "
                "'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a "
                "period format e.g. '-5d', '4w 2d'."
            )
        year, month, day, hour, minute = (int(g) if g else 0 for g in match.groups())
        # The trap: a date without a zone is the searching user's local time.
        local = datetime(year, month, day, hour, minute, tzinfo=self.site.zone)
        return local.astimezone(UTC)


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)
