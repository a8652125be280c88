"""Record → Ticket by configuration: value specs, templates, validation and invalid records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jmespath
import pytest
from pydantic import ValidationError

from adapters.base import InvalidRecord, Ticket
from adapters.mapping import RecordMapper, TicketMapping, compile_expression, compile_spec

JIRA_ISSUE: dict[str, Any] = {
    "id": "10001",
    "key": "OPS-7",
    "fields": {
        "summary": "Refund customer",
        "status": {"name": "In Progress", "statusCategory": {"key": "indeterminate"}},
        "duedate": "2026-03-01",
        "updated": "2026-02-01T10:00:00.000+0000",
        "assignee": {"emailAddress": "ana@example.com"},
        "customfield_10010": 12.5,
        "labels": ["kyc", "vip"],
        "flagged": True,
        "team": None,
    },
}


def mapper(**specs: Any) -> RecordMapper:
    return RecordMapper(TicketMapping(**{"id": "key", "title": "fields.summary", **specs}))


def ticket(result: Ticket | InvalidRecord) -> Ticket:
    assert isinstance(result, Ticket), result
    return result


def invalid(result: Ticket | InvalidRecord) -> InvalidRecord:
    assert isinstance(result, InvalidRecord), result
    return result


def test_a_full_mapping_gives_every_ticket_value() -> None:
    """Every ticket key can be mapped, with timestamps parsed and open state computed."""
    result = ticket(
        mapper(
            url="https://acme.atlassian.net/browse/{key}",
            updated_at="fields.updated",
            due_at="fields.duedate",
            assignee_email="fields.assignee.emailAddress",
            is_open="fields.status.statusCategory.key != 'done'",
            fields={"status": "fields.status.name"},
        ).map(JIRA_ISSUE, "item 1")
    )
    assert result == Ticket(
        id="OPS-7",
        title="Refund customer",
        url="https://acme.atlassian.net/browse/OPS-7",
        fields={"status": "In Progress"},
        updated_at=datetime(2026, 2, 1, 10, tzinfo=UTC),
        is_open=True,
        due_at=datetime(2026, 3, 1, tzinfo=UTC),
        assignee_email="ana@example.com",
    )


def test_expressions_keep_the_json_type_they_select() -> None:
    """A JMESPath spec keeps numbers, booleans, lists, objects and nulls as they are."""
    fields = {
        "amount": "fields.customfield_10010",
        "flagged": "fields.flagged",
        "labels": "fields.labels",
        "first_label": "fields.labels[0]",
        "last_label": "fields.labels[-1]",
        "status": "fields.status",
        "team": "fields.team",
        "missing": "fields.nothing.here",
        "count": "length(fields.labels)",
        "literal": "'fixed'",
    }
    result = ticket(mapper(fields=fields).map(JIRA_ISSUE, "item 1"))
    assert result.fields == {
        "amount": 12.5,
        "flagged": True,
        "labels": ["kyc", "vip"],
        "first_label": "kyc",
        "last_label": "vip",
        "status": JIRA_ISSUE["fields"]["status"],
        "team": None,
        "missing": None,
        "count": 2,
        "literal": "fixed",
    }


def test_templates_render_text_and_json_values() -> None:
    """A template renders strings as they are and other values as compact JSON."""
    spec = compile_spec("{key}: {fields.summary} {fields.customfield_10010} {fields.labels}")
    assert spec(JIRA_ISSUE) == 'OPS-7: Refund customer 12.5 ["kyc","vip"]'
    assert compile_spec("#{fields.flagged}")(JIRA_ISSUE) == "#true"
    assert compile_spec("https://github.com/acme/app/issues/{number}")({"number": 12}) == (
        "https://github.com/acme/app/issues/12"
    )


def test_a_template_whose_placeholder_selects_nothing_is_none() -> None:
    """A placeholder that selects null or a missing key makes the whole value None."""
    result = ticket(
        mapper(url="https://x.example/t/{fields.nothing}", fields={"t": "{fields.team}!"}).map(
            JIRA_ISSUE, "item 1"
        )
    )
    assert result.url is None
    assert result.fields == {"t": None}


def test_doubled_braces_are_literal_braces() -> None:
    """`{{` and `}}` render as single braces, also next to a placeholder."""
    assert compile_spec("{{{key}}}")(JIRA_ISSUE) == "{OPS-7}"
    assert compile_spec("{{not a placeholder}}")({}) == "{not a placeholder}"


def test_braces_inside_placeholder_literals_do_not_end_it() -> None:
    """A `}` inside a quoted JMESPath literal within a placeholder does not close it."""
    assert compile_spec("{join('}', fields.labels)}")(JIRA_ISSUE) == "kyc}vip"


def test_a_multiselect_hash_is_an_expression_not_a_template() -> None:
    """A spec that parses as JMESPath, braces and all, is an expression keeping its type."""
    assert compile_spec("{k: key, s: fields.summary}")(JIRA_ISSUE) == {
        "k": "OPS-7",
        "s": "Refund customer",
    }


@pytest.mark.parametrize(
    ("expression", "record"),
    [
        ("a", {"a": 1}),
        ("a", [1]),
        ("a.b", {"a": {"b": [1]}}),
        ("a.b", {"a": "text"}),
        ("a[0]", {"a": [5, 6]}),
        ("a[-1]", {"a": [5, 6]}),
        ("a[5]", {"a": [5, 6]}),
        ("a[0]", {"a": {"0": 1}}),
        ("a[0].b[1].c", {"a": [{"b": [{}, {"c": False}]}]}),
        ("a.b", None),
        ('"x-y".z', {"x-y": {"z": 3}}),
        ("a == 'x'", {"a": "x"}),
        ("'x' != a", {"a": 1}),
        ("a == 'x'", {}),
    ],
)
def test_fast_paths_agree_with_jmespath(expression: str, record: Any) -> None:
    """The shortcuts for plain paths and text comparisons give what JMESPath itself gives."""
    assert compile_expression(expression)(record) == jmespath.search(expression, record)


@pytest.mark.parametrize(
    ("expression", "open_"),
    [
        ("state == 'open'", True),
        ("state == 'closed'", False),
        ("closed_at", False),
        ("!closed_at", True),
        ("zero", False),
        ("tags", True),
        ("empty", False),
        ("contains(['new', 'open'], state)", True),
    ],
)
def test_is_open_is_the_truthiness_of_an_expression(expression: str, open_: bool) -> None:
    """`is_open` is evaluated for truthiness: false, null, 0 and empty values mean closed."""
    record = {"id": 1, "title": "t", "state": "open", "closed_at": None, "zero": 0}
    record |= {"tags": ["a"], "empty": []}
    result = RecordMapper(TicketMapping(id="id", title="title", is_open=expression))
    assert ticket(result.map(record, "item 1")).is_open is open_


def test_without_is_open_every_ticket_is_open() -> None:
    """A mapping without `is_open` reports every record as an open ticket."""
    assert ticket(mapper().map(JIRA_ISSUE, "item 1")).is_open is True


@pytest.mark.parametrize(
    ("key", "spec", "problem"),
    [
        ("id", "fields.", "not a valid JMESPath expression"),
        ("title", "{key", "unclosed '{'"),
        ("url", "x}", "unmatched '}'"),
        ("updated_at", "{}", "empty placeholder"),
        ("due_at", "nope(key)", "unknown JMESPath function nope()"),
        ("assignee_email", "length(a, b)", "length() takes 1 argument, not 2"),
        ("is_open", "{key}", "not a valid JMESPath expression"),
        ("title", "{fields.[}", "not a valid JMESPath expression"),
    ],
)
def test_an_invalid_spec_is_a_validation_error_on_its_key(
    key: str, spec: str, problem: str
) -> None:
    """A spec that is neither valid JMESPath nor a valid template fails validation on its key."""
    specs = {"id": "key", "title": "fields.summary", key: spec}
    with pytest.raises(ValidationError) as caught:
        TicketMapping(**specs)
    (error,) = caught.value.errors()
    assert error["loc"] == (key,)
    assert problem in error["msg"]


def test_an_invalid_custom_field_spec_names_the_field() -> None:
    """An invalid custom field spec is reported at `fields.<name>`."""
    with pytest.raises(ValidationError) as caught:
        TicketMapping(id="key", title="summary", fields={"ok": "a", "priority": "fields.["})
    (error,) = caught.value.errors()
    assert error["loc"] == ("fields", "priority")


def test_unknown_mapping_keys_are_rejected() -> None:
    """A typo in a mapping key is an error, not an ignored setting."""
    with pytest.raises(ValidationError, match="titel"):
        TicketMapping(id="key", title="summary", titel="x")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("OPS-7", "OPS-7"), ("  A-1 ", "A-1"), (42, "42"), (0, "0")],
)
def test_ids_are_text_or_integers(value: Any, expected: str) -> None:
    """An id is non-empty text (trimmed) or an integer, turned into text."""
    result = RecordMapper(TicketMapping(id="id", title="t")).map({"id": value, "t": "x"}, "i")
    assert ticket(result).id == expected


@pytest.mark.parametrize("value", [None, "", "  ", True, 1.0, 4.5, [1], {"a": 1}])
def test_an_unusable_id_is_an_invalid_record_without_id(value: Any) -> None:
    """A missing, empty, boolean, float, list or object id gives an InvalidRecord with no id."""
    record = {"id": value, "t": "x"} if value is not None else {"t": "x"}
    result = invalid(RecordMapper(TicketMapping(id="id", title="t")).map(record, "line 3"))
    assert result.position == "line 3"
    assert result.ticket_id is None
    assert "`id`" in result.reason


@pytest.mark.parametrize("value", [None, "", "   ", 12, ["a"]])
def test_an_unusable_title_is_an_invalid_record_with_its_id(value: Any) -> None:
    """A missing, empty or non-text title gives an InvalidRecord that keeps the id."""
    result = invalid(
        RecordMapper(TicketMapping(id="id", title="t")).map({"id": 7, "t": value}, "i")
    )
    assert result.ticket_id == "7"
    assert "`title`" in result.reason


def test_an_unparsable_timestamp_names_its_key_and_a_short_value() -> None:
    """A timestamp that does not parse gives an InvalidRecord naming the key, value truncated."""
    long_value = "next tuesday, or maybe the one after, " * 5
    result = invalid(
        mapper(due_at="fields.duedate").map(
            {**JIRA_ISSUE, "fields": {**JIRA_ISSUE["fields"], "duedate": long_value}}, "item 9"
        )
    )
    assert result.ticket_id == "OPS-7"
    assert "`due_at`" in result.reason
    assert "next tuesday" in result.reason
    assert len(result.reason) < 120


@pytest.mark.parametrize("value", [1_700_000_000, ["2026-01-01"], True])
def test_a_timestamp_that_is_not_text_is_invalid(value: Any) -> None:
    """A timestamp spec selecting a number, list or boolean gives an InvalidRecord."""
    result = invalid(mapper(updated_at="u").map({**JIRA_ISSUE, "u": value}, "item 1"))
    assert "`updated_at`" in result.reason
    assert result.ticket_id == "OPS-7"


def test_absent_optional_values_are_none() -> None:
    """Unselected url, timestamps and email are None, and blank text counts as absent."""
    result = ticket(
        mapper(url="u", updated_at="v", due_at="d", assignee_email="e").map(
            {**JIRA_ISSUE, "u": "  ", "d": ""}, "item 1"
        )
    )
    assert (result.url, result.updated_at, result.due_at, result.assignee_email) == (
        None,
        None,
        None,
        None,
    )


def test_a_url_that_is_not_text_is_invalid() -> None:
    """A url (or email) spec selecting a non-text value gives an InvalidRecord with the id."""
    result = invalid(mapper(url="fields.labels").map(JIRA_ISSUE, "item 1"))
    assert result.ticket_id == "OPS-7"
    assert "`url` must be text, got an array" in result.reason


def test_an_expression_failing_on_a_record_is_an_invalid_record() -> None:
    """A function given the wrong type for one record makes that record invalid, naming the key."""
    result = invalid(mapper(fields={"n": "length(fields.customfield_10010)"}).map(JIRA_ISSUE, "i"))
    assert result.ticket_id == "OPS-7"
    assert "`fields.n` could not be evaluated" in result.reason


def test_records_that_are_not_objects_are_invalid() -> None:
    """A record that is not an object selects nothing, so it has no usable id."""
    assert invalid(mapper().map(["OPS-7"], "item 2")).ticket_id is None
    assert invalid(mapper().map("OPS-7", "item 3")).ticket_id is None


def test_the_mapping_serialises_as_the_specs_it_was_given() -> None:
    """The validated mapping keeps its specs as text, so the config schema and dumps read well."""
    specs = {"id": "key", "title": "{key}: {fields.summary}", "fields": {"p": "fields.priority"}}
    assert TicketMapping(**specs).model_dump(exclude_none=True) == specs
