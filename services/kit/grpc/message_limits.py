"""The largest gRPC message a server takes or a service channel sends and
receives: one limit for both ends, so a call between services never fails on a
size the called server would have accepted (``VECTOROPS_GRPC_MAX_MESSAGE_BYTES``).
A request over it is refused ``RESOURCE_EXHAUSTED`` by gRPC before any handler
runs, so nothing is read or written."""

from __future__ import annotations

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# gRPC keeps the limit in a signed 32-bit int.
MAX_MESSAGE_BYTES_CEILING = 2**31 - 1
# Below this, health checks, reflection and ordinary requests would stop fitting.
MAX_MESSAGE_BYTES_FLOOR = 64 * 1024


def message_size_options(max_bytes: int) -> tuple[tuple[str, int], ...]:
    """Channel or server options that bound messages to ``max_bytes`` both ways."""
    return (
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
    )
