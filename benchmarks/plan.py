"""Plan computation alone at 100k tickets, no I/O (best CPU time of 5 runs).

Times what a cycle computes: `check_sync` of the tickets against the mirror's digests, then
`plan_source` with the tasks that are out of sync in full; and, for comparison, `plan_source`
against every task in full (a dry-run, or a cycle without a mirror).

python benchmarks/plan.py [--size 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.identity import instance_namespace
from connector.models import Task, TaskStatus, Ticket
from connector.plan import PlanPolicy, check_sync, desired_task, plan_source
from connector.values import task_digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    size = parser.parse_args().size
    policy = PlanPolicy(namespace=instance_namespace("bench"), static_fields={"team": "ops"})
    tickets = [
        Ticket(
            id=f"T-{n}",
            title=f"Review case {n}",
            url=f"https://backoffice.example/cases/{n}",
            fields={"amount": n % 997, "country": "FR", "priority": "normal"},
        )
        for n in range(size)
    ]
    tasks = {}
    for ticket in tickets:
        desired = desired_task("bo", ticket, policy)
        fields = {k: v for k, v in desired.fields.items() if v is not None}
        tasks[desired.uid] = Task(uid=desired.uid, status=TaskStatus.TODO, fields=fields)
    digests = {uid: task_digest(task) for uid, task in tasks.items()}
    churned = tickets[: size // 100]
    changed = [Ticket(id=t.id, title=t.title + " (edited)", fields=t.fields) for t in churned]

    def with_digests(batch: list[Ticket]) -> int:
        check = check_sync("bo", batch, digests, policy)
        unsynced = {uid: tasks[uid] for uid in check.unsynced}
        return len(plan_source("bo", batch, unsynced, policy, synced=check.synced).actions)

    def in_full(batch: list[Ticket]) -> int:
        return len(plan_source("bo", batch, tasks, policy).actions)

    edited = changed + tickets[size // 100 :]
    for label, batch in (("no-op", tickets), ("1% edited", edited)):
        for how, plan in (("digests + out-of-sync", with_digests), ("all in full", in_full)):
            best = float("inf")
            for _ in range(5):
                began = time.process_time()
                actions = plan(batch)
                best = min(best, time.process_time() - began)
            print(f"{size} tickets, {label}, {how}: {actions} actions, best CPU {best:.3f} s")


if __name__ == "__main__":
    main()
