"""The Fragment API client: the only code that talks to Fragment (see `client`)."""

from connector.fragment.client import (
    BatchAnswer,
    FragmentClient,
    RequestListener,
    RequestStats,
    TaskPage,
    parse_task,
)
from connector.fragment.lookup import Lookup, TaskFinder
from connector.fragment.pacing import Pacer, TokenBucket

__all__ = [
    "BatchAnswer",
    "FragmentClient",
    "Lookup",
    "Pacer",
    "RequestListener",
    "RequestStats",
    "TaskFinder",
    "TaskPage",
    "TokenBucket",
    "parse_task",
]
