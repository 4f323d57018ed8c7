"""Giving a quota reservation back (``ResourceService.Release``), for every
service that holds one. Best effort: a reservation that is not released
expires on its own."""

from __future__ import annotations

import grpc

from kit.logs import get_logger
from vectorops.resources.v1 import resource_service_pb2, resource_service_pb2_grpc

log = get_logger(__name__)


async def release_reservation(
    stub: resource_service_pb2_grpc.ResourceServiceStub,
    operation_id: str,
    *,
    metadata: tuple[tuple[str, str], ...],
    timeout_seconds: float,
    keep_room: bool = False,
) -> bool:
    """Release the operation's reservation (``keep_room``: only its place among the
    running operations); False when it could not be. A resources service that does
    not implement it holds no reservation, so that is no failure worth a warning."""
    request = resource_service_pb2.ReleaseRequest(
        operation_id=operation_id,
        request_id=f"{operation_id}:{'end' if keep_room else 'release'}",
        keep_room=keep_room,
    )
    try:
        await stub.Release(request, metadata=metadata, timeout=timeout_seconds)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNIMPLEMENTED:
            log.warning(
                "reservation.release_failed",
                operation_id=operation_id,
                code=error.code().name,
                detail=error.details(),
            )
        return False
    return True
