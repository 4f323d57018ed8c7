"""Domain errors become google.rpc.Status with ErrorInfo and the detail messages that apply."""

import grpc
from google.rpc import code_pb2, error_details_pb2

from kit.errors import (
    ERROR_DOMAIN,
    FieldViolation,
    InvalidArgument,
    NotFound,
    QuotaViolation,
    ResourceExhausted,
)
from kit.grpc.status import MAX_MESSAGE_BYTES, bounded, error_info, grpc_code, to_status


def test_not_found_carries_reason_and_metadata() -> None:
    error = NotFound(
        "collection c1 not found", reason="COLLECTION_NOT_FOUND", metadata={"id": "c1"}
    )
    status = to_status(error)
    assert status.code == code_pb2.NOT_FOUND
    assert grpc_code(error) is grpc.StatusCode.NOT_FOUND
    info = error_info(status)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "COLLECTION_NOT_FOUND",
        ERROR_DOMAIN,
        {"id": "c1"},
    )


def test_bad_request_and_quota_details_are_packed() -> None:
    status = to_status(
        InvalidArgument(
            "bad", reason="INVALID_ARGUMENT", field_violations=[FieldViolation("name", "empty")]
        )
    )
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    assert bad.field_violations[0].field == "name"

    status = to_status(
        ResourceExhausted(
            "over quota",
            reason="QUOTA_EXCEEDED",
            quota_violations=[QuotaViolation("owner:alice", "max_vectors 10, used 9, asked 5")],
        )
    )
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    quota = error_details_pb2.QuotaFailure()
    assert status.details[1].Unpack(quota)
    assert quota.violations[0].subject == "owner:alice"


def test_a_status_echoing_a_huge_request_stays_small() -> None:
    """Error texts echo requests; gRPC drops trailers over 16 KiB (and may over 8)."""
    huge = "\U0001f4a9" * 100_000
    error = InvalidArgument(
        f"filter {huge} is not understood",
        reason="INVALID_FILTER",
        metadata={f"k{i}{huge}": huge for i in range(50)},
        field_violations=[FieldViolation(huge, huge)] * 50,
    )
    status = to_status(error)
    assert len(status.SerializeToString()) < 4096
    assert len(status.message.encode()) <= MAX_MESSAGE_BYTES
    assert status.message.startswith("filter \U0001f4a9") and status.message.endswith("…")
    assert bounded("short", 10) == "short"
