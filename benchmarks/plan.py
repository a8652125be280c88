"""Plan computation alone at 100k tickets: the pure diff, no I/O (best CPU time of 5 runs).

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
from connector.plan import PlanPolicy, desired_task, plan_source


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
    churned = tickets[: size // 100]
    changed = [Ticket(id=t.id, title=t.title + " (edited)", fields=t.fields) for t in churned]
    for label, batch in (("no-op", tickets), ("1% edited", changed + tickets[size // 100 :])):
        best = float("inf")
        for _ in range(5):
            began = time.process_time()
            plan = plan_source("bo", batch, tasks, policy)
            best = min(best, time.process_time() - began)
        print(f"{size} tickets, {label}: {len(plan.actions)} actions, best CPU {best:.3f} s")


if __name__ == "__main__":
    main()
