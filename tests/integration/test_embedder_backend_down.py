"""Triton going away under a running embedder: calls get UNAVAILABLE and health says
NOT_SERVING; once Triton is back on its address the embedder serves again, without
a restart."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from embedder.adapters.triton_host import TritonHost
from kit.config import ServiceName
from kit.grpc.status import error_info, status_from_rpc_error
from kit.stack.launcher import Stack, StackOptions, health_status
from vectorops.common.v1 import config_pb2
from vectorops.embedder.v1 import embedder_service_pb2 as pb
from vectorops.embedder.v1 import embedder_service_pb2_grpc

HASH = "vectorops/hash-bow-384"
SERVICE = "vectorops.embedder.v1.EmbedderService"


def _wait_for_health(target: str, expected: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while health_status(target, SERVICE) != expected:
        assert time.monotonic() < deadline, f"health never became {expected}"
        time.sleep(0.2)


def _embed(target: str, token: str) -> pb.EmbedResponse:
    with grpc.insecure_channel(target) as channel:
        return embedder_service_pb2_grpc.EmbedderServiceStub(channel).Embed(
            pb.EmbedRequest(model=HASH, texts=["hello"], input_kind=config_pb2.INPUT_KIND_QUERY),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=20,
        )


@pytest.fixture
def folder(infra_dir, request):
    return infra_dir / f"backend-down-{request.node.name}"


def test_triton_down_then_back(folder, postgres, nats_server) -> None:
    triton = TritonHost(folder / "triton-1", models=["hash_bow"])
    triton.start()
    options = StackOptions.ephemeral(folder / "stack")
    options.postgres_dsn = postgres.create_database("backend_down")
    options.nats_url = nats_server.url
    options.services = (ServiceName.EMBEDDER,)
    options.extra_env = {
        "VECTOROPS_EMBEDDER_TRITON_URL": triton.url,
        "VECTOROPS_EMBEDDER_MODELS": HASH,
        "VECTOROPS_EMBEDDER_HEALTH_POLL_SECONDS": "0.3",
    }
    embedders = Stack(options)
    revived = None
    try:
        embedders.start()
        target = embedders.endpoints[ServiceName.EMBEDDER].target
        token = embedders.tokens.clear["user"]
        assert len(_embed(target, token).results[0].vector.values) == 384

        triton.stop()
        _wait_for_health(target, health_pb2.HealthCheckResponse.NOT_SERVING)
        with pytest.raises(grpc.RpcError) as caught:
            _embed(target, token)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        info = error_info(status_from_rpc_error(caught.value))
        assert info is not None and info.reason == "EMBEDDER_UNAVAILABLE"

        revived = TritonHost(folder / "triton-2", models=["hash_bow"], port=triton.grpc_port)
        revived.start()
        _wait_for_health(target, health_pb2.HealthCheckResponse.SERVING)
        assert len(_embed(target, token).results[0].vector.values) == 384
        assert embedders.exited() == {}  # the same process all along
    finally:
        embedders.stop()
        triton.stop()
        if revived is not None:
            revived.stop()
