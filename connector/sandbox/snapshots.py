"""Cursor paging: a listing longer than one page is remembered as the ordered list of its uids.

Later pages slice that list instead of filtering every task again, which is what lets a client
read 100k tasks at 60 requests a minute. A snapshot expires `SNAPSHOT_TTL_S` after its last use
(sliding: such a client needs 17 minutes), and the oldest are evicted past `SNAPSHOT_MAX`
snapshots or `SNAPSHOT_UIDS_MAX` uids in all; an unknown, expired or evicted cursor is an
`InvalidCursor` (400). Not thread-safe: the store's lock is held by the caller.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from connector.sandbox.errors import InvalidCursor
from connector.sandbox.tasks import Task
from connector.sandbox.wire import page_json

SNAPSHOT_MAX: Final = 256
SNAPSHOT_TTL_S: Final = 600.0
# 256 snapshots of a 100k-task listing would hold 25.6M references; cap the sum instead.
SNAPSHOT_UIDS_MAX: Final = 4_000_000


@dataclass(slots=True)
class _Snapshot:
    uids: list[str]
    expires: float


class Snapshots:
    """The listings being paged through, by snapshot id (a cursor is `<id>.<offset>`)."""

    def __init__(self) -> None:
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self._uids = 0

    def __len__(self) -> int:
        return len(self._snapshots)

    def first_page(self, rows: list[Task], limit: int) -> bytes:
        """The first page of the listing `rows`, remembering the rest when there is more."""
        page = [t.to_json() for t in rows[:limit]]
        snapshot_id = None
        if len(rows) > limit:
            # Later pages slice this ordered uid list instead of filtering every task again.
            snapshot_id = self._remember([t.uid for t in rows])
        return page_json(page, limit, snapshot_id, 0, len(rows))

    def cursor_page(self, cursor: str, limit: int, tasks: Mapping[str, Task]) -> bytes:
        """The page `cursor` points at (tasks deleted since are left out); InvalidCursor."""
        snapshot_id, _, offset_text = cursor.partition(".")
        snapshot = self._snapshots.get(snapshot_id)
        now = time.monotonic()
        if snapshot is None or not offset_text.isdigit():
            raise InvalidCursor(cursor)
        if snapshot.expires < now:
            self._forget(snapshot_id)
            raise InvalidCursor(cursor)
        offset = int(offset_text)
        if offset > len(snapshot.uids):
            raise InvalidCursor(cursor)
        # Sliding expiry: a client paced at 60 requests a minute needs 17 minutes for 100k tasks.
        snapshot.expires = now + SNAPSHOT_TTL_S
        self._snapshots.move_to_end(snapshot_id)
        page = [
            task.to_json()
            for uid in snapshot.uids[offset : offset + limit]
            if (task := tasks.get(uid)) is not None
        ]
        return page_json(page, limit, snapshot_id, offset, len(snapshot.uids))

    def clear(self) -> None:
        """Forget every snapshot (their cursors become invalid)."""
        self._snapshots.clear()
        self._uids = 0

    def _remember(self, uids: list[str]) -> str:
        now = time.monotonic()
        for key in [k for k, s in self._snapshots.items() if s.expires < now]:
            self._forget(key)
        snapshot_id = secrets.token_hex(8)
        self._snapshots[snapshot_id] = _Snapshot(uids, now + SNAPSHOT_TTL_S)
        self._uids += len(uids)
        while len(self._snapshots) > SNAPSHOT_MAX or (
            self._uids > SNAPSHOT_UIDS_MAX and len(self._snapshots) > 1
        ):
            self._forget(next(iter(self._snapshots)))
        return snapshot_id

    def _forget(self, snapshot_id: str) -> None:
        snapshot = self._snapshots.pop(snapshot_id, None)
        if snapshot is not None:
            self._uids -= len(snapshot.uids)
