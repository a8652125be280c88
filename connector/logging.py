"""Log set-up: structlog for our events and the stdlib records of our libraries, one format.

JSON lines when stderr is not a terminal (a container), coloured console lines when it is. The
one redactor (`connector.redaction`) runs as a processor: it replaces the value of any key that
names a secret, and masks any configured secret value wherever it appears in a string, before
anything is rendered.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from connector.redaction import REDACTED, REDACTOR, Redactor

PROGRESS_LOGGER = "connector.progress"  # connector.progress logs its lines there

__all__ = ["REDACTED", "REDACTOR", "Redactor", "configure_logging"]


def configure_logging(
    level: str = "INFO", *, json_output: bool | None = None, quiet_reported_errors: bool = False
) -> None:
    """Route structlog and stdlib logging to stderr, JSON unless stderr is a terminal.

    `quiet_reported_errors` (a one-shot command on a terminal): the cycle's errors are left to
    the command's own output rather than printed twice.
    """
    if json_output is None:
        json_output = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        REDACTOR,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json_output:
        final.append(structlog.processors.dict_tracebacks)
    final.append(renderer)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; uvicorn and apscheduler are chatty too.
    for noisy in ("httpx", "httpcore", "uvicorn", "uvicorn.error", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # The `cycle.progress` lines (connector.progress) show at the default level too: a first
    # import off a terminal takes minutes and must never be silent.
    logging.getLogger(PROGRESS_LOGGER).setLevel(min(logging.INFO, root.level))
    if not json_output and quiet_reported_errors:
        handler.addFilter(_reported_elsewhere)


class _CurrentStderr:
    """Whatever `sys.stderr` is at the time of writing: while rich draws progress bars it
    stands in for stderr and prints log lines above them instead of through them."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _reported_elsewhere(record: logging.LogRecord) -> bool:
    """Drop the cycle's error lines: on a terminal the command's report (`FAILED`, `REFUSED`)
    or its `error:` line says the same, and one is enough."""
    return not (record.levelno >= logging.ERROR and record.name == "connector.cycle")
