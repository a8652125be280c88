"""The sandbox's state and task semantics: tasks, listing snapshots, faults, rate buckets, the log.

Plain data behind one `threading.Lock`, with no HTTP in it. `app.py` turns each request into one
call on a `SandboxStore` and each `SandboxError` into a status code; tests reach the same store
in-process through `SandboxServer.store`. It implements fragment-api.md on its own (validation,
PUT replace, PATCH merge, filtered cursor-paged listings, the condition tree of `/tasks/query`)
and shares no code with our Fragment client, so that the two cannot drift together. It is measured
against in benchmarks: tasks live in one dict keyed by uid, each task's public JSON is encoded once
per change, and only the first page of a listing scans the tasks.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import os
import random
import secrets
import tempfile
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, cast

STATUSES: Final = ("TODO", "STARTED", "DONE")
TITLE_MAX_LENGTH: Final = 1000
ACCOUNT_ID: Final = "sandbox"
ACCOUNT: Final = {"id": "acc_sandbox", "name": "Sandbox account"}
WRITER_MARKER: Final = "fc_source"
"""The custom field whose concurrent writers `stats()["max_concurrent_writers"]` counts."""

SNAPSHOT_MAX: Final = 256
SNAPSHOT_TTL_S: Final = 600.0
# 256 snapshots of a 100k-task listing would hold 25.6M references; cap the sum instead.
SNAPSHOT_UIDS_MAX: Final = 4_000_000
REQUEST_LOG_MAX: Final = 100_000
TUNABLE: Final = (
    "requests_per_minute",
    "rate_burst",
    "max_batch_size",
    "max_page_size",
    "visibility_delay_s",
)
"""The `SandboxConfig` fields that `update_config` and `PUT /_sandbox/config` may change."""

_STATUS_SET: Final = frozenset(STATUSES)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_WRITABLE: Final = frozenset({"uid", "status", "fields", "due_at", "assignee_email", "archived"})
# A client that sends a task back as it read it is not wrong: read-only keys are ignored.
_READ_ONLY: Final = frozenset(
    {
        "created_at",
        "updated_at",
        "started_at",
        "done_at",
        "external_status",
        "external_updated_at",
        "account_id",
    }
)
# The documented body of POST /tasks/query: the condition tree under `condition`, sorts, limit;
# the reference's sample also shows the keys of `_QUERY_IGNORED`, which the sandbox accepts and
# does not implement. `cursor` is assumed, as for GET /tasks.
_QUERY_KEYS: Final = frozenset({"condition", "sorts", "limit", "cursor"})
_QUERY_IGNORED: Final = frozenset({"selects", "groups", "variables", "functions", "expand"})
# Operator spelling -> meaning. `==` is documented; the others are assumed (fragment-api.md).
_OPERATORS: Final = {
    "==": "eq",
    "!=": "neq",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "in": "in",
    "contains": "contains",
}
# What a lenient sandbox honours of a query: the documented operator, combinator and direction.
_DOCUMENTED_OPERATORS: Final = frozenset({"=="})
_CONDITION_KEYS: Final = ("field", "operator", "value")
PROFILES: Final = ("strict", "lenient")
"""`strict` (default): undocumented keys and parameters are refused with a 422, so a client that
sends one is caught. `lenient`: as a FastAPI service with default models, unknown keys and
parameters are ignored, and so are the optional filters the documentation does not state
(`status`, `fields.<key>`, `updated_at_after`, `order_by`, query conditions other than `==`)."""
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_TIME_FIELDS: Final = frozenset({"created_at", "updated_at", "due_at"})
_BY_CREATED: Final = operator.attrgetter("created_at", "seq")
_BY_UPDATED: Final = operator.attrgetter("updated_at", "seq")
_BY_SEQ: Final = operator.attrgetter("seq")
_DEFAULT_LIMIT: Final = 50


class _Missing:
    """The type of `MISSING`: a key absent from an object, as opposed to a JSON null."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


# --- errors ------------------------------------------------------------------------------------


class SandboxError(Exception):
    """A request the sandbox refuses; app.py maps each subclass to one status code."""


class ValidationFailed(SandboxError):
    """422: the body or query is malformed; `errors` lists every problem with its `loc`."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


class TaskNotFound(SandboxError):
    """404: no task has this uid."""


class InvalidCursor(SandboxError):
    """400: the cursor was never issued, or its snapshot expired or was evicted."""


# --- configuration and fault knobs -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Settings of one sandbox; the `TUNABLE` ones can also be changed while it runs."""

    token: str = "sandbox-token"  # noqa: S105 - the fake's documented default, not a secret
    test_mode: bool = False
    requests_per_minute: float | None = 60.0
    rate_burst: int = 10
    max_batch_size: int = 100
    max_page_size: int = 100
    visibility_delay_s: float = 0.0
    data_path: Path | None = None
    seed: int = 0
    profile: str = "strict"

    @property
    def lenient(self) -> bool:
        """Whether this sandbox ignores what it does not know (see `PROFILES`)."""
        return self.profile == "lenient"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
        if isinstance(self.data_path, str):  # a path from a CLI option or a settings file
            object.__setattr__(self, "data_path", Path(self.data_path))
        rpm = self.requests_per_minute
        if rpm is not None and not (_is_number(rpm) and rpm > 0):
            raise ValueError("requests_per_minute must be a positive number or None")
        for name in ("rate_burst", "max_batch_size", "max_page_size"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1")
        if not (_is_number(self.visibility_delay_s) and self.visibility_delay_s >= 0):
            raise ValueError("visibility_delay_s must be a number >= 0")


@dataclass(frozen=True, slots=True)
class FailRule:
    """One deterministic fault: the next `count` requests matching `method` and `path` fail.

    `path` is relative to /api/v1 and matches the concrete path (`/tasks/batch`), the route
    template (`/tasks/{uid}`) or anything (`*`); `method` may also be `*`. `status` is an HTTP
    status to answer with, `"drop"` (close the connection before handling), `"lost"` (handle
    the request, apply its write, then close the connection without answering) or `"partial"`
    (a batch write whose last item is neither applied nor answered, the rest as usual: a 200
    that does not account for every item).
    """

    method: str
    path: str
    status: int | Literal["drop", "lost", "partial"]
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise ValueError("fail_next.method must be an HTTP method or '*'")
        if not isinstance(self.path, str) or not (self.path == "*" or self.path.startswith("/")):
            raise ValueError("fail_next.path must start with '/' or be '*'")
        if self.status not in ("drop", "lost", "partial") and not (
            _is_int(self.status) and 400 <= cast(int, self.status) <= 599
        ):
            raise ValueError(
                "fail_next.status must be a 4xx/5xx status, 'drop', 'lost' or 'partial'"
            )
        if not (_is_int(self.count) and self.count >= 1):
            raise ValueError("fail_next.count must be an integer >= 1")

    def matches(self, method: str, path: str, route: str) -> bool:
        """Whether a request to `path` (routed as `route`) with `method` is one this rule fails."""
        return (self.method == "*" or self.method.upper() == method) and (
            self.path == "*" or self.path == path or self.path == route
        )


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault knobs for /api/v1 (test mode only), drawn from `random.Random(config.seed)`."""

    p_429: float = 0.0
    p_5xx: float = 0.0
    latency_s: float = 0.0
    p_drop: float = 0.0
    p_lost_response: float = 0.0
    retry_after_s: int = 1
    fail_next: tuple[FailRule, ...] = ()

    def __post_init__(self) -> None:
        for name in ("p_429", "p_5xx", "p_drop", "p_lost_response"):
            value = getattr(self, name)
            if not (_is_number(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a probability between 0 and 1")
        if not (_is_number(self.latency_s) and self.latency_s >= 0):
            raise ValueError("latency_s must be a number >= 0")
        if not (_is_int(self.retry_after_s) and self.retry_after_s >= 0):
            raise ValueError("retry_after_s must be an integer >= 0")
        # A list passed by a caller would make the frozen dataclass mutable from outside.
        object.__setattr__(self, "fail_next", tuple(self.fail_next))

    @property
    def active(self) -> bool:
        """Whether any knob is set, so that a request must consult the faults at all."""
        return bool(
            self.p_429
            or self.p_5xx
            or self.latency_s
            or self.p_drop
            or self.p_lost_response
            or self.fail_next
        )

    @classmethod
    def from_json(cls, data: object) -> Faults:
        """Build faults from the JSON of `PUT /_sandbox/faults`; raise ValueError if malformed."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        known = {"p_429", "p_5xx", "latency_s", "p_drop", "p_lost_response", "retry_after_s"}
        unknown = set(data) - known - {"fail_next"}
        if unknown:
            raise ValueError(f"unknown fault knobs: {', '.join(sorted(unknown))}")
        rules_raw = data.get("fail_next", [])
        if not isinstance(rules_raw, list):
            raise ValueError("fail_next must be a list of rules")
        rules = []
        for raw in rules_raw:
            if not isinstance(raw, dict) or set(raw) - {"method", "path", "status", "count"}:
                raise ValueError("each fail_next rule is {method, path, status, count}")
            rules.append(
                FailRule(
                    method=raw.get("method", "*"),
                    path=raw.get("path", "*"),
                    status=raw.get("status", 500),
                    count=raw.get("count", 1),
                )
            )
        return cls(**{k: v for k, v in data.items() if k in known}, fail_next=tuple(rules))

    def to_json(self) -> dict[str, Any]:
        """The JSON form served by `GET /_sandbox/faults`."""
        return {
            "p_429": self.p_429,
            "p_5xx": self.p_5xx,
            "latency_s": self.latency_s,
            "p_drop": self.p_drop,
            "p_lost_response": self.p_lost_response,
            "retry_after_s": self.retry_after_s,
            "fail_next": [
                {"method": r.method, "path": r.path, "status": r.status, "count": r.count}
                for r in self.fail_next
            ],
        }


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What the fault knobs make of one request; app.py carries it out."""

    latency_s: float = 0.0
    status: int | None = None
    retry_after_s: int | None = None
    drop: bool = False
    lose_response: bool = False
    partial: bool = False


# --- time and JSON -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _format_second(second: int) -> str:
    # Cached: bulk writes and listings format the same few seconds over and over.
    return f"{_EPOCH + timedelta(seconds=second):%Y-%m-%dT%H:%M:%S}"


def format_instant(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds, e.g. `2025-09-11T12:00:00.000Z`."""
    second, millis = divmod(ms, 1000)
    return f"{_format_second(second)}.{millis:03d}Z"


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


def _copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (several times faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _opt_instant(ms: int | None) -> str | None:
    return None if ms is None else format_instant(ms)


def _same(a: object, b: object) -> bool:
    """JSON equality: unlike `==`, `1`, `1.0` and `true` differ (a client would see the change)."""
    return a == b and dumps(a) == dumps(b)


def _json_eq(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _query_text(value: object) -> str | None:
    """A stored field value as `GET /tasks?fields.<key>=` compares it; None never matches."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    return None


def _orderable(a: object, b: object) -> bool:
    if isinstance(a, str):
        return isinstance(b, str)
    return _is_number(a) and _is_number(b)


def _sort_key(value: object) -> tuple[int, Any]:
    """A total order over mixed JSON values, so that sorting by a custom field never raises."""
    if value is MISSING:
        return (0, 0)
    if value is None:
        return (1, 0)
    if isinstance(value, bool):
        return (2, int(value))
    if isinstance(value, int | float):
        return (3, value)
    if isinstance(value, str):
        return (4, value)
    return (5, dumps(value))


# --- tasks -------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Task:
    uid: str
    seq: int
    status: str
    fields: dict[str, Any]
    due_at: int
    created_at: int
    updated_at: int
    assignee_email: str | None = None
    archived: bool = False
    started_at: int | None = None
    done_at: int | None = None
    comments: list[dict[str, Any]] | None = None
    encoded: bytes | None = None

    def public(self) -> dict[str, Any]:
        """The task as the API returns it (write-only `assignee_email` left out)."""
        return {
            "uid": self.uid,
            "status": self.status,
            "fields": self.fields,
            "due_at": format_instant(self.due_at),
            "archived": self.archived,
            "created_at": format_instant(self.created_at),
            "updated_at": format_instant(self.updated_at),
            "started_at": _opt_instant(self.started_at),
            "done_at": _opt_instant(self.done_at),
            "external_status": None,
            "external_updated_at": None,
            "account_id": ACCOUNT_ID,
        }

    def to_json(self) -> bytes:
        """The public JSON, encoded once per change."""
        if self.encoded is None:
            self.encoded = dumps(self.public())
        return self.encoded

    def dump_json(self) -> bytes:
        """The whole task, with write-only `assignee_email` and `comments`, as JSON."""
        extra = dumps({"assignee_email": self.assignee_email, "comments": self.comments or []})
        return self.to_json()[:-1] + b"," + extra[1:]

    def dump(self) -> dict[str, Any]:
        """A detached copy of the whole task, with `assignee_email` and `comments`."""
        data = self.public()
        data["fields"] = _copy_json(self.fields)
        data["assignee_email"] = self.assignee_email
        data["comments"] = [dict(c) for c in self.comments or ()]
        return data

    def set_status(self, status: str, now: int) -> bool:
        """Move to `status`, keeping `started_at`/`done_at` coherent; whether anything changed."""
        if status == self.status:
            return False
        self.status = status
        if status == "STARTED":
            self.started_at = now
            self.done_at = None
        elif status == "DONE":
            self.done_at = now
        else:
            self.started_at = None
            self.done_at = None
        return True

    def merge_fields(self, changes: Mapping[str, Any]) -> bool:
        """Merge `changes` key by key, a null value removing the key; whether anything changed."""
        changed = False
        for key, value in changes.items():
            if value is None:
                if key in self.fields:
                    del self.fields[key]
                    changed = True
            elif key not in self.fields or not _same(self.fields[key], value):
                self.fields[key] = value
                changed = True
        return changed


@dataclass(slots=True)
class _Write:
    """One validated item of a write request: its uid and the top-level properties it sends."""

    uid: str | None
    values: dict[str, Any]
    loc: list[str | int]


@dataclass(slots=True)
class _Snapshot:
    uids: list[str]
    expires: float


@dataclass(slots=True)
class _Condition:
    test: Callable[[_Task], bool]
    # Set for `uid eq/in`: a query by uid then looks those up instead of scanning every task.
    uids: frozenset[str] | None = None


def _error(loc: Sequence[str | int], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


class _Errors:
    """Collects 422 entries, so that every bad item of a batch is reported at once."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: Sequence[str | int], msg: str, kind: str) -> None:
        self.items.append(_error(loc, msg, kind))

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationFailed(self.items)


def _check_fields(
    fields: dict[str, Any], loc: list[str | int], errors: _Errors, *, patch: bool
) -> None:
    if "title" in fields or not patch:
        title = fields.get("title", MISSING)
        where = [*loc, "title"]
        if title is MISSING:
            errors.add(where, "field required", "missing")
        elif title is None and patch:
            errors.add(where, "title cannot be removed", "missing")
        elif not isinstance(title, str):
            errors.add(where, "title must be a string", "string_type")
        elif not title.strip():
            errors.add(where, "title must not be empty", "string_too_short")
        elif len(title) > TITLE_MAX_LENGTH:
            errors.add(
                where, f"title must be at most {TITLE_MAX_LENGTH} characters", "string_too_long"
            )
    url = fields.get("url", MISSING)
    if url is not MISSING and not isinstance(url, str) and not (url is None and patch):
        errors.add([*loc, "url"], "url must be a string", "string_type")


def _check_write(
    raw: object,
    loc: list[str | int],
    mode: Literal["replace", "patch", "create"],
    errors: _Errors,
    *,
    path_uid: str | None = None,
    lenient: bool = False,
) -> _Write | None:
    """Validate one task write, adding its problems to `errors`; None if it has any.

    `lenient`: unknown keys are ignored instead of refused."""
    if not isinstance(raw, dict):
        errors.add(loc, "item must be an object", "dict_type")
        return None
    before = len(errors.items)
    uid = path_uid
    if "uid" in raw:
        given = normalize_uid(raw["uid"])
        if given is None:
            errors.add([*loc, "uid"], "uid must be a UUID string", "uuid_parsing")
        elif path_uid is not None and given != path_uid:
            errors.add([*loc, "uid"], "uid does not match the path", "value_error")
        else:
            uid = given
    elif uid is None and mode != "create":
        errors.add([*loc, "uid"], "field required", "missing")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = [*loc, key]
        if key == "uid" or key in _READ_ONLY:
            continue
        if key == "status":
            if isinstance(value, str) and value in _STATUS_SET:
                values[key] = value
            else:
                errors.add(where, "status must be one of TODO, STARTED, DONE", "enum")
        elif key == "due_at":
            due = parse_instant(value)
            # [assumed] a PATCH of null puts back the default (the creation time).
            if due is None and not (value is None and mode == "patch"):
                errors.add(where, "due_at must be ISO 8601 with a time zone", "datetime_parsing")
            values[key] = due
        elif key == "assignee_email":
            if value is not None and not isinstance(value, str):
                errors.add(where, "assignee_email must be a string or null", "string_type")
            values[key] = value
        elif key == "archived":
            if not isinstance(value, bool):
                errors.add(where, "archived must be a boolean", "bool_type")
            values[key] = value
        elif key == "fields":
            if isinstance(value, dict):
                _check_fields(value, where, errors, patch=mode == "patch")
            else:
                errors.add(where, "fields must be an object", "dict_type")
            values[key] = value
        elif not lenient:
            errors.add(where, "extra fields not permitted", "extra_forbidden")
    if mode != "patch" and "fields" not in raw:
        errors.add([*loc, "fields"], "field required", "missing")
    if len(errors.items) > before:
        return None
    return _Write(uid, values, loc)


# --- the store ---------------------------------------------------------------------------------


class SandboxStore:
    """All of one sandbox's state; every public method is thread-safe."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._initial = config or SandboxConfig()
        self._config = self._initial
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._seq = 0
        self._last_ms = 0
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self._snapshot_uids = 0
        self._faults = Faults()
        self._rules: list[list[Any]] = []  # [FailRule, remaining count], consumed in order
        self._rng = random.Random(self._config.seed)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_MAX)
        self._counts: Counter[tuple[str, str, int | str]] = Counter()
        self._requests_total = 0
        self._writers: Counter[str] = Counter()
        self._max_writers: dict[str, int] = {}
        if self._config.data_path is not None and self._config.data_path.exists():
            self._load(self._config.data_path)

    # configuration

    @property
    def config(self) -> SandboxConfig:
        """The configuration in force (the initial one with any `update_config` changes)."""
        return self._config

    def update_config(self, **changes: Any) -> SandboxConfig:
        """Change `TUNABLE` settings while running; raise ValueError for anything else."""
        unknown = set(changes) - set(TUNABLE)
        if unknown:
            raise ValueError(f"not tunable: {', '.join(sorted(unknown))}")
        with self._lock:
            self._config = replace(self._config, **changes)
            # A new rate or burst applies from a full bucket, as after a restart.
            self._buckets.clear()
            return self._config

    def tunables(self) -> dict[str, Any]:
        """The `TUNABLE` settings as JSON, as `GET /_sandbox/config` serves them."""
        config = self._config
        return {name: getattr(config, name) for name in TUNABLE}

    def check_token(self, token: str) -> bool:
        """Whether `token` is the configured bearer token (constant-time)."""
        return secrets.compare_digest(token.encode(), self._config.token.encode())

    # the API's task operations (each raises SandboxError subclasses; app.py maps them)

    def get_task(self, uid: str) -> bytes:
        """`GET /tasks/{uid}`: the task's JSON."""
        with self._lock:
            return self._find(uid).to_json()

    def replace_tasks(self, body: object) -> bytes:
        """`PUT /tasks/batch`: create or replace every item, all or nothing."""
        with self._lock:
            writes = self._check_batch(body, "replace")
            now = self._now()
            out = [self._replace(w, now).to_json() for w in writes]
        self._persist()
        return _items_json(out)

    def replace_task(self, uid: str, body: object) -> bytes:
        """`PUT /tasks/{uid}`: create or replace one task."""
        with self._lock:
            write = self._check_single(uid, body, "replace")
            result = self._replace(write, self._now()).to_json()
        self._persist()
        return result

    def patch_tasks(self, body: object) -> bytes:
        """`PATCH /tasks/batch`: set the properties sent and merge `fields`, all or nothing."""
        with self._lock:
            writes = self._check_batch(body, "patch", must_exist=True)
            now = self._now()
            out = [self._patch(self._tasks[cast(str, w.uid)], w, now).to_json() for w in writes]
        self._persist()
        return _items_json(out)

    def patch_task(self, uid: str, body: object) -> bytes:
        """`PATCH /tasks/{uid}`: 404 for an unknown uid, else as one item of `patch_tasks`."""
        with self._lock:
            task = self._find(uid)
            write = self._check_single(task.uid, body, "patch")
            result = self._patch(task, write, self._now()).to_json()
        self._persist()
        return result

    def create_tasks(self, body: object) -> bytes:
        """`POST /tasks/batch`: create every item (uid generated when absent), all or nothing."""
        with self._lock:
            writes = self._check_batch(body, "create", must_be_new=True)
            now = self._now()
            out = [self._replace(w, now).to_json() for w in writes]
        self._persist()
        return _items_json(out)

    def create_task(self, body: object) -> bytes:
        """`POST /tasks`: create one task (uid generated when absent)."""
        with self._lock:
            errors = _Errors()
            write = _check_write(body, ["body"], "create", errors, lenient=self._config.lenient)
            if write is not None and write.uid is not None and write.uid in self._tasks:
                errors.add(["body", "uid"], "task already exists", "already_exists")
            errors.raise_if_any()
            result = self._replace(cast(_Write, write), self._now()).to_json()
        self._persist()
        return result

    def add_comment(self, uid: str, body: object) -> bytes:
        """`POST /tasks/{uid}/comments`: attach `{"content": str}` (updated_at is not bumped)."""
        with self._lock:
            task = self._find(uid)
            if not isinstance(body, dict):
                raise ValidationFailed([_error(["body"], "body must be an object", "dict_type")])
            content = body.get("content", MISSING)
            if not isinstance(content, str) or not content.strip():
                kind = "missing" if content is MISSING else "string_type"
                msg = "content must be a non-empty string"
                raise ValidationFailed([_error(["body", "content"], msg, kind)])
            comment = {
                "id": str(uuid.uuid4()),
                "task_uid": task.uid,
                "content": content,
                "created_at": format_instant(self._now()),
            }
            task.comments = [*(task.comments or ()), comment]
        self._persist()
        return dumps(comment)

    def list_tasks(self, params: Sequence[tuple[str, str]]) -> bytes:
        """`GET /tasks`: one page of `{"items", "meta"}` for query parameters `params`."""
        errors = _Errors()
        limit_raw: object = MISSING
        cursor: str | None = None
        statuses: set[str] = set()
        after: int | None = None
        order_key = _BY_CREATED
        equals: list[tuple[str, str]] = []
        lenient = self._config.lenient
        for key, value in params:
            where = ["query", key]
            if lenient and key not in ("limit", "cursor"):
                continue  # optional filters a default FastAPI model would not know: ignored
            if key == "limit":
                try:
                    limit_raw = int(value)
                except ValueError:
                    limit_raw = value
            elif key == "cursor":
                cursor = value
            elif key == "status":
                if value in _STATUS_SET:
                    statuses.add(value)
                else:
                    errors.add(where, "status must be one of TODO, STARTED, DONE", "enum")
            elif key == "updated_at_after":
                after = parse_instant(value)
                if after is None:
                    errors.add(where, "must be ISO 8601 with a time zone", "datetime_parsing")
            elif key == "order_by":
                if value == "updated_at":
                    order_key = _BY_UPDATED
                elif value != "created_at":
                    errors.add(where, "order_by must be created_at or updated_at", "enum")
            elif key.startswith("fields.") and len(key) > len("fields."):
                equals.append((key[len("fields.") :], value))
            else:
                errors.add(where, "unknown query parameter", "extra_forbidden")
        with self._lock:
            limit = self._check_limit(limit_raw, ["query", "limit"], errors)
            errors.raise_if_any()
            if cursor is not None:
                return self._cursor_page(cursor, limit)
            # Successive comprehensions: each is a tight loop, together well under a second at 100k.
            rows = self._visible_tasks()
            if statuses:
                rows = [t for t in rows if t.status in statuses]
            if after is not None:
                rows = [t for t in rows if t.updated_at >= after]
            for name, wanted in equals:
                rows = [t for t in rows if _query_text(t.fields.get(name, MISSING)) == wanted]
            rows.sort(key=order_key)
            return self._first_page(rows, limit)

    def query_tasks(self, body: object) -> bytes:
        """`POST /tasks/query`: one page of the tasks matching the tree under `condition`."""
        errors = _Errors()
        lenient = self._config.lenient
        if not isinstance(body, dict):
            raise ValidationFailed([_error(["body"], "body must be an object", "dict_type")])
        for key in body:
            if key not in _QUERY_KEYS and key not in _QUERY_IGNORED and not lenient:
                errors.add(["body", key], "extra fields not permitted", "extra_forbidden")
        tree = body.get("condition", {})
        combinator: object = "and"
        conditions: list[_Condition] = []
        if not isinstance(tree, dict):
            errors.add(["body", "condition"], "condition must be an object", "dict_type")
            tree = {}
        for key in tree:
            if key not in ("combinator", "conditions") and not lenient:
                where = ["body", "condition", key]
                errors.add(where, "extra fields not permitted", "extra_forbidden")
        combinator = tree.get("combinator", "and")
        if lenient:
            combinator = "and"  # the documented one; anything else is not known
        elif combinator not in ("and", "or"):
            errors.add(
                ["body", "condition", "combinator"], "combinator must be 'and' or 'or'", "enum"
            )
        raw_conditions = tree.get("conditions", [])
        if isinstance(raw_conditions, list):
            for i, raw in enumerate(raw_conditions):
                loc: list[str | int] = ["body", "condition", "conditions", i]
                condition = _compile_condition(raw, loc, errors, lenient=lenient)
                if condition is not None:
                    conditions.append(condition)
        else:
            errors.add(
                ["body", "condition", "conditions"], "conditions must be a list", "list_type"
            )
        sorts: list[tuple[Callable[[_Task], Any], bool]] = []
        raw_sorts = body.get("sorts", [])
        if isinstance(raw_sorts, list):
            for i, raw in enumerate(raw_sorts):
                sort = _compile_sort(raw, ["body", "sorts", i], errors, lenient=lenient)
                if sort is not None:
                    sorts.append(sort)
        else:
            errors.add(["body", "sorts"], "sorts must be a list", "list_type")
        cursor = body.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            errors.add(["body", "cursor"], "cursor must be a string", "string_type")
        with self._lock:
            limit = self._check_limit(body.get("limit", MISSING), ["body", "limit"], errors)
            errors.raise_if_any()
            if cursor is not None:
                return self._cursor_page(cast(str, cursor), limit)
            rows = self._query_candidates(conditions, combinator == "and")
            if conditions:
                tests = [c.test for c in conditions]
                if combinator == "and":
                    rows = [t for t in rows if all(test(t) for test in tests)]
                else:
                    rows = [t for t in rows if any(test(t) for test in tests)]
            if sorts:
                rows.sort(key=_BY_SEQ)
                # Stable sorts applied from the last key to the first give a multi-key order.
                for key_of, descending in reversed(sorts):
                    rows.sort(key=key_of, reverse=descending)
            else:
                rows.sort(key=_BY_CREATED)
            return self._first_page(rows, limit)

    # in-process and admin access

    def all_tasks(self) -> list[dict[str, Any]]:
        """Every task (DONE and archived too) with `assignee_email` and `comments`, as copies."""
        with self._lock:
            return [t.dump() for t in self._tasks.values()]

    def all_tasks_json(self) -> bytes:
        """`all_tasks` as `{"items": [...]}` JSON, for `GET /_sandbox/tasks`."""
        with self._lock:
            return _items_json([t.dump_json() for t in self._tasks.values()])

    def task(self, uid: str) -> dict[str, Any] | None:
        """One task as `all_tasks` shows it, or None."""
        with self._lock:
            found = self._tasks.get(normalize_uid(uid) or uid)
            return None if found is None else found.dump()

    def seed(self, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store raw tasks as they are (foreign tasks, odd states); returns them as stored.

        Keys not sent take defaults (`created_at` now, `updated_at` = `created_at`, ...); a task
        with the uid of an existing one replaces it.
        """
        errors = _Errors()
        with self._lock:
            now = self._now()
            tasks = [
                self._raw_task(raw, ["body", "items", i], errors, now)
                for i, raw in enumerate(items)
            ]
            errors.raise_if_any()
            for task in cast(list[_Task], tasks):
                old = self._tasks.get(task.uid)
                if old is not None:
                    task.seq = old.seq
                self._tasks[task.uid] = task
            out = [t.dump() for t in cast(list[_Task], tasks)]
        self._persist()
        return out

    def operator_edit(
        self, uid: str, *, status: str | None = None, fields: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """An operator's edit in Fragment's UI: set `status`, merge `fields`, bump `updated_at`."""
        with self._lock:
            task = self._find(uid)
            errors = _Errors()
            if status is not None and status not in _STATUS_SET:
                errors.add(["body", "status"], "status must be one of TODO, STARTED, DONE", "enum")
            if fields is not None and not isinstance(fields, Mapping):
                errors.add(["body", "fields"], "fields must be an object", "dict_type")
            errors.raise_if_any()
            now = self._now()
            if status is not None:
                task.set_status(status, now)
            if fields:
                task.merge_fields(_copy_json(dict(fields)))
            task.updated_at = now
            task.encoded = None
            result = task.dump()
        self._persist()
        return result

    def delete(self, uids: Iterable[str]) -> int:
        """Tasks deleted in Fragment's UI (listings stop showing them); returns how many."""
        with self._lock:
            gone = [self._tasks.pop(normalize_uid(uid) or uid, None) for uid in uids]
        self._persist()
        return sum(task is not None for task in gone)

    def reset(self) -> None:
        """Forget all tasks, snapshots, faults, rate buckets, the log and config changes."""
        with self._lock:
            self._tasks.clear()
            self._snapshots.clear()
            self._snapshot_uids = 0
            self._config = self._initial
            self._faults = Faults()
            self._rules = []
            self._rng = random.Random(self._config.seed)
            self._buckets.clear()
            self._log.clear()
            self._counts.clear()
            self._requests_total = 0
            self._writers.clear()
            self._max_writers.clear()
        self._persist()

    def faults(self) -> Faults:
        """The fault knobs in force, `fail_next` with the counts still to be consumed."""
        with self._lock:
            rules = tuple(replace(rule, count=left) for rule, left in self._rules)
            return replace(self._faults, fail_next=rules)

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault knobs (test mode only) and re-seed their random draws."""
        if not self._config.test_mode:
            raise RuntimeError("faults can only be set on a sandbox in test mode")
        with self._lock:
            self._faults = faults
            self._rules = [[rule, rule.count] for rule in faults.fail_next]
            self._rng = random.Random(self._config.seed)

    def requests(self) -> list[dict[str, Any]]:
        """The request log (test mode), oldest first, at most the last 100,000 requests."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    def request_counts(self) -> list[dict[str, Any]]:
        """Running counts of every request by method, route template and status."""
        with self._lock:
            items = list(self._counts.items())
        return [
            {"method": m, "route": r, "status": s, "count": n}
            for (m, r, s), n in sorted(items, key=lambda kv: (kv[0][1], kv[0][0], str(kv[0][2])))
        ]

    def clear_requests(self) -> None:
        """Empty the request log and its counters."""
        with self._lock:
            self._log.clear()
            self._counts.clear()
            self._requests_total = 0

    def stats(self) -> dict[str, Any]:
        """Task and request totals, and the most writers seen at once per `fields.fc_source`."""
        with self._lock:
            by_status = Counter(t.status for t in self._tasks.values())
            by_http: Counter[str] = Counter()
            for (_, _, status), n in self._counts.items():
                by_http[str(status)] += n
            return {
                "tasks": len(self._tasks),
                "tasks_by_status": {s: by_status.get(s, 0) for s in STATUSES},
                "archived": sum(1 for t in self._tasks.values() if t.archived),
                "requests": self._requests_total,
                "requests_by_status": dict(sorted(by_http.items())),
                "max_concurrent_writers": dict(self._max_writers),
                "writers_in_flight": {k: v for k, v in self._writers.items() if v},
                "snapshots": len(self._snapshots),
            }

    # per-request bookkeeping used by app.py

    def take_request_token(self, key: str) -> float | None:
        """Spend one request of `key`'s rate budget; None if allowed, else seconds to wait."""
        rpm = self._config.requests_per_minute
        if rpm is None:
            return None
        burst = float(self._config.rate_burst)
        rate = rpm / 60.0
        with self._lock:
            now = time.monotonic()
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate

    def draw_faults(
        self, method: str, path: str, route: str, *, write: bool
    ) -> FaultDecision | None:
        """Decide the faults of one /api/v1 request; None (the fast path) when none apply."""
        faults = self._faults
        if not faults.active or not self._config.test_mode:
            return None
        with self._lock:
            latency = faults.latency_s
            for entry in self._rules:
                rule: FailRule = entry[0]
                if rule.matches(method, path, route):
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._rules.remove(entry)
                    if rule.status == "drop":
                        return FaultDecision(latency_s=latency, drop=True)
                    if rule.status == "lost":
                        return FaultDecision(latency_s=latency, lose_response=True)
                    if rule.status == "partial":
                        return FaultDecision(latency_s=latency, partial=True)
                    status = rule.status
                    retry = faults.retry_after_s if status in (429, 503) else None
                    return FaultDecision(latency_s=latency, status=status, retry_after_s=retry)
            rng = self._rng
            # One draw per knob that is set, so a given seed and knob set replay identically.
            if faults.p_drop and rng.random() < faults.p_drop:
                return FaultDecision(latency_s=latency, drop=True)
            if faults.p_429 and rng.random() < faults.p_429:
                return FaultDecision(
                    latency_s=latency, status=429, retry_after_s=faults.retry_after_s
                )
            if faults.p_5xx and rng.random() < faults.p_5xx:
                status = rng.choice((500, 502, 503))
                retry = faults.retry_after_s if status == 503 else None
                return FaultDecision(latency_s=latency, status=status, retry_after_s=retry)
            lose = write and bool(faults.p_lost_response) and rng.random() < faults.p_lost_response
            return FaultDecision(latency_s=latency, lose_response=lose)

    def log_request(self, entry: dict[str, Any], route: str) -> None:
        """Count one /api/v1 request, and keep `entry` in the log in test mode."""
        with self._lock:
            self._counts[(entry["method"], route, entry["status"])] += 1
            self._requests_total += 1
            if self._config.test_mode:
                self._log.append(entry)

    def writers_enter(self, body: object, path_uid: str | None) -> tuple[str, ...]:
        """Mark a write request in flight for each `fields.fc_source` it touches; returns them."""
        with self._lock:
            sources: set[str] = set()
            items: list[object] = [body]
            if isinstance(body, dict) and isinstance(body.get("items"), list):
                items = body["items"]
            for item in items:
                uid = path_uid
                source: object = None
                if isinstance(item, dict):
                    fields = item.get("fields")
                    if isinstance(fields, dict):
                        source = fields.get(WRITER_MARKER)
                    uid = uid or normalize_uid(item.get("uid"))
                if not isinstance(source, str) and uid is not None:
                    task = self._tasks.get(normalize_uid(uid) or uid)
                    source = None if task is None else task.fields.get(WRITER_MARKER)
                if isinstance(source, str):
                    sources.add(source)
            for source in sources:
                self._writers[source] += 1
                self._max_writers[source] = max(
                    self._max_writers.get(source, 0), self._writers[source]
                )
            return tuple(sources)

    def writers_exit(self, sources: tuple[str, ...]) -> None:
        """End what `writers_enter` started."""
        if sources:
            with self._lock:
                for source in sources:
                    self._writers[source] -= 1

    # internals; the `_lock` is held by the caller

    def _now(self) -> int:
        # Never backwards, so that updated_at_after windows are not fooled by a clock step.
        now = max(time.time_ns() // 1_000_000, self._last_ms)
        self._last_ms = now
        return now

    def _find(self, uid: str) -> _Task:
        task = self._tasks.get(normalize_uid(uid) or "")
        if task is None:
            raise TaskNotFound(uid)
        return task

    def _check_limit(self, raw: object, loc: list[str | int], errors: _Errors) -> int:
        if raw is MISSING or raw is None:
            return min(_DEFAULT_LIMIT, self._config.max_page_size)
        top = self._config.max_page_size
        if not _is_int(raw) or not 1 <= cast(int, raw) <= top:
            errors.add(loc, f"limit must be an integer between 1 and {top}", "less_than_equal")
            return top
        return cast(int, raw)

    def _check_batch(
        self,
        body: object,
        mode: Literal["replace", "patch", "create"],
        *,
        must_exist: bool = False,
        must_be_new: bool = False,
    ) -> list[_Write]:
        errors = _Errors()
        items = body.get("items", MISSING) if isinstance(body, dict) else MISSING
        cap = self._config.max_batch_size
        if not isinstance(body, dict):
            errors.add(["body"], "body must be an object", "dict_type")
        elif items is MISSING:
            errors.add(["body", "items"], "field required", "missing")
        elif not isinstance(items, list):
            errors.add(["body", "items"], "items must be a list", "list_type")
        elif len(items) > cap:
            errors.add(["body", "items"], f"at most {cap} items per request", "too_long")
        errors.raise_if_any()
        writes: list[_Write] = []
        seen: set[str] = set()
        for i, raw in enumerate(cast(list[object], items)):
            write = _check_write(
                raw, ["body", "items", i], mode, errors, lenient=self._config.lenient
            )
            if write is None:
                continue
            where = [*write.loc, "uid"]
            if write.uid is not None:
                if write.uid in seen:
                    errors.add(where, "duplicate uid in batch", "value_error")
                seen.add(write.uid)
                if must_exist and write.uid not in self._tasks:
                    errors.add(where, "task not found", "not_found")
                if must_be_new and write.uid in self._tasks:
                    errors.add(where, "task already exists", "already_exists")
            writes.append(write)
        errors.raise_if_any()
        return writes

    def _check_single(self, uid: str, body: object, mode: Literal["replace", "patch"]) -> _Write:
        errors = _Errors()
        path_uid = normalize_uid(uid)
        if path_uid is None:
            errors.add(["path", "uid"], "uid must be a UUID string", "uuid_parsing")
            errors.raise_if_any()
        write = _check_write(
            body, ["body"], mode, errors, path_uid=path_uid, lenient=self._config.lenient
        )
        errors.raise_if_any()
        return cast(_Write, write)

    def _replace(self, write: _Write, now: int) -> _Task:
        values = write.values
        uid = write.uid or str(uuid.uuid4())
        task = self._tasks.get(uid)
        fields: dict[str, Any] = values["fields"]
        if task is None:
            self._seq += 1
            task = _Task(
                uid=uid,
                seq=self._seq,
                status="TODO",
                fields=fields,
                due_at=values.get("due_at", now),
                created_at=now,
                updated_at=now,
                assignee_email=values.get("assignee_email"),
                archived=values.get("archived", False),
            )
            task.set_status(values.get("status", "TODO"), now)
            self._tasks[uid] = task
            return task
        # PUT replaces: whatever is not sent goes back to its default.
        changed = task.set_status(values.get("status", "TODO"), now)
        due_at = values.get("due_at", task.created_at)
        assignee = values.get("assignee_email")
        archived = values.get("archived", False)
        if due_at != task.due_at or assignee != task.assignee_email or archived != task.archived:
            task.due_at, task.assignee_email, task.archived = due_at, assignee, archived
            changed = True
        if not _same(fields, task.fields):
            task.fields = fields
            changed = True
        if changed:
            task.updated_at = now
            task.encoded = None
        return task

    def _patch(self, task: _Task, write: _Write, now: int) -> _Task:
        values = write.values
        changed = False
        if "status" in values:
            changed = task.set_status(values["status"], now)
        if "due_at" in values and values["due_at"] is None:
            values = {**values, "due_at": task.created_at}
        for name in ("due_at", "assignee_email", "archived"):
            if name in values and values[name] != getattr(task, name):
                setattr(task, name, values[name])
                changed = True
        if "fields" in values and task.merge_fields(values["fields"]):
            changed = True
        if changed:
            task.updated_at = now
            task.encoded = None
        return task

    def _raw_task(
        self, raw: object, loc: list[str | int], errors: _Errors, now: int
    ) -> _Task | None:
        if not isinstance(raw, Mapping):
            errors.add(loc, "item must be an object", "dict_type")
            return None
        before = len(errors.items)

        def instant(name: str, default: int | None) -> int | None:
            value = raw.get(name, MISSING)
            if value is MISSING:
                return default
            if value is None and name in ("started_at", "done_at"):
                return None
            parsed = parse_instant(value)
            if parsed is None:
                errors.add([*loc, name], "must be ISO 8601 with a time zone", "datetime_parsing")
            return parsed

        uid = normalize_uid(raw["uid"]) if "uid" in raw else str(uuid.uuid4())
        if uid is None:
            errors.add([*loc, "uid"], "uid must be a UUID string", "uuid_parsing")
        status = raw.get("status", "TODO")
        if not isinstance(status, str) or status not in _STATUS_SET:
            errors.add([*loc, "status"], "status must be one of TODO, STARTED, DONE", "enum")
        fields = raw.get("fields", {})
        if not isinstance(fields, Mapping):
            errors.add([*loc, "fields"], "fields must be an object", "dict_type")
        assignee = raw.get("assignee_email")
        if assignee is not None and not isinstance(assignee, str):
            errors.add([*loc, "assignee_email"], "must be a string or null", "string_type")
        archived = raw.get("archived", False)
        if not isinstance(archived, bool):
            errors.add([*loc, "archived"], "archived must be a boolean", "bool_type")
        comments = raw.get("comments") or []
        if not isinstance(comments, list) or not all(isinstance(c, dict) for c in comments):
            errors.add([*loc, "comments"], "comments must be a list of objects", "list_type")
        created = instant("created_at", now)
        updated = instant("updated_at", created)
        due = instant("due_at", created)
        started = instant("started_at", updated if status == "STARTED" else None)
        done = instant("done_at", updated if status == "DONE" else None)
        if len(errors.items) > before:
            return None
        self._seq += 1
        return _Task(
            uid=cast(str, uid),
            seq=self._seq,
            status=status,
            # Detached from the caller's objects, which it may go on changing.
            fields=_copy_json(dict(fields)),
            due_at=cast(int, due),
            created_at=cast(int, created),
            updated_at=cast(int, updated),
            assignee_email=assignee,
            archived=archived,
            started_at=started,
            done_at=done,
            comments=_copy_json(comments) or None,
        )

    def _visible_tasks(self) -> list[_Task]:
        delay = self._config.visibility_delay_s
        if delay <= 0:
            return list(self._tasks.values())
        cutoff = self._now() - int(delay * 1000)
        return [t for t in self._tasks.values() if t.created_at <= cutoff]

    def _query_candidates(self, conditions: list[_Condition], conjunction: bool) -> list[_Task]:
        uid_sets = [c.uids for c in conditions if c.uids is not None]
        wanted: frozenset[str] | None = None
        if conjunction and uid_sets:
            wanted = min(uid_sets, key=len)
        elif not conjunction and conditions and len(uid_sets) == len(conditions):
            wanted = frozenset().union(*uid_sets)
        if wanted is None:
            return self._visible_tasks()
        delay = self._config.visibility_delay_s
        cutoff = self._now() - int(delay * 1000) if delay > 0 else None
        found = (self._tasks.get(uid) for uid in wanted)
        return [t for t in found if t is not None and (cutoff is None or t.created_at <= cutoff)]

    def _first_page(self, rows: list[_Task], limit: int) -> bytes:
        page = [t.to_json() for t in rows[:limit]]
        snapshot_id = None
        if len(rows) > limit:
            # Later pages slice this ordered uid list instead of filtering every task again.
            snapshot_id = self._remember([t.uid for t in rows])
        return _page_json(page, limit, snapshot_id, 0, len(rows))

    def _cursor_page(self, cursor: str, limit: int) -> bytes:
        snapshot_id, _, offset_text = cursor.partition(".")
        snapshot = self._snapshots.get(snapshot_id)
        now = time.monotonic()
        if snapshot is None or not offset_text.isdigit():
            raise InvalidCursor(cursor)
        if snapshot.expires < now:
            self._forget(snapshot_id)
            raise InvalidCursor(cursor)
        offset = int(offset_text)
        if offset > len(snapshot.uids):
            raise InvalidCursor(cursor)
        # Sliding expiry: a client paced at 60 requests a minute needs 17 minutes for 100k tasks.
        snapshot.expires = now + SNAPSHOT_TTL_S
        self._snapshots.move_to_end(snapshot_id)
        tasks = self._tasks
        page = [
            task.to_json()
            for uid in snapshot.uids[offset : offset + limit]
            if (task := tasks.get(uid)) is not None
        ]
        return _page_json(page, limit, snapshot_id, offset, len(snapshot.uids))

    def _remember(self, uids: list[str]) -> str:
        now = time.monotonic()
        for key in [k for k, s in self._snapshots.items() if s.expires < now]:
            self._forget(key)
        snapshot_id = secrets.token_hex(8)
        self._snapshots[snapshot_id] = _Snapshot(uids, now + SNAPSHOT_TTL_S)
        self._snapshot_uids += len(uids)
        while len(self._snapshots) > SNAPSHOT_MAX or (
            self._snapshot_uids > SNAPSHOT_UIDS_MAX and len(self._snapshots) > 1
        ):
            self._forget(next(iter(self._snapshots)))
        return snapshot_id

    def _forget(self, snapshot_id: str) -> None:
        snapshot = self._snapshots.pop(snapshot_id, None)
        if snapshot is not None:
            self._snapshot_uids -= len(snapshot.uids)

    # persistence

    def _persist(self) -> None:
        path = self._config.data_path
        if path is None:
            return
        # The save lock orders whole saves, so an older state never replaces a newer one.
        with self._save_lock:
            with self._lock:
                data = self._export_locked()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(temp, path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise

    def _export_locked(self) -> bytes:
        tasks = b",".join(t.dump_json() for t in self._tasks.values())
        return b'{"format":"fragment-sandbox","version":1,"tasks":[' + tasks + b"]}"

    def _load(self, path: Path) -> None:
        data = loads(path.read_bytes())
        if not isinstance(data, dict) or data.get("format") != "fragment-sandbox":
            raise ValueError(f"{path} is not a sandbox data file")
        errors = _Errors()
        now = self._now()
        for i, raw in enumerate(data.get("tasks", [])):
            task = self._raw_task(raw, ["tasks", i], errors, now)
            if task is not None:
                self._tasks[task.uid] = task
        if errors.items:
            raise ValueError(f"{path}: invalid tasks: {errors.items[:3]}")


# --- /tasks/query compilation ------------------------------------------------------------------


def _getter(name: str) -> Callable[[_Task], Any] | None:
    if name in ("uid", "status", "created_at", "updated_at", "due_at", "archived"):
        return cast(Callable[[_Task], Any], operator.attrgetter(name))
    if name.startswith("fields.") and len(name) > len("fields."):
        key = name[len("fields.") :]
        return lambda task: task.fields.get(key, MISSING)
    return None


def _condition_value(name: str, value: object, loc: list[str | int], errors: _Errors) -> Any:
    """Normalise one comparison value for `name`; add an error (and return MISSING) if invalid."""
    if name == "uid":
        uid = normalize_uid(value)
        if uid is None:
            errors.add(loc, "uid values must be UUID strings", "uuid_parsing")
            return MISSING
        return uid
    if name == "status":
        if not isinstance(value, str) or value not in _STATUS_SET:
            errors.add(loc, "status must be one of TODO, STARTED, DONE", "enum")
            return MISSING
        return value
    if name in _TIME_FIELDS:
        ms = parse_instant(value)
        if ms is None:
            errors.add(loc, "must be ISO 8601 with a time zone", "datetime_parsing")
            return MISSING
        return ms
    if name == "archived" and not isinstance(value, bool):
        errors.add(loc, "archived must be a boolean", "bool_type")
        return MISSING
    return value


def _compile_condition(
    raw: object, loc: list[str | int], errors: _Errors, *, lenient: bool = False
) -> _Condition | None:
    """One condition; a lenient sandbox drops (ignores) any it does not know instead."""
    if lenient:
        known = (
            isinstance(raw, dict)
            and raw.get("operator") in _DOCUMENTED_OPERATORS
            and isinstance(raw.get("field"), str)
            and _getter(raw["field"]) is not None
            and "value" in raw
        )
        if not known:
            return None
        # Keys it does not know are ignored too.
        raw = {k: v for k, v in cast(dict[str, Any], raw).items() if k in _CONDITION_KEYS}
    if not isinstance(raw, dict):
        errors.add(loc, "condition must be an object", "dict_type")
        return None
    before = len(errors.items)
    for key in raw:
        if key not in _CONDITION_KEYS:
            errors.add([*loc, key], "extra fields not permitted", "extra_forbidden")
    name = raw.get("field")
    get = _getter(name) if isinstance(name, str) else None
    if get is None:
        errors.add([*loc, "field"], "unknown field", "enum")
    spelled = raw.get("operator")
    op = _OPERATORS.get(spelled) if isinstance(spelled, str) else None
    if op is None:
        errors.add([*loc, "operator"], f"operator must be one of {sorted(_OPERATORS)}", "enum")
    if "value" not in raw:
        errors.add([*loc, "value"], "field required", "missing")
    if len(errors.items) > before or get is None:
        return None
    field_name = cast(str, name)
    raw_value = raw["value"]
    where: list[str | int] = [*loc, "value"]
    if op == "contains":

        def contains(task: _Task) -> bool:
            found = get(task)
            if isinstance(found, str):
                return isinstance(raw_value, str) and raw_value in found
            return isinstance(found, list) and any(_json_eq(item, raw_value) for item in found)

        return _Condition(contains)
    if op == "in":
        if not isinstance(raw_value, list):
            errors.add(where, f"{op} needs a list", "list_type")
            return None
        values = [
            _condition_value(field_name, v, [*where, i], errors) for i, v in enumerate(raw_value)
        ]
        if len(errors.items) > before:
            return None
        scalar = all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values)
        if scalar:
            members = frozenset(values)

            def member(task: _Task) -> bool:
                found = get(task)
                return not isinstance(found, bool) and _hashable(found) and found in members

        else:

            def member(task: _Task) -> bool:
                found = get(task)
                return any(_json_eq(found, v) for v in values)

        uids = members if scalar and field_name == "uid" else None
        return _Condition(member, uids)
    value = _condition_value(field_name, raw_value, where, errors)
    if value is MISSING:
        return None
    if op == "eq":
        uids = frozenset([value]) if field_name == "uid" else None
        return _Condition(lambda task: _json_eq(get(task), value), uids)
    if op == "neq":
        return _Condition(lambda task: not _json_eq(get(task), value))
    if not _orderable(value, value):
        errors.add(where, f"{op} needs a number, a string or a date-time", "type_error")
        return None
    compare = _COMPARE[cast(str, op)]

    def ordered(task: _Task) -> bool:
        found = get(task)
        return _orderable(found, value) and compare(found, value)

    return _Condition(ordered)


def _hashable(value: object) -> bool:
    return isinstance(value, str | int | float) or value is None


def _compile_sort(
    raw: object, loc: list[str | int], errors: _Errors, *, lenient: bool = False
) -> tuple[Callable[[_Task], Any], bool] | None:
    """One sort, `{"field", "direction": "ascending" | "descending"}`; a lenient sandbox ignores
    a sort it does not know, and knows only the documented "ascending"."""
    if not isinstance(raw, dict):
        if not lenient:
            errors.add(loc, "sort must be an object", "dict_type")
        return None
    name = raw.get("field")
    get = _getter(name) if isinstance(name, str) else None
    direction = raw.get("direction", "ascending")
    if lenient:
        if get is None or direction != "ascending":
            return None
    else:
        for key in raw:
            if key not in ("field", "direction"):
                errors.add([*loc, key], "extra fields not permitted", "extra_forbidden")
        if get is None:
            errors.add([*loc, "field"], "unknown field", "enum")
        if direction not in ("ascending", "descending"):
            errors.add([*loc, "direction"], "direction must be 'ascending' or 'descending'", "enum")
        if get is None or direction not in ("ascending", "descending"):
            return None
    getter = get
    descending = direction == "descending"
    if isinstance(name, str) and name.startswith("fields."):
        return (lambda task: _sort_key(getter(task))), descending
    return getter, descending


# --- response bodies ---------------------------------------------------------------------------


def _items_json(items: list[bytes]) -> bytes:
    return b'{"items":[' + b",".join(items) + b"]}"


def _page_json(
    items: list[bytes], limit: int, snapshot_id: str | None, offset: int, total: int
) -> bytes:
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
