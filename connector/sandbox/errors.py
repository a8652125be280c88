"""What the sandbox refuses: one exception per status code, and the 422's list of problems.

`app.py` maps each `SandboxError` subclass to its status code. Validation collects every
problem of a request in an `ErrorList` before raising, so that each bad item of a batch is
reported at once, each with its `loc`, as a FastAPI service does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SandboxError(Exception):
    """A request the sandbox refuses; app.py maps each subclass to one status code."""


class ValidationFailed(SandboxError):
    """422: the body or query is malformed; `errors` lists every problem with its `loc`."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


class TaskNotFound(SandboxError):
    """404: no task has this uid."""


class InvalidCursor(SandboxError):
    """400: the cursor was never issued, or its snapshot expired or was evicted."""


def error(loc: Sequence[str | int], msg: str, kind: str) -> dict[str, Any]:
    """One entry of a 422's list."""
    return {"loc": list(loc), "msg": msg, "type": kind}


class ErrorList:
    """Collects 422 entries, so that every bad item of a batch is reported at once."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: Sequence[str | int], msg: str, kind: str) -> None:
        """Record one problem at `loc`."""
        self.items.append(error(loc, msg, kind))

    def raise_if_any(self) -> None:
        """Raise ValidationFailed with every problem recorded, if there is one."""
        if self.items:
            raise ValidationFailed(self.items)
