"""The async Fragment API client: auth, pacing, retries, paging and batching behind one seam.

Every request goes through `_send`: it takes a token from the pacer, sends through one injectable
httpx transport, retries 429/5xx and network errors with stamina (Retry-After honoured, clamped
to the deadline; exponential backoff with jitter otherwise) and translates whatever is left into
the `FragmentError` tree. Nothing above this module sees httpx. Shapes follow
`shared/fragment-api.md`; where the API is silent the client is defensive: it filters listings
again on its side, de-duplicates by uid, stops on a repeated cursor and restarts an expired one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

import httpx
import stamina
import structlog

from connector import __version__
from connector.clock import SYSTEM_CLOCK, Clock
from connector.errors import (
    FragmentAuthError,
    FragmentError,
    FragmentFilterIgnored,
    FragmentNetworkError,
    FragmentPayloadTooLarge,
    FragmentProtocolError,
    FragmentRateLimited,
    FragmentServerError,
    FragmentValidationError,
)
from connector.fragment.pacing import Pacer, TokenBucket
from connector.models import JSONValue, Task, TaskStatus
from connector.values import (
    compact,
    format_timestamp,
    parse_http_date,
    parse_retry_after,
    parse_timestamp,
)

log = structlog.get_logger(__name__)

USER_AGENT: Final = f"fragment-connector/{__version__}"
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER: Final = 60.0
MAX_CURSOR_RESTARTS: Final = 3
MAX_ERROR_TEXT: Final = 300


@dataclass
class RequestStats:
    """Requests sent, by endpoint and outcome (`"GET /tasks 200"`), retries included."""

    counts: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    def record(self, method: str, endpoint: str, outcome: str) -> None:
        """Count one request."""
        self.counts[f"{method} {endpoint} {outcome}"] += 1

    @property
    def total(self) -> int:
        """All requests sent."""
        return sum(self.counts.values())

    @staticmethod
    def reads_in(counts: Mapping[str, int]) -> int:
        """How many of these counted requests only read (listings, look-ups, the account)."""
        return sum(n for key, n in counts.items() if key.startswith(("GET ", "POST /tasks/query")))


class RequestListener(Protocol):
    """Told of every request attempt and retry (the daemon's metrics implement it)."""

    def record_request(self, method: str, endpoint: str, outcome: str) -> None:
        """One attempt ended with `outcome` (a status code or an error name)."""

    def record_retry(self) -> None:
        """One attempt is about to be retried."""


class _RetryableStatus(Exception):
    """A 429/5xx answer, raised inside the retry loop so stamina can decide to try again."""

    def __init__(self, response: httpx.Response, retry_after: float | None, *, now: float) -> None:
        # The message is what stamina's retry log shows.
        request = response.request
        super().__init__(f"{request.method} {request.url.path} answered {response.status_code}")
        self.response = response
        self.retry_after = retry_after
        # The wait the server asked for, uncapped; and the time left when it was too long.
        self.asked_wait = parse_retry_after(response.headers.get("Retry-After"), now=now)
        self.refused_wait: float | None = None


class _RetryableTransport(Exception):
    """A network error inside the retry loop."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(type(error).__name__)
        self.error = error


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date measured from
    the Unix time `now`), capped at 60 s."""
    seconds = parse_retry_after(value, now=now)
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER)


def _retry_hook(clock: Clock, deadline: float) -> Callable[[Exception], bool | float]:
    """stamina's `on=` for one logical request: retry while `deadline` (on `clock`) is ahead.

    stamina's own `timeout` reads the process's clock; deciding here keeps the deadline on the
    injected one, which is also the clock stamina's sleeps run on by default (the loop's).
    """

    def decide(error: Exception) -> bool | float:
        if not isinstance(error, _RetryableStatus | _RetryableTransport):
            return False
        left = deadline - clock.monotonic()
        if isinstance(error, _RetryableStatus) and error.retry_after is not None:
            # A float overrides stamina's backoff: that is how Retry-After is honoured. stamina
            # does not cap it, so clamp it to what is left of the deadline here.
            if error.asked_wait is not None and error.asked_wait > left:
                # The server will refuse any retry before the deadline: give up now, say why.
                error.refused_wait = left
                return False
            return max(0.0, min(error.retry_after, left))
        return left > 0

    return decide


def _error_detail(response: httpx.Response) -> tuple[str, dict[int, str]]:
    """The API's error message, and per-item messages of a batch 422 (index -> message)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return (text[:MAX_ERROR_TEXT] or response.reason_phrase), {}
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail[:MAX_ERROR_TEXT], {}
    items: dict[int, str] = {}
    messages: list[str] = []
    if isinstance(detail, list):
        for entry in detail:
            if not isinstance(entry, dict):
                messages.append(str(entry)[:MAX_ERROR_TEXT])
                continue
            loc = entry.get("loc") or []
            msg = str(entry.get("msg", "invalid"))[:MAX_ERROR_TEXT]
            where = ".".join(str(p) for p in loc)
            messages.append(f"{where}: {msg}" if where else msg)
            if len(loc) >= 3 and loc[0] == "body" and loc[1] == "items" and isinstance(loc[2], int):
                rest = ".".join(str(p) for p in loc[3:])
                items.setdefault(loc[2], f"{rest}: {msg}" if rest else msg)
    else:
        messages.append(json.dumps(detail)[:MAX_ERROR_TEXT])
    return "; ".join(messages[:10]) or response.reason_phrase, items


def _raise_for_status(method: str, endpoint: str, response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    message, items = _error_detail(response)
    text = f"{method} {endpoint} answered {status}: {message}"
    if status == 401:
        raise FragmentAuthError(f"Fragment refused the token (401): {message}", status=status)
    if status == 403:
        raise FragmentAuthError(f"Fragment denied access (403): {message}", status=status)
    if status == 413:
        size = len(response.request.content)
        raise FragmentPayloadTooLarge(
            f"{method} {endpoint} answered 413: a {size}-byte body is over the limit of Fragment "
            "or a proxy before it",
            status=status,
        )
    if status in (400, 404, 409, 422):
        raise FragmentValidationError(text, status=status, item_errors=items)
    if status == 429:
        raise FragmentRateLimited(text, status=status)
    if status >= 500:
        raise FragmentServerError(text, status=status)
    raise FragmentError(text, status=status)


def parse_task(data: object) -> Task:
    """A Task from one item of a Fragment answer; FragmentProtocolError when it is not one."""
    if not isinstance(data, dict):
        raise FragmentProtocolError(f"expected a task object, got {type(data).__name__}")
    uid = data.get("uid")
    fields = data.get("fields")
    try:
        status = TaskStatus(str(data.get("status")))
    except ValueError:
        raise FragmentProtocolError(
            f"task {uid!r} has an unknown status {data.get('status')!r}"
        ) from None
    if not isinstance(uid, str) or not isinstance(fields, dict):
        raise FragmentProtocolError(f"task {uid!r} lacks a uid or a fields object")
    return Task(
        uid=uid,
        status=status,
        fields=compact(fields),
        due_at=parse_timestamp(data.get("due_at")),
        updated_at=parse_timestamp(data.get("updated_at")),
        done_at=parse_timestamp(data.get("done_at")),
    )


def _items(body: object, what: str) -> list[Task]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise FragmentProtocolError(f"{what}: expected an object with an 'items' list")
    return [parse_task(item) for item in body["items"]]


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """A batch write's 200 answer: the tasks it returned, and the items it says failed.

    `errors` maps a uid (or `#<index>` of the item sent) to a message, from an `errors` list in
    the answer, if the server sends one (its shape is not documented: read defensively). The
    caller checks every item sent against both; a 200 alone proves nothing about one item.
    """

    tasks: list[Task]
    errors: dict[str, str] = field(default_factory=dict)


def _batch_answer(body: object, what: str) -> BatchAnswer:
    tasks = _items(body, what)
    errors: dict[str, str] = {}
    raw = body.get("errors") if isinstance(body, dict) else None
    for entry in raw if isinstance(raw, list) else ():
        if not isinstance(entry, dict):
            continue
        message = next(
            (str(entry[k]) for k in ("msg", "message", "detail", "error") if k in entry),
            "refused",
        )[:MAX_ERROR_TEXT]
        uid, index, loc = entry.get("uid"), entry.get("index"), entry.get("loc")
        if index is None and isinstance(loc, list) and len(loc) >= 3 and loc[1] == "items":
            index = loc[2]
        if isinstance(uid, str):
            errors[uid] = message
        elif isinstance(index, int) and not isinstance(index, bool):
            errors[f"#{index}"] = message
    return BatchAnswer(tasks, errors)


def _matches(task: Task, statuses: Sequence[TaskStatus], fields: Mapping[str, str]) -> bool:
    if statuses and task.status not in statuses:
        return False
    return all(str(task.fields.get(key)) == value for key, value in fields.items())


class TaskPage(list[Task]):
    """One page of a listing, and when Fragment answered it in its own clock (None if unsaid)."""

    def __init__(self, tasks: Iterable[Task] = (), server_date: datetime | None = None) -> None:
        super().__init__(tasks)
        self.server_date = server_date


class _ListingGuard:
    """Ends a listing that never ends: fresh cursors forever would burn the account's budget.

    A page with a next cursor must bring a task not listed before; and the pages may not exceed
    what `meta.total_count` (documented) allows, with a margin for tasks created meanwhile.
    """

    def __init__(self) -> None:
        self.listed: set[str] = set()
        self.pages = 0
        self.total: int | None = None

    def check(self, items: list[Task], meta: Mapping[str, Any]) -> None:
        """Called for each page that has a next cursor."""
        self.pages += 1
        new = {task.uid for task in items} - self.listed
        if not new:
            raise FragmentProtocolError(
                f"GET /tasks page {self.pages} brought no task not already listed, yet gave "
                "another cursor: the listing was stopped (it would never end)"
            )
        self.listed |= new
        total = meta.get("total_count")
        if self.total is None and isinstance(total, int) and total >= 0:
            self.total = total
        if self.total is not None:
            limit = 2 * self.total + 200
            if len(self.listed) > limit:
                raise FragmentProtocolError(
                    f"GET /tasks listed {len(self.listed)} tasks where meta.total_count said "
                    f"{self.total}: the listing was stopped (it would never end)"
                )


class FragmentClient:
    """One connection to the Fragment API, paced and retried; use as an async context manager."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        requests_per_minute: float = 60.0,
        burst: int = 5,
        timeout: float = 30.0,
        retry_deadline: float = 120.0,
        page_size: int = 100,
        max_attempts: int = 10,
        listener: RequestListener | None = None,
        pacer: Pacer | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """`pacer` replaces the local token bucket (`requests_per_minute`, `burst`): one budget
        shared by the processes that use the same account. `clock` times the deadline, the
        bucket and Retry-After dates (stamina's own sleeps run on the event loop's clock, which
        the default `clock` reads)."""
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport or httpx.AsyncHTTPTransport(retries=0),
        )
        self.pacer: Pacer = pacer or TokenBucket(requests_per_minute, burst=burst, clock=clock)
        self._clock = clock
        self.stats = RequestStats()
        self._deadline = retry_deadline
        self._page_size = page_size
        self._max_attempts = max_attempts
        self._plain_listing = False
        self._listener = listener

    async def __aenter__(self) -> FragmentClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: Sequence[tuple[str, str]] | None = None,
        body: JSONValue = None,
    ) -> Any:
        """Send one logical request (retried as needed) and return its decoded JSON body."""
        body, _ = await self._send_dated(method, path, endpoint=endpoint, params=params, body=body)
        return body

    async def _send_dated(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: Sequence[tuple[str, str]] | None = None,
        body: JSONValue = None,
    ) -> tuple[Any, datetime | None]:
        """`_send`, with the moment in Fragment's clock its answer was made (its `Date` header)."""
        deadline = self._clock.monotonic() + self._deadline
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            async for attempt in stamina.retry_context(
                on=_retry_hook(self._clock, deadline),
                attempts=self._max_attempts,
                timeout=self._deadline,
                wait_initial=0.5,
                wait_max=MAX_RETRY_AFTER,
                wait_jitter=1.0,
            ):
                with attempt:
                    if attempt.num > 1:
                        self.stats.retries += 1
                        if self._listener is not None:
                            self._listener.record_retry()
                    response = await self._attempt(method, path, endpoint, params, content, headers)
        except _RetryableStatus as exc:
            if exc.refused_wait is not None and exc.asked_wait is not None:
                try:
                    _raise_for_status(method, endpoint, exc.response)
                except FragmentError as error:
                    raise type(error)(
                        f"{error} (Retry-After asked for {exc.asked_wait:.0f}s, more than the "
                        f"{max(0.0, exc.refused_wait):.0f}s left of fragment.retry_deadline: "
                        "not retried)",
                        status=error.status,
                    ) from None
            _raise_for_status(method, endpoint, exc.response)
            raise AssertionError("unreachable") from exc  # pragma: no cover
        except _RetryableTransport as exc:
            raise FragmentNetworkError(
                f"{method} {endpoint} failed: {type(exc.error).__name__}: {exc.error}"
            ) from exc.error
        _raise_for_status(method, endpoint, response)
        try:
            return response.json(), parse_http_date(response.headers.get("Date"))
        except ValueError:
            snippet = response.text[:80].replace("\n", " ")
            raise FragmentProtocolError(
                f"{method} {endpoint} answered {response.status_code} "
                f"with a body that is not JSON: {snippet!r}"
            ) from None

    async def _attempt(
        self,
        method: str,
        path: str,
        endpoint: str,
        params: Sequence[tuple[str, str]] | None,
        content: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        await self.pacer.acquire()
        try:
            response = await self._http.request(
                method, path, params=list(params or ()), content=content, headers=headers
            )
            await response.aread()
        except httpx.TransportError as exc:
            self._record(method, endpoint, type(exc).__name__)
            raise _RetryableTransport(exc) from exc
        self._record(method, endpoint, str(response.status_code))
        if response.status_code in RETRY_STATUSES:
            now = self._clock.now().timestamp()
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), now=now)
            raise _RetryableStatus(response, retry_after, now=now)
        return response

    def _record(self, method: str, endpoint: str, outcome: str) -> None:
        self.stats.record(method, endpoint, outcome)
        if self._listener is not None:
            self._listener.record_request(method, endpoint, outcome)

    async def me(self) -> Mapping[str, JSONValue]:
        """The account the token belongs to (`GET /accounts/me`)."""
        body = await self._send("GET", "accounts/me", endpoint="/accounts/me")
        if not isinstance(body, dict):
            raise FragmentProtocolError("GET /accounts/me: expected an object")
        return body

    async def get_task(self, uid: str) -> Task | None:
        """One task by uid, or None when Fragment does not know it."""
        try:
            body = await self._send("GET", f"tasks/{uid}", endpoint="/tasks/{uid}")
        except FragmentValidationError as exc:
            if exc.status == 404:
                return None
            raise
        return parse_task(body)

    async def iter_tasks(
        self,
        *,
        statuses: Sequence[TaskStatus] = (),
        fields: Mapping[str, str] | None = None,
        updated_at_after: datetime | None = None,
    ) -> AsyncIterator[TaskPage]:
        """Yield pages of tasks matching the filters, each task once, the largest pages allowed.

        The filters are also applied on this side, so a server that ignores one still gives the
        right answer; a server that rejects one gets a plainer listing from then on. The first
        page is yielded even when empty: its `server_date` tells when the listing started in
        Fragment's clock.
        """
        field_filters = dict(fields or {})
        seen: set[str] = set()
        restarts = 0
        cursor: str | None = None
        seen_cursors: set[str] = set()
        guard = _ListingGuard()
        while True:
            params = self._listing_params(statuses, field_filters, updated_at_after, cursor)
            try:
                body, server_date = await self._send_dated(
                    "GET", "tasks", endpoint="/tasks", params=params
                )
            except FragmentValidationError as exc:
                if exc.status not in (400, 422):
                    raise
                if cursor is not None and restarts < MAX_CURSOR_RESTARTS:
                    restarts += 1
                    log.warning("fragment.cursor_restart", reason=str(exc), restart=restarts)
                    cursor, seen_cursors, guard = None, set(), _ListingGuard()
                    continue
                if cursor is None and not self._plain_listing:
                    self._plain_listing = True
                    log.warning("fragment.plain_listing", reason=str(exc))
                    continue
                raise
            items = _items(body, "GET /tasks")
            page = TaskPage(
                (
                    task
                    for task in items
                    if task.uid not in seen and _matches(task, statuses, field_filters)
                ),
                server_date,
            )
            first = not seen_cursors and not seen
            seen.update(task.uid for task in page)
            if page or first:
                yield page
            meta = body.get("meta") if isinstance(body, dict) else None
            next_cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
            if not next_cursor:
                return
            if not isinstance(next_cursor, str) or next_cursor in seen_cursors:
                raise FragmentProtocolError("GET /tasks returned a cursor it had already returned")
            guard.check(items, meta if isinstance(meta, dict) else {})
            seen_cursors.add(next_cursor)
            cursor = next_cursor

    async def count_tasks(
        self, *, statuses: Sequence[TaskStatus] = (), fields: Mapping[str, str] | None = None
    ) -> int | None:
        """How many tasks match the filters, by Fragment's `meta.total_count` of a one-item
        listing; None when the answer has no usable count.

        A server that ignores a filter counts more tasks, never fewer: a caller comparing the
        count with what it expects sees a difference, not a false match.
        """
        params = self._listing_params(statuses, dict(fields or {}), None, None, limit=1)
        try:
            body = await self._send("GET", "tasks", endpoint="/tasks", params=params)
        except FragmentValidationError as exc:
            if exc.status not in (400, 422):
                raise
            return None
        meta = body.get("meta") if isinstance(body, dict) else None
        total = meta.get("total_count") if isinstance(meta, dict) else None
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            return None
        return total

    def _listing_params(
        self,
        statuses: Sequence[TaskStatus],
        fields: Mapping[str, str],
        updated_at_after: datetime | None,
        cursor: str | None,
        *,
        limit: int | None = None,
    ) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = [("limit", str(limit or self._page_size))]
        if cursor:
            params.append(("cursor", cursor))
        if not self._plain_listing:
            params.extend(("status", s.value) for s in statuses)
            params.extend((f"fields.{k}", v) for k, v in fields.items())
            if updated_at_after is not None:
                params.append(("updated_at_after", format_timestamp(updated_at_after)))
        return params

    async def query_uids(
        self, uids: Iterable[str], *, progress: Callable[[int], None] | None = None
    ) -> list[Task]:
        """The tasks with these uids, whatever their status (`POST /tasks/query`, 100 per call).

        The body is the documented one: the condition tree under `condition`. The `in` operator
        and the `uid` field are assumed, so every answer is checked: a task that was not asked
        for, or more tasks than asked, proves the server ignored the filter, and then what the
        answer lacks proves nothing (FragmentFilterIgnored; a 400/422 raises as usual).
        `progress` is told how many uids each call settled.
        """
        wanted = list(dict.fromkeys(uids))
        found: list[Task] = []
        for start in range(0, len(wanted), self._page_size):
            chunk = wanted[start : start + self._page_size]
            body: JSONValue = {
                "condition": {
                    "combinator": "and",
                    "conditions": [{"field": "uid", "operator": "in", "value": list(chunk)}],
                },
                "limit": len(chunk),
            }
            answer = await self._send("POST", "tasks/query", endpoint="/tasks/query", body=body)
            tasks = _items(answer, "POST /tasks/query")
            chunk_set = set(chunk)
            stray = sum(1 for t in tasks if t.uid not in chunk_set)
            if stray or len(tasks) > len(chunk):
                raise FragmentFilterIgnored(
                    f"POST /tasks/query answered {len(tasks)} tasks for {len(chunk)} uids, "
                    f"{stray} of them not asked for: the server ignored the filter"
                )
            found.extend(tasks)
            if progress is not None:
                progress(len(chunk))
        return found

    async def put_batch(self, items: Sequence[Mapping[str, JSONValue]]) -> BatchAnswer:
        """Create (or replace) tasks with one `PUT /tasks/batch`."""
        answer = await self._send(
            "PUT",
            "tasks/batch",
            endpoint="/tasks/batch",
            body={"items": [dict(item) for item in items]},
        )
        return _batch_answer(answer, "PUT /tasks/batch")

    async def patch_batch(self, items: Sequence[Mapping[str, JSONValue]]) -> BatchAnswer:
        """Update, close or reopen tasks with one `PATCH /tasks/batch`."""
        answer = await self._send(
            "PATCH",
            "tasks/batch",
            endpoint="/tasks/batch",
            body={"items": [dict(item) for item in items]},
        )
        return _batch_answer(answer, "PATCH /tasks/batch")
