"""The built-in adapters that write back, each with its fake back-office, for write-back tests.

`Backoffice` ties a running fake to the adapter options that read and write it, and reads back
what the fake applied: closes, notes, whether a ticket is still open.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

WRITING_ADAPTERS = ("rest", "zendesk", "github", "jira", "hubspot")
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
        "retry_attempts": 3,
        "retry_deadline": 5,
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
        "retry_attempts": 3,
        "retry_deadline": 5,
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
        "retry_attempts": 3,
        "retry_deadline": 5,
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
        "retry_attempts": 3,
        "retry_deadline": 5,
    }

    def notes(ticket_id: str) -> list[str]:
        with fake.lock:
            return list(fake.tickets[int(ticket_id)].get("notes", []))

    return Backoffice("hubspot", fake, options, "stage:", notes)


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
    build = {
        "rest": _rest,
        "zendesk": _zendesk,
        "github": _github,
        "jira": _jira,
        "hubspot": _hubspot,
    }[adapter]
    with _fake(adapter) as fake:
        yield build(fake)  # type: ignore[arg-type]
