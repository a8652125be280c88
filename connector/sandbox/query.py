"""Listings: `GET /tasks`'s filters and `POST /tasks/query`'s condition tree, compiled.

Each condition becomes a test on a task (a closure), and a condition on `uid` also says which
uids it can match, so that a query by uid looks those up instead of scanning every task. A
lenient sandbox drops what the documentation does not state (`config.PROFILES`). Values of mixed
JSON types sort in one total order, so sorting by a custom field never raises.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from connector.sandbox.errors import ErrorList, ValidationFailed, error
from connector.sandbox.tasks import STATUS_SET, Task
from connector.sandbox.wire import MISSING, dumps, is_number, json_eq, normalize_uid, parse_instant

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
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_TIME_FIELDS: Final = frozenset({"created_at", "updated_at", "due_at"})
BY_CREATED: Final = operator.attrgetter("created_at", "seq")
_BY_UPDATED: Final = operator.attrgetter("updated_at", "seq")
_BY_SEQ: Final = operator.attrgetter("seq")

_Sort = tuple[Callable[[Task], Any], bool]


@dataclass(slots=True)
class Listing:
    """A `GET /tasks` request, validated: its filters, its order, its page size and cursor."""

    limit: object = MISSING
    cursor: str | None = None
    statuses: set[str] = field(default_factory=set)
    after: int | None = None
    order_key: Callable[[Task], Any] = BY_CREATED
    equals: list[tuple[str, str]] = field(default_factory=list)

    def select(self, rows: list[Task]) -> list[Task]:
        """The tasks of `rows` this listing shows, in its order."""
        # Successive comprehensions: each is a tight loop, together well under a second at 100k.
        if self.statuses:
            rows = [t for t in rows if t.status in self.statuses]
        if self.after is not None:
            after = self.after
            rows = [t for t in rows if t.updated_at >= after]
        for name, wanted in self.equals:
            rows = [t for t in rows if _query_text(t.fields.get(name, MISSING)) == wanted]
        rows.sort(key=self.order_key)
        return rows


def parse_listing(
    params: Sequence[tuple[str, str]], errors: ErrorList, *, lenient: bool
) -> Listing:
    """The listing asked by query parameters `params`; its problems go to `errors`."""
    listing = Listing()
    for key, value in params:
        where = ["query", key]
        if lenient and key not in ("limit", "cursor"):
            continue  # optional filters a default FastAPI model would not know: ignored
        if key == "limit":
            try:
                listing.limit = int(value)
            except ValueError:
                listing.limit = value
        elif key == "cursor":
            listing.cursor = value
        elif key == "status":
            if value in STATUS_SET:
                listing.statuses.add(value)
            else:
                errors.add(where, "status must be one of TODO, STARTED, DONE", "enum")
        elif key == "updated_at_after":
            listing.after = parse_instant(value)
            if listing.after is None:
                errors.add(where, "must be ISO 8601 with a time zone", "datetime_parsing")
        elif key == "order_by":
            if value == "updated_at":
                listing.order_key = _BY_UPDATED
            elif value != "created_at":
                errors.add(where, "order_by must be created_at or updated_at", "enum")
        elif key.startswith("fields.") and len(key) > len("fields."):
            listing.equals.append((key[len("fields.") :], value))
        else:
            errors.add(where, "unknown query parameter", "extra_forbidden")
    return listing


@dataclass(slots=True)
class Query:
    """A `POST /tasks/query` body, compiled: conditions, how they combine, sorts, page, cursor."""

    conditions: list[_Condition]
    conjunction: bool
    sorts: list[_Sort]
    limit: object
    cursor: str | None

    def candidate_uids(self) -> frozenset[str] | None:
        """The only uids that can match, when the conditions on `uid` say; None: any."""
        uid_sets = [c.uids for c in self.conditions if c.uids is not None]
        if self.conjunction and uid_sets:
            return min(uid_sets, key=len)
        if not self.conjunction and self.conditions and len(uid_sets) == len(self.conditions):
            return frozenset().union(*uid_sets)
        return None

    def select(self, rows: list[Task]) -> list[Task]:
        """The tasks of `rows` that match, in the query's order."""
        if self.conditions:
            tests = [c.test for c in self.conditions]
            if self.conjunction:
                rows = [t for t in rows if all(test(t) for test in tests)]
            else:
                rows = [t for t in rows if any(test(t) for test in tests)]
        if self.sorts:
            rows.sort(key=_BY_SEQ)
            # Stable sorts applied from the last key to the first give a multi-key order.
            for key_of, descending in reversed(self.sorts):
                rows.sort(key=key_of, reverse=descending)
        else:
            rows.sort(key=BY_CREATED)
        return rows


def parse_query(body: object, errors: ErrorList, *, lenient: bool) -> Query:
    """The query of a `/tasks/query` body; its problems go to `errors` (a body that is not an
    object raises ValidationFailed at once)."""
    if not isinstance(body, dict):
        raise ValidationFailed([error(["body"], "body must be an object", "dict_type")])
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
        errors.add(["body", "condition", "combinator"], "combinator must be 'and' or 'or'", "enum")
    raw_conditions = tree.get("conditions", [])
    if isinstance(raw_conditions, list):
        for i, raw in enumerate(raw_conditions):
            loc: list[str | int] = ["body", "condition", "conditions", i]
            condition = _compile_condition(raw, loc, errors, lenient=lenient)
            if condition is not None:
                conditions.append(condition)
    else:
        errors.add(["body", "condition", "conditions"], "conditions must be a list", "list_type")
    sorts: list[_Sort] = []
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
    return Query(
        conditions,
        combinator == "and",
        sorts,
        body.get("limit", MISSING),
        cursor if isinstance(cursor, str) else None,
    )


@dataclass(slots=True)
class _Condition:
    test: Callable[[Task], bool]
    # Set for `uid eq/in`: a query by uid then looks those up instead of scanning every task.
    uids: frozenset[str] | None = None


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
    return is_number(a) and is_number(b)


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


def _getter(name: str) -> Callable[[Task], Any] | None:
    if name in ("uid", "status", "created_at", "updated_at", "due_at", "archived"):
        return cast(Callable[[Task], Any], operator.attrgetter(name))
    if name.startswith("fields.") and len(name) > len("fields."):
        key = name[len("fields.") :]
        return lambda task: task.fields.get(key, MISSING)
    return None


def _condition_value(name: str, value: object, loc: list[str | int], errors: ErrorList) -> Any:
    """Normalise one comparison value for `name`; add an error (and return MISSING) if invalid."""
    if name == "uid":
        uid = normalize_uid(value)
        if uid is None:
            errors.add(loc, "uid values must be UUID strings", "uuid_parsing")
            return MISSING
        return uid
    if name == "status":
        if not isinstance(value, str) or value not in STATUS_SET:
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
    raw: object, loc: list[str | int], errors: ErrorList, *, lenient: bool = False
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

        def contains(task: Task) -> bool:
            found = get(task)
            if isinstance(found, str):
                return isinstance(raw_value, str) and raw_value in found
            return isinstance(found, list) and any(json_eq(item, raw_value) for item in found)

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

            def member(task: Task) -> bool:
                found = get(task)
                return not isinstance(found, bool) and _hashable(found) and found in members

        else:

            def member(task: Task) -> bool:
                found = get(task)
                return any(json_eq(found, v) for v in values)

        uids = members if scalar and field_name == "uid" else None
        return _Condition(member, uids)
    value = _condition_value(field_name, raw_value, where, errors)
    if value is MISSING:
        return None
    if op == "eq":
        uids = frozenset([value]) if field_name == "uid" else None
        return _Condition(lambda task: json_eq(get(task), value), uids)
    if op == "neq":
        return _Condition(lambda task: not json_eq(get(task), value))
    if not _orderable(value, value):
        errors.add(where, f"{op} needs a number, a string or a date-time", "type_error")
        return None
    compare = _COMPARE[cast(str, op)]

    def ordered(task: Task) -> bool:
        found = get(task)
        return _orderable(found, value) and compare(found, value)

    return _Condition(ordered)


def _hashable(value: object) -> bool:
    return isinstance(value, str | int | float) or value is None


def _compile_sort(
    raw: object, loc: list[str | int], errors: ErrorList, *, lenient: bool = False
) -> tuple[Callable[[Task], Any], bool] | None:
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
