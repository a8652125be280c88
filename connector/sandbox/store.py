"""The sandbox's state: its tasks and what acts on them, behind one `threading.Lock`.

`app.py` turns each request into one call on a `SandboxStore` and each `SandboxError` into a
status code; tests reach the same store in-process through `SandboxServer.store`. It implements
fragment-api.md on its own (PUT replace, PATCH merge, filtered cursor-paged listings, the
condition tree of `/tasks/query`) and shares no code with our Fragment client, so that the two
cannot drift together. The store holds the tasks and puts the concepts together, each in its
module: the task rules (`tasks`), validation (`validation`), the query compiler (`query`), cursor
snapshots (`snapshots`), fault injection (`faults`), rate buckets (`ratelimit`), the request log
(`requestlog`) and the data file (`persistence`). It is measured against in benchmarks: tasks
live in one dict keyed by uid, each task's public JSON is encoded once per change, and only the
first page of a listing scans the tasks.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Literal, cast

from connector.sandbox.config import TUNABLE, SandboxConfig
from connector.sandbox.errors import ErrorList, TaskNotFound, ValidationFailed, error
from connector.sandbox.faults import FailRule, FaultDecision, FaultInjector, Faults
from connector.sandbox.persistence import export, read_tasks, write_atomically
from connector.sandbox.query import parse_listing, parse_query
from connector.sandbox.ratelimit import RateBuckets
from connector.sandbox.requestlog import RequestLog, Writers
from connector.sandbox.snapshots import Snapshots
from connector.sandbox.tasks import STATUS_SET, STATUSES, Task
from connector.sandbox.validation import (
    Write,
    check_batch,
    check_limit,
    check_single,
    check_write,
    stored_task,
)
from connector.sandbox.wire import (
    MISSING,
    copy_json,
    dumps,
    format_instant,
    items_json,
    normalize_uid,
    same,
)

__all__ = ["FailRule", "Faults", "SandboxConfig", "SandboxStore"]

WRITER_MARKER: Final = "fc_source"
"""The custom field whose concurrent writers `stats()["max_concurrent_writers"]` counts."""


class SandboxStore:
    """All of one sandbox's state; every public method is thread-safe."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._initial = config or SandboxConfig()
        self._config = self._initial
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._seq = 0
        self._last_ms = 0
        self._snapshots = Snapshots()
        self._faults = FaultInjector(self._config.seed)
        self._buckets = RateBuckets()
        self._log = RequestLog()
        self._writers = Writers()
        if self._config.data_path is not None and self._config.data_path.exists():
            self._load(self._config.data_path)

    # configuration

    @property
    def config(self) -> SandboxConfig:
        """The configuration in force (the initial one with any `update_config` changes)."""
        return self._config

    def update_config(self, **changes: Any) -> SandboxConfig:
        """Change `TUNABLE` settings while running; raise ValueError for anything else."""
        unknown = set(changes) - set(TUNABLE)
        if unknown:
            raise ValueError(f"not tunable: {', '.join(sorted(unknown))}")
        with self._lock:
            self._config = replace(self._config, **changes)
            # A new rate or burst applies from a full bucket, as after a restart.
            self._buckets.clear()
            return self._config

    def tunables(self) -> dict[str, Any]:
        """The `TUNABLE` settings as JSON, as `GET /_sandbox/config` serves them."""
        config = self._config
        return {name: getattr(config, name) for name in TUNABLE}

    def check_token(self, token: str) -> bool:
        """Whether `token` is the configured bearer token (constant-time)."""
        return secrets.compare_digest(token.encode(), self._config.token.encode())

    # the API's task operations (each raises SandboxError subclasses; app.py maps them)

    def get_task(self, uid: str) -> bytes:
        """`GET /tasks/{uid}`: the task's JSON."""
        with self._lock:
            return self._find(uid).to_json()

    def replace_tasks(self, body: object) -> bytes:
        """`PUT /tasks/batch`: create or replace every item, all or nothing."""
        with self._lock:
            writes = self._check_batch(body, "replace")
            now = self._now()
            out = [self._replace(w, now).to_json() for w in writes]
        self._persist()
        return items_json(out)

    def replace_task(self, uid: str, body: object) -> bytes:
        """`PUT /tasks/{uid}`: create or replace one task."""
        with self._lock:
            write = check_single(uid, body, "replace", lenient=self._config.lenient)
            result = self._replace(write, self._now()).to_json()
        self._persist()
        return result

    def patch_tasks(self, body: object) -> bytes:
        """`PATCH /tasks/batch`: set the properties sent and merge `fields`, all or nothing."""
        with self._lock:
            writes = self._check_batch(body, "patch", must_exist=True)
            now = self._now()
            out = [self._patch(self._tasks[cast(str, w.uid)], w, now).to_json() for w in writes]
        self._persist()
        return items_json(out)

    def patch_task(self, uid: str, body: object) -> bytes:
        """`PATCH /tasks/{uid}`: 404 for an unknown uid, else as one item of `patch_tasks`."""
        with self._lock:
            task = self._find(uid)
            write = check_single(task.uid, body, "patch", lenient=self._config.lenient)
            result = self._patch(task, write, self._now()).to_json()
        self._persist()
        return result

    def create_tasks(self, body: object) -> bytes:
        """`POST /tasks/batch`: create every item (uid generated when absent), all or nothing."""
        with self._lock:
            writes = self._check_batch(body, "create", must_be_new=True)
            now = self._now()
            out = [self._replace(w, now).to_json() for w in writes]
        self._persist()
        return items_json(out)

    def create_task(self, body: object) -> bytes:
        """`POST /tasks`: create one task (uid generated when absent)."""
        with self._lock:
            errors = ErrorList()
            write = check_write(body, ["body"], "create", errors, lenient=self._config.lenient)
            if write is not None and write.uid is not None and write.uid in self._tasks:
                errors.add(["body", "uid"], "task already exists", "already_exists")
            errors.raise_if_any()
            result = self._replace(cast(Write, write), self._now()).to_json()
        self._persist()
        return result

    def add_comment(self, uid: str, body: object) -> bytes:
        """`POST /tasks/{uid}/comments`: attach `{"content": str}` (updated_at is not bumped)."""
        with self._lock:
            task = self._find(uid)
            if not isinstance(body, dict):
                raise ValidationFailed([error(["body"], "body must be an object", "dict_type")])
            content = body.get("content", MISSING)
            if not isinstance(content, str) or not content.strip():
                kind = "missing" if content is MISSING else "string_type"
                msg = "content must be a non-empty string"
                raise ValidationFailed([error(["body", "content"], msg, kind)])
            comment = {
                "id": str(uuid.uuid4()),
                "task_uid": task.uid,
                "content": content,
                "created_at": format_instant(self._now()),
            }
            task.comments = [*(task.comments or ()), comment]
        self._persist()
        return dumps(comment)

    def list_tasks(self, params: Sequence[tuple[str, str]]) -> bytes:
        """`GET /tasks`: one page of `{"items", "meta"}` for query parameters `params`."""
        errors = ErrorList()
        listing = parse_listing(params, errors, lenient=self._config.lenient)
        with self._lock:
            limit = self._check_limit(listing.limit, ["query", "limit"], errors)
            errors.raise_if_any()
            if listing.cursor is not None:
                return self._snapshots.cursor_page(listing.cursor, limit, self._tasks)
            return self._snapshots.first_page(listing.select(self._visible_tasks()), limit)

    def query_tasks(self, body: object) -> bytes:
        """`POST /tasks/query`: one page of the tasks matching the tree under `condition`."""
        errors = ErrorList()
        query = parse_query(body, errors, lenient=self._config.lenient)
        with self._lock:
            limit = self._check_limit(query.limit, ["body", "limit"], errors)
            errors.raise_if_any()
            if query.cursor is not None:
                return self._snapshots.cursor_page(query.cursor, limit, self._tasks)
            rows = self._visible_tasks(query.candidate_uids())
            return self._snapshots.first_page(query.select(rows), limit)

    # in-process and admin access

    def all_tasks(self) -> list[dict[str, Any]]:
        """Every task (DONE and archived too) with `assignee_email` and `comments`, as copies."""
        with self._lock:
            return [t.dump() for t in self._tasks.values()]

    def all_tasks_json(self) -> bytes:
        """`all_tasks` as `{"items": [...]}` JSON, for `GET /_sandbox/tasks`."""
        with self._lock:
            return items_json([t.dump_json() for t in self._tasks.values()])

    def task(self, uid: str) -> dict[str, Any] | None:
        """One task as `all_tasks` shows it, or None."""
        with self._lock:
            found = self._tasks.get(normalize_uid(uid) or uid)
            return None if found is None else found.dump()

    def seed(self, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store raw tasks as they are (foreign tasks, odd states); returns them as stored.

        Keys not sent take defaults (`created_at` now, `updated_at` = `created_at`, ...); a task
        with the uid of an existing one replaces it.
        """
        errors = ErrorList()
        with self._lock:
            now = self._now()
            tasks = [
                self._stored_task(raw, ["body", "items", i], errors, now)
                for i, raw in enumerate(items)
            ]
            errors.raise_if_any()
            for task in cast(list[Task], tasks):
                old = self._tasks.get(task.uid)
                if old is not None:
                    task.seq = old.seq
                self._tasks[task.uid] = task
            out = [t.dump() for t in cast(list[Task], tasks)]
        self._persist()
        return out

    def operator_edit(
        self, uid: str, *, status: str | None = None, fields: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """An operator's edit in Fragment's UI: set `status`, merge `fields`, bump `updated_at`."""
        with self._lock:
            task = self._find(uid)
            errors = ErrorList()
            if status is not None and status not in STATUS_SET:
                errors.add(["body", "status"], "status must be one of TODO, STARTED, DONE", "enum")
            if fields is not None and not isinstance(fields, Mapping):
                errors.add(["body", "fields"], "fields must be an object", "dict_type")
            errors.raise_if_any()
            now = self._now()
            if status is not None:
                task.set_status(status, now)
            if fields:
                task.merge_fields(copy_json(dict(fields)))
            task.updated_at = now
            task.encoded = None
            result = task.dump()
        self._persist()
        return result

    def delete(self, uids: Iterable[str]) -> int:
        """Tasks deleted in Fragment's UI (listings stop showing them); returns how many."""
        with self._lock:
            gone = [self._tasks.pop(normalize_uid(uid) or uid, None) for uid in uids]
        self._persist()
        return sum(task is not None for task in gone)

    def reset(self) -> None:
        """Forget all tasks, snapshots, faults, rate buckets, the log and config changes."""
        with self._lock:
            self._tasks.clear()
            self._snapshots.clear()
            self._config = self._initial
            self._faults.reset()
            self._buckets.clear()
            self._log.clear()
            self._writers.clear()
        self._persist()

    def faults(self) -> Faults:
        """The fault knobs in force, `fail_next` with the counts still to be consumed."""
        return self._faults.current()

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault knobs (test mode only) and re-seed their random draws."""
        if not self._config.test_mode:
            raise RuntimeError("faults can only be set on a sandbox in test mode")
        self._faults.set(faults)

    def requests(self) -> list[dict[str, Any]]:
        """The request log (test mode), oldest first, at most the last 100,000 requests."""
        return self._log.entries()

    def request_counts(self) -> list[dict[str, Any]]:
        """Running counts of every request by method, route template and status."""
        return self._log.counts()

    def clear_requests(self) -> None:
        """Empty the request log and its counters."""
        self._log.clear()

    def stats(self) -> dict[str, Any]:
        """Task and request totals, and the most writers seen at once per `fields.fc_source`."""
        requests, by_http = self._log.totals()
        with self._lock:
            by_status = Counter(t.status for t in self._tasks.values())
            return {
                "tasks": len(self._tasks),
                "tasks_by_status": {s: by_status.get(s, 0) for s in STATUSES},
                "archived": sum(1 for t in self._tasks.values() if t.archived),
                "requests": requests,
                "requests_by_status": by_http,
                "max_concurrent_writers": self._writers.most(),
                "writers_in_flight": self._writers.in_flight(),
                "snapshots": len(self._snapshots),
            }

    # per-request bookkeeping used by app.py

    def take_request_token(self, key: str) -> float | None:
        """Spend one request of `key`'s rate budget; None if allowed, else seconds to wait."""
        rpm = self._config.requests_per_minute
        if rpm is None:
            return None
        return self._buckets.take(key, requests_per_minute=rpm, burst=self._config.rate_burst)

    def draw_faults(
        self, method: str, path: str, route: str, *, write: bool
    ) -> FaultDecision | None:
        """Decide the faults of one /api/v1 request; None (the fast path) when none apply."""
        if not self._faults.active or not self._config.test_mode:
            return None
        return self._faults.draw(method, path, route, write=write)

    def log_request(self, entry: dict[str, Any], route: str) -> None:
        """Count one /api/v1 request, and keep `entry` in the log in test mode."""
        self._log.add(entry, route, keep=self._config.test_mode)

    def writers_enter(self, body: object, path_uid: str | None) -> tuple[str, ...]:
        """Mark a write request in flight for each `fields.fc_source` it touches; returns them."""
        with self._lock:
            sources: set[str] = set()
            items: list[object] = [body]
            if isinstance(body, dict) and isinstance(body.get("items"), list):
                items = body["items"]
            for item in items:
                uid = path_uid
                source: object = None
                if isinstance(item, dict):
                    fields = item.get("fields")
                    if isinstance(fields, dict):
                        source = fields.get(WRITER_MARKER)
                    uid = uid or normalize_uid(item.get("uid"))
                if not isinstance(source, str) and uid is not None:
                    task = self._tasks.get(normalize_uid(uid) or uid)
                    source = None if task is None else task.fields.get(WRITER_MARKER)
                if isinstance(source, str):
                    sources.add(source)
        return self._writers.enter(sources)

    def writers_exit(self, sources: tuple[str, ...]) -> None:
        """End what `writers_enter` started."""
        self._writers.exit(sources)

    # internals; the `_lock` is held by the caller

    def _now(self) -> int:
        # Never backwards, so that updated_at_after windows are not fooled by a clock step.
        now = max(time.time_ns() // 1_000_000, self._last_ms)
        self._last_ms = now
        return now

    def _find(self, uid: str) -> Task:
        task = self._tasks.get(normalize_uid(uid) or "")
        if task is None:
            raise TaskNotFound(uid)
        return task

    def _check_limit(self, raw: object, loc: list[str | int], errors: ErrorList) -> int:
        return check_limit(raw, loc, errors, max_page_size=self._config.max_page_size)

    def _check_batch(
        self,
        body: object,
        mode: Literal["replace", "patch", "create"],
        *,
        must_exist: bool = False,
        must_be_new: bool = False,
    ) -> list[Write]:
        return check_batch(
            body,
            mode,
            config=self._config,
            existing=self._tasks,
            must_exist=must_exist,
            must_be_new=must_be_new,
        )

    def _stored_task(
        self, raw: object, loc: list[str | int], errors: ErrorList, now: int
    ) -> Task | None:
        task = stored_task(raw, loc, errors, now=now, seq=self._seq + 1)
        if task is not None:
            self._seq += 1
        return task

    def _visible_tasks(self, uids: frozenset[str] | None = None) -> list[Task]:
        """The tasks listings show (all, or those of `uids`), past the visibility delay."""
        delay = self._config.visibility_delay_s
        cutoff = self._now() - int(delay * 1000) if delay > 0 else None
        if uids is None:
            if cutoff is None:
                return list(self._tasks.values())
            return [t for t in self._tasks.values() if t.created_at <= cutoff]
        found = (self._tasks.get(uid) for uid in uids)
        return [t for t in found if t is not None and (cutoff is None or t.created_at <= cutoff)]

    def _replace(self, write: Write, now: int) -> Task:
        values = write.values
        uid = write.uid or str(uuid.uuid4())
        task = self._tasks.get(uid)
        fields: dict[str, Any] = values["fields"]
        if task is None:
            self._seq += 1
            task = Task(
                uid=uid,
                seq=self._seq,
                status="TODO",
                fields=fields,
                due_at=values.get("due_at", now),
                created_at=now,
                updated_at=now,
                assignee_email=values.get("assignee_email"),
                archived=values.get("archived", False),
            )
            task.set_status(values.get("status", "TODO"), now)
            self._tasks[uid] = task
            return task
        # PUT replaces: whatever is not sent goes back to its default.
        changed = task.set_status(values.get("status", "TODO"), now)
        due_at = values.get("due_at", task.created_at)
        assignee = values.get("assignee_email")
        archived = values.get("archived", False)
        if due_at != task.due_at or assignee != task.assignee_email or archived != task.archived:
            task.due_at, task.assignee_email, task.archived = due_at, assignee, archived
            changed = True
        if not same(fields, task.fields):
            task.fields = fields
            changed = True
        if changed:
            task.updated_at = now
            task.encoded = None
        return task

    def _patch(self, task: Task, write: Write, now: int) -> Task:
        values = write.values
        changed = False
        if "status" in values:
            changed = task.set_status(values["status"], now)
        if "due_at" in values and values["due_at"] is None:
            values = {**values, "due_at": task.created_at}
        for name in ("due_at", "assignee_email", "archived"):
            if name in values and values[name] != getattr(task, name):
                setattr(task, name, values[name])
                changed = True
        if "fields" in values and task.merge_fields(values["fields"]):
            changed = True
        if changed:
            task.updated_at = now
            task.encoded = None
        return task

    # persistence

    def _persist(self) -> None:
        path = self._config.data_path
        if path is None:
            return
        # The save lock orders whole saves, so an older state never replaces a newer one.
        with self._save_lock:
            with self._lock:
                data = export(self._tasks.values())
            write_atomically(path, data)

    def _load(self, path: Path) -> None:
        errors = ErrorList()
        now = self._now()
        for i, raw in enumerate(read_tasks(path)):
            task = self._stored_task(raw, ["tasks", i], errors, now)
            if task is not None:
                self._tasks[task.uid] = task
        if errors.items:
            raise ValueError(f"{path}: invalid tasks: {errors.items[:3]}")
