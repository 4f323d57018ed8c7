"""What an error raised by a step means for its operation.

Two kinds: transient (Postgres, NATS or the vector store unreachable, a
timeout) — the command is delivered again with backoff, and after its last
delivery the dead-letter path fails the operation RETRIES_EXHAUSTED; and final —
the operation fails now with an ``OperationError`` type and a sanitised message.
An unreachable *embedder* is final here: the embed queue has already waited
``indexer_embedder_wait_seconds`` for it before giving up.
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.errors

from indexer.domain.operation_plan import error_type_for
from kit.db.outage import POSTGRES_CONNECTION_LOST
from kit.errors import DomainError
from kit.operation_protocol import ErrorType
from kit.sanitise import sanitise

_TRANSIENT: tuple[type[BaseException], ...] = (
    *POSTGRES_CONNECTION_LOST,
    nats.errors.Error,
    ConnectionError,
    TimeoutError,
)
_BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
_SOURCE_ERRORS = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
_RETRYABLE = frozenset({ErrorType.EMBEDDER_UNAVAILABLE})


def is_transient(error: BaseException) -> bool:
    if isinstance(error, DomainError):
        return error.reason == _BACKEND_UNAVAILABLE
    return isinstance(error, _TRANSIENT)


@dataclass(frozen=True)
class Failure:
    type: ErrorType
    message: str  # sanitised
    retryable: bool


def failure_of(error: BaseException) -> Failure:
    """The operation error a final failure is reported as."""
    if isinstance(error, DomainError):
        kind = error_type_for(error.reason)
        text = error.message
    elif isinstance(error, _SOURCE_ERRORS):
        kind = ErrorType.SOURCE_UNREADABLE
        text = f"cannot read the source: {error.strerror or error}"
        if error.filename:
            text += f": {error.filename}"
    else:
        kind = ErrorType.HANDLER_ERROR
        text = f"{type(error).__name__}: {error}"
    return Failure(kind, sanitise(text), kind in _RETRYABLE)
