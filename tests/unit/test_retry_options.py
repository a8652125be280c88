"""One retry dialect for the HTTP adapters: `retry: {attempts, deadline, ...}`, with the old
`retry_attempts` / `retry_deadline` still read, reported as deprecated, and never mixed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from adapters.base import RenamedOption
from adapters.github import GitHubOptions
from adapters.http import RetryPolicy
from adapters.rest import RestOptions
from adapters.zendesk import ZendeskOptions
from connector.config import SourceSection
from connector.errors import ConfigError
from connector.registry import build_adapter, deprecated_options

ZENDESK = {"base_url": "http://zendesk.test", "email": "a@b.test", "api_token": "t"}
GITHUB = {"repositories": ["acme/app"], "token": "t"}
REST = {"base_url": "http://rest.test", "mapping": {"id": "id", "title": "title"}}


def test_retry_group_sets_the_whole_policy() -> None:
    """`retry:` gives attempts, deadline and the backoff's waits to the adapter's RetryPolicy."""
    options = ZendeskOptions.model_validate(
        {**ZENDESK, "retry": {"attempts": 3, "deadline": "20s", "wait_max": "2s"}}
    )
    policy = options.retry_policy()
    assert (policy.attempts, policy.deadline, policy.wait_max) == (3, 20.0, 2.0)
    assert options.deprecated_options == ()


def test_old_keys_are_read_as_the_retry_group_and_reported() -> None:
    """`retry_attempts` / `retry_deadline` mean `retry.attempts` / `retry.deadline`, and the
    options say they were written the deprecated way."""
    old = ZendeskOptions.model_validate({**ZENDESK, "retry_attempts": 2, "retry_deadline": "5s"})
    new = ZendeskOptions.model_validate({**ZENDESK, "retry": {"attempts": 2, "deadline": 5}})
    assert old.retry == new.retry
    assert old.deprecated_options == (
        RenamedOption("retry_attempts", "retry.attempts"),
        RenamedOption("retry_deadline", "retry.deadline"),
    )


@pytest.mark.parametrize("retry", [{"attempts": 2}, {}])
def test_both_dialects_at_once_is_an_error_naming_the_key(retry: dict[str, Any]) -> None:
    """An old key next to `retry:` is refused, at the old key, saying what to write."""
    with pytest.raises(ValidationError) as caught:
        ZendeskOptions.model_validate({**ZENDESK, "retry_attempts": 3, "retry": retry})
    [error] = caught.value.errors()
    assert error["loc"] == ("retry_attempts",)
    assert error["msg"] == (
        "given together with `retry`: write only `retry.attempts` "
        "(`retry_attempts` is its deprecated spelling)"
    )


def test_github_keeps_its_longer_deadline_in_either_dialect() -> None:
    """GitHub's 90 s deadline (a secondary rate limit asks a minute) survives a partial `retry:`
    and the old `retry_attempts` alike."""
    assert GitHubOptions.model_validate(GITHUB).retry.deadline == timedelta(seconds=90)
    for partial in ({"retry": {"attempts": 2}}, {"retry_attempts": 2}):
        options = GitHubOptions.model_validate({**GITHUB, **partial})
        assert (options.retry.attempts, options.retry.deadline) == (2, timedelta(seconds=90))


def test_rest_takes_the_same_dialect() -> None:
    """`rest` has the same `retry:` group, and reads the old keys like the others."""
    options = RestOptions.model_validate({**REST, "retry_deadline": 7})
    assert options.retry_policy() == RetryPolicy(attempts=5, deadline=7.0)
    assert [r.old for r in options.deprecated_options] == ["retry_deadline"]


def test_a_deprecated_option_is_logged_once_naming_the_source_and_the_new_key() -> None:
    """Building a source twice (as `check` does) logs each deprecated key once."""
    source = SourceSection(
        name="logged-once", adapter="zendesk", options={**ZENDESK, "retry_attempts": 2}
    )
    with capture_logs() as logs:
        build_adapter(source)
        build_adapter(source)
    assert [(e["event"], e["source"], e["detail"]) for e in logs] == [
        (
            "config.deprecated_option",
            "logged-once",
            "sources[logged-once].options.retry_attempts is deprecated: "
            "write sources[logged-once].options.retry.attempts",
        )
    ]


def test_both_dialects_in_a_source_is_a_config_error() -> None:
    """The registry's error names the source's key."""
    source = SourceSection(
        name="s", adapter="zendesk", options={**ZENDESK, "retry_deadline": 5, "retry": {}}
    )
    with pytest.raises(ConfigError, match=r"sources\[s\]\.options\.retry_deadline: given together"):
        build_adapter(source)


def test_deprecated_options_of_new_style_options_is_empty() -> None:
    """Options in the current dialect, or of an adapter without renamed keys, report nothing."""
    source = SourceSection(name="s", adapter="zendesk", options={})
    assert deprecated_options(source, ZendeskOptions.model_validate(ZENDESK)) == []
    assert deprecated_options(source, object()) == []
