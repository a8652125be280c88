"""The built-in adapters that write back, each with its fake back-office, for write-back tests.

`Backoffice` ties a running fake to the adapter options that read and write it, and reads back
what the fake applied: closes, notes, whether a ticket is still open.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes import FakeServer
from tests.fakes.github import TOKEN as GITHUB_TOKEN
from tests.fakes.github import GitHubFake
from tests.fakes.hubspot import TOKEN as HUBSPOT_TOKEN
from tests.fakes.hubspot import HubSpotFake
from tests.fakes.jira import EMAIL as JIRA_EMAIL
from tests.fakes.jira import TOKEN as JIRA_TOKEN
from tests.fakes.jira import JiraFake
from tests.fakes.rest_backoffice import RestBackoffice
from tests.fakes.zendesk import EMAIL, ZendeskFake
from tests.fakes.zendesk import TOKEN as ZENDESK_TOKEN

WRITING_ADAPTERS = ("rest", "zendesk", "github", "jira", "hubspot", "sql")
FAST_RETRY = {"attempts": 3, "deadline": 5, "wait_initial": 0.01, "wait_max": 0.05}


@dataclass
class Backoffice:
    """A fake back-office and how the connector reaches it."""

    adapter: str
    fake: Any  # one of the fakes; each has `open_ids()`, `close()` and the write log
    options: dict[str, Any]
    close_write: str  # how the fake logs a close
    read_notes: Callable[[str], list[str]]

    def open_ids(self) -> list[str]:
        """The open tickets, in a stable order."""
        return sorted(self.fake.open_ids())

    def is_open(self, ticket_id: str) -> bool:
        return ticket_id in self.fake.open_ids()

    def closes(self, ticket_id: str) -> int:
        """Closes the fake applied to this ticket (writes logged as `close_write`, or starting
        with it when it ends with a colon: HubSpot's `stage:<id>`)."""
        writes = self.fake.writes_to(ticket_id)
        if self.close_write.endswith(":"):
            return sum(1 for w in writes if w.startswith(self.close_write))
        return writes.count(self.close_write)

    def notes(self, ticket_id: str) -> list[str]:
        """The notes the ticket received."""
        return self.read_notes(ticket_id)

    def source(self, name: str = "backoffice", **write_back: Any) -> dict[str, Any]:
        """A `sources[]` entry for this back-office, with `write_back` settings."""
        entry: dict[str, Any] = {"name": name, "adapter": self.adapter, "options": self.options}
        if write_back:
            entry["write_back"] = write_back
        return entry


def _rest(fake: RestBackoffice) -> Backoffice:
    options = {
        "base_url": fake.url,
        "auth": fake.credentials(),
        "request": {"path": "single/tickets"},
        "records": "data",
        "mapping": {
            "id": "id",
            "title": "subject",
            "url": "html_url",
            "is_open": "status != 'closed'",
        },
        "retry": FAST_RETRY,
        "write_back": {
            "close": {"path": "tickets/{ticket_id}/close", "body": {"note": "{note}"}},
            "comment": {"path": "tickets/{ticket_id}/comments", "body": {"body": "{note}"}},
            "already_closed_statuses": [409],
        },
    }

    def notes(ticket_id: str) -> list[str]:
        with fake.lock:
            return [n for n in fake.tickets[int(ticket_id)].get("notes", []) if n]

    return Backoffice("rest", fake, options, "close", notes)


def _zendesk(fake: ZendeskFake) -> Backoffice:
    options = {
        "base_url": fake.url,
        "email": EMAIL,
        "api_token": ZENDESK_TOKEN,
        "retry": {"attempts": 3, "deadline": 5},
    }

    def notes(ticket_id: str) -> list[str]:
        with fake.lock:
            comments = fake.tickets[int(ticket_id)].get("comments", [])
            # Internal notes only: a write-back must never reply to the customer.
            assert all(c["public"] is False for c in comments)
            return [c["body"] for c in comments]

    return Backoffice("zendesk", fake, options, "status:solved", notes)


def _github(fake: GitHubFake) -> Backoffice:
    options = {
        "repositories": ["acme/app"],
        "token": GITHUB_TOKEN,
        "base_url": fake.url,
        "retry": {"attempts": 3, "deadline": 5},
    }

    def notes(ticket_id: str) -> list[str]:
        with fake.lock:
            return list(fake._item(ticket_id).get("comment_bodies", []))

    return Backoffice("github", fake, options, "state:closed", notes)


def _jira(fake: JiraFake) -> Backoffice:
    options = {
        "base_url": fake.url,
        "email": JIRA_EMAIL,
        "api_token": JIRA_TOKEN,
        "retry": {"attempts": 3, "deadline": 5},
    }

    def notes(ticket_id: str) -> list[str]:
        with fake.lock:
            documents = fake.comments.get(ticket_id, [])
            return [
                "\n".join(
                    "".join(t.get("text", "") for t in paragraph["content"])
                    for paragraph in document["content"]
                )
                for document in documents
            ]

    return Backoffice("jira", fake, options, "status:Done", notes)


def _hubspot(fake: HubSpotFake) -> Backoffice:
    options = {
        "token": HUBSPOT_TOKEN,
        "base_url": fake.url,
        "portal_id": 24681357,
        "search_requests_per_second": 50,
        "retry": {"attempts": 3, "deadline": 5},
    }

    def notes(ticket_id: str) -> list[str]:
        with fake.lock:
            return list(fake.tickets[int(ticket_id)].get("notes", []))

    return Backoffice("hubspot", fake, options, "stage:", notes)


class SqliteBackoffice:
    """A SQLite back-office for the `sql` adapter: a tickets table, notes, and a log of writes.

    Triggers log every status change and note, so tests count what the connector's statements
    did. `gone` ids stay listed, but the write statements skip them (as if deleted meanwhile).
    A database answers when it commits: `write_delay` cannot hold an answer back.
    """

    write_delay = 0.0

    def __init__(self, path: Path, tickets: int = 10) -> None:
        self.path = path
        with self._db() as db:
            db.executescript(
                """
                CREATE TABLE tickets (
                    id INTEGER PRIMARY KEY, title TEXT NOT NULL, status TEXT, resolution TEXT
                );
                CREATE TABLE notes (ticket_id INTEGER NOT NULL, body TEXT NOT NULL);
                CREATE TABLE gone (ticket_id INTEGER PRIMARY KEY);
                CREATE TABLE write_log (ticket_id INTEGER, what TEXT);
                CREATE TRIGGER status_log AFTER UPDATE OF status ON tickets
                    BEGIN INSERT INTO write_log VALUES (NEW.id, 'status:' || NEW.status); END;
                CREATE TRIGGER note_log AFTER INSERT ON notes
                    BEGIN INSERT INTO write_log VALUES (NEW.ticket_id, 'comment'); END;
                """
            )
            db.executemany(
                "INSERT INTO tickets (id, title, status) VALUES (?, ?, ?)",
                [
                    (n, f"Chargeback #{n}", "closed" if n % 4 == 0 else "open")
                    for n in range(1, tickets + 1)
                ],
            )

    def _db(self) -> contextlib.closing[sqlite3.Connection]:
        return contextlib.closing(sqlite3.connect(self.path, isolation_level=None, timeout=30))

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self._db() as db:
            return db.execute(sql, params).fetchall()

    def open_ids(self) -> set[str]:
        return {str(r[0]) for r in self._rows("SELECT id FROM tickets WHERE status = 'open'")}

    def close(self, ticket_id: str) -> None:
        """Solved in the back-office by someone: not a write-back, so not in the write log."""
        self._rows("UPDATE tickets SET status = 'solved' WHERE id = ?", int(ticket_id))
        self._rows("DELETE FROM write_log WHERE what = 'status:solved'")

    def rate_limit_next(self, count: int) -> None:
        """A database has no rate limit."""

    @property
    def applied(self) -> list[tuple[str, str]]:
        return [(str(t), w) for t, w in self._rows("SELECT ticket_id, what FROM write_log")]

    def writes_to(self, ticket_id: str, what: str | None = None) -> list[str]:
        return [w for t, w in self.applied if t == ticket_id and what in (None, w)]

    @property
    def gone(self) -> _Gone:
        return _Gone(self)

    def notes(self, ticket_id: str) -> list[str]:
        """The close's resolution note, then the notes added by comments."""
        key = int(ticket_id)
        resolution = self._rows("SELECT resolution FROM tickets WHERE id = ?", key)
        rows = self._rows("SELECT body FROM notes WHERE ticket_id = ?", key)
        return [r[0] for r in resolution if r[0]] + [r[0] for r in rows]

    def credentials(self, *, wrong: bool = False) -> dict[str, Any]:
        return {}

    def __enter__(self) -> SqliteBackoffice:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@dataclass
class _Gone:
    backoffice: SqliteBackoffice

    def add(self, ticket_id: str) -> None:
        self.backoffice._rows("INSERT INTO gone VALUES (?)", int(ticket_id))


def _sql(fake: SqliteBackoffice) -> Backoffice:
    skip_gone = "AND id NOT IN (SELECT ticket_id FROM gone)"
    options = {
        # The listing reads through a read-only connection; writes go through `write_dsn`.
        "dsn": f"sqlite+aiosqlite:///file:{fake.path}?mode=ro&uri=true",
        "query": "SELECT id, title, status FROM tickets WHERE status = 'open' ORDER BY id",
        "mapping": {"id": "id", "title": "title", "is_open": "status == 'open'"},
        "write_dsn": f"sqlite+aiosqlite:///{fake.path}",
        "close_statement": "UPDATE tickets SET status = 'closed', resolution = :note "
        f"WHERE id = :ticket_id {skip_gone}",
        "comment_statement": "INSERT INTO notes (ticket_id, body) "
        f"SELECT id, :note FROM tickets WHERE id = :ticket_id {skip_gone}",
        "ticket_id_type": "integer",
    }
    return Backoffice("sql", fake, options, "status:closed", fake.notes)


def _fake(adapter: str) -> FakeServer:
    if adapter == "rest":
        return RestBackoffice(tickets=10)
    if adapter == "zendesk":
        return ZendeskFake(tickets=12, recent_window=0)
    if adapter == "jira":
        return JiraFake(issues=12)
    if adapter == "hubspot":
        return HubSpotFake(tickets=12)
    return GitHubFake(items=10, repositories={"acme/app": 1224437532})


@contextlib.contextmanager
def backoffice(adapter: str) -> Iterator[Backoffice]:
    """A running fake back-office for `adapter` (one of WRITING_ADAPTERS)."""
    if adapter == "sql":
        with tempfile.TemporaryDirectory() as folder:
            yield _sql(SqliteBackoffice(Path(folder) / "backoffice.db"))
        return
    build = {
        "rest": _rest,
        "zendesk": _zendesk,
        "github": _github,
        "jira": _jira,
        "hubspot": _hubspot,
    }[adapter]
    with _fake(adapter) as fake:
        yield build(fake)  # type: ignore[arg-type]
