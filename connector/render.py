"""The cycle report for people (a readable plan on the terminal) and for programs (stable JSON).

The JSON document is versioned (`"version": 1`) and documented in docs/output.md; fields are only
ever added to it. The text form leads with counts, then shows the first rows of each kind of
action with the ticket, the title, the reason and, for updates, which fields change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from connector.cycle import LISTING_CHANGES, cycle_exit_code, planned_counts, report_counts
from connector.errors import classify
from connector.fragment import RequestStats
from connector.models import Action, ActionKind, CycleReport, JSONValue, SourceReport, WriteBack
from connector.printable import visible
from connector.redaction import REDACTOR

JSON_VERSION = 1
ROWS_PER_KIND = 10
_KINDS = ("create", "update", "reopen", "close")


def _short(value: JSONValue, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _change(old: JSONValue, new: JSONValue, width: int = 44) -> str:
    """`old → new`, eliding a long common prefix of two strings so the difference shows."""
    if isinstance(old, str) and isinstance(new, str):
        common = 0
        while common < min(len(old), len(new)) and old[common] == new[common]:
            common += 1
        cut = max(0, common - 12)
        if cut > 3:
            old, new = "…" + old[cut:], "…" + new[cut:]
    return f"{_short(old, width)} → {_short(new, width)}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _action_json(action: Action) -> dict[str, JSONValue]:
    return {
        "kind": action.kind.value,
        "ticket_id": action.ticket_id,
        "uid": action.uid,
        "title": action.title,
        "reason": action.reason,
        "changes": {key: [old, new] for key, (old, new) in action.changes.items()},
    }


def _write_back_json(write_back: WriteBack) -> dict[str, JSONValue]:
    return {
        "ticket_id": write_back.request.ticket_id,
        "uid": write_back.uid,
        "title": write_back.title,
        "action": write_back.request.action.value,
        "note": write_back.request.note,
        "reason": write_back.reason,
        "outcome": write_back.outcome.value,
        "error": write_back.error,
    }


def _write_back_rows(source: SourceReport, console: Console) -> None:
    write_backs = source.write_backs
    if not write_backs:
        return
    table = Table(
        title=f"Write back to the back-office ({len(write_backs)})",
        title_justify="left",
        expand=False,
    )
    for column in ("ticket", "title", "action", "outcome", "reason"):
        table.add_column(column, max_width=60 if column == "reason" else 40)
    for write_back in write_backs[:ROWS_PER_KIND]:
        cells = (
            write_back.request.ticket_id,
            _short(write_back.title),
            write_back.request.action.value,
            write_back.outcome.value,
            write_back.error or write_back.reason,
        )
        # Ticket text and back-office errors are hostile: no markup, no raw control characters.
        table.add_row(*(Text(visible(cell)) for cell in cells))
    console.print(table)
    if len(write_backs) > ROWS_PER_KIND:
        console.print(f"  … and {len(write_backs) - ROWS_PER_KIND} more (see --output json)")


def _total_counts(
    report: CycleReport, counter: Callable[[SourceReport], Mapping[str, int]] = report_counts
) -> dict[str, int]:
    total = dict.fromkeys((*_KINDS, "unchanged", "refused", "failed"), 0)
    for source in report.sources:
        for key, value in counter(source).items():
            total[key] += value
    return total


def report_json(report: CycleReport) -> dict[str, JSONValue]:
    """The report as the documented JSON document."""
    reads = RequestStats.reads_in(report.requests)
    total = sum(report.requests.values())
    return {
        "version": JSON_VERSION,
        "run_id": report.run_id,
        "dry_run": report.dry_run,
        "exit_code": cycle_exit_code(report),
        "error": None,
        "counts": dict(_total_counts(report)),  # a copy typed as JSON
        "planned": {
            k: v for k, v in _total_counts(report, planned_counts).items() if k != "failed"
        },
        "requests": {"total": total, "reads": reads, "writes": total - reads},
        "orphaned_sources": dict(report.orphaned),
        "sources": [
            {
                "name": s.name,
                "ok": s.ok,
                "error": s.error,
                "error_type": s.error_label,
                "tickets": s.tickets,
                "open_tasks": s.open_tasks,
                "counts": dict(report_counts(s)),
                "planned": dict(planned_counts(s)),
                "actions": [_action_json(a) for a in s.planned],
                "refused": [
                    {**_action_json(r.action), "guard": r.guard, "refusal": r.reason}
                    for r in s.refusals
                ],
                "failed": [{**_action_json(f.action), "error": f.error} for f in s.failures],
                "invalid_records": [
                    {"position": r.position, "ticket_id": r.ticket_id, "reason": r.reason}
                    for r in s.invalid_records
                ],
                "unresolved": list(s.unresolved),
                "listing": s.listing,
                "write_backs": [_write_back_json(w) for w in s.write_backs],
            }
            for s in report.sources
        ],
    }


def error_json(error: BaseException) -> dict[str, JSONValue]:
    """The document of a run that failed as a whole (a refused token, an unreadable state
    store...): the same version and keys as `report_json`, with `error` set."""
    code, label = classify(error)
    return {
        "version": JSON_VERSION,
        "run_id": None,
        "dry_run": None,
        "exit_code": code,
        "error": {"type": label, "message": REDACTOR.mask(str(error))},
        "counts": dict.fromkeys((*_KINDS, "unchanged", "refused", "failed"), 0),
        "requests": {"total": 0, "reads": 0, "writes": 0},
        "orphaned_sources": {},
        "sources": [],
    }


def write_error_json(error: BaseException, out: IO[str]) -> None:
    """Print the document of a run that failed as a whole, one line."""
    out.write(json.dumps(error_json(error), ensure_ascii=False) + "\n")


def write_json(report: CycleReport, out: IO[str]) -> None:
    """Print the JSON document, one line."""
    out.write(json.dumps(report_json(report), ensure_ascii=False, sort_keys=False) + "\n")


def _action_rows(title: str, actions: Sequence[Action], console: Console) -> None:
    if not actions:
        return
    table = Table(title=f"{title} ({len(actions)})", title_justify="left", expand=False)
    table.add_column("ticket", no_wrap=True)
    table.add_column("title", max_width=40)
    table.add_column("reason")
    table.add_column("changes", max_width=80)
    for action in actions[:ROWS_PER_KIND]:
        changes = ""
        if action.kind is ActionKind.UPDATE:
            changes = "; ".join(
                f"{key}: {_change(old, new)}" for key, (old, new) in sorted(action.changes.items())
            )
        # Text, not str: rich would read `[...]` in a title as markup; visible(): no raw ESC.
        cells = (action.ticket_id, _short(action.title), action.reason, changes)
        table.add_row(*(Text(visible(cell)) for cell in cells))
    console.print(table)
    if len(actions) > ROWS_PER_KIND:
        console.print(f"  … and {len(actions) - ROWS_PER_KIND} more (see --output json)")


def _source_text(source: SourceReport, console: Console) -> None:
    counts = planned_counts(source)
    head = Text(f"source {source.name}: ", style="bold")
    if not source.ok and source.plan is None:
        head.append(f"FAILED: {visible(source.error)}", style="red")
        head.append("\n  nothing was written for this source; it gets no closes this cycle")
        console.print(head)
        return
    head.append(f"{source.tickets} tickets, {source.open_tasks} open tasks → ")
    head.append(
        ", ".join(f"{counts[k]} to {k}" for k in _KINDS) + f", {counts['unchanged']} unchanged"
    )
    console.print(head)
    if source.listing:
        hint = " (tasks deleted in Fragment show at the next full one; --full lists now)"
        stale = source.listing == LISTING_CHANGES
        console.print(f"  planned from Fragment's listing: {source.listing}{hint if stale else ''}")
    planned = source.planned
    labels = {"create": "Create", "update": "Update", "reopen": "Reopen", "close": "Close (DONE)"}
    for kind in _KINDS:
        _action_rows(labels[kind], [a for a in planned if a.kind.value == kind], console)
    _write_back_rows(source, console)
    if source.refusals:
        first = source.refusals[0]
        console.print(
            Text(
                f"  REFUSED {len(source.refusals)} closes ({first.guard}): {visible(first.reason)}",
                "yellow",
            )
        )
    for record in source.invalid_records[:ROWS_PER_KIND]:
        ident = f" ticket {visible(record.ticket_id)}" if record.ticket_id else ""
        line = f"  skipped {visible(record.position)}{ident}: {visible(record.reason)}"
        console.print(Text(line, "yellow"))
    if len(source.invalid_records) > ROWS_PER_KIND:
        console.print(f"  … and {len(source.invalid_records) - ROWS_PER_KIND} more skipped records")
    if source.unresolved:
        ids = ", ".join(source.unresolved[:ROWS_PER_KIND])
        more = (
            f" and {len(source.unresolved) - ROWS_PER_KIND} more"
            if len(source.unresolved) > ROWS_PER_KIND
            else ""
        )
        console.print(
            Text(
                f"  UNRESOLVED {len(source.unresolved)} tickets ({ids}{more}): Fragment could "
                "not show whether their task exists, so none was created; retried next cycle",
                "red",
            )
        )
    if source.failures:
        console.print(Text(f"  {len(source.failures)} actions were NOT applied:", "red"))
        for failure in source.failures[:ROWS_PER_KIND]:
            line = f"    {failure.action.kind.value} {failure.action.ticket_id}: {failure.error}"
            console.print(Text(visible(line)))
    if source.error:
        console.print(Text(f"  error: {visible(source.error)}", "red"))


def write_text(report: CycleReport, out: IO[str]) -> None:
    """Print the report for a person."""
    console = Console(
        file=out, highlight=False, soft_wrap=False, width=160 if not out.isatty() else None
    )
    for source in report.sources:
        _source_text(source, console)
    for name, count in report.orphaned.items():
        console.print(
            Text(
                f"note: source {name!r} is no longer in the config; its {count} open tasks are "
                "left as they are",
                "yellow",
            )
        )
    total = _total_counts(report)
    summary = ", ".join(f"{total[k]} {k}" for k in _KINDS)
    requests = sum(report.requests.values())
    if report.dry_run:
        console.print(
            f"Dry run: would {summary}. "
            f"Nothing was written ({_plural(requests, 'request')}, all reads)."
        )
    else:
        failed = f", {total['failed']} failed" if total["failed"] else ""
        console.print(f"Applied: {summary}{failed} ({_plural(requests, 'request')}).")
    skipped = sum(len(s.invalid_records) for s in report.sources)
    if skipped:
        where = ", ".join(
            f"{s.name} {len(s.invalid_records)}" for s in report.sources if s.invalid_records
        )
        console.print(
            Text(
                f"Skipped {_plural(skipped, 'record')} that got no task ({where}): see the "
                "`skipped` lines above, `invalid_records` in --output json, or the "
                "source.invalid_record log lines. Exit code 1.",
                "yellow",
            )
        )
