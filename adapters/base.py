"""The contract between fragment-connector and a back-office: what an adapter writer implements.

An adapter is a class with a `name`, a pydantic `Config` model for its `sources[].options`, an
async `list_open()` generator that yields every open ticket (a complete snapshot, or an exception),
an async `check()` and an async `aclose()`. Optionally it implements `changes_since(cursor)` for
incremental polling, and `write_back(request)` to close or comment a ticket whose task an
operator marked DONE in Fragment. Adapters report trouble by raising the errors below; the core
decides what that means (no closes for that source, exit codes, metrics). What a ticket must be
is decided here too, once (`ticket_problem`): the core, the conformance kit and the built-in
record readers apply the same rules. Contract version: `API_VERSION`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Protocol, Self, runtime_checkable

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from connector.errors import (
    AdapterAuthError,
    AdapterConfigError,
    AdapterDataError,
    AdapterUnavailable,
    SourceError,
    TicketGone,
    WriteBackRejected,
)
from connector.models import (
    ChangeSet,
    InvalidRecord,
    Ticket,
    WriteBackAction,
    WriteBackOutcome,
    WriteBackRequest,
)
from connector.values import parse_duration

API_VERSION: Final = 1

__all__ = [
    "API_VERSION",
    "CONFIG_DIR_CONTEXT",
    "MAX_FIELDS_SIZE",
    "MAX_FIELD_DEPTH",
    "MAX_TICKET_ID",
    "MAX_TITLE",
    "AdapterAuthError",
    "AdapterConfig",
    "AdapterConfigError",
    "AdapterDataError",
    "AdapterUnavailable",
    "ChangeSet",
    "ConfigPath",
    "Duration",
    "InvalidRecord",
    "RenamedOption",
    "SourceAdapter",
    "SourceError",
    "SupportsChanges",
    "SupportsWriteBack",
    "Ticket",
    "TicketGone",
    "WriteBackAction",
    "WriteBackOutcome",
    "WriteBackRejected",
    "WriteBackRequest",
    "ticket_id_from",
    "ticket_problem",
    "title_problem",
]


# An option that is a length of time, written as in the core's config: `30s`, `5m`, `1h`, or a
# number of seconds. Bounds (`gt=`, `ge=`) go on the Field.
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

# The directory of the config file, given to the options' validation as context by the core.
CONFIG_DIR_CONTEXT: Final = "config_dir"


def _against_config_dir(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get(CONFIG_DIR_CONTEXT)
    if value.is_absolute() or base is None:
        return value
    return Path(base) / value


ConfigPath = Annotated[Path, AfterValidator(_against_config_dir)]
"""A file path option: a relative one is resolved against the config file's directory (as
Docker Compose and kustomize do), so `--config /etc/fc/config.yaml` works from anywhere."""


@dataclass(frozen=True, slots=True)
class RenamedOption:
    """An option given under its deprecated key `old`, read as `new` (a dotted path)."""

    old: str
    new: str


class AdapterConfig(BaseModel):
    """Base for adapter option models: unknown keys are errors, values are immutable.

    `renamed_options` maps a deprecated key to what replaced it: a key, or a key of a group
    (`{"retry_attempts": "retry.attempts"}`). A value given under the old key is read as the
    new one, `deprecated_options` tells which were (the core logs and `check` shows each,
    naming the source), and giving the old key together with the new one is an error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    renamed_options: ClassVar[Mapping[str, str]] = {}
    _renamed: tuple[RenamedOption, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _read_renamed_options(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if not (cls.renamed_options and isinstance(data, Mapping)):
            return handler(data)
        renamed = tuple(RenamedOption(o, n) for o, n in cls.renamed_options.items() if o in data)
        model = handler(_move_renamed(cls.__name__, data, renamed))
        model._renamed = renamed
        return model

    @property
    def deprecated_options(self) -> tuple[RenamedOption, ...]:
        """The options these were read from under a deprecated key."""
        return self._renamed


def _move_renamed(
    title: str, data: Mapping[str, Any], renamed: tuple[RenamedOption, ...]
) -> dict[str, Any]:
    """`data` with each renamed value at its new path; an error when the new key is given too."""
    moved = {k: v for k, v in data.items() if k not in {r.old for r in renamed}}
    problems = []
    for option in renamed:
        head, _, tail = option.new.partition(".")
        if head in data:
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "renamed_option",
                        "given together with `{head}`: write only `{new}` "
                        "(`{old}` is its deprecated spelling)",
                        {"head": head, "new": option.new, "old": option.old},
                    ),
                    loc=(option.old,),
                    input=data[option.old],
                )
            )
        elif tail:
            moved[head] = {**moved.get(head, {}), tail: data[option.old]}
        else:
            moved[head] = data[option.old]
    if problems:
        raise ValidationError.from_exception_data(title, problems)
    return moved


class SourceAdapter(Protocol):
    """A back-office whose open tickets become Fragment tasks."""

    name: ClassVar[str]
    # A pydantic model (AdapterConfig) validating `sources[].options`; typed loosely so that a
    # plug-in's own model class satisfies the protocol (class attributes are invariant).
    Config: ClassVar[type[Any]]

    def __init__(self, config: Any, /) -> None: ...

    # Declared with `def`: an `async def ... -> AsyncIterator` here would reject every ordinary
    # async-generator implementation under mypy --strict.
    def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Yield every open ticket (and each unreadable record), or raise SourceError."""
        ...

    async def check(self) -> None:
        """Raise AdapterAuthError, AdapterConfigError or AdapterUnavailable when unusable."""
        ...

    async def aclose(self) -> None:
        """Release clients; called once, also after errors."""
        ...


@runtime_checkable
class SupportsChanges(Protocol):
    """Optional capability: tickets changed since a cursor, for incremental polling.

    An adapter whose polling depends on its options (a query that may be left out) also
    defines a `polls_changes` property; when it is false the daemon does not schedule polls.
    """

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Tickets changed since `cursor` (None: from now on), with the cursor to resume from."""
        ...


@runtime_checkable
class SupportsWriteBack(Protocol):
    """Optional capability: tell the back-office that an operator finished a ticket's task.

    `write_back` closes the ticket (action `close`, with the note when there is one) or only
    adds the note (action `comment`), and returns `CLOSED`, `COMMENTED` or `ALREADY_CLOSED`. It
    must be idempotent: closing a ticket that is already closed changes nothing (and adds no
    second note). A ticket that no longer exists raises TicketGone; a write the back-office
    refuses as invalid (no such transition or stage) raises WriteBackRejected; anything else
    the usual SourceError tree. No credential may appear in an error.

    An adapter that can write back only with some options also defines a `writes_back`
    property; when it is false the source cannot turn `write_back` on.
    """

    async def write_back(self, request: WriteBackRequest) -> WriteBackOutcome:
        """Close or comment `request.ticket_id` in the back-office."""
        ...


def can_write_back(adapter: object) -> bool:
    """Whether an adapter (instance or class) implements write-back with its options."""
    if not callable(getattr(adapter, "write_back", None)):
        return False
    writes = getattr(adapter, "writes_back", True)
    return writes if isinstance(writes, bool) else True


# --- what a ticket must be ------------------------------------------------------------------
# The one rule set: the core applies `ticket_problem` to every ticket any adapter yields (a ticket
# that fails it is reported as an invalid record and skipped, its task kept), the conformance kit
# fails an adapter whose tickets fail it, and the built-in record readers (`adapters.mapping`,
# `adapters.file`) use `ticket_id_from` and `title_problem` to report a bad record where they read
# it, with its position.

MAX_TITLE: Final = 1000
MAX_TICKET_ID: Final = 255
# Bounds on one ticket's custom values: deeper or larger is a hostile or broken record, and
# would cost recursion (RecursionError) or memory further on.
MAX_FIELD_DEPTH: Final = 32
MAX_FIELDS_SIZE: Final = 256 * 1024  # characters of the fields as JSON
# C0 controls and DEL: no ticket id has them, and NUL is refused by PostgreSQL's text columns.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def ticket_id_from(value: object) -> str | None:
    """A record's id as a ticket id: text (trimmed) or an integer; None when unusable."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def title_problem(title: object, *, name: str = "the title") -> str | None:
    """Why a title cannot be a task's (`name` is what the message calls it), or None."""
    if title is None:
        return f"{name} is missing"
    if not isinstance(title, str):
        return f"{name} is not text"
    if not title.strip():
        return f"{name} is empty"
    if len(title) > MAX_TITLE:
        return f"{name} has {len(title)} characters; Fragment takes at most {MAX_TITLE}"
    return None


def _fields_problem(fields: object) -> str | None:
    """Why custom values are too deep or hold a NUL, walked without recursion."""
    stack: list[tuple[object, int]] = [(fields, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_FIELD_DEPTH:
            return f"a custom field is nested deeper than {MAX_FIELD_DEPTH} levels"
        if isinstance(value, str):
            if "\x00" in value:
                return "a custom field contains a NUL character"
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    return "a custom field name contains a NUL character"
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)
    return None


def ticket_problem(ticket: object) -> str | None:
    """Why a ticket cannot become a task (Fragment would refuse it, or it is hostile), or None."""
    if not isinstance(ticket, Ticket):
        return f"the adapter yielded a {type(ticket).__name__}, not a Ticket"
    if not isinstance(ticket.id, str) or not ticket.id or len(ticket.id) > MAX_TICKET_ID:
        return f"the ticket id must be text of 1 to {MAX_TICKET_ID} characters"
    if _CONTROL.search(ticket.id):
        return "the ticket id contains a control character"
    problem = title_problem(ticket.title)
    if problem is not None:
        return problem
    if ticket.url is not None and not isinstance(ticket.url, str):
        return "the url is not text"
    texts = (ticket.title, ticket.url or "", ticket.assignee_email or "")
    if any("\x00" in text for text in texts if isinstance(text, str)):
        return "the title, url or assignee contains a NUL character"
    if not isinstance(ticket.fields, Mapping):
        return "the custom fields are not a mapping"
    problem = _fields_problem(ticket.fields)
    if problem is not None:
        return problem
    try:
        size = len(json.dumps(dict(ticket.fields), allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        return f"a custom field is not a JSON value: {exc}"
    if size > MAX_FIELDS_SIZE:
        return f"the custom fields take {size} characters as JSON; at most {MAX_FIELDS_SIZE}"
    return None
