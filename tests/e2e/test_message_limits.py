"""Message size limits (``VECTOROPS_GRPC_MAX_MESSAGE_BYTES``): a request over a
server's limit is refused RESOURCE_EXHAUSTED and the service stays up; a service
channel will not send a message over its own limit. One audit service, started
with a 1 MiB limit (below gRPC's own 4 MiB default, so the setting is what refuses)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2

from kit.config import ServiceName
from kit.grpc.client import bearer, service_channel
from kit.stack.launcher import Stack, StackOptions, health_status
from vectorops.audit.v1 import audit_service_pb2, audit_service_pb2_grpc

pytestmark = pytest.mark.integration

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def audit(infra_dir, postgres):
    options = StackOptions.ephemeral(infra_dir / f"limits-{uuid.uuid4().hex[:8]}")
    options.services = (ServiceName.AUDIT,)
    options.postgres_dsn = postgres.create_database(f"limits_{uuid.uuid4().hex[:8]}")
    options.extra_env = {"VECTOROPS_GRPC_MAX_MESSAGE_BYTES": str(LIMIT)}
    running = Stack(options)
    running.start()
    yield running
    running.stop()


def _list(channel: grpc.Channel, token: str, owner_id: str):
    stub = audit_service_pb2_grpc.AuditServiceStub(channel)
    return stub.ListAuditEvents(
        audit_service_pb2.ListAuditEventsRequest(owner_id=owner_id, page_size=1),
        metadata=bearer(token),
        timeout=30,
    )


def test_a_request_over_the_limit_is_refused_and_the_service_stays_up(audit) -> None:
    target = audit.endpoints[ServiceName.AUDIT].target
    token = audit.tokens.clear["admin"]
    with grpc.insecure_channel(
        target, options=(("grpc.max_send_message_length", 8 * LIMIT),)
    ) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            _list(channel, token, "x" * (2 * LIMIT))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()

        # Under the limit is served, by the same process.
        assert _list(channel, token, "x" * (LIMIT // 2)) is not None
    assert health_status(target) == health_pb2.HealthCheckResponse.SERVING
    assert not audit.exited()


def test_a_service_channel_keeps_to_its_own_limit(audit) -> None:
    target = audit.endpoints[ServiceName.AUDIT].target
    token = audit.tokens.clear["admin"]

    async def call(owner_size: int, max_message_bytes: int) -> grpc.StatusCode:
        channel = service_channel(target, max_message_bytes=max_message_bytes)
        stub = audit_service_pb2_grpc.AuditServiceStub(channel)
        try:
            await stub.ListAuditEvents(
                audit_service_pb2.ListAuditEventsRequest(owner_id="x" * owner_size, page_size=1),
                metadata=bearer(token),
                timeout=30,
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
        finally:
            await channel.close()
        return grpc.StatusCode.OK

    # 256 KiB fits the server's 1 MiB, but not a channel bound to 128 KiB.
    assert asyncio.run(call(256 * 1024, 128 * 1024)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert asyncio.run(call(256 * 1024, LIMIT)) == grpc.StatusCode.OK
