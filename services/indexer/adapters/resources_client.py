"""Quota reservations from the resources service over gRPC
(``ResourceService.Reserve`` / ``Release``, service role), for the staging copy
a REINDEX builds.

What an answer means for the reindex:

- a reservation (new, or the same one again: Reserve is idempotent per
  operation) → go on;
- UNIMPLEMENTED (the resources service of this deployment does not do quotas
  yet) → go on without one, said loudly: the checkpoint, a warning and a metric;
- RESOURCE_EXHAUSTED → RESOURCE_EXHAUSTED ``QUOTA_EXCEEDED``: the operation fails;
- unreachable, or no answer in time → UNAVAILABLE ``BACKEND_UNAVAILABLE``: the
  command is retried with backoff.

Anything else (our token refused, a malformed request) is a bug here and
fails the operation as a handler error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import grpc

from kit.errors import QuotaViolation, ResourceExhausted, Unavailable
from kit.grpc.client import ServiceClient
from kit.grpc.status import error_info, status_from_rpc_error
from kit.reservations import release_reservation
from vectorops.common.v1 import operation_pb2
from vectorops.resources.v1 import resource_service_pb2, resource_service_pb2_grpc

UNAVAILABLE_NOTE = "unavailable: resources service answers UNIMPLEMENTED"


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    REPLAYED = "replayed"  # the operation's reservation, made by an earlier delivery
    UNAVAILABLE = "unavailable"  # the service does not implement Reserve: none was made


@dataclass(frozen=True)
class Reservation:
    status: ReservationStatus
    vectors: int = 0
    bytes: int = 0

    @property
    def note(self) -> str:
        """What the preflight checkpoint says about it."""
        if self.status is ReservationStatus.UNAVAILABLE:
            return UNAVAILABLE_NOTE
        return str(self.status)


class ResourcesCallError(RuntimeError):
    """The resources service answered in a way that is our bug."""


def _refusal(error: grpc.aio.AioRpcError, owner_id: str) -> Exception:
    """The domain error a failed Reserve call becomes (UNIMPLEMENTED is no error)."""
    code = error.code()
    status = status_from_rpc_error(error)
    info = error_info(status) if status is not None else None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        metadata = {"owner_id": owner_id, **(dict(info.metadata) if info is not None else {})}
        return ResourceExhausted(
            f"the owner's quota cannot hold the staging copy: {error.details() or code.name}",
            reason="QUOTA_EXCEEDED",
            metadata=metadata,
            quota_violations=[QuotaViolation(f"owner:{owner_id}", error.details() or "")],
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(
            f"the resources service is unavailable: {code.name}",
            reason="BACKEND_UNAVAILABLE",
            metadata={"backend": "resources"},
        )
    reason = info.reason if info is not None else ""
    return ResourcesCallError(f"Reserve failed: {code.name} {reason or error.details()}")


class ResourcesClient(ServiceClient):
    STUB = resource_service_pb2_grpc.ResourceServiceStub

    async def reserve(
        self,
        *,
        operation_id: str,
        owner_id: str,
        collection_id: str,
        vectors: int,
        bytes: int,
        documents: int,
    ) -> Reservation:
        """Reserve room for a REINDEX's staging copy; idempotent per operation."""
        request = resource_service_pb2.ReserveRequest(
            operation_id=operation_id,
            owner_id=owner_id,
            collection_id=collection_id,
            operation_type=operation_pb2.OPERATION_TYPE_REINDEX,
            vectors=vectors,
            bytes=bytes,
            documents=documents,
            request_id=f"{operation_id}:reserve",
        )
        try:
            reply = await self._stub.Reserve(
                request, metadata=self._metadata, timeout=self._timeout_seconds
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                return Reservation(ReservationStatus.UNAVAILABLE)
            raise _refusal(error, owner_id) from None
        held = reply.reservation
        status = ReservationStatus.REPLAYED if reply.replayed else ReservationStatus.RESERVED
        return Reservation(status, vectors=held.vectors, bytes=held.bytes)

    async def release(self, operation_id: str) -> bool:
        """Give the operation's reservation back; best effort."""
        return await release_reservation(
            self._stub,
            operation_id,
            metadata=self._metadata,
            timeout_seconds=self._timeout_seconds,
        )
