"""The orchestrator in-process for API tests: its own lifespan and bindings on
a kit gRPC server (port 0), a real Postgres database, a real nats-server, the
outbox dispatcher publishing, and tokens for two users and an admin. The
resources service it asks for quota admission runs beside it, in-process
too, over its own schema of the same database (default quotas).

Operations are moved along through the repository's ``apply`` (what the
event consumer does with the indexer's events), so the tests need no indexer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.longrunning import operations_pb2_grpc
from google.rpc import error_details_pb2, status_pb2

from kit.auth import Principal, Role, TokenAuthenticator, digest
from kit.bus.jetstream import JetStream
from kit.bus.topology import ALL_STREAMS
from kit.config import ServiceName
from kit.db.migrations import load_migrations, migrate
from kit.db.pool import connect_pool
from kit.events import parse_envelope
from kit.grpc.server import bind, create_server
from kit.grpc.status import error_info, status_from_rpc_error
from kit.outbox import OutboxDispatcher
from kit.runtime import ServiceContext
from orchestrator.config import OrchestratorSettings
from orchestrator.domain.operations import STEPS, DomainEvent
from orchestrator.server import Application, bindings, lifespan
from resources.adapters.resources_repository import ResourcesRepository
from resources.config import ResourcesSettings
from resources.server import default_quota
from resources.servicer import ResourceServicer
from vectorops.common.v1 import config_pb2, source_pb2
from vectorops.events.v1 import envelope_pb2
from vectorops.orchestrator.v1 import (
    collection_service_pb2_grpc,
    operation_service_pb2_grpc,
    orchestrator_pb2,
    reindex_control_service_pb2_grpc,
)
from vectorops.resources.v1 import resource_service_pb2_grpc

SCHEMA = "orchestrator"
RESOURCES_SCHEMA = "resources"
SERVICE_TOKEN = "indexer-token"  # what the orchestrator presents to the resources service
HASH_MODEL = "vectorops/hash-bow-384"
PRINCIPALS = {
    "alice": Principal("alice", Role.USER),
    "bob": Principal("bob", Role.USER),
    "admin": Principal("root", Role.ADMIN),
    "indexer": Principal("indexer", Role.SERVICE),
}
AS = {name: (("authorization", f"Bearer {name}-token"),) for name in PRINCIPALS}
ALICE, BOB, ADMIN, SERVICE = AS["alice"], AS["bob"], AS["admin"], AS["indexer"]


@dataclass
class Orchestrator:
    app: Application
    pool: asyncpg.Pool
    bus: JetStream
    channel: grpc.aio.Channel
    roots: Path  # the one allowed source root
    outside: Path  # a directory outside it
    address: str = ""  # host:port of its gRPC server, for a client of its own

    @property
    def collections(self) -> collection_service_pb2_grpc.CollectionServiceStub:
        return collection_service_pb2_grpc.CollectionServiceStub(self.channel)

    @property
    def operations(self) -> operation_service_pb2_grpc.OperationServiceStub:
        return operation_service_pb2_grpc.OperationServiceStub(self.channel)

    @property
    def longrunning(self) -> operations_pb2_grpc.OperationsStub:
        return operations_pb2_grpc.OperationsStub(self.channel)

    @property
    def reindex_control(self) -> reindex_control_service_pb2_grpc.ReindexControlServiceStub:
        return reindex_control_service_pb2_grpc.ReindexControlServiceStub(self.channel)

    def directory(self, name: str) -> Path:
        folder = self.roots / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def count(self, table: str) -> int:
        return await self.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.{table}")

    async def outbox(self, subject: str) -> list[envelope_pb2.Envelope]:
        """The envelopes written for ``subject``, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT payload FROM {SCHEMA}.outbox WHERE subject = $1 ORDER BY id", subject
        )
        return [parse_envelope(row["payload"]) for row in rows]

    async def apply(self, operation_id: str, transition: Callable[[Any], Any]) -> None:
        await self.app.repository.apply(operation_id, transition, _no_rows)

    async def finish(self, operation_id: str, now: Any) -> None:
        """Complete every step, as the indexer's events would."""
        record = await self.app.repository.get_operation(operation_id, None)
        for step in STEPS[record.operation.type]:
            await self.apply(operation_id, lambda op, s=step: op.complete_step(s, {"ok": 1}, now))


def _no_rows(_events: list[DomainEvent]) -> list:
    return []


def _authenticator() -> TokenAuthenticator:
    return TokenAuthenticator(
        (digest(f"{name}-token"), principal) for name, principal in PRINCIPALS.items()
    )


@contextlib.asynccontextmanager
async def running_resources(database: str) -> AsyncIterator[str]:
    """The resources service (default quotas) on port 0; yields its address."""
    pool = await connect_pool(database, RESOURCES_SCHEMA, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, RESOURCES_SCHEMA, load_migrations("kit") + load_migrations("resources"))
    settings = ResourcesSettings(service=ServiceName.RESOURCES)
    repository = ResourcesRepository(pool, RESOURCES_SCHEMA, default_quota(settings))
    servicer = ResourceServicer(repository, timedelta(hours=1))
    running = await create_server(
        "127.0.0.1",
        0,
        [bind(resource_service_pb2_grpc, "ResourceService", servicer)],
        _authenticator(),
    )
    await running.set_serving()
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        await running.server.stop(0)
        await pool.close()


@contextlib.asynccontextmanager
async def running_orchestrator(
    database: str, nats_url: str, folder: Path, **overrides: Any
) -> AsyncIterator[Orchestrator]:
    roots, outside = folder / "roots", folder / "outside"
    roots.mkdir()
    outside.mkdir()
    quotas = contextlib.AsyncExitStack()
    if "resources_address" not in overrides:
        overrides["resources_address"] = await quotas.enter_async_context(
            running_resources(database)
        )
    settings = OrchestratorSettings(
        service=ServiceName.ORCHESTRATOR,
        postgres_dsn=database,
        nats_url=nats_url,
        source_roots=[roots],
        outbox_poll_seconds=0.2,
        service_token=SERVICE_TOKEN,
        **overrides,
    )
    pool = await connect_pool(database, SCHEMA, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("orchestrator"))
    bus = await JetStream.connect(nats_url, name="orchestrator-api-test", storage="memory")
    await bus.ensure_streams(ALL_STREAMS)
    ctx = ServiceContext(settings=settings, pool=pool, bus=bus, schema=SCHEMA)
    authenticator = _authenticator()
    dispatcher = OutboxDispatcher(pool, bus, SCHEMA, poll_seconds=0.2)
    publishing = asyncio.create_task(dispatcher.run(ctx.stop))
    try:
        async with lifespan(ctx) as app:
            ctx.app = app
            running = await create_server("127.0.0.1", 0, bindings(ctx), authenticator)
            await running.set_serving()
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
            try:
                address = f"127.0.0.1:{running.port}"
                yield Orchestrator(app, pool, bus, channel, roots, outside, address)
            finally:
                await channel.close()
                await running.server.stop(0)
    finally:
        ctx.stop.set()
        await asyncio.wait_for(publishing, timeout=10)
        await bus.close()
        await pool.close()
        await quotas.aclose()


# --- assertions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str]
    status: status_pb2.Status

    def detail(self, kind: type) -> Any:
        for holder in self.status.details:
            if holder.Is(kind.DESCRIPTOR):
                found = kind()
                holder.Unpack(found)
                return found
        return None

    @property
    def fields(self) -> list[str]:
        bad = self.detail(error_details_pb2.BadRequest)
        return [v.field for v in bad.field_violations] if bad else []


async def refused(call: Awaitable[Any]) -> Refusal:
    """The error a call ends with; every one must carry an ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = status_from_rpc_error(caught.value)
    assert status is not None, f"{caught.value.code()} without a rich status"
    info = error_info(status)
    assert info is not None and info.domain == "vectorops.dev"
    return Refusal(caught.value.code(), info.reason, dict(info.metadata), status)


async def eventually(check: Callable[[], Awaitable[Any]], seconds: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# --- request builders ---------------------------------------------------------------------


def config(model: str = HASH_MODEL, **fields: Any) -> config_pb2.CollectionConfig:
    return config_pb2.CollectionConfig(embedding_model=model, **fields)


def directory_source(path: Path | str, include: tuple[str, ...] = ()) -> source_pb2.Source:
    return source_pb2.Source(
        directory=source_pb2.DirectorySource(path=str(path), include_globs=list(include))
    )


def collection(name: str = "docs", **fields: Any) -> orchestrator_pb2.Collection:
    fields.setdefault("config", config())
    return orchestrator_pb2.Collection(name=name, **fields)
