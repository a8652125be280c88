"""The Fragment API client: the only code that talks to Fragment (see `client`)."""

from connector.fragment.client import (
    FragmentClient,
    RequestListener,
    RequestStats,
    TaskPage,
    parse_task,
)
from connector.fragment.pacing import Pacer, TokenBucket

__all__ = [
    "FragmentClient",
    "Pacer",
    "RequestListener",
    "RequestStats",
    "TaskPage",
    "TokenBucket",
    "parse_task",
]
