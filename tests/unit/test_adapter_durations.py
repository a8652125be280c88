"""Adapters' time options read like the core's: `30s`, `5m`, `1h`, `250ms` or seconds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from adapters.file import FileOptions
from adapters.http import RetryOptions
from adapters.sql import SqlOptions


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("90s", timedelta(seconds=90)),
        ("2m", timedelta(minutes=2)),
        ("1h", timedelta(hours=1)),
        ("250ms", timedelta(milliseconds=250)),
        (45, timedelta(seconds=45)),
        (1.5, timedelta(seconds=1.5)),
    ],
)
def test_durations_in_any_unit(written: object, meant: timedelta) -> None:
    options = FileOptions.model_validate({"path": "t.json", "incremental_overlap": written})
    assert options.incremental_overlap == meant


def test_every_kind_of_adapter_option_takes_them() -> None:
    """Optional, bounded and plain duration fields alike."""
    sql = SqlOptions.model_validate(
        {"dsn": "sqlite+aiosqlite:///x.db", "query": "SELECT 1", "statement_timeout": "5m"}
    )
    assert sql.statement_timeout == timedelta(minutes=5)
    retry = RetryOptions.model_validate({"wait_max": "2m", "deadline": "90s"})
    assert (retry.wait_max, retry.deadline) == (timedelta(minutes=2), timedelta(seconds=90))


@pytest.mark.parametrize("written", ["5 minutes", "soon", "-3s"])
def test_a_bad_duration_names_the_expected_form(written: str) -> None:
    with pytest.raises(ValidationError, match="expected a duration such as 30s, 5m, 1h"):
        FileOptions.model_validate({"path": "t.json", "incremental_overlap": written})


def test_bounds_still_apply() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        RetryOptions.model_validate({"deadline": "0s"})
