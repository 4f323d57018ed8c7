"""The whole stack on one machine: Postgres, nats-server and the five services.

``make run`` and the integration tests both use ``Stack``, so the tests start
exactly what a developer runs. Infrastructure is embedded unless a URL points
at an existing Postgres or NATS. Services are started from the main thread
(their parent-death signal is tied to the spawning thread) and stopped in
reverse: services first, so they drain against a live Postgres and NATS.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kit.config import DEFAULT_GRPC_PORTS, DEFAULT_METRICS_PORTS, ENV_PREFIX, ServiceName
from kit.grpc.tls import TlsFiles, channel_credentials
from kit.stack.nats import NatsServer
from kit.stack.postgres import EmbeddedPostgres
from kit.stack.process import SupervisedServer, log_tail, spawn, stop
from kit.stack.tokens import DevTokens, ensure_dev_tokens
from kit.stack.vectorstore import VectorStoreServer

logger = logging.getLogger(__name__)

# Started wave by wave: a service learns the addresses of those it calls (bound to
# free ports in tests) from the waves before it. The embedder loads its model in
# the first wave, alongside the quick ones.
START_WAVES = (
    (ServiceName.RESOURCES, ServiceName.AUDIT, ServiceName.EMBEDDER),
    (ServiceName.ORCHESTRATOR,),
    (ServiceName.INDEXER,),
)

# Called by a service of an earlier wave (resources asks the indexer for the usage
# it measures): given a free port before anything starts, so the caller's
# environment can name it even when ports are chosen by the OS.
CALLED_BEFORE_STARTED = (ServiceName.INDEXER,)

# Started together; listed in the order they are stopped last-to-first.
SERVICES = (
    ServiceName.RESOURCES,
    ServiceName.AUDIT,
    ServiceName.EMBEDDER,
    ServiceName.ORCHESTRATOR,
    ServiceName.INDEXER,
)


# Replicas after the first listen this far above the configured port, one step per
# replica (50052 → 50152, 50252), so fixed-port runs stay predictable.
REPLICA_PORT_STEP = 100


@dataclass(frozen=True, order=True)
class Instance:
    """One process of a service. Replica 0 is the service's first: it takes the
    configured ports, and its log and ready file carry the bare service name."""

    service: ServiceName
    replica: int = 0

    @property
    def name(self) -> str:
        if self.replica == 0:
            return self.service.value
        return f"{self.service.value}-{self.replica + 1}"


@dataclass
class StackOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    # None → the design's default ports; 0 → free ports (tests).
    grpc_ports: Mapping[ServiceName, int] = field(default_factory=lambda: dict(DEFAULT_GRPC_PORTS))
    metrics_ports: Mapping[ServiceName, int] = field(
        default_factory=lambda: dict(DEFAULT_METRICS_PORTS)
    )
    postgres_dsn: str | None = None  # an existing Postgres; None → embedded
    postgres_port: int | None = None  # TCP port of the embedded Postgres; None → socket only
    nats_url: str | None = None  # an existing NATS; None → embedded
    nats_port: int = 0
    extra_env: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 300.0
    services: tuple[ServiceName, ...] = SERVICES  # a subset, for tests of one service
    # Directories that directory sources may name; None → ``<data_dir>/sources``.
    source_roots: tuple[Path, ...] | None = None
    # Every service serves TLS with these (and the stack checks health over TLS).
    tls: TlsFiles | None = None
    # Processes per service (default 1). Replicas share Postgres and NATS; callers
    # balance over all of a service's replicas (round robin). Several indexers share
    # one vector store (``VECTOROPS_INDEXER_QDRANT_URL``, else the stack starts the
    # shared one below); several embedders share one Triton (the stack starts it
    # when none is given).
    replicas: Mapping[ServiceName, int] = field(default_factory=dict)
    # One vector store for every indexer (``python -m vectorstore``: Qdrant's gRPC API
    # over the embedded engine), instead of each indexer's own embedded one; implied
    # by several indexers without a Qdrant server.
    shared_vector_store: bool = False

    def instances(self, service: ServiceName) -> tuple[Instance, ...]:
        return tuple(Instance(service, n) for n in range(self.replicas.get(service, 1)))

    def roots(self) -> tuple[Path, ...]:
        if self.source_roots is not None:
            return self.source_roots
        return (self.data_dir / "sources",)

    @classmethod
    def ephemeral(cls, data_dir: Path) -> StackOptions:
        """Every port chosen by the OS: for tests."""
        return cls(
            data_dir=data_dir,
            grpc_ports=dict.fromkeys(SERVICES, 0),
            metrics_ports=dict.fromkeys(SERVICES, 0),
        )


@dataclass(frozen=True)
class Endpoint:
    service: ServiceName
    grpc_port: int
    metrics_port: int
    pid: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.postgres: EmbeddedPostgres | None = None
        self.nats: NatsServer | None = None
        self.tokens: DevTokens | None = None
        self.triton: SupervisedServer | None = None  # shared by embedder replicas
        self.vector_store: VectorStoreServer | None = None  # shared by indexer replicas
        self._serving: dict[Instance, Endpoint] = {}
        self._procs: dict[Instance, subprocess.Popen[bytes]] = {}
        # The port each instance was first given: kept across restarts.
        self._ports: dict[Instance, int] = {
            instance: port
            for service in SERVICES
            for instance in options.instances(service)
            if (port := _replica_port(options.grpc_ports.get(service, 0), instance.replica))
        }
        self.postgres_dsn = options.postgres_dsn or ""
        self.nats_url = options.nats_url or ""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        options = self.options
        options.data_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = ensure_dev_tokens(options.data_dir)
        try:
            if options.postgres_dsn is None:
                self.postgres = EmbeddedPostgres(
                    options.data_dir / "postgres", port=options.postgres_port, host=options.host
                )
                self.postgres.start()
                self.postgres_dsn = self.postgres.dsn
            if options.nats_url is None:
                self.nats = NatsServer(options.data_dir / "nats", port=options.nats_port)
                self.nats.start()
                self.nats_url = self.nats.url
            if self._wants_shared_vector_store():
                self.vector_store = VectorStoreServer(
                    options.data_dir / "vectorstore",
                    host=options.host,
                    log_path=options.data_dir / "logs" / "vectorstore.log",
                )
                self.vector_store.start()
            for root in options.roots():
                root.mkdir(parents=True, exist_ok=True)
            for instance in self._named_before_started():
                self._ports.setdefault(instance, free_port(options.host))
            if options.replicas.get(ServiceName.EMBEDDER, 1) > 1:
                self._start_shared_triton()
            for wave in START_WAVES:
                started = tuple(
                    instance
                    for service in wave
                    if service in options.services
                    for instance in options.instances(service)
                )
                for instance in started:
                    self._spawn(instance)
                self._wait_until_serving(started)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop services (they drain), then NATS, then Postgres. Safe to call twice."""
        for service in reversed(SERVICES):
            for instance in reversed(self.options.instances(service)):
                proc = self._procs.pop(instance, None)
                if proc is not None:
                    stop(proc, signal.SIGTERM, timeout=20)
        if self.triton is not None:
            self.triton.stop()
            self.triton = None
        if self.vector_store is not None:
            self.vector_store.stop()
            self.vector_store = None
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def endpoints(self) -> dict[ServiceName, Endpoint]:
        """Each serving service's first replica."""
        return {i.service: e for i, e in self._serving.items() if i.replica == 0}

    def replica_endpoints(self, service: ServiceName) -> list[Endpoint]:
        """Every serving replica of ``service``, first to last."""
        return [e for i, e in sorted(self._serving.items()) if i.service is service]

    def kill(self, service: ServiceName, replica: int = 0) -> None:
        """SIGKILL one replica of a service, as a crash would (for fault tests)."""
        instance = Instance(service, replica)
        stop(self._procs.pop(instance), signal.SIGKILL, timeout=10)
        self._serving.pop(instance, None)

    def stop_service(self, service: ServiceName, replica: int = 0) -> None:
        """Stop one replica gracefully (SIGTERM: it drains and closes its files)."""
        instance = Instance(service, replica)
        stop(self._procs.pop(instance), signal.SIGTERM, timeout=20)
        self._serving.pop(instance, None)

    def kill_nats(self) -> None:
        """SIGKILL the embedded nats-server (fault tests); ``start_nats`` brings it
        back on the same port with the same JetStream store."""
        self._embedded(self.nats, "nats-server").kill()

    def start_nats(self) -> None:
        self._embedded(self.nats, "nats-server").start()

    def kill_postgres(self) -> None:
        """SIGKILL the embedded Postgres and its backends (fault tests);
        ``start_postgres`` runs crash recovery on the same data dir and DSN."""
        self._embedded(self.postgres, "postgres").kill()

    def start_postgres(self) -> None:
        self._embedded(self.postgres, "postgres").start()

    def kill_vector_store(self) -> None:
        """SIGKILL the shared vector store (fault tests); ``start_vector_store`` brings
        it back on the same port, its engine replaying the WAL."""
        self._embedded(self.vector_store, "the shared vector store").kill()

    def start_vector_store(self) -> None:
        self._embedded(self.vector_store, "the shared vector store").start()

    def start_service(self, service: ServiceName, replica: int = 0) -> Endpoint:
        """(Re)start one replica and wait until it serves. A restarted replica
        binds its earlier port, so the others still find it."""
        instance = Instance(service, replica)
        self._spawn(instance)
        self._wait_until_serving((instance,))
        return self._serving[instance]

    def pids(self) -> dict[str, int]:
        """Every process of the stack, by name: for checks that nothing outlives it."""
        found = {instance.name: proc.pid for instance, proc in self._procs.items()}
        if self.triton is not None and self.triton.pid is not None:
            found["tritonserver"] = self.triton.pid
        if self.postgres is not None and self.postgres.pid is not None:
            found["postgres"] = self.postgres.pid
        if self.nats is not None and self.nats.pid is not None:
            found["nats-server"] = self.nats.pid
        if self.vector_store is not None and self.vector_store.pid is not None:
            found["vectorstore"] = self.vector_store.pid
        return found

    def exited(self) -> dict[Instance, int]:
        """Service processes that have ended, with their exit codes."""
        return {
            instance: proc.returncode
            for instance, proc in self._procs.items()
            if proc.poll() is not None
        }

    def log_tail(self, service: ServiceName | Instance) -> str:
        instance = service if isinstance(service, Instance) else Instance(service)
        return log_tail(self._log_path(instance))

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _embedded(server: SupervisedServer | None, name: str) -> SupervisedServer:
        if server is None:
            raise StackError(f"{name} is not embedded in this stack (it was given by URL)")
        return server

    def _wants_shared_vector_store(self) -> bool:
        """Asked for, or needed: several indexers and no Qdrant server named."""
        indexers = self.options.replicas.get(ServiceName.INDEXER, 1)
        if self.options.shared_vector_store:
            return True
        return indexers > 1 and not self._setting("INDEXER_QDRANT_URL")

    def _setting(self, name: str) -> str | None:
        key = f"{ENV_PREFIX}{name}"
        return self.options.extra_env.get(key) or os.environ.get(key)

    def _named_before_started(self) -> list[Instance]:
        """Instances whose address a caller needs before they serve: the services an
        earlier wave calls, and every replica of a replicated service (callers
        balance over the whole list from the start)."""
        return [
            instance
            for service in self.options.services
            if service in CALLED_BEFORE_STARTED or self.options.replicas.get(service, 1) > 1
            for instance in self.options.instances(service)
        ]

    def _start_shared_triton(self) -> None:
        if self._setting("EMBEDDER_TRITON_URL"):
            return
        # The composition root may know every service's parts: one Triton serves
        # all the embedders, so they share the model instead of loading it each.
        from embedder.adapters.triton_host import TritonHost

        self.triton = TritonHost(self.options.data_dir / "triton")
        self.triton.start()

    def _log_path(self, instance: Instance) -> Path:
        return self.options.data_dir / "logs" / f"{instance.name}.log"

    def _ready_path(self, instance: Instance) -> Path:
        return self.options.data_dir / "run" / f"{instance.name}.ready.json"

    def _address(self, service: ServiceName) -> str | None:
        """Where callers find ``service``: one host:port, or all its replicas as a
        gRPC ``ipv4:`` list for the callers' round-robin balancing."""
        host = self.options.host
        ports = [
            port for instance, port in sorted(self._ports.items()) if instance.service is service
        ]
        if not ports:
            return None
        if len(ports) == 1:
            return f"{host}:{ports[0]}"
        return "ipv4:" + ",".join(f"{host}:{port}" for port in ports)

    def _service_env(self, instance: Instance) -> dict[str, str]:
        assert self.tokens is not None
        options = self.options
        service = instance.service
        grpc_port = self._ports.get(instance, 0)
        metrics_port = _replica_port(options.metrics_ports.get(service, 0), instance.replica)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            f"{ENV_PREFIX}GRPC_HOST": options.host,
            f"{ENV_PREFIX}GRPC_PORT": str(grpc_port),
            f"{ENV_PREFIX}METRICS_HOST": options.host,
            f"{ENV_PREFIX}METRICS_PORT": str(metrics_port),
            f"{ENV_PREFIX}POSTGRES_DSN": self.postgres_dsn,
            f"{ENV_PREFIX}NATS_URL": self.nats_url,
            f"{ENV_PREFIX}AUTH_TOKENS_FILE": str(self.tokens.hashes_file),
            f"{ENV_PREFIX}READY_FILE": str(self._ready_path(instance)),
            f"{ENV_PREFIX}SERVICE_TOKEN": self.tokens.clear["service"],
            f"{ENV_PREFIX}SOURCE_ROOTS": json.dumps([str(root) for root in options.roots()]),
            # The embedded vector store's files live with the rest of the stack's data.
            f"{ENV_PREFIX}INDEXER_DATA_DIR": str(options.data_dir / "indexer"),
            # The resources service refuses work while that disk runs out of room.
            f"{ENV_PREFIX}RESOURCES_HEADROOM_PATH": str(options.data_dir / "indexer"),
        }
        for peer in SERVICES:
            if (address := self._address(peer)) is not None:
                env[f"{ENV_PREFIX}{peer.value.upper()}_ADDRESS"] = address
        if self.triton is not None:
            env[f"{ENV_PREFIX}EMBEDDER_TRITON_URL"] = self.triton.url
        if self.vector_store is not None:
            env[f"{ENV_PREFIX}INDEXER_QDRANT_URL"] = self.vector_store.url
        if options.tls is not None:
            env[f"{ENV_PREFIX}TLS_CERT_FILE"] = str(options.tls.cert_file)
            env[f"{ENV_PREFIX}TLS_KEY_FILE"] = str(options.tls.key_file)
            if options.tls.ca_file is not None:
                env[f"{ENV_PREFIX}TLS_CA_FILE"] = str(options.tls.ca_file)
        env.update(options.extra_env)
        return env

    def _spawn(self, instance: Instance) -> None:
        ready = self._ready_path(instance)
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.unlink(missing_ok=True)
        self._procs[instance] = spawn(
            [sys.executable, "-m", instance.service.value],
            log_path=self._log_path(instance),
            env=self._service_env(instance),
        )

    def _wait_until_serving(self, instances: tuple[Instance, ...]) -> None:
        deadline = time.monotonic() + self.options.start_timeout
        waiting = set(instances)
        while waiting:
            for instance in sorted(waiting):
                proc = self._procs[instance]
                if proc.poll() is not None:
                    raise StackError(
                        f"{instance.name} exited with code {proc.returncode} while starting:\n"
                        f"{self.log_tail(instance)}"
                    )
                ready = self._ready_path(instance)
                if not ready.exists():
                    continue
                report = json.loads(ready.read_text())
                endpoint = Endpoint(
                    service=instance.service,
                    grpc_port=report["grpc_port"],
                    metrics_port=report["metrics_port"],
                    pid=proc.pid,
                    log_path=self._log_path(instance),
                )
                status = health_status(
                    endpoint.target, credentials=channel_credentials(self.options.tls)
                )
                if status == health_pb2.HealthCheckResponse.SERVING:
                    self._serving[instance] = endpoint
                    self._ports[instance] = endpoint.grpc_port
                    waiting.discard(instance)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(sorted(i.name for i in waiting))
                raise StackError(f"not SERVING after {self.options.start_timeout:.0f} s: {names}")
            if waiting:
                time.sleep(0.2)


def _replica_port(base: int, replica: int) -> int:
    """The configured port of a replica; 0 (any free port) stays 0."""
    return base + REPLICA_PORT_STEP * replica if base else 0


def free_port(host: str) -> int:
    """A port the OS has free now (bound and let go: it stays free unless another
    process happens to bind it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def health_status(
    target: str,
    service: str = "",
    timeout: float = 2.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> int:
    """The ``grpc.health.v1`` status of ``service`` at ``target`` (UNKNOWN when
    unreachable); over TLS with ``credentials``."""
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return health_pb2.HealthCheckResponse.UNKNOWN
    return response.status
