"""The list-and-diff batched client: what a careful first integration does, the honest baseline.

Every cycle lists the source's open tasks (pages of 100, filtered by the source marker), diffs
them locally against the tickets, and writes in 100-item batches: `PUT /tasks/batch` for the
tickets without an open task, `PATCH /tasks/batch` for the tasks whose fields differ and for the
closes. No state is kept between cycles, so every cycle costs a full listing. Same uids and
fields as the connector and the naive client, so the three build the same state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from connector.identity import instance_namespace, task_uid

PAGE = 100
BATCH = 100


def task_fields(ticket: dict[str, Any], source: str) -> dict[str, Any]:
    """The fields a task holds for a ticket (the naive client's, see naive.py)."""
    ticket_id = str(ticket["id"])
    fields = {k: v for k, v in ticket.items() if k not in ("id", "title", "url", "status")}
    fields.update(
        title=ticket["title"], url=ticket.get("url"), fc_source=source, fc_ticket_id=ticket_id
    )
    return {k: v for k, v in fields.items() if v is not None}


def run_cycle(
    base_url: str, token: str, tickets: list[dict[str, Any]], *, source: str, instance: str
) -> int:
    """One list-and-diff cycle; returns the number of requests it made."""
    namespace = instance_namespace(instance)
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "batched-benchmark/1"}
    requests = 0
    with httpx.Client(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=60) as http:
        listed: dict[str, dict[str, Any]] = {}
        cursor = None
        while True:
            params: list[tuple[str, str | int | float | bool | None]] = [
                ("limit", PAGE),
                ("fields.fc_source", source),
                ("status", "TODO"),
                ("status", "STARTED"),
            ]
            if cursor:
                params.append(("cursor", cursor))
            page = http.get("tasks", params=params).json()
            requests += 1
            listed.update((t["uid"], t) for t in page["items"])
            cursor = page["meta"]["next_cursor"]
            if not cursor:
                break
        creates, patches = [], []
        wanted = set()
        for ticket in tickets:
            uid = task_uid(namespace, source, str(ticket["id"]))
            wanted.add(uid)
            fields = task_fields(ticket, source)
            task = listed.get(uid)
            if task is None:
                creates.append({"uid": uid, "fields": fields})
            elif any(task["fields"].get(k) != v for k, v in fields.items()):
                patches.append({"uid": uid, "fields": fields})
        patches += [{"uid": uid, "status": "DONE"} for uid in listed if uid not in wanted]
        requests += send(http, "PUT", creates) + send(http, "PATCH", patches)
    return requests


def send(http: httpx.Client, method: str, items: Sequence[dict[str, Any]]) -> int:
    """Write `items` in batches of 100; returns the number of requests."""
    for start in range(0, len(items), BATCH):
        answer = http.request(method, "tasks/batch", json={"items": items[start : start + BATCH]})
        answer.raise_for_status()
    return -(-len(items) // BATCH)
