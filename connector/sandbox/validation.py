"""Validation of what clients send: task writes (PUT replace, PATCH merge, POST create), batches,
page sizes, and the raw tasks a test seeds or the data file holds.

Every problem of a request is collected (`ErrorList`) and raised at once as a 422 with its `loc`,
the way a FastAPI service with pydantic models answers. A strict sandbox refuses unknown keys, a
lenient one ignores them (`config.PROFILES`).
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from connector.sandbox.config import SandboxConfig
from connector.sandbox.errors import ErrorList
from connector.sandbox.tasks import STATUS_SET, TITLE_MAX_LENGTH, Task
from connector.sandbox.wire import MISSING, copy_json, is_int, normalize_uid, parse_instant

DEFAULT_LIMIT: Final = 50
# A client that sends a task back as it read it is not wrong: read-only keys are ignored.
READ_ONLY: Final = frozenset(
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


@dataclass(slots=True)
class Write:
    """One validated item of a write request: its uid and the top-level properties it sends."""

    uid: str | None
    values: dict[str, Any]
    loc: list[str | int]


def _check_fields(
    fields: dict[str, Any], loc: list[str | int], errors: ErrorList, *, patch: bool
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


def check_write(
    raw: object,
    loc: list[str | int],
    mode: Literal["replace", "patch", "create"],
    errors: ErrorList,
    *,
    path_uid: str | None = None,
    lenient: bool = False,
) -> Write | None:
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
        if key == "uid" or key in READ_ONLY:
            continue
        if key == "status":
            if isinstance(value, str) and value in STATUS_SET:
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
    return Write(uid, values, loc)


def check_limit(raw: object, loc: list[str | int], errors: ErrorList, *, max_page_size: int) -> int:
    """A listing's page size: the default when not given, else an integer up to the maximum."""
    if raw is MISSING or raw is None:
        return min(DEFAULT_LIMIT, max_page_size)
    top = max_page_size
    if not is_int(raw) or not 1 <= cast(int, raw) <= top:
        errors.add(loc, f"limit must be an integer between 1 and {top}", "less_than_equal")
        return top
    return cast(int, raw)


def check_batch(
    body: object,
    mode: Literal["replace", "patch", "create"],
    *,
    config: SandboxConfig,
    existing: Container[str],
    must_exist: bool = False,
    must_be_new: bool = False,
) -> list[Write]:
    """The items of a batch write, each validated; raises ValidationFailed with every problem.

    `must_exist` / `must_be_new`: each uid sent must be / must not be in `existing`.
    """
    errors = ErrorList()
    items = body.get("items", MISSING) if isinstance(body, dict) else MISSING
    cap = config.max_batch_size
    if not isinstance(body, dict):
        errors.add(["body"], "body must be an object", "dict_type")
    elif items is MISSING:
        errors.add(["body", "items"], "field required", "missing")
    elif not isinstance(items, list):
        errors.add(["body", "items"], "items must be a list", "list_type")
    elif len(items) > cap:
        errors.add(["body", "items"], f"at most {cap} items per request", "too_long")
    errors.raise_if_any()
    writes: list[Write] = []
    seen: set[str] = set()
    for i, raw in enumerate(cast(list[object], items)):
        write = check_write(raw, ["body", "items", i], mode, errors, lenient=config.lenient)
        if write is None:
            continue
        where = [*write.loc, "uid"]
        if write.uid is not None:
            if write.uid in seen:
                errors.add(where, "duplicate uid in batch", "value_error")
            seen.add(write.uid)
            if must_exist and write.uid not in existing:
                errors.add(where, "task not found", "not_found")
            if must_be_new and write.uid in existing:
                errors.add(where, "task already exists", "already_exists")
        writes.append(write)
    errors.raise_if_any()
    return writes


def check_single(
    uid: str, body: object, mode: Literal["replace", "patch"], *, lenient: bool
) -> Write:
    """One write to `/tasks/{uid}`, validated; raises ValidationFailed with every problem."""
    errors = ErrorList()
    path_uid = normalize_uid(uid)
    if path_uid is None:
        errors.add(["path", "uid"], "uid must be a UUID string", "uuid_parsing")
        errors.raise_if_any()
    write = check_write(body, ["body"], mode, errors, path_uid=path_uid, lenient=lenient)
    errors.raise_if_any()
    return cast(Write, write)


def stored_task(
    raw: object, loc: list[str | int], errors: ErrorList, *, now: int, seq: int
) -> Task | None:
    """A task as given, for seeding and loading (any state, defaults for what is missing);
    None, with its problems in `errors`, when it is malformed."""
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
    if not isinstance(status, str) or status not in STATUS_SET:
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
    return Task(
        uid=cast(str, uid),
        seq=seq,
        status=status,
        # Detached from the caller's objects, which it may go on changing.
        fields=copy_json(dict(fields)),
        due_at=cast(int, due),
        created_at=cast(int, created),
        updated_at=cast(int, updated),
        assignee_email=assignee,
        archived=archived,
        started_at=started,
        done_at=done,
        comments=copy_json(comments) or None,
    )
