"""The life of a service process: config → adapters → server → serve → drain.

Every service's ``__main__`` is ``run(ServiceSpec(...))``. Start-up connects to
Postgres (and migrates the service's schema and the shared token store), loads
the run-time tokens (``kit.tokens``), connects to JetStream (and declares the
streams), starts the gRPC server and the outbox dispatcher, then reports
SERVING. SIGTERM or SIGINT flips health to NOT_SERVING, drains in-flight RPCs
for the grace period, stops the background tasks and closes the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from kit.auth import Principal, Role, TokenAuthenticator, TokenLookup
from kit.bus.jetstream import JetStream
from kit.bus.topology import ALL_STREAMS
from kit.config import ServiceName, Settings, load_settings
from kit.db.migrations import load_migrations, migrate
from kit.db.pool import connect_pool
from kit.grpc.server import RunningServer, ServiceBinding, create_server
from kit.logs import configure_logging, get_logger
from kit.metrics import serve_metrics
from kit.outbox import OutboxDispatcher
from kit.tokens import SCHEMA as TOKENS_SCHEMA
from kit.tokens.cache import TokenCache

log = get_logger(__name__)


@dataclass
class ServiceContext:
    """What a service's own code gets once the adapters are up."""

    settings: Settings
    pool: asyncpg.Pool
    bus: JetStream
    schema: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # What the service's lifespan yielded (its own adapters), and the started server.
    app: Any = None
    server: RunningServer | None = None


@dataclass(frozen=True)
class ServiceSpec:
    name: ServiceName
    package: str  # holds ``migrations/`` with the service's SQL
    bindings: Callable[[ServiceContext], Sequence[ServiceBinding]]
    # Long-running loops (consumers, reapers), each stopping when ``ctx.stop`` is set.
    background: Callable[[ServiceContext], Sequence[Coroutine[Any, Any, None]]] = lambda ctx: ()
    settings_type: type[Settings] = Settings
    # Entered once Postgres and NATS are up, before the server is built; exited after
    # the server and the background loops have stopped. What it yields is ``ctx.app``.
    lifespan: Callable[[ServiceContext], AbstractAsyncContextManager[Any]] | None = None

    @property
    def schema(self) -> str:
        return self.name.value


def authenticator_from(settings: Settings, lookup: TokenLookup | None = None) -> TokenAuthenticator:
    return TokenAuthenticator(
        (
            (entry.sha256, Principal(entry.principal, Role(entry.role)))
            for entry in settings.tokens()
        ),
        lookup,
    )


def _write_ready_file(settings: Settings, grpc_port: int, metrics_port: int) -> None:
    if settings.ready_file is None:
        return
    report = {
        "service": settings.service.value if settings.service else None,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "pid": os.getpid(),
    }
    # Write then rename, so a reader never sees half a file.
    temporary = settings.ready_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(report))
    temporary.replace(settings.ready_file)


async def serve(spec: ServiceSpec, settings: Settings) -> None:
    """Run the service until SIGTERM/SIGINT, then shut it down gracefully."""
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown.set)

    metrics_server, metrics_port = serve_metrics(
        settings.metrics_host, settings.bound_metrics_port()
    )
    pool = await connect_pool(
        settings.postgres_dsn,
        spec.schema,
        min_size=settings.postgres_pool_min,
        max_size=settings.postgres_pool_max,
    )
    async with pool.acquire() as conn:
        await migrate(conn, spec.schema, load_migrations("kit") + load_migrations(spec.package))
        # Every service applies it (idempotent, under its own lock): none depends on start order.
        await migrate(conn, TOKENS_SCHEMA, load_migrations("kit.tokens"))
    tokens = TokenCache(pool, settings.postgres_dsn)
    await tokens.start()
    bus = await JetStream.connect(
        settings.nats_url,
        name=f"vectorops-{spec.name.value}-{os.getpid()}",
        storage=settings.jetstream_storage,
        replicas=settings.jetstream_replicas,
    )
    await bus.ensure_streams(ALL_STREAMS)

    ctx = ServiceContext(settings=settings, pool=pool, bus=bus, schema=spec.schema)
    resources = contextlib.AsyncExitStack()
    if spec.lifespan is not None:
        ctx.app = await resources.enter_async_context(spec.lifespan(ctx))
    running = ctx.server = await create_server(
        settings.grpc_host,
        settings.bound_grpc_port(),
        spec.bindings(ctx),
        authenticator_from(settings, tokens),
        credentials=tls.server_credentials() if (tls := settings.tls()) else None,
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    dispatcher = OutboxDispatcher(
        pool,
        bus,
        spec.schema,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
    )
    tasks = [asyncio.create_task(dispatcher.run(ctx.stop), name="outbox")]
    tasks += [
        asyncio.create_task(loop, name=getattr(loop, "__qualname__", None))
        for loop in spec.background(ctx)
    ]

    await running.set_serving()
    _write_ready_file(settings, running.port, metrics_port)
    log.info("service.serving", grpc_port=running.port, metrics_port=metrics_port)

    # A background loop that dies is a broken service: stop rather than serve half a system.
    watchers = [asyncio.create_task(shutdown.wait()), *tasks]
    done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
    failed = [task for task in done if task in tasks and task.exception() is not None]
    for task in failed:
        log.error("service.background_failed", task=task.get_name(), exc_info=task.exception())

    log.info("service.stopping", grace_seconds=settings.shutdown_grace_seconds)
    await running.shutdown(settings.shutdown_grace_seconds)
    ctx.stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
    for task in tasks:
        task.cancel()
    await resources.aclose()
    await tokens.stop()
    await bus.close()
    await pool.close()
    metrics_server.shutdown()
    log.info("service.stopped")
    if failed:
        raise SystemExit(1)


def run(spec: ServiceSpec) -> None:
    """The entry point of a service process."""
    settings = load_settings(spec.name, spec.settings_type)
    configure_logging(spec.name.value, settings.log_level)
    asyncio.run(serve(spec, settings))
