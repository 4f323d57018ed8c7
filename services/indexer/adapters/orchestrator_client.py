"""The orchestrator's internal ``ReindexControlService.CompleteReindex`` over
gRPC, called by the REINDEX switch step with the service-role token.

The orchestrator's refusals come back as the kit's domain errors with the same
code, ErrorInfo reason and metadata (``FailedPrecondition`` STALE_GENERATION,
VALIDATION_NOT_PASSED, ...), so the step decides on reasons, not on gRPC. An
orchestrator that cannot be reached, or that does not answer in time, is
``Unavailable`` (reason ``ORCHESTRATOR_UNAVAILABLE`` unless it said otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from indexer.collection_config import config_of
from kit.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotImplementedYet,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from kit.grpc.client import ServiceClient
from kit.grpc.status import error_info, status_from_rpc_error
from kit.logs import get_logger
from vectorops.common.v1 import operation_pb2
from vectorops.orchestrator.v1 import reindex_control_service_pb2 as control_pb2
from vectorops.orchestrator.v1 import reindex_control_service_pb2_grpc as control_grpc

log = get_logger(__name__)

ORCHESTRATOR_UNAVAILABLE = "ORCHESTRATOR_UNAVAILABLE"

_ERRORS: dict[grpc.StatusCode, type[DomainError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: NotImplementedYet,
}


@dataclass(frozen=True)
class SwitchRequest:
    operation_id: str
    collection_id: str
    expected_generation: int  # the command snapshot's generation: the fencing token
    staging_collection: str
    validation: operation_pb2.ValidationResult
    vector_count: int
    document_count: int
    stored_bytes: int

    @property
    def request_id(self) -> str:
        """One idempotency key per operation's switch, however often it is asked."""
        return f"{self.operation_id}:switch"


@dataclass(frozen=True)
class SwitchAnswer:
    """What the orchestrator's Postgres now says of the collection."""

    replayed: bool  # a repeat: the first call's result
    generation: int
    physical_collection: str
    retired_collections: tuple[str, ...]
    cleanup_not_before: datetime
    config: Mapping[str, Any] | None  # the live config after the switch, if told


class ReindexControlClient(ServiceClient):
    STUB = control_grpc.ReindexControlServiceStub

    async def complete_reindex(self, request: SwitchRequest) -> SwitchAnswer:
        message = control_pb2.CompleteReindexRequest(
            operation_id=request.operation_id,
            collection_id=request.collection_id,
            expected_generation=request.expected_generation,
            staging_collection=request.staging_collection,
            validation=request.validation,
            vector_count=request.vector_count,
            document_count=request.document_count,
            stored_bytes=request.stored_bytes,
            request_id=request.request_id,
        )
        try:
            reply = await self._stub.CompleteReindex(
                message, metadata=self._metadata, timeout=self._timeout_seconds
            )
        except grpc.aio.AioRpcError as error:
            raise self._domain_error(error) from None
        if not reply.switched:
            raise FailedPrecondition(
                f"the orchestrator did not switch operation {request.operation_id}",
                reason="SWITCH_REFUSED",
                metadata={"operation_id": request.operation_id},
            )
        return answer_of(reply)

    def _domain_error(self, error: grpc.aio.AioRpcError) -> DomainError:
        code = error.code()
        status = status_from_rpc_error(error)
        info = error_info(status) if status is not None else None
        kind = _ERRORS.get(code, DomainError)
        if info is not None:
            reason, metadata = info.reason, dict(info.metadata)
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            reason, metadata = ORCHESTRATOR_UNAVAILABLE, {"backend": "orchestrator"}
        else:
            reason, metadata = code.name, {}
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            log.warning("orchestrator.unavailable", address=self._address, detail=error.details())
        return kind(
            f"CompleteReindex: {code.name} {reason}: {error.details() or ''}".strip(),
            reason=reason,
            metadata=metadata,
        )


def answer_of(reply: control_pb2.CompleteReindexResponse) -> SwitchAnswer:
    return SwitchAnswer(
        replayed=reply.replayed,
        generation=reply.generation,
        physical_collection=reply.physical_collection,
        retired_collections=tuple(reply.retired_collections),
        cleanup_not_before=reply.cleanup_not_before.ToDatetime(tzinfo=UTC),
        config=config_of(reply.collection.config) if reply.HasField("collection") else None,
    )
