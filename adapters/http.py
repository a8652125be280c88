"""The HTTP toolkit for adapters that talk to a back-office's REST API.

Every adapter for Zendesk, Jira, GitHub or a generic JSON API needs the same four things, and each
is easy to get subtly wrong: a client with sane defaults (`make_client`), one logical request that
retries 429/5xx and network errors within a total deadline while honouring the vendor's rate-limit
headers (`send`, `get_json`), the translation of what is left into the `SourceError` tree of
`adapters.base`, and a pagination driver (`paginate`) that either yields every record of every
page or raises, never a silently short listing (repeated page tokens, pages that repeat the
previous one and page-count overflows are errors). The errors raised map to what the core does::

    AdapterAuthError      401, 403 (unless it is a rate limit): the credentials are refused
    AdapterConfigError    other 4xx: the options point at something the back-office rejects
    AdapterUnavailable    429/5xx/network errors once the retries or the deadline ran out
    AdapterDataError      an answer that is not JSON, records that are not a list, a page loop

Error messages name the method and the URL without its query string or userinfo, never a header,
and the vendor's own error text is scrubbed of the request's credentials before it is quoted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import math
import random
import re
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar, Final, Literal, Protocol, TypeAlias

import httpx
import stamina
from pydantic import Field

from adapters.base import (
    AdapterAuthError,
    AdapterConfig,
    AdapterConfigError,
    AdapterDataError,
    AdapterUnavailable,
    Duration,
    SourceError,
)
from adapters.partition import ResultsCapped
from connector.clock import SYSTEM_CLOCK, Clock
from connector.values import parse_retry_after, parse_timestamp

__all__ = [
    "DEFAULT_POLICY",
    "USER_AGENT",
    "CursorField",
    "HttpOptions",
    "LinkHeader",
    "NextUrl",
    "Offset",
    "PageNumber",
    "PageRequest",
    "Paginator",
    "RetryAfter",
    "RetryOptions",
    "RetryPolicy",
    "first_of",
    "get_json",
    "make_client",
    "paginate",
    "parse_link_header",
    "ratelimit_reset_header",
    "retry_after_header",
    "send",
    "server_time",
]

RetryAfter: TypeAlias = Callable[[httpx.Response], float | None]
"""Reads how long a response asks the client to wait, in seconds; None when it does not say."""

MAX_ERROR_TEXT: Final = 200
_SCAN_BYTES: Final = 64 * 1024  # of an error body, the most read for a message
_EPOCH_THRESHOLD: Final = 1e9  # 2001-09-09: a smaller "reset" is a delay, not a moment
_SAFE_HEADERS: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "host",
        "user-agent",
    }
)
_SECRET_PARAM: Final = re.compile(
    r"key|token|secret|pass|auth|sig|session|code|credential|access", re.IGNORECASE
)


def _user_agent() -> str:
    try:
        return f"fragment-connector-adapter/{version('fragment-connector')}"
    except PackageNotFoundError:  # a source tree that was never installed
        return "fragment-connector-adapter/0.0.0"


USER_AGENT: Final = _user_agent()


# --- rate-limit signals -------------------------------------------------------------------------


def server_time(response: httpx.Response, *, clock: Clock = SYSTEM_CLOCK) -> datetime:
    """The back-office's clock from a response's `Date` header (`clock` when none parses).

    Cursors and waits measured on the back-office's clock cannot be shortened or skewed by ours.
    A response may carry several `Date` headers (uvicorn sends its own, then the one an
    application set): the last one that parses wins, the one closest to the application.
    """
    for date in reversed(response.headers.get_list("date")):
        try:
            moment = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            continue
        if moment.tzinfo is None:  # RFC 5322 "-0000": UTC, with no claim about the zone
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    return clock.now()


def _server_now(response: httpx.Response) -> float:
    return server_time(response).timestamp()


def retry_after_header(response: httpx.Response) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta-seconds or HTTP-date), else None."""
    return parse_retry_after(response.headers.get("retry-after"), now=_server_now(response))


def ratelimit_reset_header(
    reset: str = "x-ratelimit-reset", remaining: str | None = "x-ratelimit-remaining"
) -> RetryAfter:
    """A reader of a rate-limit reset header, used only when `remaining` says 0 are left.

    The reset value may be epoch seconds (GitHub), a delay in seconds (values before 2001 are
    taken as one), or an ISO 8601 timestamp (Jira). `remaining=None` trusts the reset header alone.
    """

    def read(response: httpx.Response) -> float | None:
        if remaining is not None:
            left = response.headers.get(remaining)
            try:
                if left is None or float(left) > 0:
                    return None
            except ValueError:
                return None
        value = response.headers.get(reset)
        if not value:
            return None
        try:
            number = float(value)
        except ValueError:
            moment = parse_timestamp(value)
            if moment is None:
                return None
            return max(0.0, moment.timestamp() - _server_now(response))
        if not math.isfinite(number) or number < 0:
            return None
        if number < _EPOCH_THRESHOLD:
            return number
        return max(0.0, number - _server_now(response))

    return read


def first_of(*funcs: RetryAfter) -> RetryAfter:
    """A reader that returns the first delay any of `funcs` finds."""

    def read(response: httpx.Response) -> float | None:
        for func in funcs:
            delay = func(response)
            if delay is not None:
                return delay
        return None

    return read


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one logical request is retried: attempts, total deadline, backoff, what to retry."""

    attempts: int = 5
    deadline: float = 60.0
    """Seconds for the whole logical request, waits and every attempt included."""
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    retry_after: RetryAfter = retry_after_header
    """Reads the vendor's wait from a response; e.g. `first_of(retry_after_header,
    ratelimit_reset_header())` for GitHub."""
    clock: Clock = SYSTEM_CLOCK
    """Times the deadline. The waits between attempts are stamina's, on the event loop's
    clock, which the default reads too."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if not self.deadline > 0:
            raise ValueError("RetryPolicy.deadline must be positive")


DEFAULT_POLICY: Final = RetryPolicy()


class RetryOptions(AdapterConfig):
    """How each request is retried on 429, 5xx and network errors (a RetryPolicy)."""

    attempts: int = Field(5, ge=1, description="Attempts per request (429, 5xx, network).")
    deadline: Duration = Field(
        timedelta(seconds=60),
        gt=timedelta(0),
        description="Time for one request with its retries and waits; a Retry-After past it "
        "fails the request at once.",
    )
    wait_initial: Duration = timedelta(seconds=0.5)
    wait_max: Duration = timedelta(seconds=30)
    wait_jitter: Duration = timedelta(seconds=1)

    def policy(self, retry_after: RetryAfter = retry_after_header) -> RetryPolicy:
        """The RetryPolicy of these options; `retry_after` reads the vendor's wait."""
        return RetryPolicy(
            attempts=self.attempts,
            deadline=self.deadline.total_seconds(),
            wait_initial=self.wait_initial.total_seconds(),
            wait_max=self.wait_max.total_seconds(),
            wait_jitter=self.wait_jitter.total_seconds(),
            retry_after=retry_after,
        )


class HttpOptions(AdapterConfig):
    """Options every HTTP adapter takes: a timeout per request and how requests are retried.

    `retry_attempts` and `retry_deadline` are the deprecated spellings of `retry.attempts` and
    `retry.deadline`, still read. An adapter with other retry defaults subclasses RetryOptions
    and overrides `retry` with it, so that a partial `retry:` keeps them.
    """

    renamed_options: ClassVar[Mapping[str, str]] = {
        "retry_attempts": "retry.attempts",
        "retry_deadline": "retry.deadline",
    }

    timeout: Duration = Field(timedelta(seconds=30), gt=timedelta(0), description="Per request.")
    retry: RetryOptions = RetryOptions()

    def retry_policy(self, retry_after: RetryAfter = retry_after_header) -> RetryPolicy:
        """The RetryPolicy of these options; `retry_after` reads the vendor's wait."""
        return self.retry.policy(retry_after)


# --- the client ---------------------------------------------------------------------------------


def make_client(
    base_url: str,
    *,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
    user_agent: str | None = None,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for a back-office API, JSON-accepting and redirect-following."""
    merged = {"Accept": "application/json", "User-Agent": user_agent or USER_AGENT}
    merged.update(headers or {})
    return httpx.AsyncClient(
        base_url=base_url,
        headers=merged,
        auth=auth,
        params=params,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        # Retries happen in `send`, under one deadline; transport retries would sleep outside it.
        transport=transport or httpx.AsyncHTTPTransport(retries=0),
        # Redirects are followed on the origin only: httpx drops just `Authorization` when one
        # leaves it, and API keys, custom headers and basic auth would go along.
        follow_redirects=True,
        event_hooks={"response": [_refuse_cross_origin_redirect]},
    )


async def _refuse_cross_origin_redirect(response: httpx.Response) -> None:
    """Stop a redirect to another origin (http -> https on the same host is fine)."""
    if not response.has_redirect_location:
        return
    source = response.request.url
    try:
        target = source.join(response.headers["location"])
    except (httpx.InvalidURL, KeyError):
        return  # httpx reports the unusable Location itself
    upgrade = (source.scheme, target.scheme) == ("http", "https") and target.port is None
    same_port = target.port == source.port or upgrade
    if target.host == source.host and (target.scheme == source.scheme or upgrade) and same_port:
        return
    raise AdapterConfigError(
        f"{response.request.method} {_safe_url(source)} answered {response.status_code} to "
        f"another origin, {_safe_url(target)}: not followed, the credentials stay on "
        f"{source.scheme}://{source.host} (set the URL the back-office redirects to)"
    )


# --- secrets-free descriptions ------------------------------------------------------------------


def _safe_url(url: httpx.URL) -> str:
    return str(url.copy_with(userinfo=b"", query=None, fragment=None))


def _secrets(request: httpx.Request | None) -> list[str]:
    """Values of `request` that may be credentials, longest first, to scrub from quoted text."""
    if request is None:
        return []
    found: set[str] = set()
    url = request.url
    found.update(v for v in (url.username, url.password) if v)
    for name, value in url.params.multi_items():
        if _SECRET_PARAM.search(name) or len(value) >= 16:
            found.add(value)
    for name, value in request.headers.items():
        if name.lower() in _SAFE_HEADERS:
            continue
        found.add(value)
        scheme, _, credential = value.partition(" ")
        if credential:
            found.add(credential)
            if scheme.lower() == "basic":
                found.update(_basic_parts(credential))
    return sorted((s for s in found if len(s) >= 6), key=len, reverse=True)


def _basic_parts(credential: str) -> list[str]:
    try:
        decoded = base64.b64decode(credential, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return []
    user, _, password = decoded.partition(":")
    return [decoded, user, password]


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def _shorten(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_MESSAGE_KEYS: Final = (
    "error",
    "message",
    "errorMessages",
    "errors",
    "detail",
    "description",
    "title",
    "error_description",
    "msg",
)


def _flatten(value: Any, depth: int = 0) -> list[str]:
    """The human-readable strings inside a vendor's error payload, in order."""
    if value is None or depth > 4:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [text for item in value[:5] for text in _flatten(item, depth + 1)]
    if isinstance(value, dict):
        texts = [t for key in _MESSAGE_KEYS for t in _flatten(value.get(key), depth + 1)]
        if texts:
            return texts
        # e.g. Jira's {"errors": {"jql": "Field 'x' does not exist"}}
        return [f"{k}: {t}" for k, v in list(value.items())[:5] for t in _flatten(v, depth + 1)]
    return [json.dumps(value)]


def _vendor_message(response: httpx.Response) -> str:
    """The vendor's own error text, defensively parsed, scrubbed of credentials and shortened."""
    # Scrub before cutting anything: a credential cut in half would no longer be recognised.
    secrets = _secrets(_request_of(response))
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        text = _scrub(response.content[:_SCAN_BYTES].decode("utf-8", "replace"), secrets)
        if "<" in text and ">" in text:
            title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
            text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
    else:
        texts = list(dict.fromkeys(_flatten(body)))
        text = _scrub("; ".join(texts) if texts else json.dumps(body), secrets)
    return _shorten(text)


# --- one logical request ------------------------------------------------------------------------


class _Retry(Exception):
    """A retryable outcome inside the retry loop; its message is what stamina's retry log shows."""

    def __init__(
        self,
        summary: str,
        *,
        attempt: int,
        response: httpx.Response | None = None,
        error: Exception | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(summary)
        self.attempt = attempt
        self.response = response
        self.error = error
        self.retry_after = retry_after
        self.refused_wait: float | None = None


def _is_rate_limit_403(response: httpx.Response, delay: float | None) -> bool:
    # GitHub answers 403 (not 429) when a rate limit is exceeded; that is not a credentials
    # problem, and calling it one would send the operator rotating a valid token.
    if delay is not None:
        return True
    return "rate limit" in response.content[:2000].decode("utf-8", "replace").lower()


def _backoff(policy: RetryPolicy, attempt: int) -> float:
    jitter = random.uniform(0, policy.wait_jitter) if policy.wait_jitter else 0.0
    try:
        return min(policy.wait_max, policy.wait_initial * 2.0 ** (attempt - 1) + jitter)
    except OverflowError:
        return policy.wait_max


async def _attempt(
    client: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    kwargs: Mapping[str, Any],
    *,
    where: str,
    policy: RetryPolicy,
    deadline: float,
    number: int,
) -> httpx.Response:
    try:
        # The deadline bounds the attempt too: httpx timeouts apply per phase, not in total.
        async with asyncio.timeout(max(0.0, deadline - policy.clock.monotonic())):
            response = await client.request(method, url, **kwargs)
    except httpx.UnsupportedProtocol as exc:
        raise AdapterConfigError(f"{where} cannot be sent: {exc}") from None
    except httpx.TransportError as exc:
        raise _Retry(f"{where} failed: {type(exc).__name__}", attempt=number, error=exc) from None
    except TimeoutError:
        raise _Retry(f"{where} timed out", attempt=number) from None
    except httpx.DecodingError:
        raise AdapterDataError(f"{where} answered a body that cannot be decoded") from None
    except httpx.TooManyRedirects:
        raise AdapterConfigError(f"{where} redirects in a loop; check the base URL") from None
    status = response.status_code
    if status in policy.statuses:
        delay = policy.retry_after(response)
        raise _Retry(
            f"{where} answered {status}", attempt=number, response=response, retry_after=delay
        )
    if status == 403:
        delay = policy.retry_after(response)
        if _is_rate_limit_403(response, delay):
            raise _Retry(
                f"{where} answered 403 (rate limited)",
                attempt=number,
                response=response,
                retry_after=delay,
            )
    return response


def _unavailable(
    where: str, exc: _Retry, policy: RetryPolicy, started: float
) -> AdapterUnavailable:
    elapsed = policy.clock.monotonic() - started
    attempts = f"{exc.attempt} attempt{'s' if exc.attempt > 1 else ''} in {elapsed:.1f} s"
    detail = ""
    if exc.response is not None:
        response = exc.response
        what = f"answered {response.status_code} {response.reason_phrase}".rstrip()
        detail = _vendor_message(response)
    elif exc.error is not None:
        error = exc.error
        request = _request_of(error) if isinstance(error, httpx.RequestError) else None
        what = f"failed: {type(error).__name__}"
        detail = _shorten(_scrub(str(error), _secrets(request)))
    else:
        what = f"got no complete answer within the {policy.deadline:g} s deadline"
    if exc.refused_wait is not None:
        what += (
            f" and asks to wait {exc.refused_wait:.1f} s, past the {policy.deadline:g} s deadline"
        )
    message = f"{where} {what} ({attempts})"
    return AdapterUnavailable(f"{message}: {detail}" if detail else message)


def _query_in_params(url: str | httpx.URL, params: Any) -> tuple[str | httpx.URL, Any]:
    """Move a query string from `url` into `params`, explicit `params` winning on a clash.

    httpx 0.28 replaces a URL's query with the request's params whenever there are any (the
    client's own `params`, such as an API key, count): a next-page URL would lose its page.
    """
    parsed = httpx.URL(url)
    if not parsed.query:
        return url, params
    return parsed.copy_with(query=None), httpx.QueryParams(parsed.params).merge(params)


def _request_of(source: httpx.Response | httpx.RequestError) -> httpx.Request | None:
    try:
        return source.request
    except RuntimeError:  # httpx attached none
        return None


def _raise_for_status(method: str, response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    where = f"{method} {_safe_url(response.request.url)}"
    message = f"{where} answered {status} {response.reason_phrase}".rstrip()
    detail = _vendor_message(response)
    if detail:
        message = f"{message}: {detail}"
    error: SourceError
    if status in (401, 403):
        error = AdapterAuthError(message)
    elif status < 500:
        error = AdapterConfigError(message)
    else:
        error = AdapterUnavailable(message)
    error.status = status
    raise error


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    **request_kwargs: Any,
) -> httpx.Response:
    """Send one logical request, retried per `policy`; the 2xx/3xx response, or a SourceError.

    A query string in `url` is kept, merged with `params` (which win on a clash).
    """
    started = policy.clock.monotonic()
    deadline = started + policy.deadline
    try:
        url, params = _query_in_params(url, request_kwargs.get("params"))
        target = client.build_request(method, url).url
    except httpx.InvalidURL as exc:
        raise AdapterConfigError(f"not a usable URL: {exc}") from None
    if params is not None:
        request_kwargs["params"] = params
    where = f"{method} {_safe_url(target)}"

    def on_error(exc: Exception) -> bool | float:
        # A float overrides stamina's own backoff, and stamina does not cap it: bound every wait
        # by the time left, and give up at once rather than sleep to the deadline for a retry
        # the server has already said it will refuse.
        if not isinstance(exc, _Retry):
            return False
        remaining = deadline - policy.clock.monotonic()
        wait = exc.retry_after if exc.retry_after is not None else _backoff(policy, exc.attempt)
        if wait >= remaining:
            if exc.retry_after is not None:
                exc.refused_wait = exc.retry_after
            return False
        return max(0.0, wait)

    # The context-manager form, not a retried callable: stamina logs a callable's arguments,
    # and these carry headers and tokens.
    try:
        async for attempt in stamina.retry_context(
            on=on_error,
            attempts=policy.attempts,
            timeout=policy.deadline,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
            wait_jitter=policy.wait_jitter,
        ):
            with attempt:
                response = await _attempt(
                    client,
                    method,
                    url,
                    request_kwargs,
                    where=where,
                    policy=policy,
                    deadline=deadline,
                    number=attempt.num,
                )
    except _Retry as exc:
        raise _unavailable(where, exc, policy, started) from None
    _raise_for_status(method, response)
    return response


def _decode(method: str, response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):
        content_type = response.headers.get("content-type") or "no content type"
        head = response.content[:4096].decode("utf-8", "replace")
        head = _scrub(head, _secrets(response.request))[:60]
        raise AdapterDataError(
            f"{method} {_safe_url(response.request.url)} answered {response.status_code} "
            f"with {content_type}, not JSON: {head!r}"
        ) from None


async def get_json(
    client: httpx.AsyncClient,
    url: str | httpx.URL,
    *,
    params: Mapping[str, Any] | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """GET `url` through `send` and decode its JSON body (None for a 204)."""
    response = await send(client, "GET", url, policy=policy, params=params, headers=headers)
    return _decode("GET", response)


# --- pagination ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page to fetch: its URL, query parameters, JSON body, and how to name it in errors.

    Public: a `Paginator` of your own returns these. `paginate` sends `url` with `params` in the
    query (merged with any query `url` has) and `body` as JSON; two identical requests in one
    listing are a pagination loop.
    """

    url: str
    params: Mapping[str, Any] | None = None
    body: Any = None
    label: str = ""


class Paginator(Protocol):
    """How to get from one page to the next; pure, so one instance serves any number of listings.

    Public: implement it (any class with these two methods; no base class) when none of
    `PageNumber`, `Offset`, `CursorField`, `NextUrl`, `LinkHeader` fits your API, e.g. keyset
    paging that adds `id > <last id>` to the next query. `next` returns None to end the listing,
    and raises a SourceError (e.g. `ResultsCapped`) when it cannot go on without losing records.
    """

    def first(self, url: str, params: Mapping[str, Any] | None, body: Any) -> PageRequest:
        """The request for the first page."""
        ...

    def next(
        self, page: PageRequest, response: httpx.Response, body: Any, count: int
    ) -> PageRequest | None:
        """The request for the page after `page` (whose decoded body held `count` records)."""
        ...


def _param(page: PageRequest, name: str) -> int:
    return int((page.params or {})[name])


def _total(read: Callable[[Any], Any], body: Any) -> int:
    count = _read(read, body, "the total")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise AdapterDataError(f"the total of the page is not a count: {_shorten(repr(count), 40)}")
    return count


def _capped(total: int | None, cap: int) -> ResultsCapped:
    if total is None:
        message = f"the search reached its cap of {cap} results and more follow"
    else:
        message = f"the search holds {total} results, more than the {cap} it answers"
    return ResultsCapped(f"{message}: narrow the query (adapters.partition)", total=total, cap=cap)


@dataclass(frozen=True, slots=True)
class PageNumber:
    """`?page=1&per_page=100`, then 2, 3...; stops on an empty page, or a short one when `size`.

    Set `size` to at most the server's own maximum page size: a server that silently caps it
    makes every page short, and the listing would stop after the first one.

    Bounds, for searches that answer only so many pages (Freshdesk: 10 of 30): `total` reads
    the number of results from a page and ends the listing once every page it fills was asked
    for; `max_pages` is the vendor's page cap: a listing that needs more pages raises
    `ResultsCapped` (on the first page already when `total` says so) instead of asking for a
    page the vendor refuses or silently ending short. Both need `size`.
    """

    param: str = "page"
    start: int = 1
    size_param: str | None = "per_page"
    size: int | None = 100
    max_pages: int | None = field(default=None, kw_only=True)
    total: Callable[[Any], Any] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if (self.max_pages is not None or self.total is not None) and not self.size:
            raise ValueError("PageNumber: max_pages and total need the page size (size)")
        if self.max_pages is not None and self.max_pages < 1:
            raise ValueError("PageNumber.max_pages must be at least 1")

    def first(self, url: str, params: Mapping[str, Any] | None, body: Any) -> PageRequest:
        """The request for page `start`."""
        query = {**(params or {}), self.param: self.start}
        if self.size_param is not None and self.size is not None:
            query[self.size_param] = self.size
        return PageRequest(url, query, body, f"page {self.start}")

    def next(
        self, page: PageRequest, response: httpx.Response, body: Any, count: int
    ) -> PageRequest | None:
        """The next page number, unless this page was empty, short, or the last one `total` fills.

        Raises ResultsCapped when the next page would be past `max_pages`.
        """
        number = _param(page, self.param)
        asked = number - self.start + 1  # pages of this listing so far
        if self.size and self.total is not None:
            total = _total(self.total, body)
            if self.max_pages is not None and total > self.max_pages * self.size:
                raise _capped(total, self.max_pages * self.size)
            if asked * self.size >= total:
                return None
            if count < self.size:
                # The vendor stopped before the count it announced (a silent cap, a record
                # that left meanwhile): ending here would be a short listing.
                raise AdapterDataError(
                    f"{page.label} held {count} of {self.size} results while the total "
                    f"announces {total}: the listing would be short"
                )
        if count == 0 or (self.size is not None and count < self.size):
            return None
        if self.size and self.max_pages is not None and asked >= self.max_pages:
            # A full last page at the cap: the vendor would refuse or drop what follows.
            raise _capped(None, self.max_pages * self.size)
        number += 1
        return PageRequest(
            page.url, {**(page.params or {}), self.param: number}, page.body, f"page {number}"
        )


@dataclass(frozen=True, slots=True)
class Offset:
    """`?offset=0&limit=100`, then 100, 200...; stops on a page shorter than `limit`.

    Bounds, as for `PageNumber`: `total` reads the number of results and ends the listing at
    it; `max_results` is the vendor's cap on `offset + limit` (Zendesk search: 1,000): a
    listing that needs more raises `ResultsCapped`.
    """

    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = 100
    max_results: int | None = field(default=None, kw_only=True)
    total: Callable[[Any], Any] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.max_results is not None and self.max_results < self.limit:
            raise ValueError("Offset.max_results must be at least one page (limit)")

    def first(self, url: str, params: Mapping[str, Any] | None, body: Any) -> PageRequest:
        """The request at offset 0."""
        query = {**(params or {}), self.offset_param: 0, self.limit_param: self.limit}
        return PageRequest(url, query, body, "offset 0")

    def next(
        self, page: PageRequest, response: httpx.Response, body: Any, count: int
    ) -> PageRequest | None:
        """The next offset, unless this page was short or the last of `total`.

        Raises ResultsCapped when the next page would reach past `max_results`.
        """
        offset = _param(page, self.offset_param) + count
        if self.total is not None:
            total = _total(self.total, body)
            if self.max_results is not None and total > self.max_results:
                raise _capped(total, self.max_results)
            if offset >= total:
                return None
            if count < self.limit:
                raise AdapterDataError(
                    f"{page.label} held {count} of {self.limit} results while the total "
                    f"announces {total}: the listing would be short"
                )
        if count < self.limit or count == 0:
            return None
        if self.max_results is not None and offset + self.limit > self.max_results:
            raise _capped(None, self.max_results)
        query = {**(page.params or {}), self.offset_param: offset}
        return PageRequest(page.url, query, page.body, f"offset {offset}")


def _read(func: Callable[[Any], Any], body: Any, what: str) -> Any:
    try:
        return func(body)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise AdapterDataError(
            f"cannot read {what} from the page: {type(exc).__name__}: {_shorten(str(exc), 80)}"
        ) from exc


@dataclass(frozen=True, slots=True)
class CursorField:
    """A cursor read from the body, sent back as `param` (in the query or the JSON body).

    e.g. `CursorField(lambda b: b["meta"]["after_cursor"] if b["meta"]["has_more"] else None,
    param="page[after]")`; a None or empty cursor ends the listing.
    """

    next_cursor: Callable[[Any], str | None]
    param: str = field(default="cursor", kw_only=True)
    where: Literal["query", "body"] = field(default="query", kw_only=True)

    def first(self, url: str, params: Mapping[str, Any] | None, body: Any) -> PageRequest:
        """The request without a cursor."""
        return PageRequest(url, params, body, "the first page")

    def next(
        self, page: PageRequest, response: httpx.Response, body: Any, count: int
    ) -> PageRequest | None:
        """The same request with the next cursor, if the body gives one."""
        cursor: object = _read(self.next_cursor, body, "the next cursor")
        if cursor is None or cursor == "":
            return None
        if isinstance(cursor, int) and not isinstance(cursor, bool):
            cursor = str(cursor)
        if not isinstance(cursor, str):
            raise AdapterDataError(
                f"the next cursor is neither text nor an integer: got {type(cursor).__name__}"
            )
        label = f"cursor {_shorten(cursor, 40)!r}"
        if self.where == "body":
            if page.body is not None and not isinstance(page.body, dict):
                raise AdapterDataError("a cursor sent in the body needs a JSON object body")
            return PageRequest(
                page.url, page.params, {**(page.body or {}), self.param: cursor}, label
            )
        return PageRequest(page.url, {**(page.params or {}), self.param: cursor}, page.body, label)


def _follow(page: PageRequest, response: httpx.Response, target: str, what: str) -> PageRequest:
    try:
        url = response.url.join(target)
    except httpx.InvalidURL:
        raise AdapterDataError(f"{what} is not a usable URL") from None
    origin = response.url
    if (url.scheme, url.host, url.port) != (origin.scheme, origin.host, origin.port):
        # The client's credentials go with every request it sends: never to another origin.
        raise AdapterDataError(
            f"{what} leaves {origin.scheme}://{origin.host}: {_safe_url(url)}; not followed"
        )
    return PageRequest(str(url), None, page.body, f"{what} {_safe_url(url)}")


@dataclass(frozen=True, slots=True)
class NextUrl:
    """A full next-page URL in the body (Zendesk `next_page`, HubSpot `paging.next.link`).

    The URL carries the query of the next page itself, so the first request's `params` are not
    sent again (the client's own `params` still are). It must stay on the same origin.
    """

    next_url: Callable[[Any], str | None]

    def first(self, url: str, params: Mapping[str, Any] | None, body: Any) -> PageRequest:
        """The request as given."""
        return PageRequest(url, params, body, "the first page")

    def next(
        self, page: PageRequest, response: httpx.Response, body: Any, count: int
    ) -> PageRequest | None:
        """The URL the body names, if any."""
        target: object = _read(self.next_url, body, "the next page URL")
        if target is None or target == "":
            return None
        if not isinstance(target, str):
            raise AdapterDataError(f"the next page URL is not text: got {type(target).__name__}")
        return _follow(page, response, target, "the next page URL")


_LINK_PARAM: Final = re.compile(r'\s*([^=;,\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,]*))?')


def parse_link_header(value: str) -> list[tuple[str, dict[str, str]]]:
    """The links of an RFC 8288 `Link` header: (target, parameters with lower-case names)."""
    links: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(value)
    while i < n:
        start = value.find("<", i)
        if start < 0:
            break
        end = value.find(">", start + 1)
        if end < 0:
            break
        target = value[start + 1 : end].strip()
        params: dict[str, str] = {}
        i = end + 1
        while True:
            while i < n and value[i] in " \t":
                i += 1
            if i >= n or value[i] != ";":
                break
            i += 1
            match = _LINK_PARAM.match(value, i)
            if match is None or not match.group(1):
                break
            raw = (match.group(2) or "").strip()
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params.setdefault(match.group(1).lower(), raw)
            i = match.end()
        links.append((target, params))
        # Skip to the next link: anything up to the separating comma is not ours to read.
        comma = value.find(",", i)
        if comma < 0:
            break
        i = comma + 1
    return links


@dataclass(frozen=True, slots=True)
class LinkHeader:
    """The `rel="next"` target of the `Link` header (GitHub, Zendesk legacy pagination)."""

    rel: str = "next"

    def first(self, url: str, params: Mapping[str, Any] | None, body: Any) -> PageRequest:
        """The request as given."""
        return PageRequest(url, params, body, "the first page")

    def next(
        self, page: PageRequest, response: httpx.Response, body: Any, count: int
    ) -> PageRequest | None:
        """The `rel="next"` link of the response, if any."""
        header = ", ".join(response.headers.get_list("link"))
        for target, params in parse_link_header(header):
            if self.rel in params.get("rel", "").lower().split():
                return _follow(page, response, target, f'the Link rel="{self.rel}" URL')
        return None


def _page_records(records: Callable[[Any], Sequence[Any]], body: Any, where: str) -> Sequence[Any]:
    items = _read(records, body, f"the records of {where}")
    if not isinstance(items, list | tuple):
        raise AdapterDataError(
            f"the records of {where} are a {type(items).__name__}, not a list "
            "(does `records` select the right part of the answer?)"
        )
    return items


async def paginate(
    client: httpx.AsyncClient,
    url: str,
    paginator: Paginator,
    *,
    records: Callable[[Any], Sequence[Any]],
    params: Mapping[str, Any] | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    max_pages: int = 100_000,
    method: str = "GET",
    body: Any = None,
    total: Callable[[Any], Any] | None = None,
) -> AsyncGenerator[Any, None]:
    """Yield the records of every page in order, or raise: never a silently short listing.

    A page request identical to one already sent, or a page whose records equal the previous
    page's (a server ignoring the page parameter), raises AdapterDataError("pagination loop");
    going past `max_pages` raises AdapterDataError too. `body` is sent as JSON (e.g. with
    `method="POST"` searches). With `total` (reading the API's record count from a page body),
    a count that changes while paging, or a listing that ends with another number of records,
    raises AdapterDataError: offset and page-number paging over data that changes meanwhile
    silently skips records, and a skipped open ticket would have its task closed.

    The paginator decides on the next page before a page's records are yielded, so a listing
    it finds over a vendor's cap (`ResultsCapped`) fails on its first page. An async generator:
    `await pages.aclose()` ends a listing early and closes its pending request.
    """
    page: PageRequest | None = paginator.first(url, params, body)
    sent: set[tuple[str, bytes]] = set()
    previous: Sequence[Any] = ()
    number = 0
    promised: int | None = None
    delivered = 0
    while page is not None:
        number += 1
        url_only, query = _query_in_params(page.url, page.params)
        request = client.build_request(method, url_only, params=query, json=page.body)
        where = f"page {number} of {method} {_safe_url(request.url)}"
        if number > max_pages:
            raise AdapterDataError(
                f"more than max_pages={max_pages} pages from {method} {_safe_url(request.url)}"
            )
        key = (str(request.url), request.content)
        if key in sent:
            raise AdapterDataError(f"pagination loop: {where} repeated {page.label}")
        sent.add(key)
        response = await send(
            client, method, page.url, policy=policy, params=page.params, json=page.body
        )
        data = _decode(method, response)
        items = _page_records(records, data, where)
        if items and items == previous:
            raise AdapterDataError(
                f"pagination loop: {where} ({page.label}) repeated the records of page "
                f"{number - 1}; does the server ignore the page parameter?"
            )
        if total is not None:
            count = _read(total, data, "the total")
            if not isinstance(count, int) or isinstance(count, bool):
                raise AdapterDataError(f"{where}: the total is not an integer")
            if promised is not None and count != promised:
                raise AdapterDataError(
                    f"the listing changed while it was paged (total {promised} on page 1, "
                    f"{count} on {where}): records may have been skipped; try again"
                )
            promised = count
        following = paginator.next(page, response, data, len(items))
        delivered += len(items)
        for item in items:
            yield item
        previous = items
        page = following
    if promised is not None and delivered != promised:
        raise AdapterDataError(
            f"the listing announced {promised} records and delivered {delivered}: records "
            "were skipped or repeated while paging"
        )
