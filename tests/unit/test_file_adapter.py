"""The file adapter: JSON, JSON Lines and CSV records to tickets, bad records reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.base import AdapterDataError, AdapterUnavailable, InvalidRecord, Ticket
from adapters.file import FileAdapter, FileOptions


async def read(path: Path, **options: Any) -> list[Ticket | InvalidRecord]:
    adapter = FileAdapter(FileOptions(path=path, **options))
    return [item async for item in adapter.list_open()]


async def test_json_records_keep_types_and_split_own_keys(tmp_path: Path) -> None:
    """Own keys become ticket attributes; other keys become fields with their JSON type."""
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": 7,
                    "title": "A",
                    "url": "https://x/7",
                    "amount": 12,
                    "vip": True,
                    "due_at": "2026-01-02T03:04:05Z",
                    "updated_at": "2026-01-01T00:00:00+01:00",
                    "assignee_email": "a@example.com",
                    "status": "open",
                },
                {"id": "T-2", "title": "B", "status": "Resolved"},
            ]
        )
    )
    first, second = await read(path)
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    assert first.id == "7"
    assert first.fields == {"amount": 12, "vip": True}
    assert first.due_at is not None and first.due_at.isoformat() == "2026-01-02T03:04:05+00:00"
    assert first.assignee_email == "a@example.com"
    assert first.is_open and not second.is_open


async def test_jsonl_and_mapping(tmp_path: Path) -> None:
    """JSON Lines are read line by line; `mapping` renames source keys."""
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"ticket_no": "A1", "subject": "Hello"}\n\n{"ticket_no": "A2", "subject": "World"}\n'
    )
    items = await read(path, mapping={"ticket_no": "id", "subject": "title"})
    assert [(t.id, t.title) for t in items if isinstance(t, Ticket)] == [
        ("A1", "Hello"),
        ("A2", "World"),
    ]


async def test_csv_cells_are_text_and_empty_cells_absent(tmp_path: Path) -> None:
    """CSV rows become tickets; empty cells are null."""
    path = tmp_path / "t.csv"
    path.write_text("id,title,country,note\nC1,First,FR,\nC2,Second,DE,hi\n")
    first, second = await read(path)
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    assert first.fields == {"country": "FR", "note": None}
    assert second.fields == {"country": "DE", "note": "hi"}


async def test_bad_records_are_reported_with_their_position(tmp_path: Path) -> None:
    """A record without id, with a bad title or date, or unparsable, is reported, not fatal."""
    path = tmp_path / "t.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"id": "ok", "title": "fine"}',
                '{"title": "no id"}',
                '{"id": "T-3", "title": ""}',
                '{"id": "T-4", "title": "x", "due_at": "tomorrow"}',
                '{"id": 1.5, "title": "float id"}',
                "not json",
                "[1, 2]",
            ]
        )
    )
    items = await read(path)
    assert isinstance(items[0], Ticket)
    problems = [(i.position, i.ticket_id) for i in items[1:] if isinstance(i, InvalidRecord)]
    assert problems == [
        ("line 2", None),
        ("line 3", "T-3"),
        ("line 4", "T-4"),
        ("line 5", None),
        ("line 6", None),
        ("line 7", None),
    ]


async def test_missing_file_fails_the_source(tmp_path: Path) -> None:
    """A missing file is AdapterUnavailable, for list_open and for check."""
    adapter = FileAdapter(FileOptions(path=tmp_path / "missing.json"))
    with pytest.raises(AdapterUnavailable, match="not found"):
        await adapter.check()
    with pytest.raises(AdapterUnavailable):
        [item async for item in adapter.list_open()]


@pytest.mark.parametrize("content", ["{not json", '{"a": 1}', "42"])
async def test_malformed_json_file_fails_the_source(tmp_path: Path, content: str) -> None:
    """A JSON file that is not an array of records is AdapterDataError (no closes)."""
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(AdapterDataError):
        await read(path)


def test_unknown_option_is_refused() -> None:
    """The options model forbids unknown keys."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        FileOptions.model_validate({"path": "x", "pth": "y"})
