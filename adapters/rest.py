"""The `rest` adapter: open tickets from any JSON API, described by configuration alone.

Most internal back-offices have a JSON API that no built-in adapter knows. This adapter is told
where the open tickets are (`base_url` and `request`: method, path, query parameters, JSON body),
how to authenticate (a bearer token, basic auth, or an API key in a header or the query string),
where the records sit in each answer (`records`, a JMESPath expression), how pages follow each
other (`pagination`: page number, offset/limit, a cursor read from the body, the `Link` header
or a next-page URL in the body) and how a record becomes a ticket (`mapping`, see
adapters.mapping). An optional `incremental` request asks for the tickets changed since a cursor:
the newest `updated_at` seen, reaching back by an overlap window, sent where the API wants it, or
a sync token the API itself returns. Every request goes through adapters.http, so 429/5xx are
retried under one deadline, failures become the SourceError tree with no credential in any
message, and a listing either completes or raises: never a silently short snapshot.

Write-back (optional, `write_back`): a declarative request per action, `close` and `comment`
(method, path, query parameters, JSON body), in which `{ticket_id}` (URL-escaped in the path) and
`{note}` are replaced. 404/410 mean the ticket is gone, 409/422 a refused change; the statuses
listed in `already_closed_statuses` mean there was nothing to do. The `close` request must be
idempotent on the API's side (set a status, not toggle one).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Final, Literal, TypeAlias, cast
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from adapters.base import (
    AdapterConfig,
    AdapterConfigError,
    AdapterDataError,
    ChangeSet,
    Duration,
    InvalidRecord,
    SourceError,
    Ticket,
    WriteBackAction,
    WriteBackOutcome,
    WriteBackRequest,
)
from adapters.http import (
    CursorField,
    HttpOptions,
    LinkHeader,
    NextUrl,
    Offset,
    PageNumber,
    PageRequest,
    Paginator,
    make_client,
    paginate,
    send,
)
from adapters.mapping import Expression, Getter, RecordMapper, TicketMapping, compile_expression
from adapters.writes import write_request
from connector.values import parse_timestamp

__all__ = ["RestAdapter", "RestOptions"]

Scalar: TypeAlias = str | int | float | bool
ParamValue: TypeAlias = Scalar | list[Scalar]
SINCE_PLACEHOLDER: Final = "{since}"
_REDACTED: Final = "[redacted]"


# --- options ------------------------------------------------------------------------------------


class NoAuth(AdapterConfig):
    """No credentials (an API on a trusted network)."""

    type: Literal["none"] = "none"


class BearerAuth(AdapterConfig):
    """`Authorization: Bearer <token>`."""

    type: Literal["bearer"]
    token: SecretStr


class BasicAuth(AdapterConfig):
    """HTTP basic authentication."""

    type: Literal["basic"]
    username: str
    password: SecretStr


class ApiKeyAuth(AdapterConfig):
    """An API key in a header or a query parameter (OpenAPI's `apiKey` scheme: name and in)."""

    type: Literal["api_key"]
    key: SecretStr
    name: str = Field("X-Api-Key", min_length=1, description="The header or parameter name.")
    in_: Literal["header", "query"] = Field("header", alias="in")


Auth: TypeAlias = Annotated[
    NoAuth | BearerAuth | BasicAuth | ApiKeyAuth, Field(discriminator="type")
]


class RequestOptions(AdapterConfig):
    """One HTTP request: method, path under `base_url`, query parameters and JSON body."""

    method: Literal["GET", "POST"] = "GET"
    path: str = Field("", description="Relative to `base_url`, e.g. `tickets`.")
    params: dict[str, ParamValue] = Field(default_factory=dict)
    body: dict[str, Any] | None = Field(None, description="Sent as JSON (e.g. a POST search).")


class WriteRequestOptions(AdapterConfig):
    """One write-back request; `{ticket_id}` and `{note}` are replaced in path, params and body."""

    method: Literal["POST", "PUT", "PATCH"] = "POST"
    path: str = Field(min_length=1, description="e.g. `tickets/{ticket_id}/close`.")
    params: dict[str, ParamValue] = Field(default_factory=dict)
    body: dict[str, Any] | None = Field(None, description="Sent as JSON.")


class WriteBackOptions(AdapterConfig):
    """How an operator's DONE is written back: the request of each action."""

    close: WriteRequestOptions | None = Field(
        None, description="Closes the ticket (idempotent: closing a closed ticket is a no-op)."
    )
    comment: WriteRequestOptions | None = Field(None, description="Adds the note only.")
    already_closed_statuses: list[int] = Field(
        default_factory=list,
        description="HTTP statuses that mean the ticket was closed already (e.g. 409).",
    )


class _SinglePage:
    """A listing that is one answer."""

    def first(self, url: str, params: Mapping[str, Any] | None, body: Any) -> PageRequest:
        """The request as given."""
        return PageRequest(url, params, body, "the only page")

    def next(
        self, page: PageRequest, response: httpx.Response, body: Any, count: int
    ) -> PageRequest | None:
        """Never a next page."""
        return None


class NoPagination(AdapterConfig):
    """The whole listing comes in one answer."""

    type: Literal["none"] = "none"

    def paginator(self) -> Paginator:
        """The SDK paginator for these options."""
        return _SinglePage()


class PageNumberPagination(AdapterConfig):
    """`?page=1&per_page=100`, then 2, 3...; stops on an empty page, or a short one with `size`."""

    type: Literal["page_number"]
    param: str = "page"
    start: int = 1
    size_param: str | None = "per_page"
    size: int | None = Field(
        100, ge=1, description="At most the server's own maximum, or every page looks short."
    )

    def paginator(self) -> Paginator:
        """The SDK paginator for these options."""
        return PageNumber(
            param=self.param, start=self.start, size_param=self.size_param, size=self.size
        )


class OffsetPagination(AdapterConfig):
    """`?offset=0&limit=100`, then 100, 200...; stops on a page shorter than `limit`."""

    type: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(100, ge=1)

    def paginator(self) -> Paginator:
        """The SDK paginator for these options."""
        return Offset(
            offset_param=self.offset_param, limit_param=self.limit_param, limit=self.limit
        )


class CursorPagination(AdapterConfig):
    """A cursor read from each answer (`cursor`), sent back as `param` in the query or body."""

    type: Literal["cursor"]
    cursor: Expression = Field(description="JMESPath to the next cursor, e.g. `meta.next`.")
    has_more: Expression | None = Field(
        None, description="JMESPath, false on the last page (e.g. `meta.has_more`)."
    )
    param: str = "cursor"
    in_: Literal["query", "body"] = Field("query", alias="in")

    def paginator(self) -> Paginator:
        """The SDK paginator for these options."""
        cursor = compile_expression(self.cursor)
        more = None if self.has_more is None else compile_expression(self.has_more)

        def next_cursor(body: Any) -> Any:
            if more is not None and not more(body):
                return None
            return cursor(body)

        return CursorField(next_cursor, param=self.param, where=self.in_)


class NextUrlPagination(AdapterConfig):
    """A next-page URL in each answer (`links.next`, `next_page`), on `base_url`'s host."""

    type: Literal["next_url"]
    next_url: Expression = Field(description="JMESPath to the next page's URL.")

    def paginator(self) -> Paginator:
        """The SDK paginator for these options."""
        return NextUrl(compile_expression(self.next_url))


class LinkHeaderPagination(AdapterConfig):
    """The `rel="next"` target of the RFC 8288 `Link` header (GitHub style)."""

    type: Literal["link_header"]
    rel: str = "next"

    def paginator(self) -> Paginator:
        """The SDK paginator for these options."""
        return LinkHeader(rel=self.rel)


Pagination: TypeAlias = Annotated[
    NoPagination
    | PageNumberPagination
    | OffsetPagination
    | CursorPagination
    | NextUrlPagination
    | LinkHeaderPagination,
    Field(discriminator="type"),
]


class IncrementalOptions(AdapterConfig):
    """The request for the tickets changed since a cursor (closed ones included)."""

    request: RequestOptions | None = Field(
        None, description="Default: the listing's request (then usually with a status param)."
    )
    records: Expression | None = Field(None, description="Default: the listing's `records`.")
    pagination: Pagination | None = Field(None, description="Default: the listing's.")
    since_param: str | None = Field(
        "updated_since",
        description="Where the `since` value goes; None when only `{since}` placeholders in "
        "`request.params`/`request.body` strings take it.",
    )
    in_: Literal["query", "body"] = Field("query", alias="in")
    format: Literal["iso8601", "epoch_s", "epoch_ms"] = "iso8601"
    overlap: Duration = Field(
        timedelta(minutes=1),
        description="How far each poll reaches back before the newest `updated_at` seen.",
    )
    cursor: Expression | None = Field(
        None,
        description="JMESPath to a sync token in the last page's answer; when set, later polls "
        "send it as `cursor_param` instead of `since`.",
    )
    cursor_param: str | None = Field(None, description="Default: `since_param`.")

    @field_validator("overlap")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value


class RestOptions(HttpOptions):
    """Options of the `rest` adapter (with HttpOptions' `timeout` and `retry`)."""

    base_url: str = Field(description="e.g. `https://backoffice.internal/api/v2/`.")
    auth: Auth = NoAuth()
    headers: dict[str, str] = Field(
        default_factory=dict, description="Sent with every request (put secrets in `auth`)."
    )
    request: RequestOptions = RequestOptions()
    records: Expression = Field(
        "@", description="JMESPath to the list of records in an answer; `@` = the answer itself."
    )
    pagination: Pagination = NoPagination()
    mapping: TicketMapping
    incremental: IncrementalOptions | None = None
    check: RequestOptions | None = Field(
        None, description="A cheap request for `check`; default: the listing's first page."
    )
    max_pages: int = Field(10_000, ge=1)
    write_back: WriteBackOptions | None = Field(
        None, description="The requests that write an operator's DONE back (optional)."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            raise ValueError("not a URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL")
        if url.userinfo:
            raise ValueError("must not hold credentials: use `auth`")
        if url.query:
            raise ValueError("must not hold a query string: use `request.params`")
        return value

    # A field validator, not a model validator: pydantic quotes a failing validator's input in
    # its message, and the whole model's input holds the credentials.
    @field_validator("incremental")
    @classmethod
    def _incremental_has_a_cursor(
        cls, value: IncrementalOptions | None, info: ValidationInfo
    ) -> IncrementalOptions | None:
        if value is None:
            return None
        mapping = info.data.get("mapping")
        if value.cursor is None and mapping is not None and mapping.updated_at is None:
            raise ValueError(
                "needs `mapping.updated_at` (the cursor is the newest one seen) or a response "
                "`cursor`"
            )
        request = value.request
        placeholder = request is not None and _holds_placeholder(
            [request.params, request.body, request.path]
        )
        if value.since_param is None and not placeholder:
            raise ValueError(
                "needs `since_param` or a `{since}` placeholder in `request` to send the cursor"
            )
        if value.cursor is not None and (value.cursor_param or value.since_param) is None:
            raise ValueError("a response `cursor` needs `cursor_param`")
        return value


# --- helpers --------------------------------------------------------------------------------------


def _fill(value: Any, values: Mapping[str, str], *, escape: bool = False) -> Any:
    """`value` with `{name}` replaced in every string (URL-escaped when `escape`)."""
    if isinstance(value, str):
        for name, text in values.items():
            value = value.replace("{" + name + "}", quote(text, safe="") if escape else text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, values, escape=escape) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values, escape=escape) for v in value]
    return value


def _holds_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return SINCE_PLACEHOLDER in value
    if isinstance(value, dict):
        return any(_holds_placeholder(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_placeholder(v) for v in value)
    return False


def _substitute(value: Any, since: str | int) -> Any:
    """`value` with each `{since}` replaced; a lone placeholder takes the value's own type."""
    if isinstance(value, str):
        if value == SINCE_PLACEHOLDER:
            return since
        return value.replace(SINCE_PLACEHOLDER, str(since))
    if isinstance(value, dict):
        return {k: _substitute(v, since) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, since) for v in value]
    return value


def _since_value(moment: datetime, fmt: str) -> str | int:
    # Rounded down: a since that is a little early only repeats a change, one that is late loses it.
    stamp = moment.astimezone(UTC).timestamp()
    if fmt == "epoch_s":
        return math.floor(stamp)
    if fmt == "epoch_ms":
        return math.floor(stamp * 1000)
    return datetime.fromtimestamp(math.floor(stamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_SINCE: Final = "since:"
_TOKEN: Final = "token:"  # noqa: S105 (a cursor prefix, not a credential)


def _parse_cursor(cursor: str) -> tuple[datetime | None, str | None]:
    """(since, token) from a cursor this adapter returned."""
    if cursor.startswith(_TOKEN) and len(cursor) > len(_TOKEN):
        return None, cursor[len(_TOKEN) :]
    if cursor.startswith(_SINCE):
        moment = parse_timestamp(cursor[len(_SINCE) :])
        if moment is not None:
            return moment, None
    raise AdapterDataError(f"not a rest adapter cursor: {cursor[:40]!r}")


def _since_cursor(moment: datetime) -> str:
    return _SINCE + moment.astimezone(UTC).isoformat()


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return text


# --- the adapter ----------------------------------------------------------------------------------


class RestAdapter:
    """Open tickets from a JSON API, per the options."""

    name: ClassVar[str] = "rest"
    Config: ClassVar[type[RestOptions]] = RestOptions

    def __init__(self, config: RestOptions, /) -> None:
        self.options = config
        self._mapper = RecordMapper(config.mapping)
        self._records = compile_expression(config.records)
        self._paginator = config.pagination.paginator()
        self._policy = config.retry_policy()
        self._client: httpx.AsyncClient | None = None
        auth = config.auth
        secrets: list[str] = []
        if isinstance(auth, BearerAuth):
            secrets.append(auth.token.get_secret_value())
        elif isinstance(auth, BasicAuth):
            secrets.append(auth.password.get_secret_value())
        elif isinstance(auth, ApiKeyAuth):
            secrets.append(auth.key.get_secret_value())
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted((s for s in secrets if s), key=len, reverse=True)

    def _http(self) -> httpx.AsyncClient:
        # Built on first use, inside the event loop that will use it.
        if self._client is None:
            auth = self.options.auth
            headers = dict(self.options.headers)
            params: dict[str, str] = {}
            basic: tuple[str, str] | None = None
            if isinstance(auth, BearerAuth):
                headers["Authorization"] = f"Bearer {auth.token.get_secret_value()}"
            elif isinstance(auth, BasicAuth):
                basic = (auth.username, auth.password.get_secret_value())
            elif isinstance(auth, ApiKeyAuth):
                if auth.in_ == "header":
                    headers[auth.name] = auth.key.get_secret_value()
                else:
                    params[auth.name] = auth.key.get_secret_value()
            base = self.options.base_url
            self._client = make_client(
                base if base.endswith("/") else base + "/",
                headers=headers,
                auth=basic,
                params=params or None,
                timeout=self.options.timeout.total_seconds(),
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @contextlib.contextmanager
    def _scrubbed(self) -> Iterator[None]:
        """Re-raise SourceErrors with any credential replaced: a second net under adapters.http."""
        try:
            yield
        except SourceError as exc:
            message = str(exc)
            clean = _scrub(message, self._secrets)
            if clean == message:
                raise
            raise type(exc)(clean) from None

    def _pages(
        self,
        request: RequestOptions,
        paginator: Paginator,
        records: Getter,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> AsyncIterator[Any]:
        return paginate(
            self._http(),
            request.path,
            paginator,
            records=records,
            params=request.params if params is None else params,
            policy=self._policy,
            max_pages=self.options.max_pages,
            method=request.method,
            body=request.body if body is None else body,
        )

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Every record of the listing, page by page: tickets (closed ones too) and bad records."""
        with self._scrubbed():
            number = 0
            async for record in self._pages(self.options.request, self._paginator, self._records):
                number += 1
                yield self._mapper.map(record, f"record {number}")

    async def check(self) -> None:
        """One cheap request: `check` if configured, else the listing's first page and record."""
        with self._scrubbed():
            custom = self.options.check
            if custom is not None:
                await send(
                    self._http(),
                    custom.method,
                    custom.path,
                    policy=self._policy,
                    params=custom.params or None,
                    json=custom.body,
                )
                return
            # paginate is an async generator: closed after the first record, it never asks for
            # the second page.
            pages = cast(
                "AsyncGenerator[Any, None]",
                self._pages(self.options.request, self._paginator, self._records),
            )
            async with contextlib.aclosing(pages):
                async for record in pages:
                    item = self._mapper.map(record, "record 1")
                    if isinstance(item, InvalidRecord):
                        raise AdapterConfigError(
                            f"the first record of the listing cannot become a ticket: "
                            f"{item.reason} (is `mapping` right?)"
                        )
                    break

    async def _newest_listed(self) -> datetime | None:
        newest: datetime | None = None
        async for item in self.list_open():
            stamp = item.updated_at if isinstance(item, Ticket) else None
            if stamp is not None and (newest is None or stamp > newest):
                newest = stamp
        return newest

    @property
    def polls_changes(self) -> bool:
        """Whether `changes_since` can run: only with `incremental` configured."""
        return self.options.incremental is not None

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Tickets changed since the cursor, open or closed, and the cursor to resume from.

        Without a cursor, none: the full refresh has covered the past, and the newest
        `updated_at` of the listing (the data's own clock, not ours) is where polling starts.
        """
        incremental = self.options.incremental
        if incremental is None:
            raise AdapterConfigError(
                "incremental polling needs the `incremental` options (the request for changes)"
            )
        with self._scrubbed():
            if cursor is None:
                newest = await self._newest_listed()
                return ChangeSet((), _since_cursor(newest or datetime.now(UTC)))
            since, token = _parse_cursor(cursor)
            return await self._poll(incremental, since, token, cursor)

    async def _poll(
        self,
        incremental: IncrementalOptions,
        since: datetime | None,
        token: str | None,
        cursor: str,
    ) -> ChangeSet:
        request = incremental.request or self.options.request
        params: dict[str, Any] = dict(request.params)
        body: Any = request.body
        path = request.path
        if token is not None:
            name = incremental.cursor_param or incremental.since_param
            value: str | int = token
        else:
            assert since is not None  # _parse_cursor gives one or the other
            name = incremental.since_param
            value = _since_value(since - incremental.overlap, incremental.format)
            params = _substitute(params, value)
            body = _substitute(body, value)
            path = _substitute(path, value)
        if name is not None:
            if incremental.in_ == "query":
                params[name] = value
            else:
                body = {**(body or {}), name: value}
        pagination = incremental.pagination or self.options.pagination
        selector = (
            self._records
            if incremental.records is None
            else compile_expression(incremental.records)
        )
        last_page: list[Any] = [None]

        def records(page: Any) -> Any:
            last_page[0] = page  # the sync token is read from the last page
            return selector(page)

        tickets: list[Ticket] = []
        newest = since
        request = request.model_copy(update={"path": path})
        number = 0
        async for record in self._pages(
            request, pagination.paginator(), records, params=params, body=body
        ):
            number += 1
            item = self._mapper.map(record, f"change {number}")
            if not isinstance(item, Ticket):
                continue  # a bad record is reported by the next full refresh
            tickets.append(item)
            if item.updated_at is not None and (newest is None or item.updated_at > newest):
                newest = item.updated_at
        return ChangeSet(
            tuple(tickets), self._next_cursor(incremental, last_page[0], newest, cursor)
        )

    @staticmethod
    def _next_cursor(
        incremental: IncrementalOptions, page: Any, newest: datetime | None, cursor: str
    ) -> str:
        if incremental.cursor is not None and page is not None:
            found: object = _read_token(compile_expression(incremental.cursor), page)
            if found is not None and found != "":
                return _TOKEN + str(found)
        if newest is not None:
            return _since_cursor(newest)
        return cursor

    @property
    def writes_back(self) -> bool:
        """Whether `write_back` requests are configured."""
        return self.options.write_back is not None

    async def write_back(self, request: WriteBackRequest) -> WriteBackOutcome:
        """Send the configured `close` or `comment` request for the ticket."""
        config = self.options.write_back
        closing = request.action is WriteBackAction.CLOSE
        write = None if config is None else (config.close if closing else config.comment)
        if config is None or write is None:
            raise AdapterConfigError(f"no `write_back.{request.action.value}` request configured")
        values = {"ticket_id": request.ticket_id, "note": request.note or ""}
        with self._scrubbed():
            try:
                await write_request(
                    self._http(),
                    write.method,
                    _fill(write.path, values, escape=True),
                    policy=self._policy,
                    params=_fill(write.params, values) or None,
                    json=_fill(write.body, values),
                )
            except SourceError as exc:
                if exc.status is not None and exc.status in config.already_closed_statuses:
                    return WriteBackOutcome.ALREADY_CLOSED
                raise
        return WriteBackOutcome.CLOSED if closing else WriteBackOutcome.COMMENTED


def _read_token(getter: Callable[[Any], Any], page: Any) -> object:
    value: object = getter(page)
    if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
        return value
    raise AdapterDataError(
        f"the incremental `cursor` is neither text nor an integer: got {type(value).__name__}"
    )
