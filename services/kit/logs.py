"""structlog JSON logs: one event per line, with request/operation/trace ids bound.

Ids are bound with ``structlog.contextvars`` so every line logged while a
request or an operation is handled carries them without passing loggers around.
"""

from __future__ import annotations

import logging
import sys

import structlog

bind_ids = structlog.contextvars.bind_contextvars
clear_ids = structlog.contextvars.clear_contextvars


def configure_logging(service: str, level: str = "info") -> None:
    """Route structlog and the standard library through one JSON renderer on stderr."""

    def add_service(_logger: object, _method: str, event: dict) -> dict:
        event.setdefault("service", service)
        return event

    shared = [
        add_service,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
