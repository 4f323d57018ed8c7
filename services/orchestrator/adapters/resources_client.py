"""The resources service over gRPC (``ResourceService``, service role), for
the admission of an operation before it is accepted and the release of its
reservation once it ended.

What an answer means for the request being admitted:

- a reservation (new, or the operation's own again: Reserve is idempotent per
  operation) → accept;
- RESOURCE_EXHAUSTED → the same to the caller: its ErrorInfo reason
  (QUOTA_EXCEEDED or INSUFFICIENT_HEADROOM), metadata (limit, usage,
  requested; or free and floor) and QuotaFailure violations, as resources said;
- unreachable, no answer in time, or UNIMPLEMENTED → UNAVAILABLE
  ``BACKEND_UNAVAILABLE``: nothing may be accepted unchecked;
- anything else (our token refused, a malformed request) is a bug here and
  surfaces as INTERNAL.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2

from kit.errors import QuotaViolation, ResourceExhausted, Unavailable
from kit.grpc.client import ServiceClient
from kit.grpc.status import error_info, status_from_rpc_error
from kit.logs import get_logger
from kit.reservations import release_reservation
from vectorops.common.v1 import config_pb2
from vectorops.resources.v1 import resource_service_pb2, resource_service_pb2_grpc

log = get_logger(__name__)

_UNREACHABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
)


@dataclass(frozen=True)
class Hold:
    """What one Reserve asks for."""

    operation_id: str
    owner_id: str
    collection_id: str
    operation_type: int  # vectorops.common.v1.OperationType
    vectors: int = 0
    bytes: int = 0
    documents: int = 0


class ResourcesCallError(RuntimeError):
    """The resources service answered in a way that is our bug."""


def _quota_violations(error: grpc.aio.AioRpcError) -> list[QuotaViolation]:
    status = status_from_rpc_error(error)
    found: list[QuotaViolation] = []
    for detail in status.details if status is not None else ():
        failure = error_details_pb2.QuotaFailure()
        if detail.Unpack(failure):
            found += [QuotaViolation(v.subject, v.description) for v in failure.violations]
    return found


def _refusal(error: grpc.aio.AioRpcError, call: str) -> Exception:
    code = error.code()
    status = status_from_rpc_error(error)
    info = error_info(status) if status is not None else None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(
            error.details() or "the owner's quota cannot hold the operation",
            reason=info.reason if info is not None and info.reason else "QUOTA_EXCEEDED",
            metadata=dict(info.metadata) if info is not None else {},
            quota_violations=_quota_violations(error),
        )
    if code in _UNREACHABLE:
        log.warning("resources.unavailable", call=call, code=code.name, detail=error.details())
        return Unavailable(
            f"the resources service is unavailable ({code.name}): the request cannot be "
            "checked against the quota, so it is not accepted; retry later",
            reason="BACKEND_UNAVAILABLE",
            metadata={"backend": "resources"},
        )
    reason = info.reason if info is not None else ""
    return ResourcesCallError(f"{call} failed: {code.name} {reason or error.details()}")


def quantization_value(name: str) -> int:
    """``float16`` → QUANTIZATION_FLOAT16 (unknown or empty: unspecified)."""
    key = f"QUANTIZATION_{name.upper()}"
    return config_pb2.Quantization.Value(key) if key in config_pb2.Quantization.keys() else 0


class ResourcesClient(ServiceClient):
    STUB = resource_service_pb2_grpc.ResourceServiceStub

    async def estimate_vectors(
        self,
        *,
        owner_id: str,
        operation_type: int,
        documents: int,
        document_bytes: int,
        dimension: int,
        quantization: str,
        chunk_size: int,
        chunk_overlap: int,
    ) -> int:
        """The vectors the documents will become (the resources' own estimate)."""
        request = resource_service_pb2.EstimateRequest(
            owner_id=owner_id,
            operation_type=operation_type,
            document_count=documents,
            total_document_bytes=document_bytes,
            dimension=dimension,
            quantization=quantization_value(quantization),
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
        )
        try:
            reply = await self._stub.Estimate(
                request, metadata=self._metadata, timeout=self._timeout_seconds
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error, "Estimate") from None
        return reply.estimated_vectors

    async def reserve(self, hold: Hold) -> bool:
        """Hold room for the operation; True if it was held already (a replay)."""
        request = resource_service_pb2.ReserveRequest(
            operation_id=hold.operation_id,
            owner_id=hold.owner_id,
            collection_id=hold.collection_id,
            operation_type=hold.operation_type,
            vectors=hold.vectors,
            bytes=hold.bytes,
            documents=hold.documents,
            request_id=f"{hold.operation_id}:reserve",
        )
        try:
            reply = await self._stub.Reserve(
                request, metadata=self._metadata, timeout=self._timeout_seconds
            )
        except grpc.aio.AioRpcError as error:
            raise _refusal(error, "Reserve") from None
        return reply.replayed

    async def release(self, operation_id: str, *, keep_room: bool = False) -> bool:
        """Give the operation's reservation back (``keep_room``: only its place
        among the running operations); best effort."""
        return await release_reservation(
            self._stub,
            operation_id,
            metadata=self._metadata,
            timeout_seconds=self._timeout_seconds,
            keep_room=keep_room,
        )
