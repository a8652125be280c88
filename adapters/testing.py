"""The conformance kit: the checks every adapter, built-in or third-party, must pass.

An adapter writer subclasses `AdapterConformance` in their own pytest module, names the adapter
class, and provides three fixtures: `backoffice` (their fake back-office, started with data that
spans several pages, implementing `KitBackoffice`), `options` (the adapter's options pointing at
it) and `bad_options` (the same with wrong credentials). Every check then runs against their
adapter over real sockets::

    class TestHelpdesk(AdapterConformance):
        adapter_class = HelpdeskAdapter

        @pytest.fixture
        def backoffice(self): ...

Checks: the snapshot is complete across pages and its ids unique and stable; every ticket maps
to a valid task (`adapters.base.ticket_problem`, the rules the connector applies); `check()`
passes, and raises `AdapterAuthError` on bad credentials; no secret appears in any error of
`check()`, `list_open()` or `changes_since()`; a rate-limited answer is
waited out, a failing page fails the listing instead of shortening it, and a back-office that
caps its results (`cap_results`) gets a complete listing or an error, never a short one; and for
adapters with `changes_since`, changes and closes are seen, cursors move forward and can be
resumed. Each failure message says what the adapter did wrong (and where a secret leaked, never
the secret).

The checks that expect a failure (a failing page, the secret scan, the cap) run in stamina's
testing mode (`stamina.set_testing(True, attempts=2, cap=True)`): retries through
`adapters.http` happen without their waits, and at most twice. Set `fast_retries = False` to run
them with the real backoff; an adapter that sleeps on its own is not shortened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ClassVar, Protocol, TypeVar

import pytest
import stamina
from pydantic import BaseModel, SecretStr

from adapters.base import (
    AdapterAuthError,
    ChangeSet,
    InvalidRecord,
    SourceAdapter,
    SourceError,
    SupportsChanges,
    Ticket,
    ticket_problem,
)

T = TypeVar("T")

__all__ = ["AdapterConformance", "CappingBackoffice", "KitBackoffice"]


class KitBackoffice(Protocol):
    """What the kit needs from an adapter writer's fake back-office."""

    def open_ids(self) -> set[str]:
        """The ids of the tickets that are open right now: what a snapshot must return."""
        ...

    def listing_requests(self) -> int:
        """How many listing requests it has answered (the kit checks that paging happened).

        Count the requests that return records of a listing (every page of every series);
        helper requests (who-am-I, pipelines, server time) need not be counted.
        """
        ...

    def rate_limit_next(self, count: int) -> None:
        """Answer the next `count` requests with the vendor's rate-limit response (short wait)."""
        ...

    def fail_page(self, page: int) -> None:
        """Make every request for the `page`-th page (1-based) of any page series fail (5xx).

        A listing made of several page series (the windows of a partitioned search, one series
        per project...) fails on the `page`-th page of each one.
        """
        ...

    def change(self, ticket_id: str) -> None:
        """Edit an open ticket (a new title), as of the back-office's clock."""
        ...

    def close(self, ticket_id: str) -> None:
        """Close a ticket, as of the back-office's clock."""
        ...

    def advance(self, seconds: float) -> None:
        """Move the back-office's clock forward."""
        ...


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class CappingBackoffice(KitBackoffice, Protocol):
    """A fake of a back-office whose searches or listings answer only so many results."""

    def cap_results(self, count: int) -> None:
        """Answer at most `count` results per query, the way the vendor caps (an error past
        the cap, or a silent end): the kit checks the listing is complete or fails."""
        ...


def _secrets(options: BaseModel | dict[str, Any]) -> dict[str, str]:
    """Every secret value in an options model (SecretStr fields, at any depth), by option path."""
    found: dict[str, str] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, SecretStr):
            found.setdefault(value.get_secret_value(), path)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{path}.{name}" if path else name)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list | tuple):
            for n, item in enumerate(value):
                walk(item, f"{path}[{n}]")

    walk(options, "")
    return {secret: path for secret, path in found.items() if len(secret) >= 4}


def _masked(text: str, secrets: dict[str, str]) -> str:
    """`text` with each secret replaced by the name of its option: safe to print."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, f"<the {secrets[secret]} option>")
    return text


class AdapterConformance:
    """Subclass, set `adapter_class`, provide `backoffice`, `options`, `bad_options` fixtures."""

    adapter_class: ClassVar[type[Any]]
    #: False for a back-office without pages (a file): the paging checks are skipped.
    paginated: ClassVar[bool] = True
    #: False for a back-office without credentials or rate limits (a file).
    remote: ClassVar[bool] = True
    #: The checks expecting a failure skip the retries' waits (stamina's testing mode).
    fast_retries: ClassVar[bool] = True

    @pytest.fixture
    def bad_options(self, options: Any) -> Any:
        """Override: the options with wrong credentials (not needed when remote = False)."""
        if self.remote:
            pytest.fail("define a `bad_options` fixture: the options with wrong credentials")
        return options

    # --- helpers ---------------------------------------------------------------------------

    def make(self, options: Any) -> SourceAdapter:
        """An adapter from raw options, validated by its Config model as the core does."""
        config = self.adapter_class.Config.model_validate(options)
        adapter: SourceAdapter = self.adapter_class(config)
        return adapter

    async def _listing(self, options: Any, limit: int) -> list[Ticket | InvalidRecord]:
        adapter = self.make(options)
        items: list[Ticket | InvalidRecord] = []
        try:
            async for item in adapter.list_open():
                items.append(item)
                if len(items) > limit:
                    pytest.fail(
                        f"list_open yielded more than {limit} records and was still going: a "
                        "pagination loop (a repeated page token or cursor?)"
                    )
        finally:
            await adapter.aclose()
        return items

    def listing(self, options: Any, *, limit: int = 100_000) -> list[Ticket | InvalidRecord]:
        """Everything `list_open` yields (a listing past `limit` records fails the test)."""
        return _run(self._listing(options, limit))

    def open_ticket_ids(self, options: Any, backoffice: KitBackoffice) -> list[str]:
        """The ids of the open tickets a snapshot yields, in order."""
        limit = 10 * len(backoffice.open_ids()) + 100
        items = self.listing(options, limit=limit)
        return [t.id for t in items if isinstance(t, Ticket) and t.is_open]

    @contextlib.contextmanager
    def quick_retries(self) -> Iterator[None]:
        """Retries without waits, two attempts at most, when `fast_retries` (stamina's testing
        mode: it covers every retry of `adapters.http`)."""
        if not self.fast_retries:
            yield
            return
        with stamina.set_testing(True, attempts=2, cap=True):
            yield

    async def _with_adapter(
        self, options: Any, use: Callable[[SourceAdapter], Coroutine[Any, Any, T]]
    ) -> T:
        adapter = self.make(options)
        try:
            return await use(adapter)
        finally:
            await adapter.aclose()

    # --- snapshot --------------------------------------------------------------------------

    def test_snapshot_is_complete_across_pages(
        self, backoffice: KitBackoffice, options: Any
    ) -> None:
        """A snapshot yields exactly the open tickets, fetched over several pages."""
        before = backoffice.listing_requests()
        ids = self.open_ticket_ids(options, backoffice)
        pages = backoffice.listing_requests() - before
        expected = backoffice.open_ids()
        missing = sorted(expected - set(ids))
        extra = sorted(set(ids) - expected)
        assert not missing, (
            f"the snapshot lost {len(missing)} open tickets, e.g. {missing[:5]} (a page skipped?)"
        )
        assert not extra, (
            f"the snapshot holds {len(extra)} tickets that are not open, e.g. {extra[:5]}"
        )
        assert pages >= 2 or not self.paginated, (
            f"the listing took {pages} request(s): give the fake back-office more tickets than "
            "one page holds, so the kit can check pagination"
        )

    def test_ids_are_unique_and_stable(self, backoffice: KitBackoffice, options: Any) -> None:
        """No id appears twice in a snapshot, and two snapshots give the same ids."""
        first = self.open_ticket_ids(options, backoffice)
        repeated = sorted(i for i, n in Counter(first).items() if n > 1)
        assert not repeated, (
            f"ticket ids repeated within one snapshot: {repeated[:5]} (overlapping pages?)"
        )
        second = self.open_ticket_ids(options, backoffice)
        assert sorted(first) == sorted(second), "two snapshots of unchanged data gave different ids"

    def test_tickets_map_to_valid_tasks(self, backoffice: KitBackoffice, options: Any) -> None:
        """Every ticket is one Fragment accepts: text id, non-empty title, JSON fields."""
        items = self.listing(options, limit=10 * len(backoffice.open_ids()) + 100)
        assert items, "the snapshot is empty: seed the fake back-office with open tickets"
        for item in items:
            if isinstance(item, InvalidRecord):
                pytest.fail(f"a record of the kit's data was reported invalid: {item}")
            problem = ticket_problem(item)
            assert problem is None, f"ticket {getattr(item, 'id', '?')!r}: {problem}"

    def test_rate_limit_is_waited_out(self, backoffice: KitBackoffice, options: Any) -> None:
        """A rate-limited answer is retried after the advertised wait, and nothing is lost."""
        if not self.remote:
            pytest.skip("not a remote back-office (remote = False)")
        backoffice.rate_limit_next(1)
        try:
            ids = self.open_ticket_ids(options, backoffice)
        except SourceError as exc:
            pytest.fail(f"one rate-limited answer made the listing fail instead of waiting: {exc}")
        assert set(ids) == backoffice.open_ids(), (
            "after a rate-limited answer the snapshot was incomplete"
        )

    def test_failing_page_fails_the_listing(self, backoffice: KitBackoffice, options: Any) -> None:
        """A page that keeps failing makes the listing raise SourceError, never a short list."""
        if not self.paginated:
            pytest.skip("no pages (paginated = False)")
        backoffice.fail_page(2)
        try:
            with self.quick_retries():
                ids = self.open_ticket_ids(options, backoffice)
        except SourceError:
            return
        except Exception as exc:
            pytest.fail(f"a failing page raised {type(exc).__name__}, not a SourceError: {exc}")
        pytest.fail(
            f"page 2 kept failing, yet list_open returned {len(ids)} tickets as if complete: "
            "a short snapshot would close the tasks of the missing tickets"
        )

    # --- check and credentials -------------------------------------------------------------

    def test_check_passes_with_good_options(self, backoffice: KitBackoffice, options: Any) -> None:
        """`check()` returns quietly when the back-office is reachable and the credentials work."""
        _run(self._with_adapter(options, lambda adapter: adapter.check()))

    def test_bad_credentials_raise_auth_error(
        self, backoffice: KitBackoffice, bad_options: Any
    ) -> None:
        """`check()` and `list_open()` raise AdapterAuthError on bad credentials."""
        if not self.remote:
            pytest.skip("no credentials (remote = False)")

        async def attempt(adapter: SourceAdapter) -> None:
            await adapter.check()

        for what, run in (
            ("check()", lambda: _run(self._with_adapter(bad_options, attempt))),
            ("list_open()", lambda: self.listing(bad_options)),
        ):
            try:
                run()
            except AdapterAuthError:
                continue
            except Exception as exc:
                pytest.fail(
                    f"{what} with bad credentials raised {type(exc).__name__}, "
                    f"not AdapterAuthError: {exc}"
                )
            pytest.fail(f"{what} with bad credentials raised nothing")

    def test_no_secret_in_errors(
        self, backoffice: KitBackoffice, options: Any, bad_options: Any
    ) -> None:
        """No error of check(), list_open() or changes_since(), and no repr of the options,
        contains a secret value: with bad credentials, and with a failing page."""
        if not self.remote:
            pytest.skip("no credentials (remote = False)")
        secrets = _secrets(self.adapter_class.Config.model_validate(options))
        secrets.update(_secrets(self.adapter_class.Config.model_validate(bad_options)))
        assert secrets, "the options hold no SecretStr: declare credentials as SecretStr"
        messages = [
            ("the repr of the options", repr(self.adapter_class.Config.model_validate(options)))
        ]

        def attempt(where: str, run: Callable[[], object]) -> None:
            try:
                run()
            except Exception as exc:
                messages.append((where, f"{exc!r} {exc}"))

        with self.quick_retries():
            self._entry_point_errors(bad_options, "with bad credentials", attempt)
            backoffice.fail_page(1)
            self._entry_point_errors(options, "with a failing page", attempt)
        leaks = []
        for where, message in messages:
            leaked = sorted(path for secret, path in secrets.items() if secret in message)
            if leaked:
                leaks.append(
                    f"the secret of option(s) {', '.join(leaked)} appears in the error of "
                    f"{where}: {_masked(message, secrets)[:300]!r}"
                )
        if leaks:
            # No traceback: pytest would print this check's arguments, the options.
            pytest.fail("\n".join(leaks), pytrace=False)

    def _entry_point_errors(
        self, options: Any, label: str, attempt: Callable[[str, Callable[[], object]], None]
    ) -> None:
        """Run check(), list_open() and changes_since() (None, then a fresh cursor's poll)."""

        async def check(adapter: SourceAdapter) -> None:
            await adapter.check()

        async def changes(adapter: SourceAdapter) -> None:
            if isinstance(adapter, SupportsChanges):
                start = await adapter.changes_since(None)
                await adapter.changes_since(start.cursor)

        attempt(f"check() {label}", lambda: _run(self._with_adapter(options, check)))
        attempt(f"list_open() {label}", lambda: self.listing(options))
        attempt(f"changes_since() {label}", lambda: _run(self._with_adapter(options, changes)))

    # --- capped results --------------------------------------------------------------------

    def test_capped_results_are_complete_or_fail(
        self, backoffice: KitBackoffice, options: Any
    ) -> None:
        """A back-office answering at most a third of the open tickets per query: the listing
        is complete (the adapter narrows its queries) or raises a SourceError, never short."""
        cap = getattr(backoffice, "cap_results", None)
        if cap is None:
            pytest.skip("the fake has no cap_results(n): its listings are taken as uncapped")
        expected = backoffice.open_ids()
        limit = max(1, len(expected) // 3)
        cap(limit)
        try:
            with self.quick_retries():
                ids = self.open_ticket_ids(options, backoffice)
        except SourceError:
            return
        except Exception as exc:
            pytest.fail(f"a capped listing raised {type(exc).__name__}, not a SourceError: {exc}")
        missing = sorted(expected - set(ids))
        assert not missing, (
            f"with the back-office answering at most {limit} results a query, list_open "
            f"returned {len(set(ids))} of the {len(expected)} open tickets and no error, e.g. "
            f"{missing[:5]} missing: a short snapshot closes their tasks (narrow the queries, "
            "see adapters.partition, or raise)"
        )

    # --- changes_since ---------------------------------------------------------------------

    def _polls(
        self, options: Any, scenario: Callable[[SupportsChanges], Coroutine[Any, Any, None]]
    ) -> None:
        """Run a sequence of polls on one adapter, in one event loop (its client lives there)."""
        adapter = self.make(options)
        if not isinstance(adapter, SupportsChanges):
            pytest.skip("the adapter has no changes_since (incremental polling is optional)")

        async def run() -> None:
            try:
                await scenario(adapter)
            finally:
                await adapter.aclose()

        _run(run())

    @staticmethod
    def _ids(changes: ChangeSet) -> dict[str, bool]:
        return {t.id: t.is_open for t in changes.tickets}

    def test_changes_are_seen_and_cursors_move_forward(
        self, backoffice: KitBackoffice, options: Any
    ) -> None:
        """A change and a close after a cursor are returned; two hours later, not again."""

        async def scenario(adapter: SupportsChanges) -> None:
            start = await adapter.changes_since(None)
            assert start.cursor is not None, (
                "changes_since(None) must return a cursor to start from"
            )
            some = sorted(backoffice.open_ids())
            changed, closed = some[0], some[1]
            backoffice.advance(1)
            backoffice.change(changed)
            backoffice.close(closed)
            first = await adapter.changes_since(start.cursor)
            seen = self._ids(first)
            assert seen.get(changed) is True, (
                f"the edited ticket {changed!r} was not returned as open"
            )
            assert seen.get(closed) is False, (
                f"the closed ticket {closed!r} was not returned as closed"
            )
            assert first.cursor is not None, "changes_since returned no cursor to resume from"
            # Two hours and two polls later, the first changes are far behind any overlap window.
            cursor, polled = first.cursor, first
            for step in range(2):
                backoffice.advance(3600)
                later = sorted(backoffice.open_ids())[-1 - step]
                backoffice.change(later)
                polled = await adapter.changes_since(cursor)
                assert later in self._ids(polled), (
                    f"a change after the cursor ({later!r}) was missed"
                )
                assert polled.cursor is not None, "changes_since returned no cursor to resume from"
                cursor = polled.cursor
            again = sorted({changed, closed} & set(self._ids(polled)))
            assert not again, (
                f"changes made two hours before the cursor came back ({again}): the cursor does "
                "not move forward"
            )

        self._polls(options, scenario)

    def test_cursors_can_be_resumed(self, backoffice: KitBackoffice, options: Any) -> None:
        """A new adapter resuming from a stored cursor sees the changes made after it."""
        stored: list[str | None] = []

        async def first(adapter: SupportsChanges) -> None:
            stored.append((await adapter.changes_since(None)).cursor)

        self._polls(options, first)
        backoffice.advance(1)
        target = sorted(backoffice.open_ids())[0]
        backoffice.change(target)

        async def resumed(adapter: SupportsChanges) -> None:
            changes = await adapter.changes_since(stored[0])
            assert target in self._ids(changes), (
                "resuming from a stored cursor missed a change made after it"
            )

        self._polls(options, resumed)
