"""Following an operation to its end over ``WatchOperation``.

The server sends the current state first, so reconnecting after a dropped
stream loses nothing: a stream that was working and breaks (UNAVAILABLE, or
ends without a terminal status, as when the orchestrator restarts) is opened
again a few times before giving up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from cli.api import Api
from cli.errors import ExitCode
from vectorops.common.v1 import operation_pb2
from vectorops.orchestrator.v1 import operation_service_pb2, orchestrator_pb2

RECONNECTS = 5

EXIT_BY_STATUS = {
    operation_pb2.OPERATION_STATUS_COMPLETED: ExitCode.OK,
    operation_pb2.OPERATION_STATUS_FAILED: ExitCode.OPERATION_FAILED,
    operation_pb2.OPERATION_STATUS_CANCELLED: ExitCode.OPERATION_CANCELLED,
}


class StreamEnded(Exception):
    """The stream ended before a terminal status, too often to keep trying."""


def follow(
    api: Api,
    operation_id: str,
    on_update: Callable[[orchestrator_pb2.Operation], None],
    max_wait_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> orchestrator_pb2.Operation:
    """Every snapshot goes to ``on_update``; returns the terminal one."""
    deadline = time.monotonic() + max_wait_seconds if max_wait_seconds else None
    request = operation_service_pb2.WatchOperationRequest(operation_id=operation_id)
    attempts = 0
    while True:
        remaining = deadline - time.monotonic() if deadline is not None else None
        if remaining is not None and remaining <= 0:
            raise StreamEnded(f"operation {operation_id} did not end within {max_wait_seconds} s")
        received = False
        try:
            for response in api.stream(api.operations.WatchOperation, request, remaining):
                received = True
                on_update(response.operation)
                if response.operation.status in EXIT_BY_STATUS:
                    return response.operation
        except grpc.RpcError as error:
            # Only a stream that already worked is retried: a wrong address or a
            # stopped stack should fail at once, not after a minute of retries.
            if not received or error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        attempts += 1
        if attempts > RECONNECTS:
            raise StreamEnded(f"watch of {operation_id} ended {attempts} times before the end")
        sleep(min(2.0**attempts / 2, 8.0))
