"""The contract between fragment-connector and a back-office: what an adapter writer implements.

An adapter is a class with a `name`, a pydantic `Config` model for its `sources[].options`, an
async `list_open()` generator that yields every open ticket (a complete snapshot, or an exception),
an async `check()` and an async `aclose()`. Optionally it implements `changes_since(cursor)` for
incremental polling, and `write_back(request)` to close or comment a ticket whose task an
operator marked DONE in Fragment. Adapters report trouble by raising the errors below; the core
decides what that means (no closes for that source, exit codes, metrics). Contract version:
`API_VERSION`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

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
    "AdapterAuthError",
    "AdapterConfig",
    "AdapterConfigError",
    "AdapterDataError",
    "AdapterUnavailable",
    "ChangeSet",
    "ConfigPath",
    "Duration",
    "InvalidRecord",
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


class AdapterConfig(BaseModel):
    """Base for adapter option models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
