"""Normalised values, uid derivation and the error-to-exit-code table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from connector import errors
from connector.identity import Markers, instance_namespace, owned_ticket_id, task_uid
from connector.models import Task, TaskStatus
from connector.values import (
    canonical,
    fields_digest,
    format_timestamp,
    parse_timestamp,
    same,
    task_digest,
)


def test_timestamps_are_formatted_like_fragment() -> None:
    """Timestamps become UTC, millisecond precision, with a Z."""
    moment = datetime(2025, 9, 11, 14, 0, 0, 987654, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(moment) == "2025-09-11T12:00:00.987Z"
    assert parse_timestamp("2025-09-11T12:00:00.987Z") == moment.replace(microsecond=987000)
    assert parse_timestamp("2025-09-11T12:00:00") == datetime(2025, 9, 11, 12, tzinfo=UTC)
    assert parse_timestamp("not a date") is None


def test_same_treats_missing_as_null_and_bool_apart_from_int() -> None:
    """None equals absent; true is not 1; 2.0 is 2; dict key order does not matter."""
    assert same(None, None)
    assert not same(None, "")
    assert not same(True, 1)
    assert same(2.0, 2)
    assert canonical({"b": 1, "a": [1.0, " x "]}) == canonical({"a": [1, "x"], "b": 1})


def test_fields_digest_ignores_key_order_and_nulls_and_sees_every_change() -> None:
    """Equal fields (any key order, nulls left out) share a digest; any changed value does not."""
    fields = {"title": "A", "amount": 12, "tags": ["x"], "nested": {"b": 1, "a": 2}}
    assert fields_digest(fields) == fields_digest(
        {"nested": {"a": 2, "b": 1}, "url": None, "tags": ["x"], "amount": 12, "title": "A"}
    )
    assert len(fields_digest(fields)) == 16
    for changed in (
        {"title": "B"},
        {"amount": 13},
        {"amount": True},
        {"tags": ["x", "y"]},
        {"nested": {"a": 2}},
        {"extra": ""},
    ):
        assert fields_digest({**fields, **changed}) != fields_digest(fields), changed


def test_task_digest_covers_status_fields_and_due_date() -> None:
    """The mirror's digest of a task changes with its status, any field or its due date."""
    due = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    task = Task(uid="u", status=TaskStatus.TODO, fields={"title": "A"}, due_at=due)
    digest = task_digest(task)
    assert digest.due_at == "2026-01-01T12:00:00.123Z"
    assert digest == task_digest(
        Task(uid="u", status=TaskStatus.TODO, fields={"title": "A"}, due_at=due)
    )
    assert digest != task_digest(
        Task(uid="u", status=TaskStatus.STARTED, fields={"title": "A"}, due_at=due)
    )
    assert digest != task_digest(
        Task(uid="u", status=TaskStatus.TODO, fields={"title": "B"}, due_at=due)
    )
    assert digest != task_digest(Task(uid="u", status=TaskStatus.TODO, fields={"title": "A"}))


def test_uid_is_stable_and_depends_on_instance_source_and_ticket() -> None:
    """The same (instance, source, ticket) always gives the same uid; any change gives another."""
    ns = instance_namespace("acme")
    uid = task_uid(ns, "bo", "T-1")
    assert uid == task_uid(instance_namespace("acme"), "bo", "T-1")
    assert uuid.UUID(uid).version == 5
    assert (
        len(
            {
                uid,
                task_uid(ns, "bo", "T-2"),
                task_uid(ns, "zd", "T-1"),
                task_uid(instance_namespace("x"), "bo", "T-1"),
            }
        )
        == 4
    )


def test_ownership_needs_markers_and_matching_uid() -> None:
    """A task is ours only when its markers name the source and ticket of its own uid."""
    ns, markers = instance_namespace("acme"), Markers()
    uid = task_uid(ns, "bo", "T-1")
    ours = Task(uid=uid, status=TaskStatus.TODO, fields={"fc_source": "bo", "fc_ticket_id": "T-1"})
    assert owned_ticket_id(ours, source="bo", namespace=ns, markers=markers) == "T-1"
    assert owned_ticket_id(ours, source="zd", namespace=ns, markers=markers) is None
    moved = Task(uid=uid, status=TaskStatus.TODO, fields={"fc_source": "bo", "fc_ticket_id": "T-2"})
    assert owned_ticket_id(moved, source="bo", namespace=ns, markers=markers) is None


@pytest.mark.parametrize(
    ("error", "code", "label"),
    [
        (errors.ConfigError("x"), 4, "config_error"),
        (errors.AdapterAuthError("x"), 1, "source_auth_error"),
        (errors.FragmentAuthError("x"), 1, "fragment_auth_error"),
        (errors.FragmentValidationError("x"), 1, "fragment_validation_error"),
        (errors.StateError("x"), 1, "state_error"),
        (RuntimeError("x"), 1, "internal_error"),
    ],
)
def test_error_table(error: BaseException, code: int, label: str) -> None:
    """Each error class maps to its documented exit code and label."""
    assert errors.classify(error) == (code, label)


def test_most_severe_exit_code_wins() -> None:
    """4 beats 1 beats 3 beats 2 beats 0."""
    assert errors.most_severe([0, 2, 3, 1, 4]) == 4
    assert errors.most_severe([0, 2, 3, 1]) == 1
    assert errors.most_severe([2, 3]) == 3
    assert errors.most_severe([0, 2]) == 2
    assert errors.most_severe([]) == 0


def test_task_uid_is_uuid5() -> None:
    """The hand-written uuid5 gives exactly uuid.uuid5's answer."""
    ns = instance_namespace("acme")
    for source, ticket_id in [("bo", "T-1"), ("zendesk", "123456"), ("é", "ü/ß 1")]:
        assert task_uid(ns, source, ticket_id) == str(uuid.uuid5(ns, f"{source}:{ticket_id}"))
