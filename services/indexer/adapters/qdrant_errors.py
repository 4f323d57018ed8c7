"""qdrant-client's errors as the vector store's own.

A server answers over gRPC (the store always asks for it) with a status code
(``grpc.aio.AioRpcError``). qdrant-client's local mode, which runs the same API in
process, raises ``ValueError`` for every refusal, told apart only by its message
("Collection x not found", "… already exists", "Wrong input: …", or numpy's own
words for a query vector of the wrong size).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from indexer.adapters.vector_store import (
    InvalidVectorStoreArgument,
    VectorCollectionConflict,
    VectorCollectionNotFound,
    VectorStoreUnavailable,
)
from kit.errors import DomainError

_NOT_FOUND = re.compile(r"not found|doesn't exist|does not exist", re.IGNORECASE)
_ALREADY_EXISTS = re.compile(r"already exists", re.IGNORECASE)

_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def translate(error: BaseException, subject: str) -> DomainError | None:
    """The vector-store error that ``error`` means, or None when it is none of ours
    (a bug, or a server failure: let it through as it is). ``subject`` names the
    collection or alias the call was about, for the error's metadata."""
    if isinstance(error, grpc.RpcError):
        return _from_grpc(error, subject)
    if isinstance(error, ValueError):
        return _from_message(str(error), subject)
    return None


@contextmanager
def translated(subject: str) -> Iterator[None]:
    """Run a block of qdrant-client calls, raising our errors for theirs."""
    try:
        yield
    except DomainError:
        raise
    except Exception as error:
        ours = translate(error, subject)
        if ours is None:
            raise
        raise ours from error


def _from_grpc(error: grpc.RpcError, subject: str) -> DomainError | None:
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = (error.details() if callable(getattr(error, "details", None)) else None) or ""
    if code is grpc.StatusCode.NOT_FOUND:
        return _not_found(subject, details)
    if code is grpc.StatusCode.ALREADY_EXISTS:
        return _conflict(subject, details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        # A server reports a taken collection name as bad input.
        if _ALREADY_EXISTS.search(details):
            return _conflict(subject, details)
        return _invalid(subject, details)
    if code in _UNAVAILABLE_CODES:
        return VectorStoreUnavailable(f"Qdrant is unavailable ({code.name}): {details}")
    return None


def _from_message(message: str, subject: str) -> DomainError:
    if _NOT_FOUND.search(message):
        return _not_found(subject, message)
    if _ALREADY_EXISTS.search(message):
        return _conflict(subject, message)
    return _invalid(subject, message)


def _invalid(subject: str, message: str) -> InvalidVectorStoreArgument:
    return InvalidVectorStoreArgument(
        f"the vector store refused the request: {message}", metadata={"collection": subject}
    )


def _not_found(subject: str, message: str) -> VectorCollectionNotFound:
    return VectorCollectionNotFound(
        f"no vector collection {subject!r} ({message})", metadata={"collection": subject}
    )


def _conflict(subject: str, message: str) -> VectorCollectionConflict:
    return VectorCollectionConflict(
        f"vector collection {subject!r} conflicts: {message}", metadata={"collection": subject}
    )
