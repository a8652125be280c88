"""The mirror: what Fragment last showed of one source's tasks, kept from one cycle to the next.

Listing 100k open tasks costs 1000 requests, so a cycle lists every open task only every
`fragment.full_listing_every`; in between it reads what changed since its watermark
(`updated_at_after`) and plans from the mirror, which lives in the state store's task index.
In memory a cycle holds one `TaskDigest` per open task, not the task: a listed task whose digest
is the mirror's (most often the connector's own write, read back) costs no write to the store,
and the plan sees full tasks only where a digest differs from what the ticket wants.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self

from connector.config import Settings
from connector.identity import Markers
from connector.models import Task, TaskDigest
from connector.state import StateStore
from connector.values import parse_timestamp, task_digest


@dataclass(frozen=True)
class Watermark:
    """How far Fragment has been read for a source: when the last listing started, in Fragment's
    clock, and when the last full listing of its open tasks was (in this machine's clock)."""

    seen: datetime | None = None
    full_at: datetime | None = None
    checked_at: datetime | None = None  # the last count of open tasks compared (or full listing)

    @classmethod
    def parse(cls, text: str | None) -> Watermark:
        """From its stored form (absent or unreadable: nothing read yet)."""
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        return cls(
            parse_timestamp(data.get("seen")),
            parse_timestamp(data.get("full_at")),
            parse_timestamp(data.get("checked_at")),
        )

    def dump(self) -> str:
        """The stored form."""
        return json.dumps(
            {
                key: value.isoformat() if value else None
                for key, value in (
                    ("seen", self.seen),
                    ("full_at", self.full_at),
                    ("checked_at", self.checked_at),
                )
            }
        )

    def drift_check_due(self, settings: Settings, *, now: datetime) -> bool:
        """Whether this cycle compares Fragment's count of open tasks with the mirror's."""
        last = self.checked_at or self.full_at
        return last is None or now - last >= settings.fragment.drift_check_every

    def full_listing_due(self, settings: Settings, *, now: datetime) -> bool:
        """Whether this cycle must list every open task rather than what changed."""
        if self.seen is None or self.full_at is None:
            return True
        return now - self.full_at >= settings.fragment.full_listing_every

    def after_listing(
        self, started: datetime, *, now: datetime, full: bool, checked: bool = False
    ) -> Watermark:
        """After a listing that started at `started` in Fragment's clock and ended `now` in ours.

        The next listing reads from the start of this one (minus the overlap), not from the
        newest task this one read: a long listing reads its first pages minutes before its last,
        and an edit made meanwhile to a page already read is older than anything read later.
        """
        return Watermark(
            seen=started,
            full_at=now if full else self.full_at,
            checked_at=now if full or checked else self.checked_at,
        )


class MirrorWriter:
    """Tasks to record in the mirror as Fragment showed them, written a few thousand at a time.

    A transaction per page or per batch would cost a disk sync each: a thousand of them for a 100k
    initial sync. A context manager: what is left is written on the way out, error or not.
    """

    EVERY = 5000

    def __init__(self, store: StateStore, source: str, markers: Markers) -> None:
        self.store = store
        self.source = source
        self.markers = markers
        self._pending: list[tuple[Task, str]] = []
        self._managed: dict[str, frozenset[str]] = {}

    def add(
        self,
        tasks: Iterable[tuple[Task, str]],
        managed: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        """Record these (task, ticket id) pairs, soon, and the keys just written to them."""
        self._pending.extend(tasks)
        self._managed.update(managed or {})
        if len(self._pending) >= self.EVERY:
            self.flush()

    def flush(self) -> None:
        """Write what is pending."""
        if self._pending:
            self.store.remember(self.source, self._pending, self.markers)
            self._pending = []
        if self._managed:
            self.store.set_managed(self._managed)
            self._managed = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.flush()


class Mirror:
    """One source's mirror during one cycle: the digests of its open tasks over the store."""

    def __init__(
        self,
        store: StateStore,
        source: str,
        markers: Markers,
        owned: Callable[[Task], str | None],
        *,
        full_listing: bool,
        read_only: bool = False,
    ) -> None:
        """`full_listing`: the pages to read list every open task, so those missing are not.

        `read_only` (a dry-run): the store is not written; what differs from it is kept in
        `changed` instead, so the plan sees what a real run would.
        """
        self.read_only = read_only
        self.changed: dict[str, Task] = {}
        self.store = store
        self.source = source
        self.markers = markers
        self._owned = owned
        self.open: dict[str, TaskDigest] = store.digests(source)
        self.writer = MirrorWriter(store, source, markers)
        self._listed: set[str] | None = set() if full_listing else None

    def read(self, page: Sequence[Task]) -> None:
        """Take in one page of a listing: what differs from the mirror, if ours, is stored.

        A task as the mirror has it is still ours (its digest covers the marker fields). Call
        `done()` after the last page.
        """
        listed = self._listed
        changed: list[tuple[Task, str]] = []
        for task in page:
            digest = task_digest(task)
            if self.open.get(task.uid) != digest:
                ticket_id = self._owned(task)
                if ticket_id is None:
                    continue
                changed.append((task, ticket_id))
                if task.is_open:
                    self.open[task.uid] = digest
                else:
                    self.open.pop(task.uid, None)
            if listed is not None and task.is_open:
                listed.add(task.uid)
        if self.read_only:
            self.changed.update((task.uid, task) for task, _ in changed)
        else:
            self.writer.add(changed)

    def done(self) -> int:
        """After the last page: everything read goes to the store. After a full listing, the open
        tasks it did not show are no longer known to be open (closed or deleted in Fragment);
        returns how many."""
        if not self.read_only:
            self.writer.flush()
        if self._listed is None:
            return 0
        unseen = self.open.keys() - self._listed
        for uid in unseen:
            del self.open[uid]
        if self.read_only:
            return len(unseen)
        return self.store.mark_unseen(self.source, self._listed)

    def tasks(self, uids: list[str]) -> dict[str, Task]:
        """The full tasks of these uids: as this cycle's listing showed them, else as stored."""
        found = self.store.tasks(uid for uid in uids if uid not in self.changed)
        found.update((uid, self.changed[uid]) for uid in uids if uid in self.changed)
        return found
