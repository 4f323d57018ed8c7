"""Domain errors → ``google.rpc.Status`` with ``ErrorInfo`` and the detail messages that apply."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from kit.errors import ERROR_DOMAIN, DomainError

# Trailing metadata key that gRPC clients read rich error details from.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def grpc_code(error: DomainError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code.value]


def to_status(error: DomainError) -> status_pb2.Status:
    """The full ``google.rpc.Status`` of a domain error: code, message and details."""
    details: list[object] = [
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
        )
    ]
    if error.field_violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.field_violations
                ]
            )
        )
    if error.quota_violations:
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=v.subject, description=v.description
                    )
                    for v in error.quota_violations
                ]
            )
        )
    if error.precondition_violations:
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in error.precondition_violations
                ]
            )
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(
        code=getattr(code_pb2, error.code.value), message=error.message, details=packed
    )


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The ``ErrorInfo`` inside a status, for clients and tests."""
    for holder in status.details:
        if holder.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            holder.Unpack(info)
            return info
    return None


def status_from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> status_pb2.Status | None:
    """Parse the rich status a client received in trailing metadata."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None
