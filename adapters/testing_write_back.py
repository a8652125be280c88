"""The conformance kit's write-back checks, for adapters that implement `SupportsWriteBack`.

Add `WriteBackConformance` next to `AdapterConformance` in the adapter's test class; it needs the
same `backoffice`, `options` (with write-back configured, when that is an option) and
`bad_options` fixtures, and one more: `missing_ticket_id`, an id of the adapter's form that the
fake back-office does not hold::

    class TestHelpdesk(AdapterConformance, WriteBackConformance):
        adapter_class = HelpdeskAdapter

        @pytest.fixture
        def missing_ticket_id(self): return "999999"

Checks: a close closes the ticket and a second close is harmless (idempotent, reported as
`already_closed` or `closed`); a comment leaves the ticket open; a missing ticket raises
`TicketGone`; a rate-limited answer is waited out; bad credentials raise `AdapterAuthError`; no
error holds a secret. An adapter without the capability (or without it under these options)
skips them, saying so.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Protocol

import pytest

from adapters.base import (
    AdapterAuthError,
    SourceError,
    TicketGone,
    WriteBackAction,
    WriteBackOutcome,
    WriteBackRequest,
    can_write_back,
)
from adapters.testing import _masked, _secrets

__all__ = ["KitWriteBackoffice", "WriteBackConformance"]

NOTE = "Closed from Fragment by the conformance kit"


class KitWriteBackoffice(Protocol):
    """What the write-back checks need from the fake back-office."""

    def open_ids(self) -> set[str]:
        """The ids of the tickets open right now."""
        ...

    def rate_limit_next(self, count: int) -> None:
        """Answer the next `count` requests with the vendor's rate-limit response."""
        ...


class WriteBackConformance:
    """Mixin of write-back checks; see the module's docstring."""

    adapter_class: ClassVar[type[Any]]
    #: False for a back-office without credentials (a local file database): no auth check.
    remote: ClassVar[bool] = True

    def _write(self, options: Any, *requests: WriteBackRequest) -> list[WriteBackOutcome]:
        """Make `requests` in turn on one adapter; their outcomes."""
        adapter = self.adapter_class(self.adapter_class.Config.model_validate(options))
        if not can_write_back(adapter):
            pytest.skip("the adapter cannot write back (with these options)")

        async def run() -> list[WriteBackOutcome]:
            try:
                return [await adapter.write_back(r) for r in requests]
            finally:
                await adapter.aclose()

        return asyncio.run(run())

    @staticmethod
    def _some_open(backoffice: KitWriteBackoffice, skip: int = 0) -> str:
        ids = sorted(backoffice.open_ids())
        assert len(ids) > skip, "seed the fake back-office with open tickets"
        return ids[skip]

    def test_write_back_close_is_idempotent(
        self, backoffice: KitWriteBackoffice, options: Any
    ) -> None:
        """A close closes the ticket; closing it again changes nothing and raises nothing."""
        ticket_id = self._some_open(backoffice)
        close = WriteBackRequest(ticket_id, WriteBackAction.CLOSE, NOTE, key="kit-1")
        try:
            first, second = self._write(options, close, close)
        except SourceError as exc:
            pytest.fail(f"closing an open ticket, then closing it again, raised {exc!r}")
        assert first is WriteBackOutcome.CLOSED, f"a close of an open ticket answered {first!r}"
        assert second in (WriteBackOutcome.ALREADY_CLOSED, WriteBackOutcome.CLOSED), (
            f"a second close answered {second!r}"
        )
        assert ticket_id not in backoffice.open_ids(), "the ticket is still open after a close"

    def test_write_back_comment_leaves_the_ticket_open(
        self, backoffice: KitWriteBackoffice, options: Any
    ) -> None:
        """A comment is only a note: the ticket stays open."""
        ticket_id = self._some_open(backoffice)
        comment = WriteBackRequest(ticket_id, WriteBackAction.COMMENT, NOTE, key="kit-2")
        [outcome] = self._write(options, comment)
        assert outcome is WriteBackOutcome.COMMENTED, f"a comment answered {outcome!r}"
        assert ticket_id in backoffice.open_ids(), "a comment closed the ticket"

    def test_write_back_to_a_missing_ticket_raises_ticket_gone(
        self, backoffice: KitWriteBackoffice, options: Any, missing_ticket_id: str
    ) -> None:
        """A ticket the back-office does not hold raises TicketGone, not another error."""
        close = WriteBackRequest(missing_ticket_id, WriteBackAction.CLOSE, NOTE)
        try:
            self._write(options, close)
        except TicketGone:
            return
        except Exception as exc:
            pytest.fail(f"a missing ticket raised {type(exc).__name__}, not TicketGone: {exc}")
        pytest.fail("a write-back to a missing ticket raised nothing")

    def test_write_back_waits_out_a_rate_limit(
        self, backoffice: KitWriteBackoffice, options: Any
    ) -> None:
        """A rate-limited answer is retried after the advertised wait."""
        ticket_id = self._some_open(backoffice, skip=1)
        backoffice.rate_limit_next(1)
        try:
            [outcome] = self._write(options, WriteBackRequest(ticket_id, WriteBackAction.CLOSE))
        except SourceError as exc:
            pytest.fail(f"one rate-limited answer made the write-back fail: {exc}")
        assert outcome is WriteBackOutcome.CLOSED
        assert ticket_id not in backoffice.open_ids()

    def test_write_back_errors_are_typed_without_secrets(
        self, backoffice: KitWriteBackoffice, options: Any, bad_options: Any
    ) -> None:
        """Bad credentials raise AdapterAuthError, and no error message holds a secret."""
        if not self.remote:
            pytest.skip("no credentials (remote = False)")
        secrets = _secrets(self.adapter_class.Config.model_validate(bad_options))
        secrets.update(_secrets(self.adapter_class.Config.model_validate(options)))
        ticket_id = self._some_open(backoffice)
        try:
            self._write(bad_options, WriteBackRequest(ticket_id, WriteBackAction.CLOSE))
        except AdapterAuthError as exc:
            message = f"{exc!r} {exc}"
        except Exception as exc:
            pytest.fail(f"bad credentials raised {type(exc).__name__}, not AdapterAuthError")
        else:
            pytest.fail("a write-back with bad credentials raised nothing")
        for secret, option in secrets.items():
            # The failure names the option, never shows its value.
            assert secret not in message, (
                f"a secret (the {option} option) appears in an error: "
                f"{_masked(message, secrets)[:200]!r}"
            )
        assert ticket_id in backoffice.open_ids(), "bad credentials closed the ticket"
