"""The `file` adapter: tickets from a JSON array, a JSON Lines file or a CSV file.

The simplest back-office there is, and the one the demo uses: each record is a flat object whose
keys `id`, `title`, `url`, `due_at`, `assignee_email`, `updated_at` and `status` are the ticket's
own (a `status` of closed/done/resolved/solved/cancelled means the ticket is not open); every other
key becomes a custom field, its JSON type kept. `mapping` renames source keys to those names. A
missing or unparsable file fails the source (no closes); a bad record is reported with its
position and skipped.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TextIO

from pydantic import Field

from adapters.base import (
    AdapterConfig,
    AdapterConfigError,
    AdapterDataError,
    AdapterUnavailable,
    ChangeSet,
    ConfigPath,
    Duration,
    InvalidRecord,
    Ticket,
    ticket_id_from,
    title_problem,
)
from connector.values import compact, parse_timestamp

OWN_KEYS = frozenset({"id", "title", "url", "due_at", "assignee_email", "updated_at", "status"})
Record = tuple[str, Mapping[str, Any] | None, str | None]
"""(position, record or None when unreadable, the reason it is unreadable)."""


class FileOptions(AdapterConfig):
    """Options of the `file` adapter."""

    path: ConfigPath = Field(
        description="The JSON, JSON Lines or CSV file to read (relative: to the config file)."
    )
    format: Literal["auto", "json", "jsonl", "csv"] = Field(
        "auto", description="File format; auto decides by extension (.json, .jsonl/.ndjson, .csv)."
    )
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Source key -> ticket key, e.g. {ticket_no: id, subject: title}.",
    )
    closed_statuses: list[str] = Field(
        default_factory=lambda: ["closed", "done", "resolved", "solved", "cancelled"],
        description="`status` values (case-insensitive) that mean the ticket is not open.",
    )
    encoding: str = Field(
        "utf-8-sig",
        description="The file's text encoding; the default reads UTF-8 with or without the "
        "byte-order mark Excel's 'CSV UTF-8' writes.",
    )
    incremental_overlap: Duration = Field(
        timedelta(minutes=1),
        description="How far each incremental poll reaches back before the last one's newest "
        "`updated_at`, so that late writes or equal timestamps are not lost.",
    )


def _format_of(options: FileOptions) -> str:
    if options.format != "auto":
        return options.format
    suffix = options.path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "json"


def _records(stream: TextIO, fmt: str) -> Iterator[Record]:
    # JSON Lines and CSV are read line by line: a 100k-ticket file never sits in memory whole.
    if fmt == "json":
        try:
            data = json.loads(stream.read())
        except json.JSONDecodeError as exc:
            raise AdapterDataError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
        if isinstance(data, dict) and isinstance(data.get("tickets"), list):
            data = data["tickets"]
        if not isinstance(data, list):
            raise AdapterDataError("a JSON file must hold an array of ticket objects")
        for index, item in enumerate(data, start=1):
            yield (
                (f"item {index}", item, None)
                if isinstance(item, dict)
                else (
                    f"item {index}",
                    None,
                    f"expected an object, got {type(item).__name__}",
                )
            )
    elif fmt == "jsonl":
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"line {number}", None, f"not valid JSON: {exc.msg}"
                continue
            if isinstance(item, dict):
                yield f"line {number}", item, None
            else:
                yield f"line {number}", None, f"expected an object, got {type(item).__name__}"
    else:
        reader = csv.DictReader(stream)
        if reader.fieldnames is None:
            return
        for row in reader:
            if None in row:
                yield f"line {reader.line_num}", None, "more cells than header columns"
                continue
            yield (
                f"line {reader.line_num}",
                {k: (v if v != "" else None) for k, v in row.items()},
                None,
            )


def _cursor(mtime_ns: int, newest: datetime | None) -> str:
    return f"{mtime_ns}|{newest.isoformat() if newest else ''}"


def _parse_cursor(cursor: str | None) -> tuple[int | None, datetime | None]:
    if not cursor:
        return None, None
    mtime, _, newest = cursor.partition("|")
    try:
        return int(mtime), parse_timestamp(newest)
    except ValueError:
        raise AdapterDataError(f"not a file adapter cursor: {cursor[:40]!r}") from None


def _timestamp(record: Mapping[str, Any], key: str) -> datetime | None:
    value = record.get(key)
    if value in (None, ""):
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        raise ValueError(f"`{key}` is not an ISO 8601 timestamp: {str(value)[:40]!r}")
    return parsed


def _optional_text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"`{key}` must be text, got {type(value).__name__}")
    return value


class FileAdapter:
    """Open tickets read from a local file."""

    name: ClassVar[str] = "file"
    Config: ClassVar[type[FileOptions]] = FileOptions

    def __init__(self, config: FileOptions, /) -> None:
        self.options = config
        self._closed = {s.lower() for s in config.closed_statuses}

    async def check(self) -> None:
        """The file exists and is readable in its encoding (read through, never held whole)."""

        def read_through() -> None:
            with self._open() as stream:
                for _ in stream:
                    pass

        try:
            await asyncio.to_thread(read_through)
        except UnicodeDecodeError as exc:
            raise AdapterUnavailable(
                f"cannot read ticket file {self.options.path}: {exc}"
            ) from None

    async def aclose(self) -> None:
        """Nothing to release."""

    def _open(self) -> TextIO:
        """The ticket file opened for reading; the errors of a missing or unreadable file."""
        path = self.options.path
        try:
            return path.open(encoding=self.options.encoding, newline="")
        except FileNotFoundError:
            raise AdapterUnavailable(f"ticket file not found: {path}") from None
        except IsADirectoryError:
            raise AdapterConfigError(f"ticket file is a directory: {path}") from None
        except OSError as exc:
            raise AdapterUnavailable(f"cannot read ticket file {path}: {exc}") from None

    def _rename(self, record: Mapping[str, Any]) -> dict[str, Any]:
        mapping = self.options.mapping
        return {mapping.get(key, key): value for key, value in record.items()}

    def to_ticket(self, record: Mapping[str, Any], position: str) -> Ticket | InvalidRecord:
        """A ticket from one record, or the reason it cannot be one."""
        data = self._rename(record)
        ticket_id = ticket_id_from(data.get("id"))
        if ticket_id is None:
            return InvalidRecord(position, "missing or unusable `id` (text or integer expected)")
        title: Any = data.get("title")  # text once title_problem passes it
        problem = title_problem(title)
        if problem is not None:
            return InvalidRecord(position, problem, ticket_id)
        try:
            status = data.get("status")
            is_open = not (isinstance(status, str) and status.strip().lower() in self._closed)
            ticket = Ticket(
                id=ticket_id,
                title=title,
                url=_optional_text(data, "url"),
                fields=compact({k: v for k, v in data.items() if k not in OWN_KEYS}),
                updated_at=_timestamp(data, "updated_at"),
                is_open=is_open,
                due_at=_timestamp(data, "due_at"),
                assignee_email=_optional_text(data, "assignee_email"),
            )
        except ValueError as exc:
            return InvalidRecord(position, str(exc), ticket_id)
        return ticket

    async def changes_since(self, cursor: str | None) -> ChangeSet:
        """Records changed since the cursor (all of them when `updated_at` is missing).

        Nothing when the file is untouched; else the records whose `updated_at` is at or after
        the newest one seen minus `incremental_overlap`. The cursor is
        `<file mtime ns>|<newest updated_at seen>`. Without a cursor, nothing is returned: the
        full refresh has covered the past, and polling starts from the file as it is.
        """
        mtime_ns, newest = _parse_cursor(cursor)
        current_mtime = await self._mtime_ns()
        if cursor is not None and current_mtime == mtime_ns:
            return ChangeSet(tickets=(), cursor=cursor)
        # The first poll only learns where the data's own clock stands: comparing its
        # `updated_at` with ours would lose changes to clock skew.
        first = cursor is None
        since = newest - self.options.incremental_overlap if newest else None
        changed: list[Ticket] = []
        latest = newest
        async for item in self.list_open():
            if not isinstance(item, Ticket):
                continue  # a bad record is reported by the next full refresh
            stamp = item.updated_at
            if not first and (stamp is None or since is None or stamp >= since):
                changed.append(item)
            if stamp is not None and (latest is None or stamp > latest):
                latest = stamp
        return ChangeSet(tickets=tuple(changed), cursor=_cursor(current_mtime, latest))

    async def _mtime_ns(self) -> int:
        try:
            stat = await asyncio.to_thread(self.options.path.stat)
        except FileNotFoundError:
            raise AdapterUnavailable(f"ticket file not found: {self.options.path}") from None
        except OSError as exc:
            raise AdapterUnavailable(
                f"cannot read ticket file {self.options.path}: {exc}"
            ) from None
        return stat.st_mtime_ns

    async def list_open(self) -> AsyncIterator[Ticket | InvalidRecord]:
        """Every record of the file: open tickets, closed ones (to close at once), bad records."""
        path = self.options.path
        with self._open() as stream:
            try:
                for count, (position, record, problem) in enumerate(
                    _records(stream, _format_of(self.options)), start=1
                ):
                    if record is None:
                        yield InvalidRecord(position, problem or "unreadable record")
                    else:
                        yield self.to_ticket(record, position)
                    if count % 1000 == 0:
                        await asyncio.sleep(0)  # a long file must not starve the event loop
            except UnicodeDecodeError as exc:
                raise AdapterDataError(
                    f"ticket file {path} is not {self.options.encoding}: {exc}"
                ) from None
