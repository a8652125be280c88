"""Fragment's rate limit as the sandbox enforces it: a token bucket per token (or client).

Each bucket holds up to `burst` requests and refills at `requests_per_minute`; a request that
finds it empty is answered 429 with the seconds until a token is back (`app.py`).
"""

from __future__ import annotations

import threading
import time


class RateBuckets:
    """One token bucket per key; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, *, requests_per_minute: float, burst: int) -> float | None:
        """Spend one request of `key`'s budget; None if allowed, else seconds to wait."""
        capacity = float(burst)
        rate = requests_per_minute / 60.0
        with self._lock:
            now = time.monotonic()
            tokens, last = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate

    def clear(self) -> None:
        """Every bucket full again, as after a restart."""
        with self._lock:
            self._buckets.clear()
