"""The conformance kit fails each deliberately broken adapter, saying what is wrong.

Each case runs the kit in a separate pytest session (pytester) against one broken variant of an
example adapter (tests/kit/broken.py), so no check of the kit can silently pass.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from connector.identity import instance_namespace
from connector.source import read_snapshot
from fc_helpdesk.fake import TOKEN, HelpdeskBackoffice
from tests.kit import broken

KIT_MODULE = """
import pytest
from adapters.testing import AdapterConformance
from fc_helpdesk.fake import TOKEN, HelpdeskBackoffice
from tests.kit.broken import {cls}
from fc_helpdesk import HelpdeskAdapter

class TestKit(AdapterConformance):
    adapter_class = {cls}

    @pytest.fixture
    def backoffice(self):
        with HelpdeskBackoffice(tickets=60) as fake:
            yield fake

    @pytest.fixture
    def options(self, backoffice):
        return {{"base_url": backoffice.url, "token": TOKEN, "per_page": 20}}

    @pytest.fixture
    def bad_options(self, backoffice):
        return {{"base_url": backoffice.url, "token": "wrong-token-5678", "per_page": 20}}
"""


SEARCHDESK_KIT_MODULE = """
import pytest
from adapters.testing import AdapterConformance
from fc_searchdesk.fake import API_KEY, SearchdeskBackoffice
from tests.kit.broken import {cls}
from fc_searchdesk import SearchdeskAdapter

class TestKit(AdapterConformance):
    adapter_class = {cls}

    @pytest.fixture
    def backoffice(self):
        with SearchdeskBackoffice(tickets=500) as fake:
            yield fake

    @pytest.fixture
    def options(self, backoffice):
        return {{"base_url": backoffice.url, "api_key": API_KEY}}

    @pytest.fixture
    def bad_options(self, backoffice):
        return {{"base_url": backoffice.url, "api_key": "wrong-key-5678"}}
"""

SEARCHDESK = ("SearchdeskAdapter", "StopsAtCap")


def run_kit(
    pytester: pytest.Pytester, cls: str, *selected: str, extra: tuple[str, ...] = ()
) -> pytest.RunResult:
    module = SEARCHDESK_KIT_MODULE if cls in SEARCHDESK else KIT_MODULE
    pytester.makepyfile(test_kit=module.format(cls=cls))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    args = ["-p", "no:cacheprovider", "-q", *extra]
    if selected:
        args += ["-k", " or ".join(selected)]
    return pytester.runpytest_inprocess(*args)


def test_the_example_adapter_passes_every_check(pytester: pytest.Pytester) -> None:
    """The reference adapter passes the whole kit: the kit's checks are satisfiable."""
    result = run_kit(pytester, "HelpdeskAdapter")
    # Helpdesk's listings are not capped: its fake has no cap_results, and that check skips.
    result.assert_outcomes(passed=10, skipped=1)
    result.stdout.no_fnmatch_line("*FAILED*")


def test_the_capped_search_example_passes_every_check(pytester: pytest.Pytester) -> None:
    """The Searchdesk adapter (a search capped at 300, partitioned) passes all 11 checks."""
    result = run_kit(pytester, "SearchdeskAdapter")
    result.assert_outcomes(passed=11)


@pytest.mark.parametrize(
    ("cls", "check", "message"),
    [
        (
            "DuplicateIds",
            "test_ids_are_unique_and_stable",
            "ticket ids repeated within one snapshot",
        ),
        ("LostPage", "test_snapshot_is_complete_across_pages", "the snapshot lost"),
        ("RepeatedPageToken", "test_snapshot_is_complete_across_pages", "pagination loop"),
        (
            "NonMonotonicCursor",
            "test_changes_are_seen_and_cursors_move_forward",
            "the cursor does not move forward",
        ),
        ("WrongAuthError", "test_bad_credentials_raise_auth_error", "not AdapterAuthError"),
        (
            "SecretInError",
            "test_no_secret_in_errors",
            "the secret of option(s) token appears in the error of list_open() with bad "
            "credentials: *<the token option>*",
        ),
        (
            "SecretInCheckError",
            "test_no_secret_in_errors",
            "the secret of option(s) token appears in the error of check() with bad credentials*",
        ),
        (
            "SecretInChangesError",
            "test_no_secret_in_errors",
            "the secret of option(s) token appears in the error of changes_since() with a "
            "failing page*",
        ),
        (
            "StopsAtCap",
            "test_capped_results_are_complete_or_fail",
            "with the back-office answering at most * results a query, list_open returned * of "
            "the * open tickets and no error*",
        ),
    ],
)
def test_each_broken_adapter_fails_with_a_clear_message(
    pytester: pytest.Pytester, cls: str, check: str, message: str
) -> None:
    """A broken adapter fails the check that covers its bug, and the failure says why."""
    result = run_kit(pytester, cls, check)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{message}*"])
    if check == "test_no_secret_in_errors":
        # Where a secret leaked, never what: neither token of the kit's options is printed,
        # not even through pytest's traceback of the check's arguments.
        assert TOKEN not in result.stdout.str()
        assert "wrong-token-5678" not in result.stdout.str()


def test_the_checks_expecting_failures_skip_the_retry_waits(pytester: pytest.Pytester) -> None:
    """A failing page and the secret scan retry without backoff (stamina's testing mode)."""
    result = run_kit(
        pytester,
        "HelpdeskAdapter",
        "test_failing_page_fails_the_listing",
        "test_no_secret",
        extra=("-rP",),  # the passed checks' captured output: stamina's retry log
    )
    result.assert_outcomes(passed=2)
    # stamina logs every retry it schedules, with its wait: each one was retried at once (with
    # the real backoff, 0.5 s, 1 s, 2 s... up to 5 attempts, each check took 9-10 s).
    retries = [line for line in result.outlines if "stamina.retry_scheduled" in line]
    assert retries
    # The line is key=value, JSON or a dict's repr, depending on how an earlier test in this
    # process configured structlog: read the two figures in any of these forms.
    wait = re.compile(r"""\bwait_for["']?[=:] ?0\.0\b""")
    first = re.compile(r"""\bretry_num["']?[=:] ?1\b""")
    assert all(wait.search(line) and first.search(line) for line in retries), retries


@pytest.mark.parametrize(
    "cls", ["HostileTicket", "ControlCharacterInId", "TitleTooLong", "NestedTooDeep"]
)
def test_the_kit_and_the_engine_reject_the_same_ticket_with_the_same_message(
    pytester: pytest.Pytester, cls: str
) -> None:
    """A ticket that breaks one of the contract's rules: the core skips it as an invalid record,
    and the kit fails the adapter, both with the one reason `adapters.base.ticket_problem` gives."""
    adapter_class = getattr(broken, cls)

    async def engine() -> list[tuple[str | None, str]]:
        with HelpdeskBackoffice(tickets=60) as fake:
            options = {"base_url": fake.url, "token": TOKEN, "per_page": 20}
            adapter = adapter_class(adapter_class.Config.model_validate(options))
            try:
                snapshot = await read_snapshot("helpdesk", adapter, instance_namespace("kit"))
            finally:
                await adapter.aclose()
            assert {t.id for t in snapshot.tickets} == fake.open_ids() and snapshot.complete
        return [(r.ticket_id, r.reason) for r in snapshot.invalid]

    ((ticket_id, reason),) = asyncio.run(engine())
    assert ticket_id == adapter_class.hostile.id
    result = run_kit(pytester, cls, "test_tickets_map_to_valid_tasks")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*ticket {ticket_id!r}: {reason}"])
