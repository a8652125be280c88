"""`fragment-connector demo`: the whole product on embedded defaults, no account, no network.

Starts the sandbox Fragment on loopback, writes a sample back-office (a JSON file of tickets),
reconciles, then lets the back-office and an operator change things and reconciles again, printing
what each cycle did. It runs the same `Reconciler` as production; only the endpoints are local.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule

from connector.config import (
    ConnectorSection,
    FragmentSection,
    Settings,
    SourceSection,
    StateSection,
    TaskTemplate,
)
from connector.cycle import CycleOptions, cycle_exit_code
from connector.errors import EXIT_FAILURE, EXIT_OK
from connector.identity import instance_namespace, task_uid
from connector.render import write_text
from connector.runtime import open_runtime
from connector.sandbox import SandboxConfig, SandboxServer
from connector.status import record_cycle

SOURCE = "backoffice"
INSTANCE = "demo"
KINDS = ("KYC review", "Refund request", "Chargeback", "Address change", "Card blocked")
COUNTRIES = ("FR", "DE", "ES", "IT", "NL")

HAND_MADE_UID = "00000000-0000-4000-8000-000000000001"


def sample_tickets(count: int = 24) -> list[dict[str, Any]]:
    """A small, varied back-office: ids, titles, links and a few typed custom fields."""
    base = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    return [
        {
            "id": f"T-{1000 + n}",
            "title": f"{KINDS[n % len(KINDS)]} for customer #{4200 + n * 7}",
            "url": f"https://backoffice.example/tickets/{1000 + n}",
            "country": COUNTRIES[n % len(COUNTRIES)],
            "amount": round(25 + n * 13.5, 2),
            "priority": "high" if n % 4 == 0 else "normal",
            "updated_at": (base + timedelta(hours=n)).isoformat(),
        }
        for n in range(count)
    ]


def demo_settings(workdir: Path, base_url: str, token: str) -> Settings:
    """The demo's config: the sandbox, a back-office file and a state store in `workdir`."""
    # Built from its sections, not from the environment: the demo must not pick up a real token.
    return Settings.model_construct(
        connector=ConnectorSection(instance=INSTANCE),
        fragment=FragmentSection(base_url=base_url, token=token, requests_per_minute=600, burst=20),
        state=StateSection(url=f"sqlite:///{workdir / 'state.db'}"),
        sources=[
            SourceSection(
                name=SOURCE,
                adapter="file",
                options={"path": str(workdir / "tickets.json")},
                task=TaskTemplate(fields={"team": "operations"}),
            )
        ],
    )


def _cycle(settings: Settings, console: Console, *, dry_run: bool = False) -> int:
    async def run() -> Any:
        async with open_runtime(settings) as reconciler:
            report = await reconciler.run(CycleOptions(dry_run=dry_run))
            if not dry_run:  # the history and last plans, as the daemon keeps them
                for source in report.sources:
                    record_cycle(
                        reconciler.store,
                        source,
                        run_id=report.run_id,
                        started=report.started_at,
                        finished=report.finished_at,
                        replica=None,
                    )
            return report

    report = asyncio.run(run())
    write_text(report, console.file)
    return cycle_exit_code(report)


def _verdict(tasks: dict[str, dict[str, Any]], started: str, done: str) -> str:
    """What became of the tasks an operator or a person touched, read from Fragment itself."""
    hand_made = tasks.get(HAND_MADE_UID)
    hand = (
        "The hand-made task is gone."
        if hand_made is None
        else f"The hand-made task is {hand_made['status']} with its title "
        f"{hand_made['fields'].get('title')!r}."
    )
    status_1001 = tasks[started]["status"] if started in tasks else "missing"
    status_1002 = tasks[done]["status"] if done in tasks else "missing"
    return (
        f"{hand} T-1001 (started by the operator) is {status_1001}; "
        f"T-1002 (closed by the operator) is {status_1002}."
    )


def run_demo(workdir: Path | None, console: Console) -> int:
    """Run the demo; returns 0 when every cycle did what it should."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="fragment-demo-") as tmp:
            return _run(Path(tmp), console)
    workdir.mkdir(parents=True, exist_ok=True)
    return _run(workdir, console)


def _run(workdir: Path, console: Console) -> int:
    tickets_file = workdir / "tickets.json"
    tickets = sample_tickets()
    tickets_file.write_text(json.dumps(tickets, indent=2))
    config = SandboxConfig(test_mode=True, requests_per_minute=None)
    with SandboxServer(config) as sandbox:
        settings = demo_settings(workdir, sandbox.base_url, config.token)
        sandbox.store.seed(
            [
                {
                    "uid": HAND_MADE_UID,
                    "status": "TODO",
                    "fields": {"title": "Quarterly audit (created by hand, not by the connector)"},
                }
            ]
        )
        console.print(Rule("1. First cycle: every open ticket becomes a task"))
        console.print(f"sandbox Fragment at {sandbox.base_url}; back-office: {tickets_file}")
        codes = [_cycle(settings, console)]

        console.print(Rule("2. The back-office and an operator change things"))
        namespace = instance_namespace(INSTANCE)
        started = task_uid(namespace, SOURCE, "T-1001")
        done = task_uid(namespace, SOURCE, "T-1002")
        sandbox.store.operator_edit(started, status="STARTED")
        sandbox.store.operator_edit(done, status="DONE")
        console.print("operator: starts T-1001 and closes T-1002 in Fragment")
        solved = {"T-1003", "T-1004", "T-1005"}
        tickets = [t for t in tickets if t["id"] not in solved]
        by_id = {t["id"]: t for t in tickets}
        by_id["T-1000"]["title"] = "KYC review for customer #4200 (documents received)"
        by_id["T-1006"]["amount"] = 999.5
        tickets.append({"id": "T-2001", "title": "Refund request for customer #9001", "amount": 40})
        tickets.append(
            {"id": "T-2002", "title": "Card blocked for customer #9002", "status": "open"}
        )
        tickets_file.write_text(json.dumps(tickets, indent=2))
        console.print(
            "back-office: T-1003..T-1005 solved, T-1000 and T-1006 edited, T-2001 and T-2002 opened"
        )

        console.print(Rule("3. Dry-run: the plan, nothing written"))
        codes.append(_cycle(settings, console, dry_run=True))
        console.print(Rule("4. Second cycle: exactly those changes"))
        codes.append(_cycle(settings, console))
        console.print(Rule("5. Third cycle: nothing changed, nothing written"))
        codes.append(_cycle(settings, console))

        tasks = {t["uid"]: t for t in sandbox.store.all_tasks()}
        open_tasks = sum(1 for t in tasks.values() if t["status"] != "DONE")
        console.print(Rule("Fragment now"))
        console.print(f"{len(tasks)} tasks, {open_tasks} open. {_verdict(tasks, started, done)}")
    expected = [EXIT_OK, 2, EXIT_OK, EXIT_OK]
    return EXIT_OK if codes == expected else EXIT_FAILURE
