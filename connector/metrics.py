"""Prometheus metrics of the daemon: what operators graph and alert on.

One `Metrics` object per process owns its own `CollectorRegistry` (tests build as many as they
like); `/metrics` serves it. Label values are bounded: source names from the config, action kinds,
outcome labels from `errors.py`, Fragment endpoint templates and status codes.

Retries are counted once, here (`fragment_connector_fragment_retries_total`): stamina, finding
prometheus_client installed, would also count them as `stamina_retries_total` in the default
registry, which `/metrics` does not serve, under a `callable` label that cannot tell Fragment's
retries from a back-office's. A process that builds `Metrics` keeps stamina's log line and
turns that second counter off.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from stamina.instrumentation import StructlogOnRetryHook, set_on_retry_hooks

PREFIX = "fragment_connector"
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The connector's metric families, registered in a registry of their own."""

    def __init__(self) -> None:
        set_on_retry_hooks([StructlogOnRetryHook])  # one retry counter: `retries` below
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycles = Counter(
            f"{PREFIX}_cycles",
            "Reconciliation cycles run, by source, kind (full|incremental) and outcome.",
            ["source", "kind", "outcome"],
            registry=r,
        )
        self.tasks = Counter(
            f"{PREFIX}_tasks",
            "Task writes applied in Fragment, by source and action (create|update|reopen|close).",
            ["source", "action"],
            registry=r,
        )
        self.action_failures = Counter(
            f"{PREFIX}_action_failures",
            "Planned actions Fragment did not apply, by source.",
            ["source"],
            registry=r,
        )
        self.guard_trips = Counter(
            f"{PREFIX}_guard_trips",
            "Cycles in which a safety guard refused actions, by source and guard.",
            ["source", "guard"],
            registry=r,
        )
        self.invalid_records = Counter(
            f"{PREFIX}_invalid_records",
            "Back-office records skipped as invalid, by source.",
            ["source"],
            registry=r,
        )
        self.write_backs = Counter(
            f"{PREFIX}_write_backs",
            "Operator DONEs written back to a back-office, by source and outcome (closed|"
            "commented|already_closed|gone|rejected|failed|refused).",
            ["source", "outcome"],
            registry=r,
        )
        self.requests = Counter(
            f"{PREFIX}_fragment_requests",
            "Requests sent to Fragment, by method, endpoint and status (or network error).",
            ["method", "endpoint", "status"],
            registry=r,
        )
        self.retries = Counter(
            f"{PREFIX}_fragment_retries",
            "Fragment requests retried after a 429, a 5xx or a network error.",
            registry=r,
        )
        self.cycle_duration = Histogram(
            f"{PREFIX}_cycle_duration_seconds",
            "Duration of one source's cycle.",
            ["source", "kind"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            f"{PREFIX}_last_success_timestamp_seconds",
            "Unix time of the last successful cycle, by source and kind.",
            ["source", "kind"],
            registry=r,
        )
        self.source_held = Gauge(
            f"{PREFIX}_source_held",
            "1 when this replica works the source, 0 when another replica holds it.",
            ["source"],
            registry=r,
        )

    def record_request(self, method: str, endpoint: str, outcome: str) -> None:
        """Count one Fragment request (called by the client for every attempt)."""
        self.requests.labels(method, endpoint, outcome).inc()

    def record_retry(self) -> None:
        """Count one retry."""
        self.retries.inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
