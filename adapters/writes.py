"""Helpers for adapters that write back: one request whose refusals say what went wrong.

A write-back's request goes through `adapters.http.send` like any other (429/5xx retried under the
deadline, no credential in any message), and the answers that matter for a write are told apart:
404 and 410 mean the ticket is gone (`TicketGone`), 409 and 422 that the back-office refuses the
change as invalid (`WriteBackRejected`: no such transition, a closed ticket that cannot change).
"""

from __future__ import annotations

from typing import Any

import httpx

from adapters.base import AdapterConfigError, SourceError, TicketGone, WriteBackRejected
from adapters.http import DEFAULT_POLICY, RetryPolicy, send

GONE = frozenset({404, 410})
REJECTED = frozenset({409, 422})


async def write_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    **request_kwargs: Any,
) -> httpx.Response:
    """Send one write (or the read before it): TicketGone, WriteBackRejected, or a SourceError."""
    try:
        return await send(client, method, url, policy=policy, **request_kwargs)
    except AdapterConfigError as exc:
        error: SourceError
        if exc.status in GONE:
            error = TicketGone(str(exc))
        elif exc.status in REJECTED:
            error = WriteBackRejected(str(exc))
        else:
            raise
        error.status = exc.status
        raise error from None


def json_object(response: httpx.Response, key: str | None = None) -> dict[str, Any]:
    """The JSON object of an answer (or its `key` member), {} when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    if key is not None and isinstance(body, dict):
        body = body.get(key)
    return body if isinstance(body, dict) else {}
