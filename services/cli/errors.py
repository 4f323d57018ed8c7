"""gRPC failures as a person (or a script) needs them: the status, the message,
the ``ErrorInfo`` reason and its details, and an exit code per failure class."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import grpc
from google.rpc import error_details_pb2, status_pb2

from kit.grpc.status import status_from_rpc_error


class ExitCode(IntEnum):
    """What ``vectorops`` exits with. Scripts may branch on these; never renumber."""

    OK = 0
    ERROR = 1  # anything not below (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...)
    USAGE = 2  # bad arguments or config file (argparse uses 2 too)
    NOT_FOUND = 3
    INVALID_ARGUMENT = 4
    AUTH = 5  # UNAUTHENTICATED or PERMISSION_DENIED
    UNAVAILABLE = 6  # UNAVAILABLE or DEADLINE_EXCEEDED: retry later
    CONFLICT = 7  # ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED
    QUOTA = 8  # RESOURCE_EXHAUSTED
    OPERATION_FAILED = 9  # a watched operation ended FAILED
    OPERATION_CANCELLED = 10  # a watched operation ended CANCELLED
    VERIFY_FAILED = 11  # the audit hash chain is broken
    INTERRUPTED = 130  # Ctrl-C


_BY_STATUS = {
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE: ExitCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED: ExitCode.AUTH,
    grpc.StatusCode.PERMISSION_DENIED: ExitCode.AUTH,
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.UNAVAILABLE,
    grpc.StatusCode.ALREADY_EXISTS: ExitCode.CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: ExitCode.CONFLICT,
    grpc.StatusCode.ABORTED: ExitCode.CONFLICT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ExitCode.QUOTA,
}


def exit_code_for(code: grpc.StatusCode | None) -> ExitCode:
    return _BY_STATUS.get(code, ExitCode.ERROR) if code is not None else ExitCode.ERROR


class UsageError(Exception):
    """Bad arguments or configuration, found before any call: exit 2."""


@dataclass
class Failure:
    """One failed call, decoded from the status and its ``grpc-status-details-bin``."""

    code: str
    message: str
    exit_code: ExitCode
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    # "field: description", "subject: description", "TYPE subject: description"
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "reason": self.reason,
            "domain": self.domain,
            "metadata": self.metadata,
            "violations": self.violations,
            "exit_code": int(self.exit_code),
        }

    def as_text(self) -> str:
        lines = [f"error: {self.code}: {self.message}"]
        if self.reason:
            lines.append(f"  reason: {self.reason}" + (f" ({self.domain})" if self.domain else ""))
        lines += [f"  {key}: {value}" for key, value in sorted(self.metadata.items())]
        lines += [f"  - {violation}" for violation in self.violations]
        if self.code == "UNAUTHENTICATED":
            lines.append(
                "  hint: set VECTOROPS_TOKEN, or `token` in the config file "
                "(`make run` prints dev tokens and keeps them in .vectorops/dev-tokens.json)"
            )
        return "\n".join(lines)


def failure_from_rpc_error(error: grpc.RpcError) -> Failure:
    code = error.code() if hasattr(error, "code") else None
    message = (error.details() if hasattr(error, "details") else None) or str(error)
    status = status_from_rpc_error(error) if hasattr(error, "trailing_metadata") else None
    failure = Failure(
        code=code.name if code is not None else "UNKNOWN",
        message=message,
        exit_code=exit_code_for(code),
    )
    if status is not None:
        _read_details(status, failure)
    return failure


def _read_details(status: status_pb2.Status, failure: Failure) -> None:
    for holder in status.details:
        if holder.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            holder.Unpack(info)
            failure.reason, failure.domain = info.reason, info.domain
            failure.metadata = dict(info.metadata)
        elif holder.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            holder.Unpack(bad)
            failure.violations += [f"{v.field}: {v.description}" for v in bad.field_violations]
        elif holder.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            holder.Unpack(quota)
            failure.violations += [f"{v.subject}: {v.description}" for v in quota.violations]
        elif holder.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            precondition = error_details_pb2.PreconditionFailure()
            holder.Unpack(precondition)
            failure.violations += [
                f"{v.type} {v.subject}: {v.description}" for v in precondition.violations
            ]
