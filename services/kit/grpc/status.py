"""Domain errors → ``google.rpc.Status`` with ``ErrorInfo`` and the detail messages that apply."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from kit.errors import ERROR_DOMAIN, DomainError

# Trailing metadata key that gRPC clients read rich error details from.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Error texts often echo the request (a filter, a name, an id). gRPC refuses
# trailing metadata over 16 KiB (and may over 8 KiB), and the status travels
# twice (``grpc-message`` percent-encoded, the details base64): bounded in
# UTF-8 bytes, a status stays under 8 KiB however hostile the request was.
MAX_MESSAGE_BYTES = 256
MAX_METADATA_ENTRIES = 8
MAX_METADATA_KEY_BYTES = 64
MAX_TEXT_BYTES = 96
MAX_VIOLATIONS = 3
_CUT = "…"


def bounded(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8 (never inside a character)."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - len(_CUT.encode())].decode(errors="ignore") + _CUT


def _text(text: str) -> str:
    return bounded(text, MAX_TEXT_BYTES)


def _metadata(metadata: dict[str, str]) -> dict[str, str]:
    kept = list(metadata.items())[:MAX_METADATA_ENTRIES]
    return {bounded(key, MAX_METADATA_KEY_BYTES): _text(value) for key, value in kept}


def grpc_code(error: DomainError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code.value]


def to_status(error: DomainError) -> status_pb2.Status:
    """The full ``google.rpc.Status`` of a domain error: code, message and details."""
    details: list[object] = [
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=_metadata(error.metadata)
        )
    ]
    if error.field_violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_text(v.field), description=_text(v.description)
                    )
                    for v in error.field_violations[:MAX_VIOLATIONS]
                ]
            )
        )
    if error.quota_violations:
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=_text(v.subject), description=_text(v.description)
                    )
                    for v in error.quota_violations[:MAX_VIOLATIONS]
                ]
            )
        )
    if error.precondition_violations:
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=_text(v.type),
                        subject=_text(v.subject),
                        description=_text(v.description),
                    )
                    for v in error.precondition_violations[:MAX_VIOLATIONS]
                ]
            )
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(
        code=getattr(code_pb2, error.code.value),
        message=bounded(error.message, MAX_MESSAGE_BYTES),
        details=packed,
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
