"""Finding tasks by uid without ever reading "absent" into an answer that cannot prove it.

Before creating a task (a `PUT`, which replaces whatever holds its uid, an operator's DONE
included), the connector must know that no task holds the uid. Three ways, by request cost:

1. `POST /tasks/query` with `uid in [...]`: ceil(n / 100) requests. Its shape is documented, its
   `in` operator is not, so each answer is checked (`FragmentClient.query_uids`): one that holds
   tasks not asked for proves the server ignored the filter. Such a server, or one that refuses
   the query (400/422), is not asked again by this finder.
2. A listing of the source's tasks in every status (`GET /tasks`, filtered again on this side by
   the source marker): ceil(tasks of the source / 100) requests, a complete answer whatever
   filters the server honours.
3. `GET /tasks/{uid}` for each uid: n requests, documented, exact (404: absent).

The query is tried first. When it cannot be trusted, the fallback is whichever of 2 and 3 is
expected to cost fewer requests (`listing_pages`, an estimate the caller makes from what it knows
of the source). A uid whose presence none of them establishes is `unresolved`: the caller must
not create its task this cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from connector.errors import FragmentFilterIgnored, FragmentValidationError
from connector.fragment.client import FragmentClient
from connector.models import Task

log = structlog.get_logger(__name__)

QUERY = "query"
LISTING = "listing"
BY_UID = "by_uid"


@dataclass
class Lookup:
    """What a look-up established: tasks found, uids proven absent, uids left unresolved."""

    found: dict[str, Task] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)
    unresolved: set[str] = field(default_factory=set)
    methods: list[str] = field(default_factory=list)


class TaskFinder:
    """Looks tasks up by uid for one client, remembering whether its query can be trusted."""

    def __init__(self, client: FragmentClient) -> None:
        self._client = client
        self.query_usable = True

    async def find(
        self,
        uids: Iterable[str],
        *,
        listing_fields: Mapping[str, str],
        listing_pages: int,
        progress: Callable[[int], None] | None = None,
    ) -> Lookup:
        """Find the tasks holding `uids`.

        `listing_fields` filter the fallback listing (the source's markers; applied again on
        this side); `listing_pages` is the expected cost of that listing in requests.
        `progress` is told how many uids each request settled.
        """
        wanted = list(dict.fromkeys(uids))
        result = Lookup()
        if not wanted:
            return result
        if self.query_usable:
            try:
                tasks = await self._client.query_uids(wanted, progress=progress)
            except (FragmentFilterIgnored, FragmentValidationError) as exc:
                if isinstance(exc, FragmentValidationError) and exc.status not in (400, 422):
                    raise
                self.query_usable = False
                log.warning(
                    "fragment.query_untrusted",
                    error=str(exc),
                    fallback="listing or GET /tasks/{uid}, whichever costs fewer requests",
                )
            else:
                result.methods.append(QUERY)
                self._settle(result, wanted, tasks)
                return result
        if len(wanted) <= listing_pages:
            await self._by_uid(result, wanted, progress)
            return result
        try:
            tasks = [
                task
                async for page in self._client.iter_tasks(fields=listing_fields)
                for task in page
            ]
        except FragmentValidationError as exc:
            if exc.status not in (400, 422):
                raise
            log.warning("fragment.listing_refused", error=str(exc), fallback="GET /tasks/{uid}")
            await self._by_uid(result, wanted, progress)
            return result
        result.methods.append(LISTING)
        self._settle(result, wanted, tasks)
        if progress is not None:
            progress(len(wanted))
        return result

    @staticmethod
    def _settle(result: Lookup, wanted: list[str], tasks: Iterable[Task]) -> None:
        # Only called with complete answers: every task holding a wanted uid is in `tasks`.
        asked = set(wanted)
        for task in tasks:
            if task.uid in asked:
                result.found[task.uid] = task
        result.absent.update(uid for uid in wanted if uid not in result.found)

    async def _by_uid(
        self, result: Lookup, wanted: list[str], progress: Callable[[int], None] | None = None
    ) -> None:
        result.methods.append(BY_UID)
        for uid in wanted:
            if progress is not None:
                progress(1)
            try:
                task = await self._client.get_task(uid)
            except FragmentValidationError as exc:
                log.warning("fragment.lookup_refused", uid=uid, error=str(exc))
                result.unresolved.add(uid)
                continue
            if task is None:
                result.absent.add(uid)
            elif task.uid == uid:
                result.found[uid] = task
            else:  # an answer about another task proves nothing about this uid
                result.unresolved.add(uid)
