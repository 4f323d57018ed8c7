"""Channels for the calls one service makes to another: the same message size
limits as the servers, keepalive, the service-role bearer token on every call,
and the trace id of the work being done (``traceparent``), so the service
called logs its part of that work under the same id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc.aio import ClientCallDetails, Metadata

from kit.grpc.message_limits import DEFAULT_MAX_MESSAGE_BYTES, message_size_options
from kit.tracing import TRACEPARENT, current_trace_id, traceparent

# A peer that was down is found again within a second of its return. gRPC's own
# backoff between connection attempts grows to 120 s, so a service (or Triton)
# back after a minute's outage went unseen, its callers refused, for about as long.
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)

_CLIENT_OPTIONS = (
    *RECONNECT_OPTIONS,
    ("grpc.keepalive_time_ms", 30_000),
    # An address may list several replicas (``ipv4:h:p1,h:p2``): spread the calls
    # over those that answer, instead of pinning all of them to the first.
    ("grpc.lb_policy_name", "round_robin"),
)


def with_trace(details: ClientCallDetails) -> ClientCallDetails:
    """``details`` with a ``traceparent`` for the trace bound now (unchanged when
    none is, or when the caller set one itself)."""
    trace_id = current_trace_id()
    metadata = Metadata(*(details.metadata or ()))
    if not trace_id or TRACEPARENT in metadata:
        return details
    metadata.add(TRACEPARENT, traceparent(trace_id))
    return details._replace(metadata=metadata)


# grpc.aio files an interceptor under one kind of call only: one class per kind.
class _TraceUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(with_trace(client_call_details), request)


class _TraceUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(with_trace(client_call_details), request)


class _TraceStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(with_trace(client_call_details), request_iterator)


class _TraceStreamStream(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(with_trace(client_call_details), request_iterator)


def service_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.aio.Channel:
    """A channel to another service: TLS with ``credentials``, else plaintext;
    messages bounded as the servers bound them."""
    interceptors = [
        _TraceUnaryUnary(),
        _TraceUnaryStream(),
        _TraceStreamUnary(),
        _TraceStreamStream(),
    ]
    options = _CLIENT_OPTIONS + message_size_options(max_message_bytes)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token`` (none when no token is configured)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


class ServiceClient:
    """What a client of another service holds: one channel (TLS and message limits
    as configured), the service-role token, a timeout per call, and the generated
    stub of ``STUB`` on that channel. A channel connects on its first call, so a
    client may be made before the service it calls is up."""

    STUB: Callable[[grpc.aio.Channel], Any]

    def __init__(
        self,
        address: str,
        token: str | None,
        timeout_seconds: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._address = address
        self._channel = service_channel(address, credentials, max_message_bytes)
        self._stub = self.STUB(self._channel)
        self._metadata = bearer(token)
        self._timeout_seconds = timeout_seconds

    async def close(self) -> None:
        await self._channel.close()
