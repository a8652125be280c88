"""The sandbox's data file (`--data FILE`, the demo's and `fragment.base_url: sandbox`'s
`fragment-sandbox.json`): every task, written whole and atomically after each change.

A save goes to a temporary file in the same directory, then replaces the file, so a crash leaves
the old state or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from connector.sandbox.tasks import Task
from connector.sandbox.wire import loads


def export(tasks: Iterable[Task]) -> bytes:
    """The data file's content for `tasks`."""
    items = b",".join(t.dump_json() for t in tasks)
    return b'{"format":"fragment-sandbox","version":1,"tasks":[' + items + b"]}"


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_tasks(path: Path) -> list[Any]:
    """The raw tasks of a data file; ValueError when it is not one."""
    data = loads(path.read_bytes())
    if not isinstance(data, dict) or data.get("format") != "fragment-sandbox":
        raise ValueError(f"{path} is not a sandbox data file")
    tasks = data.get("tasks", [])
    return list(tasks)
