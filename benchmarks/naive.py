"""The naive reference client: one request per ticket, as a first integration would be written.

For every ticket: `GET /tasks/{uid}`; 404 → `PUT /tasks/{uid}`; found and different → `PATCH`.
Then every open task of the source is listed (default page size) and each one whose ticket is
gone gets its own `PATCH` to DONE. Same uids as the connector, so the two build the same state.
"""

from __future__ import annotations

import httpx

from connector.identity import instance_namespace, task_uid


def run_cycle(
    base_url: str, token: str, tickets: list[dict[str, object]], *, source: str, instance: str
) -> int:
    """One naive cycle; returns the number of requests it made."""
    namespace = instance_namespace(instance)
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "naive-benchmark/1"}
    requests = 0
    with httpx.Client(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=30) as http:
        wanted = set()
        for ticket in tickets:
            ticket_id = str(ticket["id"])
            uid = task_uid(namespace, source, ticket_id)
            wanted.add(uid)
            fields = {k: v for k, v in ticket.items() if k not in ("id", "title", "url", "status")}
            fields.update(
                title=ticket["title"],
                url=ticket.get("url"),
                fc_source=source,
                fc_ticket_id=ticket_id,
            )
            fields = {k: v for k, v in fields.items() if v is not None}
            answer = http.get(f"tasks/{uid}")
            requests += 1
            if answer.status_code == 404:
                http.put(f"tasks/{uid}", json={"uid": uid, "fields": fields})
                requests += 1
            elif answer.json()["fields"] != fields and answer.json()["status"] != "DONE":
                http.patch(f"tasks/{uid}", json={"fields": fields})
                requests += 1
        cursor = None
        stale = []
        while True:
            params: dict[str, str] = {"fields.fc_source": source, "status": "TODO"}
            if cursor:
                params["cursor"] = cursor
            page = http.get("tasks", params=params).json()
            requests += 1
            stale += [t["uid"] for t in page["items"] if t["uid"] not in wanted]
            cursor = page["meta"]["next_cursor"]
            if not cursor:
                break
        for uid in stale:
            http.patch(f"tasks/{uid}", json={"status": "DONE"})
            requests += 1
    return requests
