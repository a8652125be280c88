"""The sandbox's wire formats: instants, uids, strict JSON, and the bodies it answers with.

Instants are kept as epoch milliseconds and written as ISO 8601 UTC with milliseconds, as
fragment-api.md shows them; JSON is compact and strict (no NaN, which could not be served back).
Every other sandbox module builds on these; none of them is shared with our Fragment client.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


class _Missing:
    """The type of `MISSING`: a key absent from an object, as opposed to a JSON null."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


@functools.lru_cache(maxsize=4096)
def _format_second(second: int) -> str:
    # Cached: bulk writes and listings format the same few seconds over and over.
    return f"{_EPOCH + timedelta(seconds=second):%Y-%m-%dT%H:%M:%S}"


def format_instant(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds, e.g. `2025-09-11T12:00:00.000Z`."""
    second, millis = divmod(ms, 1000)
    return f"{_format_second(second)}.{millis:03d}Z"


def opt_instant(ms: int | None) -> str | None:
    """`format_instant`, None staying None."""
    return None if ms is None else format_instant(ms)


def parse_instant(value: object) -> int | None:
    """An ISO 8601 date-time with a zone as epoch milliseconds; None if `value` is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.utcoffset() is None:
        return None
    return (parsed - _EPOCH) // _MS


def normalize_uid(value: object) -> str | None:
    """The canonical form of a UUID string; None if `value` is not one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.dumps/json.loads with options build a new encoder/decoder on every call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def dumps(value: object) -> bytes:
    """Compact JSON bytes; ASCII-only so that lone surrogates sent by a client cannot break it."""
    return _ENCODER.encode(value).encode()


def loads(data: bytes | str) -> Any:
    """Parse strict JSON (no NaN or Infinity, which could not be served back); raise ValueError."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return _DECODER.decode(text)


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (several times faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def is_int(value: object) -> bool:
    """Whether `value` is a JSON integer (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether `value` is a JSON number (a bool is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def same(a: object, b: object) -> bool:
    """JSON equality: unlike `==`, `1`, `1.0` and `true` differ (a client would see the change)."""
    return a == b and dumps(a) == dumps(b)


def json_eq(a: object, b: object) -> bool:
    """Equality as a query compares values: `true` equals no number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def items_json(items: list[bytes]) -> bytes:
    """`{"items": [...]}` around already encoded items."""
    return b'{"items":[' + b",".join(items) + b"]}"


def page_json(
    items: list[bytes], limit: int, snapshot_id: str | None, offset: int, total: int
) -> bytes:
    """One page of a listing, `{"items", "meta"}`, its cursors naming the listing's snapshot."""

    def cursor(at: int | None) -> str | None:
        return None if snapshot_id is None or at is None else f"{snapshot_id}.{at}"

    following = offset + limit if offset + limit < total else None
    previous = max(0, offset - limit) if offset > 0 else None
    meta = {
        "limit": limit,
        "self_cursor": cursor(offset),
        "prev_cursor": cursor(previous),
        "next_cursor": cursor(following),
        "total_count": total,
    }
    return b'{"items":[' + b",".join(items) + b'],"meta":' + dumps(meta) + b"}"


def retry_after_header(seconds: float) -> str:
    """A Retry-After value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
