"""A peer that was down is found again within a second of its return, by the
channels services call each other on and by the embedder's Triton client.

gRPC's default backoff between connection attempts grows 1.6-fold from 1 s
(each delay ±20%) to 120 s: after a 12 s outage its next attempt is due some
1-7 s after the peer is back, and until then every call fails at once with the
last connection error. Our channels try again at least every second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2

from embedder.adapters.triton_client import TritonClient
from kit.grpc.client import service_channel

OUTAGE_SECONDS = 12
FOUND_WITHIN_SECONDS = 1.5  # one capped backoff (1 s, +20%) and a probe


async def _live(request, context) -> service_pb2.ServerLiveResponse:
    return service_pb2.ServerLiveResponse(live=True)


async def _ready(request, context) -> service_pb2.ModelReadyResponse:
    return service_pb2.ModelReadyResponse(ready=True)


async def _serve(port: int) -> tuple[grpc.aio.Server, int]:
    """gRPC health, and the two Triton RPCs ``TritonClient.is_ready`` makes."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    triton = {
        "ServerLive": grpc.unary_unary_rpc_method_handler(
            _live,
            service_pb2.ServerLiveRequest.FromString,
            service_pb2.ServerLiveResponse.SerializeToString,
        ),
        "ModelReady": grpc.unary_unary_rpc_method_handler(
            _ready,
            service_pb2.ModelReadyRequest.FromString,
            service_pb2.ModelReadyResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", triton),)
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def _until(probe: Callable[[], Awaitable[bool]], seconds: float) -> float:
    """Probe every 50 ms for ``seconds``; the seconds it took to answer True (inf if never)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await probe():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return float("inf")


async def test_a_returning_peer_is_found_again_within_a_second() -> None:
    server, port = await _serve(0)
    address = f"127.0.0.1:{port}"
    channel = service_channel(address)
    triton = TritonClient(address)
    stub = health_pb2_grpc.HealthStub(channel)

    async def service_answers() -> bool:
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return True

    async def triton_answers() -> bool:
        return await triton.is_ready("any-model")

    try:
        assert await service_answers() and await triton_answers()
        await server.stop(0)
        # Callers keep failing through the outage, as the embedder's health poll does.
        down = await asyncio.gather(
            _until(service_answers, OUTAGE_SECONDS), _until(triton_answers, OUTAGE_SECONDS)
        )
        assert down == [float("inf")] * 2, "the peer answered while it was stopped"

        server, _ = await _serve(port)
        found = await asyncio.gather(_until(service_answers, 10), _until(triton_answers, 10))
        assert max(found) < FOUND_WITHIN_SECONDS, f"found again after {found} s"
    finally:
        await channel.close()
        await triton.close()
        await server.stop(0)
