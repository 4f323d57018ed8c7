"""`make run`'s launcher: every service SERVING, a Ctrl-C (SIGINT) leaves no
postgres, nats-server or service process behind, and a second run reuses the data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kit.stack.launcher import SERVICES, health_status

SERVING = 1


def _start(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kit.stack", "--ephemeral-ports", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # like a terminal: SIGINT goes to the launcher's group
        # The embedder starts its own Triton, as in `make run`; the hashing model alone
        # keeps that quick (MiniLM is loaded by the session's shared Triton instead).
        env={**os.environ, "VECTOROPS_EMBEDDER_MODELS": "vectorops/hash-bow-384"},
    )


def _wait_for_banner(launcher: subprocess.Popen[str], timeout: float = 180) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    assert launcher.stdout is not None
    for line in launcher.stdout:
        seen.append(line)
        if "Ctrl-C stops everything." in line:
            return "".join(seen)
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError("launcher ended before it was up:\n" + "".join(seen))


def _stack_processes(data_dir: Path) -> dict[str, int]:
    """Every process the launcher started, from the files they leave in the data folder."""
    pids = {}
    for service in SERVICES:
        report = json.loads((data_dir / "run" / f"{service.value}.ready.json").read_text())
        pids[service.value] = report["pid"]
    pids["postgres"] = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "nats-server" and str(data_dir) in " ".join(
            proc.info["cmdline"] or []
        ):
            pids["nats-server"] = proc.pid
    return pids


def _interrupt(launcher: subprocess.Popen[str], data_dir: Path, timeout: float = 90) -> int:
    """Ctrl-C in a terminal: SIGINT to the launcher's group; its exit code. Still
    running after ``timeout``: killed, and what it printed since the banner and each
    service's last log lines show where the stop hung."""
    os.killpg(launcher.pid, signal.SIGINT)
    try:
        return launcher.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        printed, _ = launcher.communicate(timeout=10)
        tails = "".join(
            f"\n-- {log.name}:\n" + "".join(log.read_text().splitlines(keepends=True)[-5:])
            for log in sorted((data_dir / "logs").glob("*.log"))
        )
        raise AssertionError(
            f"not stopped {timeout:.0f} s after SIGINT:\n{printed}{tails}"
        ) from None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def data_dir(infra_dir: Path, request: pytest.FixtureRequest) -> Path:
    return infra_dir / f"run-{request.node.name}"


def test_sigint_stops_everything_and_a_second_run_reuses_the_data(data_dir: Path) -> None:
    launcher = _start(data_dir)
    try:
        banner = _wait_for_banner(launcher)
        for service in SERVICES:
            assert f"  {service.value} " in banner
        token = next(line.split()[-1] for line in banner.splitlines() if "dev admin token" in line)

        pids = _stack_processes(data_dir)
        assert set(pids) == {*(s.value for s in SERVICES), "postgres", "nats-server"}
        tritons = [
            p for p in psutil.Process(pids["embedder"]).children() if p.name() == "tritonserver"
        ]
        assert len(tritons) == 1  # the embedder's own Triton
        pids["tritonserver"] = tritons[0].pid
        postgres_family = [p.pid for p in psutil.Process(pids["postgres"]).children(recursive=True)]
        for service in SERVICES:
            port = json.loads((data_dir / "run" / f"{service.value}.ready.json").read_text())[
                "grpc_port"
            ]
            assert health_status(f"127.0.0.1:{port}") == SERVING

        assert _interrupt(launcher, data_dir) == 0
        still_alive = {name: pid for name, pid in pids.items() if _alive(pid)}
        assert still_alive == {}
        assert [pid for pid in postgres_family if _alive(pid)] == []
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)

    # A second run finds the same data folder: same dev tokens, Postgres data kept.
    again = _start(data_dir)
    try:
        banner = _wait_for_banner(again)
        assert f"dev admin token: {token}" in banner
        # Migrations ran in the first run only: the second found the schema in place.
        orchestrator_log = (data_dir / "logs" / "orchestrator.log").read_text()
        assert orchestrator_log.count('"postgres.migrated"') == 1
        assert _interrupt(again, data_dir) == 0
    finally:
        if again.poll() is None:
            os.killpg(again.pid, signal.SIGKILL)
