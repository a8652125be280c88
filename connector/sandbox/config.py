"""A sandbox's settings: its token, profile, rate limit, page and batch sizes, data file.

The `TUNABLE` ones can also be changed while it runs (`SandboxStore.update_config`, `PUT
/_sandbox/config`); the others hold for the sandbox's life.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from connector.sandbox.wire import is_int, is_number

TUNABLE: Final = (
    "requests_per_minute",
    "rate_burst",
    "max_batch_size",
    "max_page_size",
    "visibility_delay_s",
)
"""The `SandboxConfig` fields that `update_config` and `PUT /_sandbox/config` may change."""
PROFILES: Final = ("strict", "lenient")
"""`strict` (default): undocumented keys and parameters are refused with a 422, so a client that
sends one is caught. `lenient`: as a FastAPI service with default models, unknown keys and
parameters are ignored, and so are the optional filters the documentation does not state
(`status`, `fields.<key>`, `updated_at_after`, `order_by`, query conditions other than `==`)."""


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Settings of one sandbox; the `TUNABLE` ones can also be changed while it runs."""

    token: str = "sandbox-token"  # noqa: S105 - the fake's documented default, not a secret
    test_mode: bool = False
    requests_per_minute: float | None = 60.0
    rate_burst: int = 10
    max_batch_size: int = 100
    max_page_size: int = 100
    visibility_delay_s: float = 0.0
    data_path: Path | None = None
    seed: int = 0
    profile: str = "strict"

    @property
    def lenient(self) -> bool:
        """Whether this sandbox ignores what it does not know (see `PROFILES`)."""
        return self.profile == "lenient"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
        if isinstance(self.data_path, str):  # a path from a CLI option or a settings file
            object.__setattr__(self, "data_path", Path(self.data_path))
        rpm = self.requests_per_minute
        if rpm is not None and not (is_number(rpm) and rpm > 0):
            raise ValueError("requests_per_minute must be a positive number or None")
        for name in ("rate_burst", "max_batch_size", "max_page_size"):
            value = getattr(self, name)
            if not (is_int(value) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1")
        if not (is_number(self.visibility_delay_s) and self.visibility_delay_s >= 0):
            raise ValueError("visibility_delay_s must be a number >= 0")
