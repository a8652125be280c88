"""Back-office record → `Ticket` by configuration: where each ticket value comes from, as text.

An adapter for an API whose records vary by customer (custom fields, a different status scheme)
should not need code per customer: `TicketMapping` is a pydantic model an adapter embeds in its
`Config`, and `RecordMapper` applies it to each record of a listing. Each value is a *spec*:

- a JMESPath expression (`number`, `fields.summary`, `labels[0].name`, `'fixed text'`), whose
  result keeps the JSON type it selects (`12` stays a number, a list stays a list);
- or a *template*, text with `{expression}` placeholders (`"{key}: {fields.summary}"`,
  `"https://github.com/acme/app/issues/{number}"`), always rendered as text: strings as they are,
  other values as JSON (`true`, `12`, `["a"]`). A placeholder that selects nothing (null or a
  missing key) makes the whole value None, so an absent url stays absent instead of becoming
  `https://…/issues/`. `{{` and `}}` are literal braces.

A spec that parses as JMESPath is an expression; otherwise, if it holds braces, a template. Specs
are compiled once, when the model is validated (an invalid one is a validation error on its own
key), and simple paths skip the JMESPath interpreter: mapping is the hot path of every listing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Final, TypeAlias

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.functions import Functions
from jmespath.visitor import TreeInterpreter
from pydantic import AfterValidator, Field

from adapters.base import AdapterConfig, InvalidRecord, Ticket, ticket_id_from, title_problem
from connector.values import parse_timestamp

__all__ = [
    "Expression",
    "Getter",
    "RecordMapper",
    "Spec",
    "TicketMapping",
    "compile_expression",
    "compile_spec",
]

Getter: TypeAlias = Callable[[Any], Any]
"""A compiled spec: record in, value out (None when it selects nothing)."""

_INTERPRETER: Final = TreeInterpreter()  # stateless between calls; saves building one per search
_FUNCTIONS: Final[dict[str, Any]] = Functions.FUNCTION_TABLE
_VALUE_PREVIEW: Final = 40


def _parse_error(expression: str, exc: JMESPathError) -> ValueError:
    # jmespath's messages end with the expression and a caret on further lines: keep line one.
    first = str(exc).splitlines()[0].removesuffix(", for expression:").rstrip(":")
    return ValueError(f"not a valid JMESPath expression {expression!r}: {first}")


def _check_functions(node: Any, expression: str) -> None:
    """Reject unknown functions and wrong argument counts now, not once per record."""
    if node.get("type") == "function_expression":
        name = node.get("value")
        spec = _FUNCTIONS.get(name)
        if spec is None:
            raise ValueError(f"unknown JMESPath function {name}() in {expression!r}")
        signature, count = spec["signature"], len(node["children"])
        variadic = bool(signature) and signature[-1].get("variadic")
        if count < len(signature) if variadic else count != len(signature):
            raise ValueError(
                f"{name}() takes {len(signature)}{' or more' if variadic else ''} "
                f"argument{'' if len(signature) == 1 else 's'}, not {count}, in {expression!r}"
            )
    for child in node.get("children", ()):
        if isinstance(child, dict):
            _check_functions(child, expression)


def _simple_path(node: Any) -> tuple[str | int, ...] | None:
    """The keys and indexes of a plain path (`a.b[0].c`), or None for anything richer."""
    kind = node.get("type")
    if kind == "field":
        return (node["value"],)
    if kind == "identity":
        return ()
    if kind == "index":
        return (node["value"],)
    if kind in ("subexpression", "index_expression"):
        steps: tuple[str | int, ...] = ()
        for child in node["children"]:
            part = _simple_path(child)
            if part is None:
                return None
            steps += part
        return steps
    return None


def _path_getter(steps: tuple[str | int, ...]) -> Getter:
    # Same results as the interpreter for JSON input: a key of a non-object or an index of a
    # non-array or out of range selects nothing.
    if len(steps) == 1 and isinstance(steps[0], str):
        key = steps[0]
        return lambda value: value.get(key) if isinstance(value, dict) else None

    def get(value: Any) -> Any:
        for step in steps:
            if isinstance(step, str):
                if not isinstance(value, dict):
                    return None
                value = value.get(step)
            else:
                if not isinstance(value, list):
                    return None
                try:
                    value = value[step]
                except IndexError:
                    return None
        return value

    return get


def _text_comparison(tree: Any) -> Getter | None:
    """`path == 'text'` (or `!=`, either side): the usual `is_open`, without the interpreter."""
    left, right = tree["children"]
    if left.get("type") == "literal":
        left, right = right, left
    steps = _simple_path(left)
    if steps is None or right.get("type") != "literal" or not isinstance(right["value"], str):
        return None
    # A text literal equals only the same text in JMESPath too (no 0/false special case).
    get, text = _path_getter(steps), right["value"]
    if tree["value"] == "eq":
        return lambda value: get(value) == text
    return lambda value: get(value) != text


@lru_cache(maxsize=1024)
def compile_expression(expression: str) -> Getter:
    """A getter for one JMESPath expression; ValueError when it is not valid."""
    try:
        parsed = jmespath.compile(expression)
    except JMESPathError as exc:
        raise _parse_error(expression, exc) from None
    _check_functions(parsed.parsed, expression)
    steps = _simple_path(parsed.parsed)
    if steps is not None:
        return _path_getter(steps)
    tree = parsed.parsed
    if tree.get("type") == "comparator" and tree.get("value") in ("eq", "ne"):
        fast = _text_comparison(tree)
        if fast is not None:
            return fast
    return lambda value: _INTERPRETER.visit(tree, value)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _placeholder_end(spec: str, start: int) -> int:
    """The index of the `}` closing the placeholder opened just before `start`."""
    depth, i, n = 1, start, len(spec)
    while i < n:
        char = spec[i]
        if char in "'\"`":  # JMESPath literals may hold braces
            i += 1
            while i < n and spec[i] != char:
                i += 2 if spec[i] == "\\" else 1
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed '{{' at position {start - 1} of {spec!r}")


def _template_parts(spec: str) -> tuple[str | Getter, ...]:
    parts: list[str | Getter] = []
    text: list[str] = []
    i, n = 0, len(spec)
    while i < n:
        char = spec[i]
        if char == "{" and spec.startswith("{{", i):
            text.append("{")
            i += 2
        elif char == "{":
            end = _placeholder_end(spec, i + 1)
            expression = spec[i + 1 : end].strip()
            if not expression:
                raise ValueError(f"empty placeholder '{{}}' at position {i} of {spec!r}")
            if text:
                parts.append("".join(text))
                text = []
            parts.append(compile_expression(expression))
            i = end + 1
        elif char == "}" and spec.startswith("}}", i):
            text.append("}")
            i += 2
        elif char == "}":
            raise ValueError(f"unmatched '}}' at position {i} of {spec!r} (write '}}}}')")
        else:
            text.append(char)
            i += 1
    if text:
        parts.append("".join(text))
    return tuple(parts)


def _template_getter(parts: tuple[str | Getter, ...]) -> Getter:
    def render(record: Any) -> str | None:
        out: list[str] = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = part(record)
            if value is None:
                return None
            out.append(_as_text(value))
        return "".join(out)

    return render


@lru_cache(maxsize=1024)
def compile_spec(spec: str) -> Getter:
    """A getter for a value spec (JMESPath expression or template); ValueError when invalid."""
    try:
        return compile_expression(spec)
    except ValueError:
        if "{" not in spec and "}" not in spec:
            raise
    return _template_getter(_template_parts(spec))


def _valid_spec(spec: str) -> str:
    compile_spec(spec)
    return spec


def _valid_expression(expression: str) -> str:
    compile_expression(expression)
    return expression


Spec = Annotated[str, AfterValidator(_valid_spec)]
"""A value spec, checked when the model is validated."""

Expression = Annotated[str, AfterValidator(_valid_expression)]
"""A JMESPath expression (no template), checked when the model is validated."""


class TicketMapping(AdapterConfig):
    """Where each ticket value comes from in a back-office record (value specs)."""

    id: Spec = Field(
        description="The ticket id: must give non-empty text or an integer, e.g. `key`."
    )
    title: Spec = Field(description="The title: must give non-empty text, e.g. `fields.summary`.")
    url: Spec | None = Field(None, description="e.g. `html_url` or `https://x/browse/{key}`.")
    updated_at: Spec | None = Field(None, description="An ISO 8601 timestamp, e.g. `updated`.")
    due_at: Spec | None = Field(None, description="An ISO 8601 timestamp, e.g. `fields.duedate`.")
    assignee_email: Spec | None = Field(None, description="e.g. `assignee.email`.")
    is_open: Expression | None = Field(
        None,
        description="A JMESPath expression, true when the ticket is open (e.g. "
        "`state == 'open'`); false, null, 0 and empty values mean closed. Unset: always open.",
    )
    fields: dict[str, Spec] = Field(
        default_factory=dict,
        description="Custom field name -> spec; each value keeps its JSON type.",
    )


class _Invalid(Exception):
    """A record value that cannot go into a ticket; its message names the key."""


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else _as_text(value)
    return repr(text if len(text) <= _VALUE_PREVIEW else text[: _VALUE_PREVIEW - 1] + "…")


_JSON_TYPES: Final = {
    str: "text",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def _kind(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _get(key: str, getter: Getter, record: Any) -> Any:
    try:
        return getter(record)
    except JMESPathError as exc:  # e.g. a function given the wrong type of value
        raise _Invalid(f"`{key}` could not be evaluated: {str(exc).splitlines()[0]}") from None


def _text(key: str, getter: Getter | None, record: Any) -> str | None:
    if getter is None:
        return None
    value = _get(key, getter, record)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"`{key}` must be text, got {_kind(value)} {_preview(value)}")
    return value if value.strip() else None


def _timestamp(key: str, getter: Getter | None, record: Any) -> datetime | None:
    if getter is None:
        return None
    value = _get(key, getter, record)
    if value is None or value == "":
        return None
    parsed = parse_timestamp(value) if isinstance(value, str) else None
    if parsed is None:
        raise _Invalid(f"`{key}` is not an ISO 8601 timestamp: {_preview(value)}")
    return parsed


class RecordMapper:
    """Applies a `TicketMapping` to records; build it once per listing, call `map` per record."""

    __slots__ = (
        "_assignee",
        "_due",
        "_fields",
        "_id",
        "_is_open",
        "_title",
        "_updated",
        "_url",
        "mapping",
    )

    def __init__(self, mapping: TicketMapping) -> None:
        self.mapping = mapping

        def optional(spec: str | None) -> Getter | None:
            return None if spec is None else compile_spec(spec)

        self._id = compile_spec(mapping.id)
        self._title = compile_spec(mapping.title)
        self._url = optional(mapping.url)
        self._updated = optional(mapping.updated_at)
        self._due = optional(mapping.due_at)
        self._assignee = optional(mapping.assignee_email)
        self._is_open = None if mapping.is_open is None else compile_expression(mapping.is_open)
        self._fields = tuple(
            (name, f"fields.{name}", compile_spec(spec)) for name, spec in mapping.fields.items()
        )

    def map(self, record: Any, position: str) -> Ticket | InvalidRecord:
        """The ticket of one record, or why it cannot be one (with its id when readable)."""
        try:
            raw_id = _get("id", self._id, record)
        except _Invalid as exc:
            return InvalidRecord(position, str(exc))
        ticket_id = ticket_id_from(raw_id)
        if ticket_id is None:
            got = "nothing" if raw_id is None else f"{_kind(raw_id)} {_preview(raw_id)}"
            return InvalidRecord(position, f"`id` must be non-empty text or an integer, got {got}")
        try:
            title = _get("title", self._title, record)
            problem = title_problem(title, name="`title`")
            if problem is not None:
                if title is not None and not isinstance(title, str):
                    problem += f", got {_kind(title)} {_preview(title)}"
                raise _Invalid(problem)
            is_open = True
            if self._is_open is not None:
                is_open = bool(_get("is_open", self._is_open, record))
            return Ticket(
                id=ticket_id,
                title=title,
                url=_text("url", self._url, record),
                fields={name: _get(label, get, record) for name, label, get in self._fields},
                updated_at=_timestamp("updated_at", self._updated, record),
                is_open=is_open,
                due_at=_timestamp("due_at", self._due, record),
                assignee_email=_text("assignee_email", self._assignee, record),
            )
        except _Invalid as exc:
            return InvalidRecord(position, str(exc), ticket_id)
