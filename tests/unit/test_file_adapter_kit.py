"""The built-in file adapter passes the conformance kit, like any third-party adapter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.file import FileAdapter
from adapters.testing import AdapterConformance


class FileBackoffice:
    """A ticket file whose records carry updated_at from a clock this object controls."""

    def __init__(self, path: Path, count: int = 40) -> None:
        self.path = path
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.records = {
            f"F-{n}": {
                "id": f"F-{n}",
                "title": f"File ticket {n}",
                "status": "open",
                "updated_at": self.now.isoformat(),
                "weight": n,
            }
            for n in range(count)
        }
        self.reads = 0
        self.save()

    def save(self) -> None:
        self.path.write_text("\n".join(json.dumps(r) for r in self.records.values()))

    def open_ids(self) -> set[str]:
        return {i for i, r in self.records.items() if r["status"] == "open"}

    def listing_requests(self) -> int:
        return self.reads

    def rate_limit_next(self, count: int) -> None:
        raise NotImplementedError

    def fail_page(self, page: int) -> None:
        self.path.unlink()

    def change(self, ticket_id: str) -> None:
        self.records[ticket_id].update(title=f"Edited {ticket_id}", updated_at=self.now.isoformat())
        self.save()

    def close(self, ticket_id: str) -> None:
        self.records[ticket_id].update(status="closed", updated_at=self.now.isoformat())
        self.save()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class TestFileAdapterConformance(AdapterConformance):
    adapter_class = FileAdapter
    paginated = False
    remote = False

    @pytest.fixture
    def backoffice(self, tmp_path: Path) -> FileBackoffice:
        return FileBackoffice(tmp_path / "tickets.jsonl")

    @pytest.fixture
    def options(self, backoffice: FileBackoffice) -> dict[str, Any]:
        return {"path": str(backoffice.path)}
