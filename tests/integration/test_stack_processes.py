"""The embedded stack's process managers, against real Postgres and nats-server processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import psutil
import pytest

import kit
from kit.stack.nats import NatsServer
from kit.stack.postgres import RUN_AS_WHEN_ROOT, EmbeddedPostgres, _ensure_run_as_user
from kit.stack.process import spawn, stop

pytestmark = pytest.mark.integration

IS_ROOT = os.geteuid() == 0


def _gone(pid: int) -> bool:
    """Dead, or a zombie nobody reaped yet (a container's PID 1 may never reap)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if not _gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _process_tree(pid: int) -> list[int]:
    return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pg_base(tmp_path: Path) -> Iterator[Path]:
    """A base dir for Postgres data.

    As root, Postgres runs as another account that must traverse to its data dir.
    Not under tmp_path then: every pytest session started as root resets
    /tmp/pytest-of-root to 0700, which would break a concurrent run's initdb.
    """
    if not IS_ROOT:
        yield tmp_path
        return
    base = Path(tempfile.mkdtemp(prefix="vo-test-pg-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_postgres_socket_only_restart_keeps_data(pg_base: Path) -> None:
    pg = EmbeddedPostgres(pg_base / "pg")
    with pg:
        assert "?host=" in pg.dsn
        assert pg.pid is not None
        assert not psutil.Process(pg.pid).net_connections(kind="inet"), "TCP must be off"
        conn = await asyncpg.connect(pg.dsn)
        assert await conn.fetchval("select 1") == 1
        await conn.execute("create table kept (x int); insert into kept values (42)")
        await conn.close()
        tree = _process_tree(pg.pid)
        assert len(tree) > 1  # postmaster + checkpointer, walwriter, ...
    assert pg.pid is None
    assert not _wait_gone(tree, timeout=0), "stop() left postgres processes behind"

    with pg:  # same data dir: no initdb, the table is still there
        conn = await asyncpg.connect(pg.dsn)
        assert await conn.fetchval("select x from kept") == 42
        await conn.close()
        tree = _process_tree(pg.pid)
    assert not _wait_gone(tree, timeout=0)


async def test_postgres_create_database_and_tcp(pg_base: Path) -> None:
    port = _free_port()
    with EmbeddedPostgres(pg_base / "pg", port=port) as pg:
        assert pg.dsn == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        dsn = pg.create_database("module_a")
        assert pg.create_database("module_a") == dsn  # idempotent
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("select current_database()") == "module_a"
        await conn.close()


async def test_postgres_long_data_dir_uses_short_socket_dir(pg_base: Path) -> None:
    data_dir = pg_base / ("d" * 60) / ("e" * 60) / "pg"
    with EmbeddedPostgres(data_dir) as pg:
        socket_dir = Path(pg.dsn.split("host=")[1].split("&")[0])
        assert socket_dir.parent == Path("/tmp")
        conn = await asyncpg.connect(pg.dsn)
        assert await conn.fetchval("select 1") == 1
        await conn.close()
    assert not socket_dir.exists()  # noqa: ASYNC240 - a test may block


async def test_postgres_restarts_after_crash_with_pid_reused(pg_base: Path) -> None:
    """A postmaster.pid naming a live non-postgres process (pid reuse) is removed."""
    pg = EmbeddedPostgres(pg_base / "pg")
    pg.start()
    tree = _process_tree(pg.pid)
    os.kill(pg.pid, signal.SIGKILL)  # a crash: backends notice and exit by themselves
    assert not _wait_gone(tree)
    pg.stop()
    pidfile = pg.data_dir / "postmaster.pid"
    squatter = subprocess.Popen(["sleep", "60"])  # noqa: ASYNC220 - a test may block
    try:
        lines = pidfile.read_text().split("\n")
        pidfile.write_text("\n".join([str(squatter.pid), *lines[1:]]))
        with pg:
            conn = await asyncpg.connect(pg.dsn)
            assert await conn.fetchval("select 1") == 1
            await conn.close()
    finally:
        squatter.kill()
        squatter.wait()


async def test_nats_jetstream_on_random_port_keeps_store(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", monitor_port=0)
    with server:
        assert server.url.startswith("nats://127.0.0.1:")
        assert int(server.url.rsplit(":", 1)[1]) > 0
        assert server.monitor_url is not None
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        ack = await js.publish("t.one", b"hello")
        assert (await js.get_msg("T", ack.seq)).data == b"hello"
        await nc.close()
        pid = server.pid
    assert server.pid is None
    assert _gone(pid)

    with server:  # same store dir: the stream and its message survived
        nc = await nats.connect(server.url)
        assert (await nc.jetstream().get_msg("T", ack.seq)).data == b"hello"
        await nc.close()


async def test_killed_nats_restarts_on_its_port_with_its_store(tmp_path: Path) -> None:
    """SIGKILL (a crash), then start: the same URL, the stream and its message kept."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        url = server.url
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        ack = await js.publish("t.one", b"hello")
        await nc.close()
        pid = server.pid
        server.kill()
        assert server.pid is None and _gone(pid)

        server.start()
        assert server.url == url
        nc = await nats.connect(url)
        assert (await nc.jetstream().get_msg("T", ack.seq)).data == b"hello"
        await nc.close()
    finally:
        server.stop()


async def test_killed_postgres_recovers_its_data_on_the_same_dsn(pg_base: Path) -> None:
    """SIGKILL of the postmaster and its backends, then start: crash recovery keeps
    every committed row, and the DSN (here a socket dir of its own) is unchanged."""
    pg = EmbeddedPostgres(pg_base / ("d" * 60) / ("e" * 60) / "pg")
    pg.start()
    try:
        dsn = pg.dsn
        conn = await asyncpg.connect(dsn)
        await conn.execute("create table kept (x int); insert into kept values (42)")
        await conn.close()
        tree = _process_tree(pg.pid)
        pg.kill()
        assert not _wait_gone(tree, timeout=0), "kill() left postgres processes behind"

        pg.start()
        assert pg.dsn == dsn
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("select x from kept") == 42
        await conn.close()
    finally:
        pg.stop()


_LAUNCHER = """
import sys, time
from pathlib import Path
from kit.stack.process import spawn
user = sys.argv[2] or None
child = spawn(["sleep", "300"], log_path=Path(sys.argv[1]), cwd=Path("/"), user=user)
print(child.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize(
    "user",
    [
        None,
        pytest.param(
            RUN_AS_WHEN_ROOT,
            marks=pytest.mark.skipif(not IS_ROOT, reason="switching users needs root"),
        ),
    ],
)
def test_spawned_child_dies_with_killed_launcher(tmp_path: Path, user: str | None) -> None:
    """PDEATHSIG: kill -9 the launcher, its child goes too (also after a uid switch)."""
    if user is not None:
        _ensure_run_as_user()
    services = Path(kit.__file__).parents[1]
    pythonpath = os.pathsep.join(filter(None, [str(services), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    launcher = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(tmp_path / "sleep.log"), user or ""],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert launcher.stdout is not None
        child_pid = int(launcher.stdout.readline())
        child = psutil.Process(child_pid)
        deadline = time.monotonic() + 5
        while child.name() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.02)  # the child execs sleep once it has set its parent-death signal
        assert child.name() == "sleep"
        if user is not None:
            assert child.username() == user
        assert os.getsid(child_pid) == child_pid  # own session: no terminal Ctrl-C
        launcher.kill()
        launcher.wait()
        assert not _wait_gone([child_pid], timeout=5), "child outlived its launcher"
    finally:
        launcher.kill()
        launcher.wait()


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    # The ignored TERM is inherited by sleep across exec: both must be SIGKILLed.
    proc = spawn(["sh", "-c", "trap '' TERM; sleep 60; true"], log_path=tmp_path / "sh.log")
    deadline = time.monotonic() + 5
    while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
        time.sleep(0.02)
    tree = _process_tree(proc.pid)
    assert len(tree) == 2
    assert stop(proc, timeout=0.5) == -signal.SIGKILL
    assert not _wait_gone(tree, timeout=2)
