"""A fake GitHub REST API: the endpoints the `github` adapter uses, as api.github.com answers.

    GET /repos/{owner}/{repo}                 the repository (404 when unknown or not visible)
    GET /repos/{owner}/{repo}/issues          state, labels, sort, direction, since, per_page
    GET /repositories/{id}/issues             the same, as the `Link` next URLs name it
    GET /rate_limit                           the quota (costs nothing)
    GET/PATCH /repos/{owner}/{repo}/issues/{n}   one issue; `{"state", "state_reason"}` (write-back)
    POST /repos/{owner}/{repo}/issues/{n}/comments   `{"body"}`, 201 with the comment

"Update an issue" and "Create an issue comment" (docs.github.com): PATCH answers 200 with the
issue, `state` open|closed and `state_reason` completed|not_planned|reopened|null, anything
else 422 "Validation Failed" with `errors`; a comment is 201; an unknown issue 404 "Not Found",
issues disabled 410.

Follows docs.github.com ("List repository issues", "Using pagination in the REST API", "Best
practices" on conditional requests, "Rate limits for the REST API", "Troubleshooting") and the
recordings in shared/fixtures/vendor-recordings/github: pull requests inside the issue list
(`pull_request` key, numbers shared with issues); `Link` next URLs that move to
`/repositories/{id}/issues` with an opaque `after=` cursor and `page=`, no `rel="last"`, a last
page whose `Link` has no `rel="next"`, no `Link` at all for a single page; `per_page` capped at
100; `since` as "updated at or after"; weak `W/"…"` ETags, `If-None-Match` compared weakly and
answered 304 with the strong form, an empty body and fresh rate-limit headers, not counted
against the quota; `x-ratelimit-*` headers (reset in epoch seconds) on every answer; the
primary limit as 403 with `x-ratelimit-remaining: 0`, the secondary one as 403 or 429 with
"You have exceeded a secondary rate limit" and (optionally) `retry-after`, without
`x-ratelimit-*`; 401 "Bad credentials"; 410 for a repository with issues disabled.

Not modelled: GitHub's caching (`cache-control: max-age=60`, so an edit may take a minute to
show), deleted and transferred issues (they vanish; nothing here removes one), `Last-Modified`
and `If-Modified-Since`, the quota itself (only `remaining`, counted, never enforced), the
points and concurrency behind secondary limits, token scopes and fine-grained permissions,
`sort=comments`, `assignee`/`creator`/`milestone` filters, issue `type`, GraphQL.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes import FakeServer, decode_token, encode_token

TOKEN = "ghp_fakeToken7c21d9e0b4a5"
REPOSITORIES = {"acme/app": 1224437532, "acme/ops": 515435940}
DOCS = "https://docs.github.com/rest"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class GitHubFake(FakeServer):
    """Repositories of issues and pull requests, and the kit's controls."""

    def __init__(
        self,
        items: int = 60,
        *,
        token: str = TOKEN,
        repositories: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.token = token
        self.repo_ids = dict(repositories or REPOSITORIES)
        self.has_issues = dict.fromkeys(self.repo_ids, True)
        self.remaining = 5000
        self.secondary: list[tuple[int, str | None]] = []
        self.items: dict[str, dict[int, dict[str, Any]]] = {}
        for repo in self.repo_ids:
            self.items[repo] = {n: self._record(repo, n) for n in range(1, items + 1)}
        self.listing_paths = tuple(
            p
            for repo, rid in self.repo_ids.items()
            for p in (f"/repos/{repo}/issues", f"/repositories/{rid}/issues")
        )

    # --- data ---------------------------------------------------------------------------------

    def _record(self, repo: str, n: int) -> dict[str, Any]:
        api = f"https://api.github.com/repos/{repo}"
        is_pr = n % 4 == 0
        closed = n % 5 == 0
        labels = (["bug"] if n % 2 else []) + (["ops"] if n % 3 == 0 else [])
        stamp = _stamp(self.clock.now)
        record: dict[str, Any] = {
            "url": f"{api}/issues/{n}",
            "repository_url": api,
            "labels_url": f"{api}/issues/{n}/labels{{/name}}",
            "comments_url": f"{api}/issues/{n}/comments",
            "events_url": f"{api}/issues/{n}/events",
            "html_url": f"https://github.com/{repo}/{'pull' if is_pr else 'issues'}/{n}",
            "id": 4349344000 + n,
            "node_id": f"I_kwDOSPtvHM8AAAABAz{n:05d}",
            "number": n,
            "title": f"Settlement file {n} rejected by the bank",
            "user": {"login": "ops-bot[bot]", "id": 125632594, "type": "Bot"},
            "labels": [
                {"id": 10819384900 + i, "name": name, "color": "a2eeef", "default": False}
                for i, name in enumerate(labels)
            ],
            "state": "closed" if closed else "open",
            "locked": False,
            "assignee": {"login": "octocat", "id": 1} if n % 3 == 1 else None,
            "assignees": [{"login": "octocat", "id": 1}] if n % 3 == 1 else [],
            "milestone": {"title": "March close", "number": 1} if n % 6 == 1 else None,
            "comments": n % 4,
            "created_at": stamp,
            "updated_at": stamp,
            "closed_at": stamp if closed else None,
            "author_association": "OWNER",
            "active_lock_reason": None,
            "sub_issues_summary": {"total": 0, "completed": 0, "percent_completed": 0},
            "body": "The bank rejected the settlement file.",
            "closed_by": None,
            "reactions": {"total_count": 0},
            "timeline_url": f"{api}/issues/{n}/timeline",
            "performed_via_github_app": None,
            "state_reason": ("completed" if n % 2 else "not_planned") if closed else None,
        }
        if is_pr:
            record["draft"] = False
            record["pull_request"] = {
                "url": f"{api}/pulls/{n}",
                "html_url": f"https://github.com/{repo}/pull/{n}",
                "diff_url": f"https://github.com/{repo}/pull/{n}.diff",
                "patch_url": f"https://github.com/{repo}/pull/{n}.patch",
                "merged_at": None,
            }
        return record

    def _item(self, ticket_id: str) -> dict[str, Any]:
        repo, _, number = ticket_id.partition("#")
        return self.items[repo][int(number)]

    def open_ids(self) -> set[str]:
        """`owner/name#N` of the open issues (not pull requests)."""
        with self.lock:
            return {
                f"{repo}#{n}"
                for repo, items in self.items.items()
                for n, item in items.items()
                if item["state"] == "open" and "pull_request" not in item
            }

    def change(self, ticket_id: str) -> None:
        """Edit an issue's title now."""
        with self.lock:
            item = self._item(ticket_id)
            item["title"] += " (updated)"
            item["updated_at"] = _stamp(self.clock.now)

    def close(self, ticket_id: str, reason: str = "completed") -> None:
        """Close an issue now."""
        with self.lock:
            item = self._item(ticket_id)
            item.update(state="closed", state_reason=reason, closed_at=_stamp(self.clock.now))
            item["updated_at"] = _stamp(self.clock.now)

    def relabel(self, ticket_id: str, labels: list[str]) -> None:
        """Set an issue's labels now."""
        with self.lock:
            item = self._item(ticket_id)
            item["labels"] = [{"id": 1, "name": name, "default": False} for name in labels]
            item["updated_at"] = _stamp(self.clock.now)

    def secondary_limit_next(
        self, count: int, *, status: int = 403, retry_after: str | None = "1"
    ) -> None:
        """Answer the next `count` requests with a secondary rate limit."""
        with self.lock:
            self.secondary = [(status, retry_after)] * count

    # --- HTTP plumbing -------------------------------------------------------------------------

    def _headers(self, remaining: int | None = None) -> dict[str, str]:
        left = self.remaining if remaining is None else remaining
        return {
            "date": self.clock.http_date(),
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": str(left),
            "x-ratelimit-used": str(5000 - left),
            "x-ratelimit-reset": str(self.clock.epoch + 3600),
            "x-ratelimit-resource": "core",
            "x-github-api-version-selected": "2022-11-28",
            "x-github-media-type": "github.v3; format=json",
        }

    def _message(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        body = {"message": message, "documentation_url": DOCS, "status": str(status)}
        return JSONResponse(
            body, status, headers=headers if headers is not None else self._headers()
        )

    def _refuse(self, request: Request) -> Response | None:
        """A rate-limit or credentials answer instead of the endpoint's, counting the request."""
        with self.lock:
            if self.secondary:
                status, retry_after = self.secondary.pop(0)
                headers = {"date": self.clock.http_date()}
                if retry_after is not None:
                    headers["retry-after"] = retry_after
                text = (
                    "You have exceeded a secondary rate limit. Please wait a few minutes before "
                    "you try again. If you reach out to GitHub Support for help, please include "
                    "the request ID 61F2:15283B:1620217B."
                )
                return self._message(status, text, headers)
            if self.take_rate_limit():
                headers = {
                    **self._headers(remaining=0),
                    "x-ratelimit-reset": str(self.clock.epoch + 1),
                }
                return self._message(403, "API rate limit exceeded for user ID 1.", headers)
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if not value:
            return self._message(404, "Not Found")  # private repositories hide from strangers
        if scheme.lower() not in ("bearer", "token") or value != self.token:
            return self._message(401, "Bad credentials", {"date": self.clock.http_date()})
        return None

    def _conditional(self, request: Request, body: Any, link: str | None = None) -> Response:
        """200 with a weak ETag, or 304 when `If-None-Match` names it (not counted)."""
        content = json.dumps(body, separators=(",", ":")).encode()
        digest = hashlib.sha256(content + (link or "").encode()).hexdigest()
        tag = f'"{digest}"'
        wanted = request.headers.get("if-none-match", "")
        tags = {t.strip().removeprefix("W/") for t in wanted.split(",") if t.strip()}
        if tag in tags or "*" in tags:
            # As recorded: fresh rate-limit headers, the strong form of the weak tag, no body;
            # and here no Link either, so a client must reuse the one it kept.
            return Response(status_code=304, headers={**self._headers(), "etag": tag})
        with self.lock:
            self.remaining -= 1
            headers = {**self._headers(), "etag": f"W/{tag}"}
        if link is not None:
            headers["link"] = link
        return Response(content, 200, headers=headers, media_type="application/json; charset=utf-8")

    # --- endpoints -----------------------------------------------------------------------------

    async def repository(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        repo = f"{request.path_params['owner']}/{request.path_params['repo']}".lower()
        if repo not in self.repo_ids:
            return self._message(404, "Not Found")
        owner, name = repo.split("/")
        body = {
            "id": self.repo_ids[repo],
            "name": name,
            "full_name": repo,
            "private": True,
            "owner": {"login": owner},
            "html_url": f"https://github.com/{repo}",
            "has_issues": self.has_issues[repo],
            "open_issues_count": len(self.open_ids()),
        }
        return self._conditional(request, body)

    async def rate_limit(self, request: Request) -> Response:
        core = {"limit": 5000, "remaining": self.remaining, "reset": self.clock.epoch + 3600}
        return JSONResponse({"resources": {"core": core}, "rate": core}, headers=self._headers())

    async def issues(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        params = request.query_params
        if "rid" in request.path_params:
            by_id = {rid: repo for repo, rid in self.repo_ids.items()}
            found = by_id.get(int(request.path_params["rid"]))
        else:
            found = f"{request.path_params['owner']}/{request.path_params['repo']}".lower()
        if found is None or found not in self.repo_ids:
            return self._message(404, "Not Found")
        repo = found
        if not self.has_issues[repo]:
            return self._message(410, "Issues are disabled for this repo")
        state = params.get("state", "open")
        sort = params.get("sort", "created")
        direction = params.get("direction", "desc")
        if state not in ("open", "closed", "all") or sort not in ("created", "updated"):
            return self._message(422, "Validation Failed")
        if direction not in ("asc", "desc"):
            return self._message(422, "Validation Failed")
        since = params.get("since")
        try:
            since_at = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        except ValueError:
            return self._message(422, "Validation Failed")
        labels = {x for x in params.get("labels", "").split(",") if x}
        per_page = min(int(params.get("per_page", "30")), 100)
        page = int(params.get("page", "1"))
        if page in self.failing_pages:
            return self._message(503, "Service Unavailable")
        with self.lock:
            selected = [
                dict(item)
                for item in self.items[repo].values()
                if (state == "all" or item["state"] == state)
                and labels <= {label["name"] for label in item["labels"]}
                and (since_at is None or _time(item["updated_at"]) >= since_at)
            ]

        def key(item: dict[str, Any]) -> list[Any]:
            return [item[f"{sort}_at"], item["number"]]

        selected.sort(key=key, reverse=direction == "desc")
        after = params.get("after")
        if after is not None:
            position = decode_token(after)
            if position is None:
                return self._message(422, "Validation Failed")
            mark = position["k"]
            selected = [
                i for i in selected if (key(i) > mark if direction == "asc" else key(i) < mark)
            ]
        else:
            selected = selected[(page - 1) * per_page :]
        chunk = selected[:per_page]
        base = f"{self.url}/repositories/{self.repo_ids[repo]}/issues"
        query = {k: v for k, v in params.items() if k not in ("after", "page")}
        link = None
        if len(selected) > per_page:
            following = {**query, "after": encode_token({"k": key(chunk[-1])}), "page": page + 1}
            link = f'<{base}?{urlencode(following)}>; rel="next"'
        elif page > 1:
            # A last page: Link present, without rel="next" (and without rel="last").
            link = f'<{base}?{urlencode(query)}>; rel="first"'
        return self._conditional(request, chunk, link)

    def _issue(self, request: Request) -> tuple[str, dict[str, Any] | None]:
        repo = f"{request.path_params['owner']}/{request.path_params['repo']}".lower()
        number = request.path_params["number"]
        ticket_id = f"{repo}#{number}"
        with self.lock:
            item = self.items.get(repo, {}).get(number)
        if item is None or "pull_request" in item or ticket_id in self.gone:
            return ticket_id, None
        return ticket_id, item

    def _invalid(self, field: str) -> Response:
        body = {
            "message": "Validation Failed",
            "errors": [{"resource": "Issue", "field": field, "code": "invalid"}],
            "documentation_url": f"{DOCS}/issues/issues#update-an-issue",
            "status": "422",
        }
        return JSONResponse(body, 422, headers=self._headers())

    async def issue(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        ticket_id, item = self._issue(request)
        if item is None:
            return self._message(404, "Not Found")
        if request.method == "GET":
            with self.lock:
                return JSONResponse(dict(item), headers=self._headers())
        try:
            change = await request.json()
            assert isinstance(change, dict)
        except (ValueError, AssertionError):
            return self._message(400, "Problems parsing JSON")
        state = change.get("state", item["state"])
        reason = change.get("state_reason")
        if self.reject_writes or state not in ("open", "closed"):
            return self._invalid("state")
        if reason not in (None, "completed", "not_planned", "reopened"):
            return self._invalid("state_reason")
        with self.lock:
            stamp = _stamp(self.clock.now)
            if state == "closed" and item["state"] != "closed":
                item.update(state="closed", closed_at=stamp, state_reason=reason or "completed")
            elif state == "open":
                item.update(state="open", closed_at=None, state_reason="reopened")
            item["updated_at"] = stamp
            answer = dict(item)
        await self.record_write(ticket_id, f"state:{state}")
        return JSONResponse(answer, headers=self._headers())

    async def comment(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        ticket_id, item = self._issue(request)
        if item is None:
            return self._message(404, "Not Found")
        try:
            body = (await request.json())["body"]
            assert isinstance(body, str) and body
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._invalid("body")
        with self.lock:
            item["comments"] += 1
            item.setdefault("comment_bodies", []).append(body)
            item["updated_at"] = _stamp(self.clock.now)
            comment = {"id": 1_000_000 + len(self.applied), "body": body, "user": {"login": "x"}}
        await self.record_write(ticket_id, "comment")
        return JSONResponse(comment, 201, headers=self._headers())

    def routes(self) -> list[BaseRoute]:
        """The REST API."""
        return [
            Route(
                "/repos/{owner}/{repo}/issues/{number:int}", self.issue, methods=["GET", "PATCH"]
            ),
            Route(
                "/repos/{owner}/{repo}/issues/{number:int}/comments", self.comment, methods=["POST"]
            ),
            Route("/rate_limit", self.rate_limit),
            Route("/repos/{owner}/{repo}", self.repository),
            Route("/repos/{owner}/{repo}/issues", self.issues),
            Route("/repositories/{rid:int}/issues", self.issues),
        ]


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
