"""Fault injection (test mode): the knobs, the deterministic rules, and the draw per request.

`Faults` are what `PUT /_sandbox/faults` sets: probabilities of a 429, a 5xx, a dropped
connection or a lost answer, a latency, and `fail_next` rules that fail the next matching
requests. A `FaultInjector` draws them for each /api/v1 request from `random.Random(seed)`, one
draw per knob that is set, so a given seed and knob set replay identically; `app.py` carries out
the `FaultDecision`.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from connector.sandbox.wire import is_int, is_number


@dataclass(frozen=True, slots=True)
class FailRule:
    """One deterministic fault: the next `count` requests matching `method` and `path` fail.

    `path` is relative to /api/v1 and matches the concrete path (`/tasks/batch`), the route
    template (`/tasks/{uid}`) or anything (`*`); `method` may also be `*`. `status` is an HTTP
    status to answer with, `"drop"` (close the connection before handling), `"lost"` (handle
    the request, apply its write, then close the connection without answering) or `"partial"`
    (a batch write whose last item is neither applied nor answered, the rest as usual: a 200
    that does not account for every item).
    """

    method: str
    path: str
    status: int | Literal["drop", "lost", "partial"]
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise ValueError("fail_next.method must be an HTTP method or '*'")
        if not isinstance(self.path, str) or not (self.path == "*" or self.path.startswith("/")):
            raise ValueError("fail_next.path must start with '/' or be '*'")
        if self.status not in ("drop", "lost", "partial") and not (
            is_int(self.status) and 400 <= cast(int, self.status) <= 599
        ):
            raise ValueError(
                "fail_next.status must be a 4xx/5xx status, 'drop', 'lost' or 'partial'"
            )
        if not (is_int(self.count) and self.count >= 1):
            raise ValueError("fail_next.count must be an integer >= 1")

    def matches(self, method: str, path: str, route: str) -> bool:
        """Whether a request to `path` (routed as `route`) with `method` is one this rule fails."""
        return (self.method == "*" or self.method.upper() == method) and (
            self.path == "*" or self.path == path or self.path == route
        )


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault knobs for /api/v1 (test mode only), drawn from `random.Random(config.seed)`."""

    p_429: float = 0.0
    p_5xx: float = 0.0
    latency_s: float = 0.0
    p_drop: float = 0.0
    p_lost_response: float = 0.0
    retry_after_s: int = 1
    fail_next: tuple[FailRule, ...] = ()

    def __post_init__(self) -> None:
        for name in ("p_429", "p_5xx", "p_drop", "p_lost_response"):
            value = getattr(self, name)
            if not (is_number(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a probability between 0 and 1")
        if not (is_number(self.latency_s) and self.latency_s >= 0):
            raise ValueError("latency_s must be a number >= 0")
        if not (is_int(self.retry_after_s) and self.retry_after_s >= 0):
            raise ValueError("retry_after_s must be an integer >= 0")
        # A list passed by a caller would make the frozen dataclass mutable from outside.
        object.__setattr__(self, "fail_next", tuple(self.fail_next))

    @property
    def active(self) -> bool:
        """Whether any knob is set, so that a request must consult the faults at all."""
        return bool(
            self.p_429
            or self.p_5xx
            or self.latency_s
            or self.p_drop
            or self.p_lost_response
            or self.fail_next
        )

    @classmethod
    def from_json(cls, data: object) -> Faults:
        """Build faults from the JSON of `PUT /_sandbox/faults`; raise ValueError if malformed."""
        if not isinstance(data, dict):
            raise ValueError("faults must be a JSON object")
        known = {"p_429", "p_5xx", "latency_s", "p_drop", "p_lost_response", "retry_after_s"}
        unknown = set(data) - known - {"fail_next"}
        if unknown:
            raise ValueError(f"unknown fault knobs: {', '.join(sorted(unknown))}")
        rules_raw = data.get("fail_next", [])
        if not isinstance(rules_raw, list):
            raise ValueError("fail_next must be a list of rules")
        rules = []
        for raw in rules_raw:
            if not isinstance(raw, dict) or set(raw) - {"method", "path", "status", "count"}:
                raise ValueError("each fail_next rule is {method, path, status, count}")
            rules.append(
                FailRule(
                    method=raw.get("method", "*"),
                    path=raw.get("path", "*"),
                    status=raw.get("status", 500),
                    count=raw.get("count", 1),
                )
            )
        return cls(**{k: v for k, v in data.items() if k in known}, fail_next=tuple(rules))

    def to_json(self) -> dict[str, Any]:
        """The JSON form served by `GET /_sandbox/faults`."""
        return {
            "p_429": self.p_429,
            "p_5xx": self.p_5xx,
            "latency_s": self.latency_s,
            "p_drop": self.p_drop,
            "p_lost_response": self.p_lost_response,
            "retry_after_s": self.retry_after_s,
            "fail_next": [
                {"method": r.method, "path": r.path, "status": r.status, "count": r.count}
                for r in self.fail_next
            ],
        }


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What the fault knobs make of one request; app.py carries it out."""

    latency_s: float = 0.0
    status: int | None = None
    retry_after_s: int | None = None
    drop: bool = False
    lose_response: bool = False
    partial: bool = False


class FaultInjector:
    """The fault knobs in force and their random draws; thread-safe."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._faults = Faults()
        self._rules: list[list[Any]] = []  # [FailRule, remaining count], consumed in order
        self._rng = random.Random(seed)

    def current(self) -> Faults:
        """The fault knobs in force, `fail_next` with the counts still to be consumed."""
        with self._lock:
            rules = tuple(replace(rule, count=left) for rule, left in self._rules)
            return replace(self._faults, fail_next=rules)

    def set(self, faults: Faults) -> None:
        """Replace the fault knobs and re-seed their random draws."""
        with self._lock:
            self._faults = faults
            self._rules = [[rule, rule.count] for rule in faults.fail_next]
            self._rng = random.Random(self._seed)

    def reset(self) -> None:
        """No faults, as at start."""
        self.set(Faults())

    @property
    def active(self) -> bool:
        """Whether any knob is set (read without the lock: the fast path of every request)."""
        return self._faults.active

    def draw(self, method: str, path: str, route: str, *, write: bool) -> FaultDecision:
        """Decide the faults of one request to `path` (routed as `route`)."""
        faults = self._faults
        with self._lock:
            latency = faults.latency_s
            for entry in self._rules:
                rule: FailRule = entry[0]
                if rule.matches(method, path, route):
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._rules.remove(entry)
                    if rule.status == "drop":
                        return FaultDecision(latency_s=latency, drop=True)
                    if rule.status == "lost":
                        return FaultDecision(latency_s=latency, lose_response=True)
                    if rule.status == "partial":
                        return FaultDecision(latency_s=latency, partial=True)
                    status = rule.status
                    retry = faults.retry_after_s if status in (429, 503) else None
                    return FaultDecision(latency_s=latency, status=status, retry_after_s=retry)
            rng = self._rng
            # One draw per knob that is set, so a given seed and knob set replay identically.
            if faults.p_drop and rng.random() < faults.p_drop:
                return FaultDecision(latency_s=latency, drop=True)
            if faults.p_429 and rng.random() < faults.p_429:
                return FaultDecision(
                    latency_s=latency, status=429, retry_after_s=faults.retry_after_s
                )
            if faults.p_5xx and rng.random() < faults.p_5xx:
                status = rng.choice((500, 502, 503))
                retry = faults.retry_after_s if status == 503 else None
                return FaultDecision(latency_s=latency, status=status, retry_after_s=retry)
            lose = write and bool(faults.p_lost_response) and rng.random() < faults.p_lost_response
            return FaultDecision(latency_s=latency, lose_response=lose)
