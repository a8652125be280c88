"""Issue 15, item 11: escape sequences in tickets are shown, never obeyed, in every text output."""

from __future__ import annotations

from tests.conftest import Workspace, make_tickets

ESC_TITLE = "\x1b[31mred\x1b[0m [b]x[/b]\u202e\x1b[2J"


def test_titles_and_ids_with_escape_sequences_are_rendered_visibly(workspace: Workspace) -> None:
    tickets = make_tickets(2)
    tickets[0]["title"] = ESC_TITLE
    tickets.append({"id": "T-\x1b]0;owned\x07", "title": "an OSC sequence in the id"})
    workspace.write_tickets(tickets)
    config = str(workspace.config_path)
    outputs = {
        "dry-run": workspace.reconcile("--dry-run"),
        "apply": workspace.reconcile(),
        "explain": workspace.cli("explain", "backoffice", "T-0", "--config", config),
    }
    tickets[0]["title"] = ESC_TITLE + " changed"
    workspace.write_tickets(tickets)
    outputs["update"] = workspace.reconcile("--dry-run")
    for name, result in outputs.items():
        text = result.stdout + result.stderr
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, (name, text)
    assert "\\x1b[31mred\\x1b[0m [b]x[/b]" in outputs["dry-run"].stdout  # and no rich markup
    skipped = "ticket T-\\x1b]0;owned\\x07: the ticket id contains a control"
    assert skipped in outputs["apply"].stdout
    assert "\\x1b[2J" in outputs["explain"].stdout and "\\u202e" in outputs["explain"].stdout
    assert "\\x1b[2J changed" in outputs["update"].stdout
    # The JSON document keeps the title exactly (JSON escapes control characters itself).
    code, report = workspace.reconcile_json("--dry-run")
    assert code == 1  # pending changes (2), but the skipped record outranks them (exit codes)
    (update,) = report["sources"][0]["actions"]
    assert update["title"] == ESC_TITLE + " changed"
