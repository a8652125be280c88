"""The Fragment API client: the only code that talks to Fragment (see `client`)."""

from connector.fragment.client import (
    BatchAnswer,
    FragmentClient,
    RequestListener,
    RequestStats,
    parse_task,
)
from connector.fragment.lookup import Lookup, TaskFinder
from connector.fragment.pacing import TokenBucket

__all__ = [
    "BatchAnswer",
    "FragmentClient",
    "Lookup",
    "RequestListener",
    "RequestStats",
    "TaskFinder",
    "TokenBucket",
    "parse_task",
]
