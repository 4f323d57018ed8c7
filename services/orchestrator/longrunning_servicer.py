"""``google.longrunning.Operations`` over our operations, so a generic LRO
client can poll them (protos/README.md, "Operations"):

- ``name`` is ``operations/{operation_id}``; ``metadata`` is
  ``Any(vectorops.orchestrator.v1.Operation)``; ``done`` a terminal status;
- FAILED: ``error`` is a ``google.rpc.Status`` whose ErrorInfo reason is the
  ``OperationError.type``; CANCELLED: code CANCELLED;
- COMPLETED: ``response`` is ``Any(Collection)``, ``google.protobuf.Empty``
  after a DELETE (or once the collection is gone).
"""

from __future__ import annotations

from google.longrunning import operations_pb2 as lro
from google.longrunning import operations_pb2_grpc
from google.protobuf import any_pb2, empty_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from kit.auth import Principal
from kit.errors import ERROR_DOMAIN, NotFound, NotImplementedYet
from kit.grpc.interceptors import current_principal
from kit.grpc.request_times import request_duration
from orchestrator.adapters.records import OperationRecord
from orchestrator.collection_app import CollectionApp
from orchestrator.domain.fields import invalid_field
from orchestrator.domain.operation_filter import parse_filter
from orchestrator.domain.operations import ErrorType, OperationStatus, OperationType
from orchestrator.messages import collection_message, operation_message
from orchestrator.operation_app import OperationApp

SERVICE = "google.longrunning.Operations"
NAME_PREFIX = "operations/"

# The gRPC code a failure of each type would have had as a call error.
_FAILURE_CODES = {
    ErrorType.QUOTA_EXCEEDED: code_pb2.RESOURCE_EXHAUSTED,
    ErrorType.INVALID_SOURCE_PATH: code_pb2.INVALID_ARGUMENT,
    ErrorType.UNKNOWN_MODEL: code_pb2.INVALID_ARGUMENT,
    ErrorType.SOURCE_UNREADABLE: code_pb2.FAILED_PRECONDITION,
    ErrorType.VALIDATION_FAILED: code_pb2.FAILED_PRECONDITION,
    ErrorType.STALE_GENERATION: code_pb2.ABORTED,
    ErrorType.EMBEDDER_UNAVAILABLE: code_pb2.UNAVAILABLE,
    ErrorType.VECTOR_STORE_ERROR: code_pb2.UNAVAILABLE,
    ErrorType.RETRIES_EXHAUSTED: code_pb2.UNAVAILABLE,
    ErrorType.STUCK: code_pb2.DEADLINE_EXCEEDED,
    ErrorType.CANCELLED: code_pb2.CANCELLED,
}


def operation_id_from(name: str) -> str:
    if not name.startswith(NAME_PREFIX) or not name[len(NAME_PREFIX) :].strip():
        raise invalid_field("name", f"must be {NAME_PREFIX}{{operation_id}}")
    return name[len(NAME_PREFIX) :]


def _pack(message: object) -> any_pb2.Any:
    holder = any_pb2.Any()
    holder.Pack(message)
    return holder


def _error_status(record: OperationRecord) -> status_pb2.Status:
    op = record.operation
    error = op.error
    error_type = error.type if error is not None else ErrorType.INTERNAL
    if op.status is OperationStatus.CANCELLED:
        code = code_pb2.CANCELLED
    else:
        code = _FAILURE_CODES.get(error_type, code_pb2.INTERNAL)
    metadata = {"operation_id": op.id, "collection_id": op.collection_id}
    if error is not None and error.step:
        metadata["step"] = error.step
    info = error_details_pb2.ErrorInfo(
        reason=error_type.value, domain=ERROR_DOMAIN, metadata=metadata
    )
    message = error.message if error is not None else op.status.value.lower()
    return status_pb2.Status(code=code, message=message, details=[_pack(info)])


class LongRunningServicer(operations_pb2_grpc.OperationsServicer):
    def __init__(
        self, operations: OperationApp, collections: CollectionApp, wait_max_seconds: float
    ) -> None:
        self._operations = operations
        self._collections = collections
        self._wait_max = wait_max_seconds

    async def GetOperation(self, request: lro.GetOperationRequest, context) -> lro.Operation:
        principal = current_principal()
        record = await self._operations.get(principal, operation_id_from(request.name))
        return await self._lro(principal, record)

    async def ListOperations(
        self, request: lro.ListOperationsRequest, context
    ) -> lro.ListOperationsResponse:
        principal = current_principal()
        wanted = parse_filter(request.filter)
        page, token = await self._operations.list(
            principal,
            request.page_size,
            request.page_token,
            collection_id=wanted.collection_id,
            types=wanted.types,
            statuses=wanted.statuses,
        )
        return lro.ListOperationsResponse(
            operations=[await self._lro(principal, record) for record in page],
            next_page_token=token,
        )

    async def CancelOperation(
        self, request: lro.CancelOperationRequest, context
    ) -> empty_pb2.Empty:
        await self._operations.cancel(current_principal(), operation_id_from(request.name), "")
        return empty_pb2.Empty()

    async def DeleteOperation(
        self, request: lro.DeleteOperationRequest, context
    ) -> empty_pb2.Empty:
        # Operations are the audit trail of their collections: never deleted.
        raise NotImplementedYet(
            f"{SERVICE}/DeleteOperation is not implemented",
            reason="NOT_IMPLEMENTED",
            metadata={"method": f"{SERVICE}/DeleteOperation"},
        )

    async def WaitOperation(self, request: lro.WaitOperationRequest, context) -> lro.Operation:
        principal = current_principal()
        timeout = self._wait_max
        asked = request_duration(request, "timeout")
        if asked is not None:
            timeout = min(asked.total_seconds(), self._wait_max)
        record = await self._operations.wait(principal, operation_id_from(request.name), timeout)
        return await self._lro(principal, record)

    async def _lro(self, principal: Principal, record: OperationRecord) -> lro.Operation:
        op = record.operation
        message = lro.Operation(
            name=f"{NAME_PREFIX}{op.id}",
            metadata=_pack(operation_message(record)),
            done=op.finished,
        )
        if op.status is OperationStatus.COMPLETED:
            message.response.CopyFrom(await self._result(principal, record))
        elif op.finished:
            message.error.CopyFrom(_error_status(record))
        return message

    async def _result(self, principal: Principal, record: OperationRecord) -> any_pb2.Any:
        if record.operation.type is OperationType.DELETE:
            return _pack(empty_pb2.Empty())
        try:
            collection = await self._collections.get(principal, record.operation.collection_id)
        except NotFound:
            return _pack(empty_pb2.Empty())  # deleted since: nothing left to show
        return _pack(collection_message(collection))
