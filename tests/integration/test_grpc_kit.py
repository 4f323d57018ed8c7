"""The kit's gRPC server in-process: the interceptors on unary and streaming RPCs,
the error mapping, auth, and graceful shutdown (NOT_SERVING, then drain)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from kit.auth import Principal, Role, TokenAuthenticator, digest
from kit.errors import FailedPrecondition, NotFound
from kit.grpc.interceptors import current_principal
from kit.grpc.server import RunningServer, ServiceBinding, create_server
from kit.grpc.status import error_info, status_from_rpc_error

SERVICE = "vectorops.test.v1.EchoService"
ALICE = Principal("alice", Role.USER)
Text = wrappers_pb2.StringValue


class Echo:
    """A tiny service whose methods show what the interceptors did."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def WhoAmI(self, request: Text, context: grpc.aio.ServicerContext) -> Text:
        return Text(value=f"{current_principal().id}:{current_principal().role.value}")

    async def Fail(self, request: Text, context: grpc.aio.ServicerContext) -> Text:
        if request.value == "domain":
            raise NotFound("collection c9 not found", reason="COLLECTION_NOT_FOUND")
        if request.value == "postgres-gone":
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )
        raise RuntimeError("secret path /home/alice/.ssh leaked")

    async def Slow(self, request: Text, context: grpc.aio.ServicerContext) -> Text:
        await self.release.wait()
        return Text(value="finished")

    async def Count(self, request: Text, context: grpc.aio.ServicerContext) -> AsyncIterator[Text]:
        for index in range(3):
            yield Text(value=str(index))
        if request.value == "then-fail":
            raise FailedPrecondition("stream broke", reason="OPERATION_IN_PROGRESS")


def _binding(echo: Echo) -> ServiceBinding:
    unary = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(echo, name), Text.FromString, Text.SerializeToString
        )
        for name in ("WhoAmI", "Fail", "Slow")
    }
    stream = {
        "Count": grpc.unary_stream_rpc_method_handler(
            echo.Count, Text.FromString, Text.SerializeToString
        )
    }
    handler = grpc.method_handlers_generic_handler(SERVICE, {**unary, **stream})
    return ServiceBinding(SERVICE, lambda server: server.add_generic_rpc_handlers((handler,)))


@pytest.fixture
async def served() -> AsyncIterator[tuple[RunningServer, Echo, grpc.aio.Channel]]:
    echo = Echo()
    running = await create_server(
        "127.0.0.1", 0, [_binding(echo)], TokenAuthenticator([(digest("alice-token"), ALICE)])
    )
    await running.set_serving()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, echo, channel
    echo.release.set()
    await channel.close()
    await running.server.stop(0)


AUTH = (("authorization", "Bearer alice-token"),)


def _unary(channel: grpc.aio.Channel, method: str):
    return channel.unary_unary(f"/{SERVICE}/{method}", Text.SerializeToString, Text.FromString)


async def test_auth_puts_the_principal_in_reach_of_the_servicer(served) -> None:
    _, _, channel = served
    reply = await _unary(channel, "WhoAmI")(Text(), metadata=AUTH)
    assert reply.value == "alice:user"


async def test_unknown_token_is_unauthenticated_on_unary_and_stream(served) -> None:
    _, _, channel = served
    bad = (("authorization", "Bearer nope"),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "WhoAmI")(Text(), metadata=bad)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    stream = channel.unary_stream(f"/{SERVICE}/Count", Text.SerializeToString, Text.FromString)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [reply async for reply in stream(Text(), metadata=bad)]
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def _failed_call(channel, kind: str):
    """``Fail`` raising the error of ``kind``: the status the client got, and its ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, "Fail")(Text(value=kind), metadata=AUTH)
    info = error_info(status_from_rpc_error(caught.value))
    assert info is not None
    return caught.value, info


async def test_domain_error_maps_to_its_code_with_error_info(served) -> None:
    _, _, channel = served
    error, info = await _failed_call(channel, "domain")
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details() == "collection c9 not found"
    assert info.reason == "COLLECTION_NOT_FOUND"


async def test_postgres_connection_lost_is_unavailable_not_internal(served) -> None:
    """A Postgres outage under an RPC is one to retry (UNAVAILABLE), not a bug:
    a caller that takes INTERNAL for final would fail what a retry finishes."""
    _, _, channel = served
    error, info = await _failed_call(channel, "postgres-gone")
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "middle of operation" not in error.details()
    assert info.reason == "BACKEND_UNAVAILABLE"
    assert dict(info.metadata) == {"backend": "postgres"}


async def test_unexpected_error_is_internal_and_reveals_nothing(served) -> None:
    _, _, channel = served
    error, info = await _failed_call(channel, "bug")
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "/home/alice" not in error.details()
    assert info.reason == "INTERNAL"


async def test_stream_error_after_messages_keeps_the_messages_and_maps_the_error(served) -> None:
    _, _, channel = served
    stream = channel.unary_stream(f"/{SERVICE}/Count", Text.SerializeToString, Text.FromString)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in stream(Text(value="then-fail"), metadata=AUTH):
            received.append(reply.value)
    assert received == ["0", "1", "2"]
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(status_from_rpc_error(caught.value))
    assert info is not None and info.reason == "OPERATION_IN_PROGRESS"


async def test_graceful_shutdown_reports_not_serving_and_drains_in_flight_calls(served) -> None:
    running, echo, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    in_flight = asyncio.ensure_future(_unary(channel, "Slow")(Text(), metadata=AUTH))
    await asyncio.sleep(0.2)

    shutdown = asyncio.ensure_future(running.shutdown(grace_seconds=10))
    await asyncio.sleep(0.2)
    # Still draining: new calls are refused, and health already says NOT_SERVING
    # to anyone who watched it (balancers), while the in-flight call goes on.
    assert not in_flight.done()
    assert not shutdown.done()
    echo.release.set()
    assert (await in_flight).value == "finished"
    await shutdown
    with pytest.raises(grpc.aio.AioRpcError):
        await health.Check(health_pb2.HealthCheckRequest(), timeout=2)


async def test_enter_graceful_shutdown_flips_every_service_to_not_serving() -> None:
    running = await create_server("127.0.0.1", 0, [_binding(Echo())], TokenAuthenticator([]))
    await running.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await running.health.enter_graceful_shutdown()
        for name in ("", SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await running.server.stop(0)


def _handled(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": method, "grpc_code": code},
    )
    return value or 0.0


async def test_metrics_count_each_outcome_by_its_status_code(served) -> None:
    _, _, channel = served
    before = {
        ("WhoAmI", "OK"): _handled("WhoAmI", "OK"),
        ("WhoAmI", "UNAUTHENTICATED"): _handled("WhoAmI", "UNAUTHENTICATED"),
        ("Fail", "NOT_FOUND"): _handled("Fail", "NOT_FOUND"),
        ("Fail", "INTERNAL"): _handled("Fail", "INTERNAL"),
    }
    await _unary(channel, "WhoAmI")(Text(), metadata=AUTH)
    for call in (
        _unary(channel, "WhoAmI")(Text()),
        _unary(channel, "Fail")(Text(value="domain"), metadata=AUTH),
        _unary(channel, "Fail")(Text(value="bug"), metadata=AUTH),
    ):
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    after = {key: _handled(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == dict.fromkeys(before, 1.0)
