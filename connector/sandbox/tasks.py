"""A task as the sandbox holds it, and the rules of its state: statuses, `started_at` and
`done_at` kept coherent, `fields` merged key by key (a null removing the key).

Each task's public JSON is encoded once per change (`to_json`), which is what keeps listings of
100k tasks cheap (benchmarks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from connector.sandbox.wire import copy_json, dumps, format_instant, opt_instant, same

STATUSES: Final = ("TODO", "STARTED", "DONE")
STATUS_SET: Final = frozenset(STATUSES)
TITLE_MAX_LENGTH: Final = 1000
ACCOUNT_ID: Final = "sandbox"
ACCOUNT: Final = {"id": "acc_sandbox", "name": "Sandbox account"}


@dataclass(slots=True, eq=False)
class Task:
    """One task as the sandbox holds it: instants in epoch milliseconds, its JSON cached."""

    uid: str
    seq: int
    status: str
    fields: dict[str, Any]
    due_at: int
    created_at: int
    updated_at: int
    assignee_email: str | None = None
    archived: bool = False
    started_at: int | None = None
    done_at: int | None = None
    comments: list[dict[str, Any]] | None = None
    encoded: bytes | None = None

    def public(self) -> dict[str, Any]:
        """The task as the API returns it (write-only `assignee_email` left out)."""
        return {
            "uid": self.uid,
            "status": self.status,
            "fields": self.fields,
            "due_at": format_instant(self.due_at),
            "archived": self.archived,
            "created_at": format_instant(self.created_at),
            "updated_at": format_instant(self.updated_at),
            "started_at": opt_instant(self.started_at),
            "done_at": opt_instant(self.done_at),
            "external_status": None,
            "external_updated_at": None,
            "account_id": ACCOUNT_ID,
        }

    def to_json(self) -> bytes:
        """The public JSON, encoded once per change."""
        if self.encoded is None:
            self.encoded = dumps(self.public())
        return self.encoded

    def dump_json(self) -> bytes:
        """The whole task, with write-only `assignee_email` and `comments`, as JSON."""
        extra = dumps({"assignee_email": self.assignee_email, "comments": self.comments or []})
        return self.to_json()[:-1] + b"," + extra[1:]

    def dump(self) -> dict[str, Any]:
        """A detached copy of the whole task, with `assignee_email` and `comments`."""
        data = self.public()
        data["fields"] = copy_json(self.fields)
        data["assignee_email"] = self.assignee_email
        data["comments"] = [dict(c) for c in self.comments or ()]
        return data

    def set_status(self, status: str, now: int) -> bool:
        """Move to `status`, keeping `started_at`/`done_at` coherent; whether anything changed."""
        if status == self.status:
            return False
        self.status = status
        if status == "STARTED":
            self.started_at = now
            self.done_at = None
        elif status == "DONE":
            self.done_at = now
        else:
            self.started_at = None
            self.done_at = None
        return True

    def merge_fields(self, changes: Mapping[str, Any]) -> bool:
        """Merge `changes` key by key, a null value removing the key; whether anything changed."""
        changed = False
        for key, value in changes.items():
            if value is None:
                if key in self.fields:
                    del self.fields[key]
                    changed = True
            elif key not in self.fields or not same(self.fields[key], value):
                self.fields[key] = value
                changed = True
        return changed
