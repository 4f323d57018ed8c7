"""Query embeddings from the embedder service over gRPC (``EmbedderService.Embed``
with input kind QUERY), for search and for reindex validation probes.

The embedder's failures become the indexer's domain errors, so the caller of a
search sees what to do about them:

- embedder process unreachable, or Triton behind it down → UNAVAILABLE
  ``EMBEDDER_UNAVAILABLE`` (retry with backoff);
- no answer within the deadline → DEADLINE_EXCEEDED ``EMBEDDER_TIMEOUT``;
- every query slot busy → RESOURCE_EXHAUSTED ``EMBEDDER_OVERLOADED``;
- the collection's model is not served → NOT_FOUND ``UNKNOWN_MODEL`` (the
  embedder's own code for it; the collection's config names a model this
  deployment does not serve);
- a text the model refuses (blank, too long) → INVALID_ARGUMENT on ``field``.

Anything else (our own token refused, a bug) is left to the error interceptor,
which logs it and answers INTERNAL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from kit.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from kit.grpc.client import ServiceClient
from kit.grpc.status import error_info, status_from_rpc_error
from kit.logs import get_logger
from vectorops.common.v1 import config_pb2
from vectorops.embedder.v1 import embedder_service_pb2, embedder_service_pb2_grpc

log = get_logger(__name__)


class EmbedderCallError(RuntimeError):
    """The embedder answered in a way that is our bug, not the caller's problem."""


@dataclass(frozen=True)
class QueryEmbeddings:
    """The vectors of one Embed call: the model that answered (canonical name) and
    one float32 vector per text, in order."""

    model: str
    vectors: list[np.ndarray]


class EmbedderClient(ServiceClient):
    STUB = embedder_service_pb2_grpc.EmbedderServiceStub

    async def embed_queries(
        self,
        model: str,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        timeout_seconds: float | None = None,
        field: str = "query",
    ) -> QueryEmbeddings:
        """Embed ``texts`` as queries with ``model``. ``instruction`` None: the
        model's own query instruction; "" none at all. ``timeout_seconds`` bounds
        the call below the client's default (e.g. a caller's remaining deadline)."""
        request = embedder_service_pb2.EmbedRequest(
            model=model, texts=list(texts), input_kind=config_pb2.INPUT_KIND_QUERY
        )
        if instruction is not None:
            request.instruction = instruction
        timeout = self._timeout_seconds
        if timeout_seconds is not None:
            timeout = max(0.001, min(timeout, timeout_seconds))
        try:
            reply = await self._stub.Embed(request, metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise self._domain_error(error, model) from None
        return QueryEmbeddings(reply.model, _vectors(reply, field))

    def _domain_error(self, error: grpc.aio.AioRpcError, model: str) -> Exception:
        code = error.code()
        status = status_from_rpc_error(error)
        info = error_info(status) if status is not None else None
        reason = info.reason if info is not None else ""
        if code == grpc.StatusCode.UNAVAILABLE:
            log.warning("embedder.unavailable", address=self._address, detail=error.details())
            return Unavailable(
                "the embedder is unavailable; retry with backoff", reason="EMBEDDER_UNAVAILABLE"
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(
                "the embedder did not answer in time", reason="EMBEDDER_TIMEOUT"
            )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason == "EMBEDDER_OVERLOADED":
            return ResourceExhausted(
                "the embedder is overloaded; retry with backoff",
                reason="EMBEDDER_OVERLOADED",
                metadata=dict(info.metadata) if info is not None else {},
            )
        if reason == "UNKNOWN_MODEL":
            return NotFound(
                f"the embedder does not serve the model {model!r}",
                reason="UNKNOWN_MODEL",
                metadata={"model": model},
            )
        return EmbedderCallError(f"embedder call failed: {code.name} {reason or error.details()}")


def _vectors(reply: embedder_service_pb2.EmbedResponse, field: str) -> list[np.ndarray]:
    vectors: list[np.ndarray] = []
    for result in reply.results:
        if result.WhichOneof("result") != "vector":
            message = f"{field} cannot be embedded: {result.error.reason} {result.error.message}"
            raise InvalidArgument(
                message.strip(),
                reason="INVALID_ARGUMENT",
                metadata={"field": field},
                field_violations=[FieldViolation(field, result.error.reason)],
            )
        vectors.append(np.asarray(result.vector.values, dtype=np.float32))
    return vectors
