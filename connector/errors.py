"""Every error the connector raises, and the one table that maps them to exit codes and labels.

The tree is grouped by what the caller should do next::

    ConnectorError
    ├── ConfigError                  bad config or usage: fix it, nothing was done (exit 4)
    ├── SourceError                  a back-office failed: that source gets no closes (exit 1)
    │   ├── AdapterAuthError         credentials refused
    │   ├── AdapterConfigError       options the back-office rejects (unknown project, bad query)
    │   ├── AdapterUnavailable       network, timeouts, 5xx after retries
    │   ├── AdapterDataError         the back-office answered something unusable
    │   ├── TicketGone               a write-back's ticket no longer exists (404)
    │   └── WriteBackRejected        the back-office refused a write-back (409/422: transition)
    ├── FragmentError                Fragment refused or failed (exit 1)
    │   ├── FragmentAuthError        401/403: the token is wrong or lacks rights
    │   ├── FragmentValidationError  400/422: the request was refused, with the API's detail
    │   │   └── FragmentPayloadTooLarge  413: the body is over a (proxy's) limit: split the batch
    │   ├── FragmentRateLimited      429 still returned once retries ran out
    │   ├── FragmentServerError      5xx still returned once retries ran out
    │   ├── FragmentNetworkError     connection refused, reset, timed out
    │   └── FragmentProtocolError    an answer that is not the documented JSON shape
    │       └── FragmentFilterIgnored  an answer holding items outside the filter it was asked
    └── StateError                   the local state store failed (exit 1)
        ├── LeaseLostError           this replica lost a source's lock mid-cycle: it stopped writing
        └── SourceHeldElsewhere      a running daemon holds the source's lock: one-shot skipped it

Foreign exceptions (httpx, SQLAlchemy, pydantic) are translated into these at the seam where they
occur; callers only ever see this tree.

A source's cycle ends with one outcome label (the run history's, the metrics' and the status
page's `outcome`): an error's label from the table below when the source failed, else an
`Outcome` (`ok`, `refused`, `partial`), mapped to its exit code in the same place.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""


class ConfigError(ConnectorError):
    """The configuration or the command line is invalid."""


class SourceError(ConnectorError):
    """A source adapter could not produce a complete, trustworthy result."""

    # The HTTP status the back-office answered, when an HTTP answer caused the error: a
    # write-back tells a ticket gone (404) from a refused transition (409/422) by it.
    status: int | None = None


class AdapterAuthError(SourceError):
    """The back-office refused the adapter's credentials."""


class AdapterConfigError(SourceError):
    """The back-office rejected the adapter's options (unknown project, bad query...)."""


class AdapterUnavailable(SourceError):
    """The back-office could not be reached or kept failing."""


class AdapterDataError(SourceError):
    """The back-office answered with data the adapter cannot use."""


class TicketGone(SourceError):
    """A write-back's ticket no longer exists in the back-office (deleted, moved, 404)."""


class WriteBackRejected(SourceError):
    """The back-office refused a write-back as invalid (409/422: no such transition, stage...)."""


class FragmentError(ConnectorError):
    """The Fragment API refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FragmentAuthError(FragmentError):
    """The Fragment token was refused (401) or lacks rights (403)."""


class FragmentValidationError(FragmentError):
    """Fragment refused a request (400/422); `item_errors` maps batch index to message."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        item_errors: dict[int, str] | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.item_errors: dict[int, str] = item_errors or {}


class FragmentPayloadTooLarge(FragmentValidationError):
    """413: Fragment, or a proxy before it, refused the request body as too large.

    A validation error without item positions, so a batch that gets it is split in halves.
    """


class FragmentRateLimited(FragmentError):
    """Fragment kept answering 429 until the retry deadline ran out."""


class FragmentServerError(FragmentError):
    """Fragment kept answering 5xx until the retry deadline ran out."""


class FragmentNetworkError(FragmentError):
    """Fragment could not be reached (refused, reset, timed out)."""


class FragmentProtocolError(FragmentError):
    """Fragment answered something that is not the documented JSON shape."""


class FragmentFilterIgnored(FragmentProtocolError):
    """An answer held tasks the request's filter excludes: the server ignored the filter, so
    nothing can be concluded from what the answer lacks."""


class StateError(ConnectorError):
    """The local state store could not be read or written."""


class LeaseLostError(StateError):
    """The replica could no longer prove it holds a source's lock, so it stopped writing."""


class SourceHeldElsewhere(StateError):
    """Another process (a running daemon) holds the source's lock."""


EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_PENDING: Final = 2
EXIT_REFUSED: Final = 3
EXIT_USAGE: Final = 4

# The label of an error the connector raised on purpose but did not classify further.
GENERIC_ERROR: Final = "error"

# The one table: error class -> (exit code, metric/outcome label). Looked up along the MRO, so a
# subclass without its own row takes its parent's.
_TABLE: Final[dict[type[BaseException], tuple[int, str]]] = {
    ConfigError: (EXIT_USAGE, "config_error"),
    AdapterAuthError: (EXIT_FAILURE, "source_auth_error"),
    AdapterConfigError: (EXIT_FAILURE, "source_config_error"),
    AdapterUnavailable: (EXIT_FAILURE, "source_unavailable"),
    AdapterDataError: (EXIT_FAILURE, "source_data_error"),
    TicketGone: (EXIT_FAILURE, "ticket_gone"),
    WriteBackRejected: (EXIT_FAILURE, "write_back_rejected"),
    SourceError: (EXIT_FAILURE, "source_error"),
    FragmentAuthError: (EXIT_FAILURE, "fragment_auth_error"),
    FragmentPayloadTooLarge: (EXIT_FAILURE, "fragment_payload_too_large"),
    FragmentValidationError: (EXIT_FAILURE, "fragment_validation_error"),
    FragmentRateLimited: (EXIT_FAILURE, "fragment_rate_limited"),
    FragmentServerError: (EXIT_FAILURE, "fragment_server_error"),
    FragmentNetworkError: (EXIT_FAILURE, "fragment_network_error"),
    FragmentFilterIgnored: (EXIT_FAILURE, "fragment_filter_ignored"),
    FragmentProtocolError: (EXIT_FAILURE, "fragment_protocol_error"),
    FragmentError: (EXIT_FAILURE, "fragment_error"),
    LeaseLostError: (EXIT_FAILURE, "lease_lost"),
    SourceHeldElsewhere: (EXIT_FAILURE, "source_held_elsewhere"),
    StateError: (EXIT_FAILURE, "state_error"),
    ConnectorError: (EXIT_FAILURE, GENERIC_ERROR),
}


class Outcome(enum.StrEnum):
    """How a source's cycle ended when no error stopped it."""

    OK = "ok"  # everything planned was applied (or, in a dry-run, is pending)
    REFUSED = "refused"  # a guard held closes or write-backs back for a human
    PARTIAL = "partial"  # actions or write-backs were not applied, or tickets left unresolved


# The outcomes' exit codes. A source that failed exits 1 whatever its error's label (even a
# config error, which exits 4 only when it stops the whole run): the other sources went on.
_OUTCOMES: Final[dict[str, int]] = {
    Outcome.OK: EXIT_OK,
    Outcome.REFUSED: EXIT_REFUSED,
    Outcome.PARTIAL: EXIT_FAILURE,
}

# Most severe first: a usage error hides everything, a failure hides a refusal, and so on.
_SEVERITY: Final = (EXIT_USAGE, EXIT_FAILURE, EXIT_REFUSED, EXIT_PENDING, EXIT_OK)


def classify(error: BaseException) -> tuple[int, str]:
    """Return the (exit code, outcome label) of an error; unknown errors are internal failures."""
    for cls in type(error).__mro__:
        if cls in _TABLE:
            return _TABLE[cls]
    return EXIT_FAILURE, "internal_error"


def exit_code_for(error: BaseException) -> int:
    """Return the process exit code for an error."""
    return classify(error)[0]


def outcome_label(error: BaseException) -> str:
    """Return the stable label used in reports and metrics for an error."""
    return classify(error)[1]


def outcome_exit_code(label: str) -> int:
    """Return the exit code of a source's outcome label: an `Outcome`'s, or 1 for an error's."""
    return _OUTCOMES.get(label, EXIT_FAILURE)


def most_severe(codes: Iterable[int]) -> int:
    """Combine exit codes: 4, then 1, then 3, then 2 win over 0."""
    present = set(codes)
    for code in _SEVERITY:
        if code in present:
            return code
    return EXIT_OK
