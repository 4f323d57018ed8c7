"""The shared vector store (``python -m vectorstore``) as our child: one process
owns the engine's data dir, and every indexer replica reaches it over Qdrant's gRPC
API with ``VECTOROPS_INDEXER_QDRANT_URL`` set to ``url``."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from qdrant_client import grpc as q

from kit.stack.process import SupervisedServer, log_tail, spawn, stop

logger = logging.getLogger(__name__)


class VectorStoreServer(SupervisedServer):
    """``vectorstore`` serving ``data_dir``. ``port=0`` picks a free port at the first
    start; a later start (after ``stop`` or ``kill``) binds that same port again, so
    indexers keep the URL they were given. The log goes to ``log_path``
    (``<data_dir>/vectorstore.log`` by default)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = host
        self.log_path = log_path or self.data_dir / "vectorstore.log"
        self._ready_path = self.data_dir / "vectorstore.ready.json"
        self._proc: subprocess.Popen[bytes] | None = None
        self._bound_port: int | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start it; return once its Qdrant HealthCheck answers."""
        if self._proc is not None:
            raise RuntimeError("the vector store is already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._ready_path.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "vectorstore",
            "--data-dir",
            str(self.data_dir),
            "--host",
            self.host,
            "--port",
            str(self.port or self._bound_port or 0),
            "--ready-file",
            str(self._ready_path),
        ]
        self._proc = spawn(argv, log_path=self.log_path, cwd=self.data_dir)
        try:
            self._bound_port = self._wait_ready(timeout)
            self._wait_health(timeout)
        except BaseException:
            self.stop()
            raise
        logger.info("vectorstore ready (pid %d): %s", self._proc.pid, self.url)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: it drains calls, waits for optimisations and closes its shards."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: the engine replays its WAL at the next start."""
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: int, timeout: float) -> None:
        if self._proc is not None:
            stop(self._proc, sig, timeout)
            self._proc = None

    @property
    def url(self) -> str:
        """``http://host:port``: what ``VECTOROPS_INDEXER_QDRANT_URL`` takes."""
        if self._bound_port is None:
            raise RuntimeError("the vector store is not started")
        return f"http://{self.host}:{self._bound_port}"

    def _wait_ready(self, timeout: float) -> int:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"vectorstore exited with {self._proc.returncode}; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            try:
                return int(json.loads(self._ready_path.read_text())["port"])
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"vectorstore not ready in {timeout:.0f} s\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def _wait_health(self, timeout: float) -> None:
        with grpc.insecure_channel(f"{self.host}:{self._bound_port}") as channel:
            q.QdrantStub(channel).HealthCheck(q.HealthCheckRequest(), timeout=timeout)
