"""What the sandbox was asked: running counts, the request log (test mode), concurrent writers.

Counts by method, route template and status are always kept (`GET /_sandbox/requests/counts`,
benchmarks); the log of each request only in test mode, the last `REQUEST_LOG_MAX`. Writers
count the write requests in flight per `fields.fc_source`, so that a test can assert that two
cycles of one source never wrote at once.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any, Final

REQUEST_LOG_MAX: Final = 100_000


class RequestLog:
    """The counts and the log of /api/v1 requests; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_MAX)
        self._counts: Counter[tuple[str, str, int | str]] = Counter()
        self._total = 0

    def add(self, entry: dict[str, Any], route: str, *, keep: bool) -> None:
        """Count one request; keep `entry` in the log when `keep` (test mode)."""
        with self._lock:
            self._counts[(entry["method"], route, entry["status"])] += 1
            self._total += 1
            if keep:
                self._log.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        """The log, oldest first, as copies."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    def counts(self) -> list[dict[str, Any]]:
        """Running counts of every request by method, route template and status."""
        with self._lock:
            items = list(self._counts.items())
        return [
            {"method": m, "route": r, "status": s, "count": n}
            for (m, r, s), n in sorted(items, key=lambda kv: (kv[0][1], kv[0][0], str(kv[0][2])))
        ]

    def totals(self) -> tuple[int, dict[str, int]]:
        """Requests counted, in all and by HTTP status."""
        with self._lock:
            by_http: Counter[str] = Counter()
            for (_, _, status), n in self._counts.items():
                by_http[str(status)] += n
            return self._total, dict(sorted(by_http.items()))

    def clear(self) -> None:
        """Empty the log and its counters."""
        with self._lock:
            self._log.clear()
            self._counts.clear()
            self._total = 0


class Writers:
    """Write requests in flight per source, and the most seen at once; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self._most: dict[str, int] = {}

    def enter(self, sources: set[str]) -> tuple[str, ...]:
        """Count a write request in flight for each of `sources`; returns them for `exit`."""
        with self._lock:
            for source in sources:
                self._in_flight[source] += 1
                self._most[source] = max(self._most.get(source, 0), self._in_flight[source])
            return tuple(sources)

    def exit(self, sources: tuple[str, ...]) -> None:
        """End what `enter` started."""
        if sources:
            with self._lock:
                for source in sources:
                    self._in_flight[source] -= 1

    def most(self) -> dict[str, int]:
        """The most write requests seen at once, per source."""
        with self._lock:
            return dict(self._most)

    def in_flight(self) -> dict[str, int]:
        """The write requests in flight now, per source that has any."""
        with self._lock:
            return {k: v for k, v in self._in_flight.items() if v}

    def clear(self) -> None:
        """Forget every count."""
        with self._lock:
            self._in_flight.clear()
            self._most.clear()
