"""The conformance kit's write-back checks over each built-in adapter that writes back.

Each class runs `adapters.testing_write_back.WriteBackConformance` against the adapter's fake
back-office (tests/fakes/write_back.py); the `file` adapter cannot write back and says so.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import (
    AdapterAuthError,
    AdapterConfigError,
    TicketGone,
    WriteBackOutcome,
    WriteBackRequest,
    can_write_back,
)
from adapters.file import FileAdapter
from adapters.github import GitHubAdapter
from adapters.hubspot import HubSpotAdapter
from adapters.jira import JiraAdapter
from adapters.rest import RestAdapter
from adapters.sql import SqlAdapter
from adapters.testing_write_back import WriteBackConformance
from adapters.zendesk import ZendeskAdapter
from tests.fakes.write_back import Backoffice, backoffice
from tests.integration.test_sql_adapter import SqlBackoffice, database_for


class _Kit(WriteBackConformance):
    adapter: str
    missing: str

    @pytest.fixture
    def bo(self) -> Iterator[Backoffice]:
        with backoffice(self.adapter) as running:
            yield running

    @pytest.fixture
    def backoffice(self, bo: Backoffice) -> Any:
        return bo.fake

    @pytest.fixture
    def options(self, bo: Backoffice) -> dict[str, Any]:
        return bo.options

    @pytest.fixture
    def bad_options(self, bo: Backoffice) -> dict[str, Any]:
        wrong = {
            "rest": "auth",
            "zendesk": "api_token",
            "github": "token",
            "jira": "api_token",
            "hubspot": "token",
            "sql": "write_dsn",
        }[self.adapter]
        options = dict(bo.options)
        options[wrong] = bo.fake.credentials(wrong=True) if wrong == "auth" else "wrong-secret-1"
        return options

    @pytest.fixture
    def missing_ticket_id(self) -> str:
        return self.missing


class TestRestWriteBack(_Kit):
    adapter_class = RestAdapter
    adapter = "rest"
    missing = "99999"


class TestZendeskWriteBack(_Kit):
    adapter_class = ZendeskAdapter
    adapter = "zendesk"
    missing = "99999"


class TestGitHubWriteBack(_Kit):
    adapter_class = GitHubAdapter
    adapter = "github"
    missing = "acme/app#9999"


class TestJiraWriteBack(_Kit):
    adapter_class = JiraAdapter
    adapter = "jira"
    missing = "99999"


class TestHubSpotWriteBack(_Kit):
    adapter_class = HubSpotAdapter
    adapter = "hubspot"
    missing = "99999"


class TestSqliteWriteBack(_Kit):
    adapter_class = SqlAdapter
    adapter = "sql"
    missing = "99999"
    remote = False


class _ServerSqlWriteBack(WriteBackConformance):
    """On a real database server: the listing on `dsn`, the writes on `write_dsn`."""

    adapter_class = SqlAdapter
    kind: str

    @pytest.fixture
    def backoffice(self, tmp_path: Path) -> Iterator[SqlBackoffice]:
        table = SqlBackoffice(database_for(self.kind, tmp_path), rows=20)
        yield table
        table.drop()

    def _writes(self, table: SqlBackoffice, write_dsn: str) -> dict[str, Any]:
        return table.options(
            write_dsn=write_dsn,
            close_statement=f"UPDATE {table.table} SET status = 'closed' WHERE id = :ticket_id",
            comment_statement=f"UPDATE {table.table} SET title = :note WHERE id = :ticket_id",
            ticket_id_type="integer",
        )

    @pytest.fixture
    def options(self, backoffice: SqlBackoffice) -> dict[str, Any]:
        return self._writes(backoffice, backoffice.db.dsn)

    @pytest.fixture
    def bad_options(self, backoffice: SqlBackoffice) -> dict[str, Any]:
        assert backoffice.db.bad_dsn is not None
        return self._writes(backoffice, backoffice.db.bad_dsn)

    @pytest.fixture
    def missing_ticket_id(self) -> str:
        return "99999"


class TestPostgresWriteBack(_ServerSqlWriteBack):
    kind = "postgresql"


class TestMariaDbWriteBack(_ServerSqlWriteBack):
    kind = "mariadb"


def test_file_adapter_cannot_write_back() -> None:
    """The file adapter has no write-back: a source asking for one is refused at start-up."""
    assert not can_write_back(FileAdapter)


# --- the checks fail broken adapters -----------------------------------------------------------


class LeakyZendesk(ZendeskAdapter):
    """Puts its token in the error of a refused write-back."""

    async def write_back(self, request: WriteBackRequest) -> WriteBackOutcome:
        token = self.options.api_token.get_secret_value()
        raise AdapterAuthError(f"Zendesk refused token {token}")


class UntypedGitHub(GitHubAdapter):
    """Reports a missing issue as a config error, not TicketGone."""

    async def write_back(self, request: WriteBackRequest) -> WriteBackOutcome:
        try:
            return await super().write_back(request)
        except TicketGone as exc:
            raise AdapterConfigError(str(exc)) from None


def test_the_kit_fails_a_close_that_is_not_idempotent() -> None:
    """A rest source whose API answers 409 to a second close, not told it means "closed"."""
    with backoffice("rest") as bo:
        options = copy.deepcopy(bo.options)
        options["write_back"]["already_closed_statuses"] = []
        kit = TestRestWriteBack()
        with pytest.raises(pytest.fail.Exception, match="closing it again"):
            kit.test_write_back_close_is_idempotent(bo.fake, options)


def test_the_kit_fails_a_secret_in_an_error() -> None:
    with backoffice("zendesk") as bo:
        kit = TestZendeskWriteBack()
        kit.adapter_class = LeakyZendesk
        with pytest.raises(AssertionError, match=r"a secret \(the api_token option\) appears"):
            kit.test_write_back_errors_are_typed_without_secrets(bo.fake, bo.options, bo.options)


def test_the_kit_fails_an_untyped_missing_ticket() -> None:
    with backoffice("github") as bo:
        kit = TestGitHubWriteBack()
        kit.adapter_class = UntypedGitHub
        with pytest.raises(pytest.fail.Exception, match="not TicketGone"):
            kit.test_write_back_to_a_missing_ticket_raises_ticket_gone(
                bo.fake, bo.options, "acme/app#9999"
            )


def test_the_adapters_listing_says_who_can_write_back() -> None:
    """`fragment-connector adapters` (text and JSON) shows which adapters can write back."""
    result = subprocess.run(
        [sys.executable, "-m", "connector", "adapters", "--output", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    listed = {a["name"]: a["write_back"] for a in json.loads(result.stdout)["adapters"]}
    assert {
        k: listed[k] for k in ("file", "rest", "sql", "zendesk", "jira", "github", "hubspot")
    } == {
        "file": "no",
        "rest": "with_options",
        "sql": "with_options",
        "zendesk": "yes",
        "jira": "yes",
        "github": "yes",
        "hubspot": "yes",
    }
    text = subprocess.run(
        [sys.executable, "-m", "connector", "adapters"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("ok")}
    assert lines["file"].endswith("write-back: no")
    assert lines["zendesk"].endswith("write-back: yes")
    assert lines["sql"].endswith("write-back: with its write options")


def test_a_source_cannot_turn_on_write_back_its_adapter_lacks(tmp_path: Path) -> None:
    """The file adapter (or rest without `write_back` requests): a config error at start."""
    (tmp_path / "tickets.json").write_text("[]")
    config = tmp_path / "config.yaml"
    config.write_text(
        "fragment: {base_url: sandbox}\n"
        f"state: {{url: 'sqlite:///{tmp_path}/state.db'}}\n"
        "sources:\n"
        "  - name: backoffice\n"
        "    adapter: file\n"
        f"    options: {{path: {tmp_path}/tickets.json}}\n"
        "    write_back: {on_done: close}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "connector", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 4, result.stderr
    assert "sources[backoffice].write_back: adapter 'file' cannot write back" in result.stderr
