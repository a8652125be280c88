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

__all__ = ["REDACTED", "REDACTOR", "Redactor", "configure_logging"]


def configure_logging(level: str = "INFO", *, json_output: bool | None = None) -> None:
    """Route structlog and stdlib logging to stderr, JSON unless stderr is a terminal."""
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; uvicorn and apscheduler are chatty too.
    for noisy in ("httpx", "httpcore", "uvicorn", "uvicorn.error", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
