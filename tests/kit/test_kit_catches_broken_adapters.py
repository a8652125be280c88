"""The conformance kit fails each deliberately broken adapter, saying what is wrong.

Each case runs the kit in a separate pytest session (pytester) against one broken variant of the
example Helpdesk adapter (tests/kit/broken.py), so no check of the kit can silently pass.
"""

from __future__ import annotations

import pytest

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


def run_kit(pytester: pytest.Pytester, cls: str, *selected: str) -> pytest.RunResult:
    pytester.makepyfile(test_kit=KIT_MODULE.format(cls=cls))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    args = ["-p", "no:cacheprovider", "-q"]
    if selected:
        args += ["-k", " or ".join(selected)]
    return pytester.runpytest_inprocess(*args)


def test_the_example_adapter_passes_every_check(pytester: pytest.Pytester) -> None:
    """The reference adapter passes the whole kit: the kit's checks are satisfiable."""
    result = run_kit(pytester, "HelpdeskAdapter")
    result.assert_outcomes(passed=10)


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
        ("SecretInError", "test_no_secret_in_errors", "a secret value appears in an error message"),
    ],
)
def test_each_broken_adapter_fails_with_a_clear_message(
    pytester: pytest.Pytester, cls: str, check: str, message: str
) -> None:
    """A broken adapter fails the check that covers its bug, and the failure says why."""
    result = run_kit(pytester, cls, check)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{message}*"])
