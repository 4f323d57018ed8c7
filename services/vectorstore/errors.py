"""What a Qdrant server answers when a call fails, for the vector store's errors.

``indexer.adapters.qdrant_errors`` reads a server's status codes (and, for a taken
name, its message) back into the vector store's errors; these are the codes and
words a real server uses: NOT_FOUND "Not found: …", ALREADY_EXISTS "… already
exists", INVALID_ARGUMENT "Wrong input: …". What this server does not serve is
UNIMPLEMENTED, with the reason in the message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from indexer.adapters.vector_store import (
    InvalidVectorStoreArgument,
    SystemCollectionProtected,
    VectorCollectionConflict,
    VectorCollectionNotFound,
)
from kit.logs import get_logger

log = get_logger(__name__)

# The engine raises a bare Exception; these words mark the request's fault.
_ENGINE_BAD_INPUT = re.compile(r"dimension error|wrong input|bad input|format error", re.I)


class Unsupported(Exception):
    """A request this server does not serve (a feature outside the subset)."""


class CollectionExists(Exception):
    """Create of a name that is taken (a collection of any config, or an alias)."""


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a Qdrant server would answer ``error`` with."""
    if isinstance(error, Unsupported):
        return grpc.StatusCode.UNIMPLEMENTED, f"Not supported by vectorstore: {error}"
    if isinstance(error, VectorCollectionNotFound):
        return grpc.StatusCode.NOT_FOUND, f"Not found: {error.message}"
    if isinstance(error, (CollectionExists, VectorCollectionConflict)):
        return grpc.StatusCode.ALREADY_EXISTS, f"Wrong input: {_message(error)}"
    if isinstance(error, InvalidVectorStoreArgument):
        return grpc.StatusCode.INVALID_ARGUMENT, f"Wrong input: {error.message}"
    if isinstance(error, SystemCollectionProtected):
        return grpc.StatusCode.FAILED_PRECONDITION, error.message
    if type(error) is Exception and _ENGINE_BAD_INPUT.search(str(error)):
        return grpc.StatusCode.INVALID_ARGUMENT, f"Wrong input: {error}"
    return grpc.StatusCode.INTERNAL, f"Service internal error: {error}"


def _message(error: BaseException) -> str:
    return getattr(error, "message", None) or str(error)


Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])


def answering(method: Method) -> Method:
    """Turn a servicer method's exceptions into the status a server would send."""

    @functools.wraps(method)
    async def answer(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except Exception as error:  # noqa: BLE001 - every failure gets a status
            code, details = status_of(error)
            if code is grpc.StatusCode.INTERNAL:
                log.error("vectorstore.rpc_failed", method=method.__name__, exc_info=error)
            await context.abort(code, details)

    return answer  # type: ignore[return-value]


def refusing_the_rest(servicer: type) -> type:
    """``servicer`` with every RPC of its generated base that it does not define
    answering UNIMPLEMENTED, naming the method."""
    base = next(b for b in servicer.__mro__[1:] if b.__name__.endswith("Servicer"))
    service = base.__name__.removesuffix("Servicer")

    def refuse(method: str) -> Callable[..., Awaitable[Any]]:
        async def refused(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Not supported by vectorstore: qdrant.{service}/{method} (it serves only "
                "what the vectorops indexer calls)",
            )

        return refused

    for name, value in vars(base).items():
        if callable(value) and not name.startswith("_") and name not in vars(servicer):
            setattr(servicer, name, refuse(name))
    return servicer
