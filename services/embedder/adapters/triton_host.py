"""A real Triton Inference Server, from the ``nvidia-pytriton`` wheel, as our child.

The embedder's default: no external Triton configured, so it starts this one
over a copy of ``deploy/triton/model_repository`` (the repository a production
Triton container serves), with the python backend running our models in a
stub process that imports sentence-transformers from this interpreter's
environment.

What the wheel's binary needs, learned from pytriton's own ``triton.py`` and
``server/triton_server.py``: a backends folder holding ``libtriton_python.so``,
``triton_python_backend_utils.py`` and the stub built for this Python version
(under ``python_backend_stubs/<major.minor>``); ``LD_LIBRARY_PATH`` with the
wheel's ``nvidia_pytriton.libs`` and this interpreter's ``LIBDIR`` (the stub
links ``libpython3.11``: the system one does not match a pyenv build, and
models then fail with ``'_thread.RLock' object has no attribute
'_recursion_count'``); and ``PATH`` starting with the venv's ``bin``.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import embedder
from kit.stack.process import SupervisedServer, log_tail, spawn, stop

logger = logging.getLogger(__name__)

# services/embedder/__init__.py -> services/ (for the stub's PYTHONPATH) and the checkout root.
SERVICES_DIR = Path(embedder.__file__).resolve().parent.parent
DEFAULT_REPOSITORY = SERVICES_DIR.parent / "deploy" / "triton" / "model_repository"
DEFAULT_MODELS = ("all_minilm_l6_v2", "hash_bow", "hash_bow_256")

# Triton cannot bind port 0: we pick free ports, and another process may take
# one before Triton binds it; then we start again with fresh ports.
_BIND_ATTEMPTS = 4
_BIND_FAILURE = re.compile(
    r"already in use|address in use|failed to start .*(service|endpoint)", re.I
)


def pytriton_dist() -> tuple[Path, Path]:
    """``(tritonserver folder, nvidia_pytriton.libs folder)`` of the installed wheel."""
    import pytriton

    root = Path(pytriton.__file__).resolve().parent
    server = root / "tritonserver"
    libs = root.parent / "nvidia_pytriton.libs"
    if not (server / "bin" / "tritonserver").is_file():
        raise FileNotFoundError(
            f"no tritonserver binary under {server}: is nvidia-pytriton installed?"
        )
    return server, libs


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _set_parameter(config: str, key: str, value: str) -> str:
    """Replace the string_value of parameter ``key`` in a config.pbtxt, or add it."""
    pattern = re.compile(
        r'(key:\s*"' + re.escape(key) + r'"\s*value:\s*\{\s*string_value:\s*")[^"]*(")'
    )
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    if pattern.search(config):
        return pattern.sub(lambda m: m.group(1) + escaped + m.group(2), config, count=1)
    return config + f'\nparameters {{ key: "{key}" value: {{ string_value: "{escaped}" }} }}\n'


def _set_output_dims(config: str, output: str, dimension: int) -> str:
    """Set the dims of output ``output`` (a one-dimensional embedding) in a config.pbtxt."""
    pattern = re.compile(
        r'(name:\s*"' + re.escape(output) + r'"[^}]*?dims:\s*\[)\s*-?\d+\s*(\])', re.S
    )
    updated, count = pattern.subn(lambda m: f"{m.group(1)} {dimension} {m.group(2)}", config)
    if count != 1:
        raise ValueError(f"config.pbtxt has no single dims for output {output!r}")
    return updated


class TritonHost(SupervisedServer):
    """``tritonserver`` serving ``models`` from a copy of ``repository`` under ``work_dir``.

    ``parameters`` overrides config.pbtxt parameters per model, e.g.
    ``{"hash_bow": {"dimension": "64"}}`` (a ``dimension`` also sets the
    ``EMBEDDING`` output's dims). gRPC listens on ``host`` at ``port`` (0: a free one);
    ``metrics_port`` (0: a free port) turns Triton's Prometheus endpoint on.
    The log goes to ``<work_dir>/tritonserver.log``.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        models: Sequence[str] = DEFAULT_MODELS,
        repository: Path = DEFAULT_REPOSITORY,
        parameters: Mapping[str, Mapping[str, str]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics_port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.work_dir = Path(work_dir).absolute()
        self.models = tuple(models)
        self.repository = Path(repository)
        self.parameters = {m: dict(p) for m, p in (parameters or {}).items()}
        self.host = host
        self.metrics_port = metrics_port
        self.extra_env = dict(env or {})
        self.log_path = self.work_dir / "tritonserver.log"
        self.port = port  # 0: a free port, chosen at start
        self.grpc_port: int | None = None
        self._metrics_bound: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- life cycle --------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        """Start Triton; return once it is live and every model is ready.

        Call from the main thread (see ``kit.stack.process.spawn``). Raises
        ``RuntimeError`` / ``TimeoutError`` with the log's tail on failure.
        """
        if self._proc is not None:
            raise RuntimeError("tritonserver is already started")
        unknown = [m for m in self.parameters if m not in self.models]
        if unknown:
            raise ValueError(f"parameters for models not loaded: {unknown}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        model_repository = self._prepare_repository()
        backends = self._prepare_backends()
        env = self._environment()
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            self.grpc_port = self.port or _free_port(self.host)
            self._metrics_bound = (
                None if self.metrics_port is None else (self.metrics_port or _free_port(self.host))
            )
            argv = self._argv(model_repository, backends)
            # Mark where this attempt's lines begin: the log is appended to across attempts.
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._proc = spawn(argv, log_path=self.log_path, env=env, cwd=self.work_dir)
            try:
                self._wait_ready(timeout, offset)
            except RuntimeError as exc:
                self.stop()
                tail = self._log_since(offset)
                if not self.port and attempt < _BIND_ATTEMPTS and _BIND_FAILURE.search(tail):
                    logger.warning("tritonserver could not bind its ports; retrying: %s", exc)
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            logger.info(
                "tritonserver ready (pid %d) at %s with %s", self._proc.pid, self.url, self.models
            )
            return

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Triton drains in-flight requests), SIGKILL after ``timeout``."""
        if self._proc is not None:
            stop(self._proc, signal.SIGTERM, timeout)
            self._proc = None

    @property
    def url(self) -> str:
        """``host:port`` of the gRPC endpoint, as tritonclient.grpc takes it."""
        if self.grpc_port is None:
            raise RuntimeError("tritonserver is not started")
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        if self._metrics_bound is None:
            return None
        return f"http://{self.host}:{self._metrics_bound}/metrics"

    # -- preparation -------------------------------------------------------------------

    def _prepare_repository(self) -> Path:
        """A fresh copy: overrides go into it, and the checkout's folder stays clean."""
        target = self.work_dir / "model_repository"
        shutil.rmtree(target, ignore_errors=True)
        for model in self.models:
            source = self.repository / model
            if not (source / "config.pbtxt").is_file():
                raise FileNotFoundError(f"no model {model!r} in {self.repository}")
            shutil.copytree(source, target / model, ignore=shutil.ignore_patterns("__pycache__"))
        for model, overrides in self.parameters.items():
            config_path = target / model / "config.pbtxt"
            config = config_path.read_text()
            for key, value in overrides.items():
                config = _set_parameter(config, key, value)
                if key == "dimension":
                    config = _set_output_dims(config, "EMBEDDING", int(value))
            config_path.write_text(config)
        return target

    def _prepare_backends(self) -> Path:
        """backends/python with the stub for this interpreter's Python version.

        Copied, not linked: the backend looks for the stub beside its own library.
        """
        server, _ = pytriton_dist()
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise FileNotFoundError(f"nvidia-pytriton has no python backend stub for {version}")
        target = self.work_dir / "backends" / "python"
        target.mkdir(parents=True, exist_ok=True)
        for source in (*(server / "backends" / "python").glob("*.*"), stub):
            if source.is_file():
                shutil.copy2(source, target / source.name)
        return target.parent

    def _environment(self) -> dict[str, str]:
        _, libs = pytriton_dist()
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR")
        env["LD_LIBRARY_PATH"] = _join(libdir, str(libs), env.get("LD_LIBRARY_PATH"))
        # Not resolve(): a venv's python is a symlink, and its bin is what we want.
        env["PATH"] = _join(str(Path(sys.executable).parent), env.get("PATH"))
        # The stub runs the base interpreter's libpython: our site-packages (torch,
        # sentence-transformers) and services/ (kit.hash_embedding and
        # embedder.adapters.triton_model, which the models import) must be named.
        paths = sysconfig.get_paths()
        env["PYTHONPATH"] = _join(
            str(SERVICES_DIR), paths["purelib"], paths["platlib"], env.get("PYTHONPATH")
        )
        env.pop("PYTHONHOME", None)
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
        env.update(self.extra_env)
        return env

    def _argv(self, model_repository: Path, backends: Path) -> list[str | Path]:
        server, _ = pytriton_dist()
        # Unique per server: two Triton hosts on one machine must not share shm regions.
        shm_prefix = f"vo-triton-{os.getpid()}-{secrets.token_hex(4)}"
        argv: list[str | Path] = [
            server / "bin" / "tritonserver",
            f"--model-repository={model_repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--exit-timeout-secs=10",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-http=false",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--backend-config=python,shm-default-byte-size=16777216",
            "--log-info=true",
        ]
        if self._metrics_bound is None:
            argv.append("--allow-metrics=false")
        else:
            argv += [
                "--allow-metrics=true",
                "--allow-gpu-metrics=false",
                f"--metrics-address={self.host}",
                f"--metrics-port={self._metrics_bound}",
            ]
        return argv

    # -- readiness ---------------------------------------------------------------------

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        assert self._proc is not None
        deadline = time.monotonic() + timeout
        client = grpcclient.InferenceServerClient(self.url)
        try:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"tritonserver exited with {self._proc.returncode}; "
                        f"log {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                # Our own server must say it bound the port: a stranger that took it
                # first could answer the probes while ours exits.
                bound = f"Started GRPCInferenceService at {self.url}" in self._log_since(log_offset)
                try:
                    if (
                        bound
                        and client.is_server_live(client_timeout=1.0)
                        and all(client.is_model_ready(m, client_timeout=1.0) for m in self.models)
                    ):
                        return
                except InferenceServerException:
                    pass  # not listening yet, or still loading
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"tritonserver not ready with {self.models} in {timeout:.0f} s; "
                        f"log {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.25)
        finally:
            client.close()

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def _join(*parts: str | None) -> str:
    """A PATH-like list of the non-empty parts, without repeats, in order."""
    seen: list[str] = []
    for part in parts:
        for item in (part or "").split(os.pathsep):
            if item and item not in seen:
                seen.append(item)
    return os.pathsep.join(seen)
