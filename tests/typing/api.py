"""The adapter API as a plug-in author writes it: type-checked by mypy in CI, never run.

If a change to `adapters.base` breaks this file, it breaks every third-party adapter too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import ClassVar

from pydantic import SecretStr

from adapters.base import (
    API_VERSION,
    AdapterAuthError,
    AdapterConfig,
    ChangeSet,
    Duration,
    InvalidRecord,
    SourceAdapter,
    SupportsChanges,
    Ticket,
)


class ExampleOptions(AdapterConfig):
    base_url: str
    token: SecretStr
    page_size: int = 100
    timeout: Duration = timedelta(seconds=30)


class ExampleAdapter:
    name: ClassVar[str] = "example"
    Config: ClassVar[type[ExampleOptions]] = ExampleOptions

    def __init__(self, config: ExampleOptions, /) -> None:
        self.config = config

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        yield Ticket(id="1", title="A ticket", url="https://example/1", fields={"n": 1})
        yield InvalidRecord(position="page 1, item 2", reason="no id")

    async def check(self) -> None:
        if not self.config.token.get_secret_value():
            raise AdapterAuthError("empty token")

    async def aclose(self) -> None:
        return None

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        return ChangeSet(tickets=(Ticket(id="1", title="A", is_open=False),), cursor="c2")


def accepts(adapter: SourceAdapter) -> None:
    """The core's view: any SourceAdapter."""


def polls(adapter: SupportsChanges) -> None:
    """The core's view of the optional capability."""


accepts(ExampleAdapter(ExampleOptions(base_url="https://example", token=SecretStr("t"))))
polls(ExampleAdapter(ExampleOptions(base_url="https://example", token=SecretStr("t"))))
assert API_VERSION == 1
