"""Server interceptors: trace (outermost), metrics, errors, auth (innermost).

Each wraps the method handler's behaviour, so the wrappers of one call run in
one task and the principal set by auth is visible to the servicer through a
context variable.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import ServerInterceptor
from structlog.contextvars import bound_contextvars

from kit import metrics
from kit.auth import Principal, TokenAuthenticator
from kit.db.outage import POSTGRES_CONNECTION_LOST
from kit.errors import DomainError, NotImplementedYet, Unavailable
from kit.grpc.status import STATUS_DETAILS_KEY, grpc_code, to_status
from kit.logs import bind_ids, get_logger
from kit.tracing import TRACE_ID_HEADER, incoming_trace_id

log = get_logger(__name__)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)

# Infrastructure every client may call without a token.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

Behaviour = Callable[..., Any]


def current_principal() -> Principal:
    """The authenticated caller of the RPC being handled."""
    principal = _principal.get()
    if principal is None:
        raise RuntimeError("no principal: the auth interceptor did not run for this call")
    return principal


def split_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    around: Callable[[Behaviour, Any, grpc.aio.ServicerContext], Awaitable[Any]],
    around_stream: Callable[[Behaviour, Any, grpc.aio.ServicerContext], Any],
) -> grpc.RpcMethodHandler:
    """A copy of ``handler`` whose behaviour runs inside ``around`` (or ``around_stream``)."""
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await around(inner, request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        inner = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            return await around(inner, requests, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        inner = handler.unary_stream

        # An async generator function itself: grpc.aio decides how to drive a
        # streaming handler from its kind, not from what it returns.
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async for response in around_stream(inner, request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    inner = handler.stream_stream

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        async for response in around_stream(inner, requests, context):
            yield response

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, handler.request_deserializer, handler.response_serializer
    )


async def _iterate(behaviour: Behaviour, request: Any, context: grpc.aio.ServicerContext):
    """Yield a streaming behaviour's responses, whether it is a generator or uses context.write."""
    result = behaviour(request, context)
    if inspect.isasyncgen(result):
        async for response in result:
            yield response
    else:
        await result


class _WrappingInterceptor(ServerInterceptor):
    """Base: wrap every handler found by the continuation, unless ``skip`` says not to."""

    def skip(self, service: str) -> bool:
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        service, method = split_method(handler_call_details.method)
        if handler is None or self.skip(service):
            return handler
        return self.wrap(handler, handler_call_details, service, method)

    def wrap(
        self,
        handler: grpc.RpcMethodHandler,
        details: grpc.HandlerCallDetails,
        service: str,
        method: str,
    ) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class TraceInterceptor(_WrappingInterceptor):
    """The call's trace id (``kit.tracing``: from ``traceparent`` or ``x-trace-id``
    metadata, else a new one) is bound to the log context for the call, so the
    lines it logs, the envelopes it writes and the calls it makes carry it; and
    it goes back to the caller as ``x-trace-id`` response (initial) metadata."""

    def skip(self, service: str) -> bool:
        return service in PUBLIC_SERVICES

    def wrap(self, handler, details, service, method):
        trace_id = incoming_trace_id(details.invocation_metadata or ())
        reply = ((TRACE_ID_HEADER, trace_id),)

        async def around(behaviour, request, context):
            with bound_contextvars(trace_id=trace_id):
                await context.send_initial_metadata(reply)
                return await behaviour(request, context)

        async def around_stream(behaviour, request, context):
            with bound_contextvars(trace_id=trace_id):
                await context.send_initial_metadata(reply)
                async for response in _iterate(behaviour, request, context):
                    yield response

        return wrap_handler(handler, around, around_stream)


class MetricsInterceptor(_WrappingInterceptor):
    """grpc_server_{started,handled}_total and grpc_server_handling_seconds per method and code."""

    def wrap(self, handler, details, service, method):
        kind = rpc_type(handler)
        labels = (kind, service, method)

        def observe(started: float, context: grpc.aio.ServicerContext, failed: bool) -> None:
            code = context.code()
            if code is None:
                code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
            elif isinstance(code, int):
                code = next(c for c in grpc.StatusCode if c.value[0] == code)
            metrics.GRPC_HANDLED.labels(*labels, code.name).inc()
            metrics.GRPC_HANDLING_SECONDS.labels(*labels).observe(time.perf_counter() - started)

        async def around(behaviour, request, context):
            metrics.GRPC_STARTED.labels(*labels).inc()
            started = time.perf_counter()
            failed = True
            try:
                response = await behaviour(request, context)
                failed = False
                return response
            finally:
                observe(started, context, failed)

        async def around_stream(behaviour, request, context):
            metrics.GRPC_STARTED.labels(*labels).inc()
            started = time.perf_counter()
            failed = True
            try:
                async for response in _iterate(behaviour, request, context):
                    metrics.GRPC_MSG_SENT.labels(*labels).inc()
                    yield response
                failed = False
            finally:
                observe(started, context, failed)

        return wrap_handler(handler, around, around_stream)


# A backend (Postgres) out of reach for a moment: the caller should try again.
_BACKEND_GONE = (ConnectionError, *POSTGRES_CONNECTION_LOST)


class ErrorInterceptor(_WrappingInterceptor):
    """Domain errors become their status code with an ErrorInfo; a backend out of
    reach is UNAVAILABLE ``BACKEND_UNAVAILABLE`` (a retry may succeed, so callers
    must not take it for a bug); anything else is INTERNAL."""

    def wrap(self, handler, details, service, method):
        async def fail(context: grpc.aio.ServicerContext, error: Exception) -> None:
            if isinstance(error, NotImplementedError) and not isinstance(error, DomainError):
                error = NotImplementedYet(
                    f"{service}/{method} is not implemented yet", reason="NOT_IMPLEMENTED"
                )
            elif isinstance(error, _BACKEND_GONE):
                log.warning(
                    "rpc.backend_unavailable",
                    method=method,
                    grpc_service=service,
                    error=repr(error),
                )
                postgres = isinstance(error, POSTGRES_CONNECTION_LOST)
                error = Unavailable(
                    f"{'Postgres' if postgres else 'a backend'} is unavailable; try again",
                    reason="BACKEND_UNAVAILABLE",
                    metadata={"backend": "postgres"} if postgres else {},
                )
            if not isinstance(error, DomainError):
                # The cause goes to the log, never to the client: it may hold paths or secrets.
                log.exception("rpc.unhandled_error", method=method, grpc_service=service)
                error = DomainError("internal error", reason="INTERNAL")
            status = to_status(error)
            await context.abort(
                grpc_code(error),
                status.message,
                trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
            )

        async def around(behaviour, request, context):
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:  # noqa: BLE001 - mapped to a status, logged when unexpected
                await fail(context, error)

        async def around_stream(behaviour, request, context):
            try:
                async for response in _iterate(behaviour, request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as error:  # noqa: BLE001
                await fail(context, error)

        return wrap_handler(handler, around, around_stream)


class AuthInterceptor(_WrappingInterceptor):
    """Bearer token in ``authorization`` metadata → the principal of the call."""

    def __init__(self, authenticator: TokenAuthenticator) -> None:
        self._authenticator = authenticator

    def skip(self, service: str) -> bool:
        return service in PUBLIC_SERVICES

    def _authenticate(self, context: grpc.aio.ServicerContext) -> contextvars.Token:
        metadata = dict(context.invocation_metadata() or ())
        principal = self._authenticator.authenticate(metadata.get("authorization"))
        bind_ids(principal=principal.id, request_id=metadata.get("x-request-id"))
        return _principal.set(principal)

    def wrap(self, handler, details, service, method):
        async def around(behaviour, request, context):
            token = self._authenticate(context)
            try:
                return await behaviour(request, context)
            finally:
                _principal.reset(token)

        async def around_stream(behaviour, request, context):
            token = self._authenticate(context)
            try:
                async for response in _iterate(behaviour, request, context):
                    yield response
            finally:
                _principal.reset(token)

        return wrap_handler(handler, around, around_stream)
