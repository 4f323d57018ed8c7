"""Domain errors: what went wrong, in words a client can act on.

These carry no gRPC types so the domain layers stay free of I/O; the error
interceptor (kit.grpc.status) turns each one into a status code plus a
``google.rpc.ErrorInfo`` whose ``reason`` is part of the API (see protos/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

ERROR_DOMAIN = "vectorops.dev"


class Code(StrEnum):
    """The subset of gRPC codes a domain error may map to (names match grpc.StatusCode)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    subject: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    type: str
    subject: str
    description: str


@dataclass
class DomainError(Exception):
    """Base of every error a service reports to a client on purpose."""

    message: str
    reason: str = "INTERNAL"
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    quota_violations: list[QuotaViolation] = field(default_factory=list)
    precondition_violations: list[PreconditionViolation] = field(default_factory=list)

    code = Code.INTERNAL

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class InvalidArgument(DomainError):
    code = Code.INVALID_ARGUMENT


class NotFound(DomainError):
    code = Code.NOT_FOUND


class AlreadyExists(DomainError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = Code.FAILED_PRECONDITION


class Aborted(DomainError):
    code = Code.ABORTED


class ResourceExhausted(DomainError):
    code = Code.RESOURCE_EXHAUSTED


class PermissionDenied(DomainError):
    code = Code.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = Code.UNAUTHENTICATED


class Unavailable(DomainError):
    code = Code.UNAVAILABLE


class DeadlineExceeded(DomainError):
    code = Code.DEADLINE_EXCEEDED


class NotImplementedYet(DomainError):
    """An RPC whose behaviour has not landed: says so instead of pretending to work."""

    code = Code.UNIMPLEMENTED
