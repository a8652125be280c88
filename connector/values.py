"""Normalised values: the one place that decides when two task values are "the same".

Fragment echoes timestamps in its own format and may turn `12.0` into `12`; people's back-offices
add stray whitespace and Windows line ends. Desired values are normalised before they are sent and
both sides are normalised before they are compared, so a ticket that did not change never causes a
write.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.models import Fields, JSONValue, Task, TaskDigest


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision, as Fragment writes it."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_timestamp(value: object) -> datetime | None:
    """Parse an ISO 8601 timestamp (naive ones are taken as UTC); None when absent or unreadable."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def normalise(value: Any) -> JSONValue:
    """A JSON value in canonical form: trimmed strings, `\\n` line ends, integral floats as ints."""
    kind = type(value)
    # Exact-type checks first: this runs for every field of every ticket of every cycle.
    if kind is str:
        text: str = value
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text.strip()
    if kind is int or kind is bool or value is None:
        scalar: int | None = value
        return scalar
    if isinstance(value, str):
        return normalise(str(value))
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, dict):
        return {str(k): normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    raise TypeError(f"not a JSON value: {type(value).__name__}")


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical(value: JSONValue) -> str:
    """A string equal for equal normalised values (keys sorted; `true` is not `1`)."""
    return _CANONICAL.encode(normalise(value))


def fields_digest(fields: Fields) -> bytes:
    """A digest of fields as they are: equal digests mean `same` holds for every key.

    Keys whose value is null are left out, since a missing value equals null. Values are not
    normalised here: the desired ones already are, and Fragment echoes what it was sent, so an
    unchanged task has its desired fields' digest. A digest that differs proves nothing (a value
    written differently, a field the connector does not manage): the full comparison decides.
    16 bytes of BLAKE2b: kept in the mirror's table, so stable across processes.
    """
    present = {k: v for k, v in fields.items() if v is not None}
    return hashlib.blake2b(_CANONICAL.encode(present).encode(), digest_size=16).digest()


def task_digest(task: Task) -> TaskDigest:
    """The mirror's view of a task: status, fields digest, due date."""
    due = format_timestamp(task.due_at) if task.due_at is not None else None
    return TaskDigest(task.status, fields_digest(task.fields), due)


_SCALARS = (str, int, float, bool)


def same(left: JSONValue, right: JSONValue) -> bool:
    """Whether two values are equal once normalised; a missing value equals null."""
    if left is None or right is None:
        return left is None and right is None
    kind = type(left)
    # Fast path for the common case (Fragment echoes what was sent): same scalar type, equal.
    # Containers always go the canonical way, since [1] == [True] in Python.
    if kind is type(right) and kind in _SCALARS and left == right:
        return True
    return canonical(left) == canonical(right)


_SHORT = 24


def compact(fields: dict[str, Any]) -> dict[str, Any]:
    """The same dict with its keys and short text values interned.

    A 100k-ticket backlog repeats the same few keys ("title", "fc_source"...) and values ("FR",
    "normal") 100k times; each JSON document decoded separately would keep its own copies.
    """
    intern = sys.intern
    return {
        intern(k): intern(v) if type(v) is str and len(v) <= _SHORT else v
        for k, v in fields.items()
    }


def parse_http_date(value: str | None) -> datetime | None:
    """The moment an HTTP date header (`Date`, RFC 9110) names, or None when absent or unreadable.

    Hostile input: anything that is not a date reads as no date.
    """
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds asked for by a Retry-After value (delta-seconds or an HTTP date), else None.

    `now` is the Unix time the date form is measured from (the server's clock if known).
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def format_duration(seconds: float) -> str:
    """A duration as the config writes it: `90s`, `5m`, `2h`, `1d`, `250ms`."""
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_duration(value: object) -> object:
    """A config duration (`30s`, `5m`, `1h`, `250ms`, `2d` or a number of seconds) as a
    timedelta; anything else is left for the model's own validation."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected a duration such as 30s, 5m, 1h or a number of seconds")
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    return value
