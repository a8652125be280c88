"""A source's outcome label and its exit code: the labels live beside the error table, and each
report state gets the label and the code it always had."""

from __future__ import annotations

import pytest

from connector import errors
from connector.cycle import source_exit_code, source_outcome
from connector.models import (
    Action,
    ActionFailure,
    ActionKind,
    InvalidRecord,
    Plan,
    Refusal,
    SourceReport,
)

ACTION = Action(ActionKind.CLOSE, uid="u1", source="s", ticket_id="T-1", reason="r", payload={})
PLANNED = SourceReport(name="s", ok=True, plan=Plan(source="s", actions=(ACTION,)))


@pytest.mark.parametrize(
    ("label", "code"),
    [
        ("ok", errors.EXIT_OK),
        ("refused", errors.EXIT_REFUSED),
        ("partial", errors.EXIT_FAILURE),
        ("source_unavailable", errors.EXIT_FAILURE),
        ("config_error", errors.EXIT_FAILURE),
        ("error", errors.EXIT_FAILURE),
    ],
)
def test_outcome_labels_map_to_exit_codes(label: str, code: int) -> None:
    """ok 0, refused 3, partial 1, and a failed source 1 whatever its error (others went on)."""
    assert errors.outcome_exit_code(label) == code


def test_outcomes_are_the_documented_labels() -> None:
    """The labels the run history, the metrics and the status page show (docs/output.md)."""
    assert [o.value for o in errors.Outcome] == ["ok", "refused", "partial"]
    assert errors.outcome_label(errors.ConnectorError("x")) == errors.GENERIC_ERROR


@pytest.mark.parametrize(
    ("report", "dry_run", "label", "code"),
    [
        (SourceReport(name="s", ok=True), False, "ok", 0),
        (PLANNED, True, "ok", 2),
        (PLANNED, False, "ok", 0),
        (
            SourceReport(
                name="s",
                ok=True,
                plan=PLANNED.plan,
                refusals=(Refusal(ACTION, "mass_close", "too many"),),
            ),
            True,
            "refused",
            3,
        ),
        (
            SourceReport(
                name="s", ok=True, plan=PLANNED.plan, failures=(ActionFailure(ACTION, "x"),)
            ),
            False,
            "partial",
            1,
        ),
        (SourceReport(name="s", ok=True, unresolved=("T-2",)), False, "partial", 1),
        (
            SourceReport(name="s", ok=True, invalid_records=(InvalidRecord("row 2", "no id"),)),
            False,
            "ok",
            1,
        ),
        (
            SourceReport(name="s", ok=False, error="down", error_label="source_unavailable"),
            False,
            "source_unavailable",
            1,
        ),
        (SourceReport(name="s", ok=False, error="?"), False, "error", 1),
    ],
)
def test_each_report_gets_its_outcome_and_exit_code(
    report: SourceReport, dry_run: bool, label: str, code: int
) -> None:
    """The outcome label and the exit code agree with the table for every kind of ending."""
    assert source_outcome(report) == label
    assert source_exit_code(report, dry_run=dry_run) == code
